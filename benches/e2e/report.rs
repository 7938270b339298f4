//! Side-by-side tables (Markdown, so they paste into the README as printed) and ratios against the
//! baseline build.

use super::cases::{Drain, Run};

/// Prints a Markdown table with aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(w[i] - c.chars().count())))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Every steady run, one row each.
pub fn runs(runs: &[Run]) {
    let header = [
        "run",
        "offered/s",
        "committed/s",
        "delivered/s",
        "missing",
        "dups",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "agent CPU ms/1k",
        "agent CPU %",
        "agent peak RSS MiB",
        "sub CPU %",
        "wire B/reading",
        "readings/msg",
        "disk B/reading",
        "held",
        "load avg",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                format!("{:.0}", r.offered),
                format!("{:.0}", r.committed),
                format!("{:.0}", r.delivered),
                r.missing.to_string(),
                r.duplicates.to_string(),
                format!("{:.1}", r.latency.p50),
                format!("{:.1}", r.latency.p95),
                format!("{:.1}", r.latency.p99),
                format!("{:.1}", r.latency.max),
                format!("{:.2}", r.agent_cpu_ms_per_1k),
                format!("{:.0}", r.agent_cpu_pct),
                mib(r.agent_peak_rss_kib),
                format!("{:.0}", r.sub_cpu_pct),
                format!("{:.1}", r.wire_bytes_per_reading),
                format!("{:.0}", r.readings_per_message),
                format!("{:.1}", r.disk_bytes_per_reading),
                if r.held() { "yes" } else { "no" }.to_string(),
                r.load.clone(),
            ]
        })
        .collect();
    table(&header, &rows);
}

/// Ratios of each run against the baseline run at the same offered rate (current / baseline).
/// Per run label: the median of each figure over its rounds, and the ratio of the medians to the
/// baseline's.
pub fn medians(runs: &[Run], baseline_label: &str) {
    let mut labels: Vec<String> = Vec::new();
    for r in runs {
        if !labels.contains(&r.label) {
            labels.push(r.label.clone());
        }
    }
    let median = |label: &str, f: &dyn Fn(&Run) -> f64| -> f64 {
        let mut v: Vec<f64> = runs.iter().filter(|r| r.label == label).map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let cpu = |r: &Run| r.agent_cpu_ms_per_1k;
    let base_cpu = median(baseline_label, &cpu);
    let rows: Vec<Vec<String>> = labels
        .iter()
        .map(|l| {
            let all: Vec<String> = runs
                .iter()
                .filter(|r| &r.label == l)
                .map(|r| format!("{:.2}", r.agent_cpu_ms_per_1k))
                .collect();
            let m = median(l, &cpu);
            vec![
                l.clone(),
                all.len().to_string(),
                all.join(" "),
                format!("{m:.2}"),
                if base_cpu > 0.0 && l != baseline_label {
                    format!("{:.2}", m / base_cpu)
                } else {
                    "-".into()
                },
                format!("{:.1}", median(l, &|r| r.latency.p50)),
                format!("{:.1}", median(l, &|r| r.latency.p99)),
                format!(
                    "{:.1}",
                    median(l, &|r| r.agent_peak_rss_kib as f64 / 1024.0)
                ),
                format!("{:.1}", median(l, &|r| r.wire_bytes_per_reading)),
            ]
        })
        .collect();
    table(
        &[
            "run",
            "rounds",
            "agent CPU ms/1k per round",
            "median CPU ms/1k",
            "median / baseline",
            "median p50 ms",
            "median p99 ms",
            "median peak RSS MiB",
            "wire B/reading",
        ],
        &rows,
    );
}

pub fn ratios(runs: &[Run], baseline_label: &str) {
    let mut rows = Vec::new();
    for r in runs.iter().filter(|r| r.label != baseline_label) {
        let Some(b) = runs
            .iter()
            .find(|b| b.label == baseline_label && (b.offered - r.offered).abs() < 0.5)
        else {
            continue;
        };
        let q = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.2}", x / y)
            } else {
                "-".into()
            }
        };
        rows.push(vec![
            format!("{} / {}", r.label, b.label),
            format!("{:.0}", r.offered),
            q(r.delivered, b.delivered),
            q(r.agent_cpu_ms_per_1k, b.agent_cpu_ms_per_1k),
            q(r.agent_peak_rss_kib as f64, b.agent_peak_rss_kib as f64),
            q(r.wire_bytes_per_reading, b.wire_bytes_per_reading),
            q(r.latency.p50, b.latency.p50),
            q(r.latency.p99, b.latency.p99),
            q(r.disk_bytes_per_reading, b.disk_bytes_per_reading),
        ]);
    }
    if !rows.is_empty() {
        table(
            &[
                "ratio",
                "offered/s",
                "delivered",
                "agent CPU/1k",
                "peak RSS",
                "wire B",
                "p50",
                "p99",
                "disk B",
            ],
            &rows,
        );
    }
}

pub fn drains(d: &[Drain]) {
    let rows: Vec<Vec<String>> = d
        .iter()
        .map(|d| {
            vec![
                d.label.clone(),
                format!("{:.0}", d.rate),
                format!("{:.0}", d.outage),
                d.backlog.to_string(),
                if d.first_message {
                    format!("{:.2}", d.reconnect)
                } else {
                    "none".into()
                },
                if d.drained {
                    format!("{:.2}", d.drain_time)
                } else {
                    "not drained".into()
                },
                if d.drained {
                    format!("{:.2}", d.total_time)
                } else {
                    format!("> {:.0}", d.total_time)
                },
                if d.drained {
                    format!("{:.0}", d.delivered_rate)
                } else {
                    "-".into()
                },
                if d.drained {
                    format!("{:.0}", d.backlog_rate)
                } else {
                    "-".into()
                },
                format!("{:.0}", d.agent_cpu_pct),
                d.missing.to_string(),
                d.duplicates.to_string(),
                mib(d.agent_peak_rss_kib),
                d.load.clone(),
            ]
        })
        .collect();
    table(
        &[
            "run",
            "ingest/s",
            "outage s",
            "backlog",
            "restart → first msg s",
            "first msg → zero backlog s",
            "restart → zero backlog s",
            "delivered/s while draining",
            "backlog / (first msg → zero) s",
            "agent CPU %",
            "missing",
            "dups",
            "agent peak RSS MiB",
            "load avg",
        ],
        &rows,
    );
}
