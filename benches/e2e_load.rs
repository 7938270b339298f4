//! End-to-end load: the sim driver → SQLite → MQTT broker → a subscriber that de-duplicates and checks
//! sequence numbers. Prints offered and delivered readings/s, end-to-end latency percentiles (reading
//! timestamp → arrival at the subscriber) and the process's peak RSS (agent + subscriber; the broker is
//! a separate mosquitto process when one is installed).
//!
//! Run: `cargo bench --bench e2e_load` (env: LOAD_SECONDS=20, LOAD_DEVICES=10, LOAD_TAGS=100,
//! LOAD_INTERVAL=10ms, LOAD_SYNC=normal|full, LINESIDE_MOSQUITTO=/usr/sbin/mosquitto).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

mod support;
use support::{cpu_seconds, env, free_port, proc_status};

struct Broker(Option<Child>, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn start_broker(port: u16) -> (Broker, &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::env::var("LINESIDE_MOSQUITTO").ok().or_else(|| {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(|s| s.to_string())
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let broker = if let Some(bin) = bin {
        let conf = dir.path().join("m.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (Broker(Some(child), dir), "mosquitto")
    } else {
        lineside::broker::start(addr).unwrap();
        (
            Broker(None, dir),
            "rumqttd (in-process: mosquitto not found)",
        )
    };
    lineside::broker::wait_ready(addr).await.unwrap();
    broker
}

#[derive(Default)]
struct Stats {
    seen: Vec<bool>,
    unique: u64,
    duplicates: u64,
    latencies_us: Vec<i64>,
}

fn main() {
    let seconds: u64 = env("LOAD_SECONDS", 20);
    let devices: usize = env("LOAD_DEVICES", 10);
    let tags: usize = env("LOAD_TAGS", 100);
    let interval: String = env("LOAD_INTERVAL", "10ms".to_string());
    let sync: String = env("LOAD_SYNC", "normal".to_string());
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e_load: run with `cargo bench --bench e2e_load`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let port = free_port();
        let (_broker, broker_name) = start_broker(port).await;
        let state = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[agent]\nid = \"load\"\nstate_dir = {:?}\ningest_queue = 4096\n[store]\nsynchronous = \"{sync}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ninflight = 128\nmax_readings_per_message = 1000\nmax_message_size = \"512KiB\"\n",
            state.path().display().to_string()
        );
        for d in 0..devices {
            text.push_str(&format!("[[device]]\nname = \"plc{d}\"\ndriver = \"sim\"\ninterval = \"{interval}\"\nseed = {d}\n"));
            for t in 0..tags {
                text.push_str(&format!("[[device.tag]]\nname = \"t{t}\"\nunit = \"mm\"\nmean = 10.0\nsigma = 0.1\nresolution = 0.001\n"));
            }
        }
        let cfg = lineside::config::load_str(std::path::Path::new("load.toml"), &text).unwrap();
        let per_tick = devices * tags;
        let interval_s = lineside_drivers::config::parse_duration(&interval).unwrap().as_secs_f64();

        // The subscriber: de-duplicates on seq and records latency from the reading's timestamp.
        let stats = Arc::new(Mutex::new(Stats::default()));
        let messages = Arc::new(AtomicU64::new(0));
        let mut opts = MqttOptions::new("load-sub", "127.0.0.1", port);
        opts.set_max_packet_size(4 * 1024 * 1024, 64 * 1024);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client.subscribe("lineside/load/data/#", QoS::AtLeastOnce).await.unwrap();
        let (st, msgs) = (stats.clone(), messages.clone());
        tokio::spawn(async move {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    msgs.fetch_add(1, Relaxed);
                    let now = chrono::Utc::now().timestamp_micros();
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let mut s = st.lock().unwrap();
                    for r in v["readings"].as_array().unwrap() {
                        let seq = r["seq"].as_u64().unwrap() as usize;
                        if s.seen.len() <= seq {
                            s.seen.resize(seq + 1, false);
                        }
                        if s.seen[seq] {
                            s.duplicates += 1;
                            continue;
                        }
                        s.seen[seq] = true;
                        s.unique += 1;
                        if seq.is_multiple_of(50) {
                            let ts = chrono::DateTime::parse_from_rfc3339(r["ts"].as_str().unwrap()).unwrap().timestamp_micros();
                            s.latencies_us.push(now - ts);
                        }
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;

        let db = cfg.store.path.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let agent = tokio::spawn(lineside::agent::run(cfg, stop.clone()));
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        // Warm up 2 s, then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (u0, tw) = (stats.lock().unwrap().unique, Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (u1, window) = (stats.lock().unwrap().unique, tw.elapsed().as_secs_f64());
        stop.cancel();
        agent.await.unwrap().unwrap();
        let run = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        // Drain: wait until everything committed has arrived.
        let conn = rusqlite::Connection::open(&db).unwrap();
        let committed: u64 = conn.query_row("SELECT max(seq) FROM readings", [], |r| r.get::<_, i64>(0)).unwrap() as u64;
        let drain_start = Instant::now();
        while stats.lock().unwrap().unique < committed && drain_start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = stats.lock().unwrap();
        let missing = (1..=committed as usize).filter(|&i| !s.seen.get(i).copied().unwrap_or(false)).count();
        let mut lat = s.latencies_us.clone();
        lat.sort_unstable();
        let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0;
        println!("e2e_load: sim → SQLite ({sync}) → {broker_name} → subscriber, {devices} devices × {tags} tags every {interval}");
        println!("  offered      {:>10.0} readings/s", per_tick as f64 / interval_s);
        println!("  delivered    {:>10.0} readings/s (unique, measured over {window:.1} s after a 2 s warm-up)", (u1 - u0) as f64 / window);
        println!("  committed    {committed} readings in {run:.1} s; delivered {} unique, {} duplicates, {missing} missing", s.unique, s.duplicates);
        println!("  latency      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} samples)", pct(0.50), pct(0.95), pct(0.99), pct(1.0), lat.len());
        println!("  cpu          {:.1} s over {run:.1} s ({:.0}% of one core; agent + subscriber)", cpu, 100.0 * cpu / run);
        println!("  peak RSS     {} MiB (agent + subscriber)", proc_status("VmHWM:") / 1024);
        println!("  messages     {}", messages.load(Relaxed));
    });
}
