//! The operator station under load: 20 browsers' worth of live streams (server-sent events) on one
//! characteristic charting 10 points/s, while the agent ingests and forwards 20,000 readings/s. Two
//! phases on the same agent: without streams, then with them; each prints readings committed and
//! delivered to the MQTT subscriber per second, the agent process's CPU and peak RSS, and (with
//! streams) points received per stream and their delay (reading timestamp → arrival at the stream
//! client). The stream clients are `curl` processes (their lines are counted by threads of this process), so
//! most of their CPU is not the agent's.
//!
//! Run: `cargo bench --bench station_load` (env: LOAD_SECONDS=15, LOAD_CLIENTS=20,
//! LINESIDE_MOSQUITTO=/usr/sbin/mosquitto).

// A bench is a measurement harness: a failed step ends the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::{BufRead, BufReader};

mod support;
use support::{cpu_seconds, env, free_port, proc_status};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("station_load: run with `cargo bench --bench station_load`");
        return;
    }
    let seconds: u64 = env("LOAD_SECONDS", 15);
    let clients: usize = env("LOAD_CLIENTS", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mosquitto = std::env::var("LINESIDE_MOSQUITTO").ok().or_else(|| {
            ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|s| s.to_string())
        });
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut broker = None;
        let embedded = match &mosquitto {
            Some(bin) => {
                let conf = dir.path().join("m.conf");
                std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")).unwrap();
                broker = Some(Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
                false
            }
            None => true,
        };
        let station = free_port();
        // 10 PLCs × 20 tags every 10 ms = 20,000 readings/s, plus one gauge at 10 readings/s charted
        // as I-MR: 10 individuals points/s (and 10 moving ranges).
        let mut text = format!(
            "[agent]\nid = \"load\"\nstate_dir = {:?}\ningest_queue = 4096\n[store]\nsynchronous = \"normal\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nembedded_broker = {embedded}\ninflight = 128\nmax_readings_per_message = 1000\nmax_message_size = \"512KiB\"\n\
             [station]\nlisten = \"127.0.0.1:{station}\"\nmax_streams = {}\n",
            dir.path().display().to_string(),
            clients + 4
        );
        for d in 0..10 {
            text.push_str(&format!("[[device]]\nname = \"plc{d}\"\ndriver = \"sim\"\ninterval = \"10ms\"\nseed = {d}\n"));
            for t in 0..20 {
                text.push_str(&format!("[[device.tag]]\nname = \"t{t}\"\nmean = 10.0\nsigma = 0.1\nresolution = 0.001\n"));
            }
        }
        text.push_str("[[device]]\nname = \"gauge\"\ndriver = \"sim\"\ninterval = \"100ms\"\nseed = 99\n[[device.tag]]\nname = \"d\"\nunit = \"mm\"\nmean = 5.0\nsigma = 0.01\n");
        text.push_str("[[characteristic]]\nname = \"diameter\"\nsource = \"gauge/d\"\nchart = \"i-mr\"\nlimits = { centre = 5.0, sigma = 0.01 }\nusl = 5.05\nlsl = 4.95\n");
        let cfg = lineside::config::load_str(std::path::Path::new("station_load.toml"), &text).unwrap();
        if !embedded {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        let stop = tokio_util::sync::CancellationToken::new();
        let store_stats_db = cfg.store.path.clone();
        let agent = tokio::spawn(lineside::agent::run(cfg, stop.clone()));
        tokio::time::sleep(Duration::from_millis(700)).await;

        // The MQTT subscriber counts forwarded readings (unique by seq).
        let delivered = Arc::new(AtomicU64::new(0));
        let mut opts = MqttOptions::new("station-load-sub", "127.0.0.1", port);
        opts.set_max_packet_size(4 * 1024 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client.subscribe("lineside/load/data/#", QoS::AtLeastOnce).await.unwrap();
        let d = delivered.clone();
        tokio::spawn(async move {
            // Unique readings by seq (delivery is at-least-once).
            let mut seen: Vec<bool> = Vec::new();
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = ev {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    for r in v["readings"].as_array().into_iter().flatten() {
                        let seq = r["seq"].as_u64().unwrap_or(0) as usize;
                        if seen.len() <= seq {
                            seen.resize(seq + 1, false);
                        }
                        if !seen[seq] {
                            seen[seq] = true;
                            d.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let committed = || -> u64 {
            rusqlite::Connection::open_with_flags(&store_stats_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row("SELECT ifnull(max(seq), 0) FROM readings", [], |r| r.get::<_, i64>(0)))
                .unwrap_or(0) as u64
        };

        let measure = |label: &'static str| {
            let delivered = delivered.clone();
            async move {
                let (c0, d0, cpu0, t0) = (committed(), delivered.load(Relaxed), cpu_seconds(), Instant::now());
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                let dt = t0.elapsed().as_secs_f64();
                let (c1, d1, cpu1) = (committed(), delivered.load(Relaxed), cpu_seconds());
                println!("  {label}");
                println!("    committed  {:>9.0} readings/s", (c1 - c0) as f64 / dt);
                println!("    delivered  {:>9.0} readings/s (MQTT subscriber, in this process)", (d1 - d0) as f64 / dt);
                println!("    cpu        {:>9.0} % of one core (agent + MQTT subscriber)", 100.0 * (cpu1 - cpu0) / dt);
                println!("    RSS        {:>9} MiB now, {} MiB peak", proc_status("VmRSS:") / 1024, proc_status("VmHWM:") / 1024);
            }
        };
        println!("station_load: 10 PLCs × 20 tags every 10 ms (20,000 readings/s) → SQLite → {} ; I-MR at 10 points/s; {seconds} s per phase",
            if embedded { "rumqttd (in-process)" } else { "mosquitto" });
        measure("without live streams").await;

        // 20 browsers' worth of streams: curl processes reading /api/stream?ch=diameter.
        let points = Arc::new(AtomicU64::new(0));
        let delays = Arc::new(Mutex::new(Vec::<i64>::new()));
        let mut children = Vec::new();
        for _ in 0..clients {
            let mut child = Command::new("curl")
                .args(["-sN", &format!("http://127.0.0.1:{station}/api/stream?ch=diameter")])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("curl");
            let out = child.stdout.take().unwrap();
            let (points, delays) = (points.clone(), delays.clone());
            std::thread::spawn(move || {
                let mut is_point = false;
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if line == "event: point" {
                        is_point = true;
                    } else if let (true, Some(data)) = (is_point, line.strip_prefix("data: ")) {
                        is_point = false;
                        points.fetch_add(1, Relaxed);
                        let now = chrono::Utc::now().timestamp_micros();
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                            && let Some(ts) = v["doc"]["ts"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        {
                            delays.lock().unwrap().push(now - ts.timestamp_micros());
                        }
                    }
                }
            });
            children.push(child);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let p0 = points.load(Relaxed);
        delays.lock().unwrap().clear();
        measure("with live streams").await;
        let got = points.load(Relaxed) - p0;
        let mut d = delays.lock().unwrap().clone();
        d.sort_unstable();
        let pct = |p: f64| d.get(((d.len() as f64 * p) as usize).min(d.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0;
        println!("    streams    {clients} clients, {:.1} points/s each (I and MR charts), {} points in all",
            got as f64 / clients as f64 / seconds as f64, got);
        println!("    delay      reading → stream client p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms", pct(0.5), pct(0.95), pct(0.99), pct(1.0));
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        stop.cancel();
        let _ = agent.await;
        if let Some(mut b) = broker {
            let _ = b.kill();
            let _ = b.wait();
        }
    });
}
