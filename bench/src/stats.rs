//! Latency histograms and formatting.

use hdrhistogram::Histogram;

/// Largest latency recorded exactly, in µs; larger values are clamped to it
/// (and still counted).
pub const MAX_US: u64 = 60_000_000;

/// A latency histogram in µs, 3 significant digits.
pub fn new_total() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("histogram bounds")
}

/// Latency summary in µs.
#[derive(Clone, Debug, Default)]
pub struct Lat {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Lat {
    pub fn of(h: &Histogram<u64>) -> Lat {
        if h.is_empty() {
            return Lat::default();
        }
        Lat {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// µs as a short human figure: `850 µs`, `1.25 ms`, `2.1 s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// An integer with thin thousands separators: 1 234 567.
pub fn fmt_n(n: f64) -> String {
    let v = n.round() as i128;
    let s = v.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Where a benchmark appends its results: `--report` (markdown) and
/// `--summary` (one JSON line per result, read by `summary`).
#[derive(clap::Args, Debug, Clone)]
pub struct Output {
    /// Append the markdown result to this file.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Append a one-line JSON summary to this file (read by `summary`).
    #[arg(long)]
    pub summary: Option<std::path::PathBuf>,
}

impl Output {
    /// Appends markdown to `--report`, if given.
    pub fn report(&self, md: &str) -> anyhow::Result<()> {
        append_report(self.report.as_deref(), md)
    }

    /// Appends `j` as one line to `--summary`, if given.
    pub fn summary(&self, j: &serde_json::Value) -> anyhow::Result<()> {
        append_report(self.summary.as_deref(), &format!("{j}\n"))
    }
}

/// Appends `text` to `path` (creating parent folders), if a path is given.
pub fn append_report(path: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        f.write_all(text.as_bytes())?;
    }
    Ok(())
}
