//! Load benchmark: one subscription with 1,000 monitored items, every item changing at 10 Hz on the
//! in-process async-opcua server. Reports readings/s delivered to the sink, lost changes, and CPU time of
//! the client (driver) threads and of the server threads, from /proc/self/task/*/stat (std only).
//!
//!     cargo bench -p lineside-drivers --features opcua --bench opcua_subscription
//!
//! Environment: OPCUA_BENCH_SECS (measurement length, default 20), OPCUA_BENCH_ITEMS (default 1000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/opcua_support/mod.rs"]
mod opcua_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lineside_drivers::{DeviceState, Value};
use opcua::server::node_manager::memory::SimpleNodeManager;
use opcua::types::DataValue;
use opcua_support::*;

/// Clock ticks per second of /proc times; 100 on every Linux configuration lineside targets.
const CLK_TCK: f64 = 100.0;

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn cpu_of_threads(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // The name is in parentheses and may contain spaces: split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !name.starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields after the name start at field 3 (state); utime is field 14, stime field 15.
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks += utime + stime;
    }
    ticks as f64 / CLK_TCK
}

/// CPU seconds of the calling thread.
fn cpu_of_this_thread() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return f64::NAN;
    };
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (utime + stime) as f64 / CLK_TCK
}

fn cpu_of_process() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (utime + stime) as f64 / CLK_TCK
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env_or("OPCUA_BENCH_SECS", 20);
    let n_items = env_or("OPCUA_BENCH_ITEMS", 1000) as usize;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("srv-opcua")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cli-lineside")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..n_items).map(|i| format!("V{i:04}")).collect();
    let vars: Vec<Var> = names.iter().map(|n| Var::i32(n, 0)).collect();
    let server = server_rt.block_on(TestServer::start(dir.path(), vars));

    let mut cfg = format!(
        "endpoint = \"{}\"\npublishing_interval = \"100ms\"\nsampling_interval = \"50ms\"\nqueue_size = 10\n\
         max_nodes_per_request = 1000\n",
        server.endpoint()
    );
    for n in &names {
        cfg.push_str(&format!(
            "[[tag]]\nname = \"{n}\"\nnode = \"nsu={NS_URI};s={n}\"\n"
        ));
    }
    let dev = device(&cfg);
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let driver = client_rt.spawn(dev.run(ctx));

    // Wait for the initial value of every item.
    let t0 = Instant::now();
    let mut initial = 0usize;
    while initial < n_items && t0.elapsed() < Duration::from_secs(120) {
        if let Ok(batch) = rx.recv_timeout(Duration::from_secs(1)) {
            initial += batch.len();
        }
    }
    assert_eq!(
        metrics.state(),
        DeviceState::Connected,
        "driver did not connect"
    );
    println!(
        "connected, {initial} initial values after {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Change every item at 10 Hz on the server runtime.
    let running = Arc::new(AtomicBool::new(true));
    let rounds = Arc::new(AtomicU64::new(0));
    let changer = {
        let running = running.clone();
        let rounds = rounds.clone();
        let handle = server.handle.clone();
        let ids: Vec<_> = names.iter().map(|n| server.node(n)).collect();
        server_rt.spawn(async move {
            let nm = handle
                .node_managers()
                .get_of_type::<SimpleNodeManager>()
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut k: i32 = 0;
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                k += 1;
                let values = ids.iter().map(|id| (id, None, DataValue::new_now(k)));
                nm.set_values(handle.subscriptions(), values).unwrap();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let cpu_main0 = cpu_of_this_thread();
    let cpu_srv0 = cpu_of_threads("srv-opcua");
    let cpu_all0 = cpu_of_process();
    let start = Instant::now();
    let mut delivered = 0u64;
    let mut last_value = vec![0i64; n_items];
    let mut out_of_order = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(200)) {
            for r in batch {
                delivered += 1;
                if let (Some(i), Some(Value::I64(v))) = (
                    r.tag.get(1..).and_then(|s| s.parse::<usize>().ok()),
                    r.value,
                ) {
                    if v <= last_value[i] {
                        out_of_order += 1;
                    }
                    last_value[i] = v;
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_main = cpu_of_this_thread() - cpu_main0;
    let cpu_srv = cpu_of_threads("srv-opcua") - cpu_srv0;
    let cpu_all = cpu_of_process() - cpu_all0;
    running.store(false, Ordering::Relaxed);
    let made = rounds.load(Ordering::Relaxed) * n_items as u64;
    stop.cancel();
    client_rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
    });
    let _ = server_rt.block_on(changer);

    println!("items: {n_items}, change rate: 10 Hz each, measured {elapsed:.1}s");
    println!(
        "changes made on the server: {made} ({:.0}/s)",
        made as f64 / elapsed
    );
    println!(
        "readings delivered to the sink: {delivered} ({:.0}/s), {out_of_order} out of order or repeated",
        delivered as f64 / elapsed
    );
    // Driver = everything but the server's threads and this thread (the sink consumer). Per-thread
    // counters of the driver runtime would miss short-lived blocking threads, so subtract instead.
    let cpu_driver = cpu_all - cpu_srv - cpu_main;
    println!(
        "cpu (share of one core): driver {:.1}%, server {:.1}%, sink consumer {:.1}%, whole process {:.1}%",
        100.0 * cpu_driver / elapsed,
        100.0 * cpu_srv / elapsed,
        100.0 * cpu_main / elapsed,
        100.0 * cpu_all / elapsed
    );
    println!(
        "driver cpu per delivered reading: {:.2} µs",
        1e6 * cpu_driver / (delivered.max(1) as f64)
    );
    println!(
        "driver counters: readings {}, errors {}, reconnects {}",
        metrics.readings.load(Ordering::Relaxed),
        metrics.errors.load(Ordering::Relaxed),
        metrics.reconnects.load(Ordering::Relaxed)
    );
    if let Some(e) = metrics.last_error() {
        println!("last driver error: {e}");
    }
    drop(server);
}
