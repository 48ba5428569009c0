//! `summary`: one table of the targets against the JSON lines that
//! `fanout`, `idle` and `connect` appended with `--summary`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::stats::{fmt_n, fmt_us};

#[derive(clap::Args, Debug, Clone)]
pub struct SummaryArgs {
    /// The JSON-lines file written with --summary.
    #[arg(long)]
    pub input: PathBuf,
    /// Append the table to this file too.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

pub fn run(a: SummaryArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.input).with_context(|| format!("read {}", a.input.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("bad line {line}"))?;
        let label = v["label"].as_str().unwrap_or("").to_owned();
        match v["bench"].as_str() {
            Some("fanout") if v["search"].as_bool() == Some(true) => {
                if v["pass"].as_bool() != Some(true) {
                    rows.push(format!(
                        "| {label} | highest rate with p99 <= {} ms, zero loss | >= 597,204 deliveries/s (2x 191842f on this bench) | no rate passed | **no** |",
                        f(&v, "p99_bound_ms")
                    ));
                    continue;
                }
                let d = f(&v, "deliveries_per_s");
                let node = f(&v, "node_us_per_delivery");
                let cluster = f(&v, "cluster_us_per_delivery");
                rows.push(format!(
                    "| {label} | highest rate with p99 <= {} ms, zero loss | >= 597,204 deliveries/s (2x 191842f on this bench) | {} deliveries/s (p99 {}) | {} |",
                    f(&v, "p99_bound_ms"),
                    fmt_n(d),
                    fmt_us(f(&v, "p99_us") as u64),
                    yes(d >= 597_204.0)
                ));
                rows.push(format!(
                    "| {label} | server CPU per delivery at that rate (nodes; nodes + redis) | none (the CPU target is at 114k) | {node:.2} µs; {cluster:.2} µs (generator used {:.2} s, everything else {:.2} s, in {:.1} s) | - |",
                    f(&v, "gen_cpu_s"),
                    f(&v, "other_cpu_s"),
                    f(&v, "window_s"),
                ));
            }
            Some("fanout") if label.ends_with("-reference") => {
                // Same load, one node, for comparison (bench/run.sh `floor`):
                // no target applies.
                rows.push(format!(
                    "| {label} | reference: p99 and CPU per delivery at {} deliveries/s on one process | - | p99 {}, lost {}, {:.2} µs per delivery | - |",
                    fmt_n(f(&v, "deliveries_per_s")),
                    fmt_us(f(&v, "p99_us") as u64),
                    f(&v, "lost"),
                    f(&v, "node_us_per_delivery"),
                ));
            }
            Some("write-floor") => {
                rows.push(format!(
                    "| write-floor | reference: CPU of one bare {} B write per delivery, {} connections, {} writes/s, one thread, no server | - | {:.2} µs per write (the reader: {:.2} µs) | - |",
                    f(&v, "bytes"),
                    f(&v, "connections"),
                    fmt_n(f(&v, "writes_per_s")),
                    f(&v, "writer_us_per_write"),
                    f(&v, "reader_us_per_write"),
                ));
            }
            Some("fanout") => {
                let p99 = f(&v, "p99_us");
                let lost = f(&v, "lost");
                let runs = v["runs"].as_u64().unwrap_or(1);
                let which = if runs > 1 {
                    format!(
                        " (of {runs} runs, the one with the least other CPU: {:.2} s)",
                        f(&v, "other_cpu_s")
                    )
                } else {
                    format!(" (other CPU {:.2} s)", f(&v, "other_cpu_s"))
                };
                rows.push(format!(
                    "| {label} | p99 at {} deliveries/s ({} msg/s), zero loss{which} | p99 <= 2 ms and <= 3.7 µs server CPU (nodes + redis) per delivery at 114k deliveries/s | p99 {}, p99.9 {}, lost {}, {:.2} µs node CPU, {:.2} µs nodes + redis per delivery | {} |",
                    fmt_n(f(&v, "deliveries_per_s")),
                    fmt_n(f(&v, "rate")),
                    fmt_us(p99 as u64),
                    fmt_us(f(&v, "p999_us") as u64),
                    lost,
                    f(&v, "node_us_per_delivery"),
                    f(&v, "cluster_us_per_delivery"),
                    yes(p99 <= 2000.0 && lost == 0.0 && f(&v, "cluster_us_per_delivery") <= 3.7)
                ));
            }
            Some("idle") if f(&v, "rooms") > 0.0 => {
                // Issue 13: connections that received traffic, then went quiet.
                let per = f(&v, "bytes_per_logged_in");
                let conns = f(&v, "connections");
                let failed = f(&v, "failed");
                let frames = f(&v, "frames_received") / f(&v, "logged_in").max(1.0);
                rows.push(format!(
                    "| {label} | RSS per idle logged-in connection after traffic ({} rooms, {:.1} frames received each), {} on {} | <= 6 KB | {:.2} KB per logged-in connection ({} connections, {} failed) | {} |",
                    f(&v, "rooms"),
                    frames,
                    fmt_n(conns),
                    v["node"].as_str().unwrap_or("?"),
                    per / 1000.0,
                    fmt_n(conns),
                    failed,
                    yes(per <= 6000.0 && failed == 0.0)
                ));
            }
            Some("idle") => {
                let per = f(&v, "bytes_per_connection");
                let conns = f(&v, "connections");
                let failed = f(&v, "failed");
                rows.push(format!(
                    "| {label} | RSS per idle logged-in connection, {} on {} | <= 6 KB, 19,000 connections on one node | {:.2} KB ({} connections, {} failed) | {} |",
                    fmt_n(conns),
                    v["node"].as_str().unwrap_or("?"),
                    per / 1000.0,
                    fmt_n(conns),
                    failed,
                    yes(per <= 6000.0 && conns >= 19_000.0 && failed == 0.0)
                ));
            }
            Some("connect") if f(&v, "rooms") > 0.0 => {
                // Issue 13: logins into rooms that already have members.
                let lps = f(&v, "logins_per_s");
                let trips = v["redis_round_trips_per_login"]
                    .as_f64()
                    .map(|t| format!("{t:.2} Redis round trips per login"))
                    .unwrap_or_else(|| "Redis round trips not read".into());
                rows.push(format!(
                    "| {label} | logins/s into {} rooms with {} members, on {} node(s) | 3x 191842f on this bench (499/s, measured 2026-12-05: 1,497/s), round trips stated | {} logins/s (p99 {}, {} failed, {:.0} µs node CPU per login), {trips} | {} |",
                    v["rooms"],
                    fmt_n(f(&v, "prefill")),
                    v["nodes"],
                    fmt_n(lps),
                    fmt_us(f(&v, "p99_us") as u64),
                    v["failed"],
                    f(&v, "node_cpu_us_per_login"),
                    yes(lps >= 1_497.0 && v["failed"].as_u64() == Some(0))
                ));
            }
            Some("connect") => {
                let lps = f(&v, "logins_per_s");
                rows.push(format!(
                    "| {label} | logins per second on {} node(s) | >= 15,000 logins/s on one node | {} logins/s (p99 {}, {} failed, {:.0} µs node CPU per login) | {} |",
                    v["nodes"],
                    fmt_n(lps),
                    fmt_us(f(&v, "p99_us") as u64),
                    v["failed"],
                    f(&v, "node_cpu_us_per_login"),
                    yes(lps >= 15_000.0 && v["nodes"].as_u64() == Some(1))
                ));
            }
            _ => {}
        }
    }
    let mut md =
        String::from("| run | measure | target | measured | met |\n|---|---|---|---|---|\n");
    for r in rows {
        md.push_str(&r);
        md.push('\n');
    }
    println!("{md}");
    crate::stats::append_report(a.report.as_deref(), &md)?;
    Ok(())
}
