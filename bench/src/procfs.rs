//! CPU time and resident memory of server processes, from /proc.

use anyhow::{anyhow, Context, Result};

/// A process to watch, with a label for the report.
#[derive(Clone, Debug)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
}

impl Watched {
    /// `PID` or `LABEL=PID`.
    pub fn parse(s: &str, default_label: &str) -> Result<Watched> {
        let (label, pid) = match s.split_once('=') {
            Some((l, p)) => (l.to_owned(), p),
            None => (default_label.to_owned(), s),
        };
        let pid = pid
            .trim()
            .parse()
            .with_context(|| format!("bad pid in {s:?}"))?;
        Ok(Watched { label, pid })
    }

    /// The `--pids` of the nodes, labelled node1, node2, … by default.
    pub fn parse_nodes(pids: &[String]) -> Result<Vec<Watched>> {
        pids.iter()
            .enumerate()
            .map(|(i, p)| Watched::parse(p, &format!("node{}", i + 1)))
            .collect()
    }
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of all threads of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: f64 = f.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok((utime + stime) / clk_tck())
}

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    Err(anyhow!("no VmRSS for {pid}"))
}

/// CPU seconds of this process (the generator).
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next() else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    if v.len() < 8 {
        return f64::NAN;
    }
    (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clk_tck()
}

/// CPU snapshot of a set of processes, this process and the machine.
#[derive(Clone, Debug)]
pub struct CpuSnap {
    pub per_proc: Vec<f64>,
    pub generator: f64,
    pub machine: f64,
}

impl CpuSnap {
    /// CPU seconds between two snapshots used by everything else on the
    /// machine (other builds, kernel threads): neither the watched processes
    /// nor this one. Large values mean the run shared the cores.
    pub fn other_since(&self, before: &CpuSnap) -> f64 {
        let watched: f64 = self
            .per_proc
            .iter()
            .zip(&before.per_proc)
            .fold(0.0, |acc, (a, b)| acc + (a - b));
        (self.machine - before.machine) - watched - (self.generator - before.generator)
    }
}

pub fn snap(watched: &[Watched]) -> CpuSnap {
    CpuSnap {
        per_proc: watched
            .iter()
            .map(|w| cpu_seconds(w.pid).unwrap_or(f64::NAN))
            .collect(),
        generator: self_cpu_seconds(),
        machine: machine_busy_seconds(),
    }
}

/// Waits (at most `max_wait`) until, over a 1-second window, everything on
/// the machine other than `watched` and this process used less than
/// `max_other` cores. Returns the "other" load of the last window, in cores.
/// Used so that a benchmark shares the machine only with what it measures.
pub async fn wait_quiet(watched: &[Watched], max_wait: std::time::Duration, max_other: f64) -> f64 {
    let deadline = std::time::Instant::now() + max_wait;
    let mut before = snap(watched);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = snap(watched);
        let other = now.other_since(&before);
        if other < max_other || std::time::Instant::now() >= deadline {
            return other;
        }
        before = now;
    }
}
