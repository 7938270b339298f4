//! End-to-end load, side by side: the agent runs as a child process from a release binary
//! (`LINESIDE_BIN`, default this tree's `target/release/lineside`) and, when `LINESIDE_BASELINE_BIN`
//! is set (e.g. 0.1.0's release binary), every case runs for both builds, alternating, and prints
//! Markdown tables with ratios. Agent CPU (utime + stime) and peak RSS (VmHWM) come from the child's
//! /proc; the subscriber (this process) is counted separately. Each run has its own mosquitto.
//!
//! Cases (`LOAD_CASES`, comma-separated, default all):
//! - `modbus`: 10 Modbus TCP devices × 50 registers every 100 ms from one pymodbus server; CPU per 1,000
//!   readings delivered, for the baseline, this tree with default JSON and with compact JSON;
//!   `LOAD_ROUNDS` rounds (default 1, the order alternating) and then the median of each.
//! - `ceiling`: sim (10 devices × rate/1,000 tags every 10 ms) → SQLite → mosquitto → subscriber at
//!   each rate of `LOAD_RATES` (default 100000,200000,300000,400000,500000) for `LOAD_SECONDS`; a build's
//!   ceiling is the highest rate held (0 missing, p99 < 250 ms, ≥ 97 % delivered); a build stops stepping
//!   after its first rate not held. The 100,000/s row is the p99 figure at 100k/s.
//! - `latency`: 1,000 readings/s (10 devices × 10 tags every 100 ms): p50 at low rate.
//! - `drain`: `LOAD_DRAIN_RATE` (20000) readings/s, mosquitto stopped for `LOAD_OUTAGE_SECONDS` (60) and
//!   restarted on the same port; time until the backlog is zero while ingest continues (given up
//!   `LOAD_DRAIN_LIMIT_SECONDS`, 120, after the restart).
//! - `idle`: RSS with 1,000 and 10,000 configured tags (sim, 10 s polls) after `LOAD_IDLE_SECONDS` (20).
//!
//! Bytes on disk per reading (db + WAL / readings stored) are printed for every steady run.
//!
//! Run: `cargo build --release` in both trees, then
//! `LINESIDE_BASELINE_BIN=/path/to/0.1.0/target/release/lineside cargo bench --bench e2e_load`
//! (env: LINESIDE_BASELINE_LABEL names the baseline in the tables, default "0.1.0"; LOAD_SECONDS=60, LOAD_WARMUP=5, LOAD_SYNC=normal|full, LOAD_COMPACT=1 adds compact JSON to
//! every case, LINESIDE_MOSQUITTO, LINESIDE_PYTHON).

// A bench is a measurement harness: a failed step ends the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

mod e2e;
mod support;

use e2e::agent::Build;
use e2e::cases::{self, Run, Settings, Variant};
use e2e::config::{self, Json};
use e2e::report;
use support::env;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e_load: run with `cargo bench --bench e2e_load`");
        return;
    }
    let s = Settings {
        seconds: env("LOAD_SECONDS", 60),
        warmup: env("LOAD_WARMUP", 5),
        sync: env("LOAD_SYNC", "normal".to_string()),
    };
    let cases: String = env(
        "LOAD_CASES",
        "modbus,ceiling,latency,drain,idle".to_string(),
    );
    let case = |name: &str| cases.split(',').any(|c| c.trim() == name);
    let current = Build {
        label: "current".into(),
        bin: std::env::var_os("LINESIDE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lineside"))),
        current: true,
    };
    let baseline = std::env::var_os("LINESIDE_BASELINE_BIN").map(|b| Build {
        label: env("LINESIDE_BASELINE_LABEL", "0.1.0".to_string()),
        bin: PathBuf::from(b),
        current: false,
    });
    let base_label = baseline
        .as_ref()
        .map(|b| b.label.clone())
        .unwrap_or_default();
    let v = |b: &Build, json| Variant {
        build: b.clone(),
        json,
    };
    let compact_everywhere = env("LOAD_COMPACT", 0) == 1;
    // The builds in the order of round `i`: alternating which goes first.
    let order = |i: usize| {
        let mut list = vec![v(&current, Json::Default)];
        if compact_everywhere {
            list.push(v(&current, Json::Compact));
        }
        if let Some(b) = &baseline {
            list.insert(
                if i.is_multiple_of(2) { 0 } else { list.len() },
                v(b, Json::Default),
            );
        }
        list
    };
    println!("e2e_load: current = {}", current.bin.display());
    if let Some(b) = &baseline {
        println!("e2e_load: baseline = {}", b.bin.display());
    }
    println!(
        "e2e_load: window {} s after a {} s warm-up, synchronous = {}, load average now {}",
        s.seconds,
        s.warmup,
        s.sync,
        cases::load_average()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if case("modbus") {
            println!("\n## modbus: 10 Modbus TCP devices × 50 registers every 100 ms, one pymodbus server");
            // CPU per reading at this rate moves by ±20 % with the machine's other load: several
            // rounds (`LOAD_ROUNDS`), the builds alternating, and the medians.
            let rounds: usize = env("LOAD_ROUNDS", 1);
            let mut runs = Vec::new();
            for round in 0..rounds.max(1) {
                let mut variants = order(round);
                if !compact_everywhere {
                    variants.push(v(&current, Json::Compact));
                }
                if round % 2 == 1 {
                    variants.reverse();
                }
                runs.extend(cases::modbus(&variants, &s, 10, 50, "100ms").await);
            }
            report::runs(&runs);
            if rounds > 1 {
                report::medians(&runs, &base_label);
            } else {
                report::ratios(&runs, &base_label);
            }
        }
        if case("ceiling") {
            let rates: String = env("LOAD_RATES", "100000,200000,300000,400000,500000".to_string());
            println!("\n## ceiling: sim (10 devices × rate/1000 tags every 10 ms) → SQLite → mosquitto → subscriber");
            let mut runs: Vec<Run> = Vec::new();
            let mut failed: Vec<String> = Vec::new();
            for (i, rate) in rates.split(',').filter_map(|r| r.trim().parse::<f64>().ok()).enumerate() {
                for variant in order(i) {
                    if failed.contains(&variant.label()) {
                        continue;
                    }
                    let tags = (rate / 1000.0).round() as usize;
                    let r = cases::steady(&variant, &s, rate, |t| config::sim_devices(t, 10, tags, "10ms")).await;
                    cases::print_progress(&r);
                    if !r.held() {
                        failed.push(r.label.clone());
                    }
                    runs.push(r);
                }
            }
            report::runs(&runs);
            report::ratios(&runs, &base_label);
            let mut labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
            labels.dedup();
            labels.sort();
            labels.dedup();
            for l in labels {
                let best = runs.iter().filter(|r| r.label == l && r.held()).map(|r| r.offered).fold(0.0, f64::max);
                println!("ceiling {l}: highest rate held {best:.0} readings/s");
            }
        }
        if case("latency") {
            println!("\n## latency at 1,000 readings/s: 10 devices × 10 tags every 100 ms");
            let mut runs = Vec::new();
            for variant in order(0) {
                runs.push(cases::steady(&variant, &s, 1000.0, |t| config::sim_devices(t, 10, 10, "100ms")).await);
                cases::print_progress(runs.last().unwrap());
            }
            report::runs(&runs);
            report::ratios(&runs, &base_label);
        }
        if case("drain") {
            let rate: f64 = env("LOAD_DRAIN_RATE", 20_000.0);
            let outage = Duration::from_secs(env("LOAD_OUTAGE_SECONDS", 60));
            let limit = Duration::from_secs(env("LOAD_DRAIN_LIMIT_SECONDS", 120));
            println!("\n## drain: {rate:.0} readings/s, broker stopped for {} s, restarted on the same port", outage.as_secs());
            let mut d = Vec::new();
            for variant in order(0) {
                d.push(cases::drain(&variant, &s, rate, outage, limit).await);
                println!("  .. {}: drain {:.0} readings/s", d.last().unwrap().label, d.last().unwrap().delivered_rate);
            }
            report::drains(&d);
        }
        if case("idle") {
            let settle = Duration::from_secs(env("LOAD_IDLE_SECONDS", 20));
            println!("\n## idle RSS: sim tags polled every 10 s, measured {} s after the first data", settle.as_secs());
            let mut rows = Vec::new();
            for tags in [1_000, 10_000] {
                for variant in order(0) {
                    let (rss, peak, load) = cases::idle(&variant, &s, tags, settle).await;
                    rows.push(vec![
                        variant.label(),
                        tags.to_string(),
                        format!("{:.1}", rss as f64 / 1024.0),
                        format!("{:.1}", peak as f64 / 1024.0),
                        load,
                    ]);
                }
            }
            report::table(&["run", "tags", "RSS MiB", "peak RSS MiB", "load avg"], &rows);
        }
    });
}
