//! Nothing on the command topic can stop forwarding (issue 10, items 2-4): oversized commands, huge
//! acknowledgements, retained commands, a retained 1 MB message, and a burst of 300,000 commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};

const BASE: &str = "lineside/test-gw";

/// A config with a fast status refresh, so the status message shows the intake's counters.
fn config(dir: &std::path::Path, port: u16) -> String {
    sim_config(dir, port, 2, 5, "20ms", "").replace(
        "keep_alive = \"5s\"\n",
        "keep_alive = \"5s\"\nstatus_interval = \"1s\"\n",
    )
}

/// A plain MQTT client that publishes whatever the test needs.
async fn publisher(port: u16) -> AsyncClient {
    let mut opts = MqttOptions::new(format!("test-pub-{}", free_port()), "127.0.0.1", port);
    opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    client
}

/// The latest status message's forwarder counters.
fn forwarder_status(sub: &Subscriber) -> serde_json::Value {
    let seen = sub.seen.lock().unwrap();
    seen.status
        .iter()
        .rev()
        .find(|s| s["state"] == "online")
        .map(|s| s["metrics"]["forwarder"].clone())
        .unwrap_or_default()
}

fn largest_alarm(sub: &Subscriber) -> usize {
    let seen = sub.seen.lock().unwrap();
    seen.alarms
        .iter()
        .map(|a| a.to_string().len())
        .max()
        .unwrap_or(0)
}

async fn stop_agent(
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_commands_are_rejected_unechoed_and_forwarding_continues() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(&config(dir.path(), port), dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(wait_for(Duration::from_secs(20), || sub.max_seq() > 200).await);
    let client = publisher(port).await;
    let cmd_topic = format!("{BASE}/cmd");
    // A 140 kB correlation id, and an acknowledgement naming 20,000 alarms.
    let huge_id = serde_json::json!({"cmd": "x", "id": "i".repeat(140_000)}).to_string();
    let seqs: Vec<u64> = (1..=20_000).collect();
    let huge_ack =
        serde_json::json!({"cmd": "ack", "characteristic": "bore", "alarm_seq": seqs, "by": "t"})
            .to_string();
    for body in [&huge_id, &huge_ack] {
        client
            .publish(&cmd_topic, QoS::AtLeastOnce, false, body.clone())
            .await
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            forwarder_status(&sub)["commands"]["oversized"].as_u64() == Some(2)
        })
        .await,
        "both counted as oversized: {}",
        forwarder_status(&sub)
    );
    let before = sub.max_seq();
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq() > before + 500).await,
        "forwarding continues"
    );
    {
        let seen = sub.seen.lock().unwrap();
        let rejected: Vec<_> = seen
            .alarms
            .iter()
            .filter(|a| a["kind"] == "agent.command_rejected")
            .collect();
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        for r in rejected {
            assert!(
                r.to_string().len() < 1000,
                "a rejection does not echo the request: {} bytes",
                r.to_string().len()
            );
        }
    }
    assert!(largest_alarm(&sub) < 2000);
    stop_agent(stop, task).await;
    let committed = db_max_seq(&db);
    assert!(sub.wait_for_all(committed, Duration::from_secs(20)).await);
    let f = forwarder_status(&sub);
    assert_eq!(f["reconnects"], 0, "no connection was dropped: {f}");
    assert_eq!(f["quarantined"], 0, "{f}");
}

/// Publishes retained messages on the command topic before the agent starts: a real acknowledgement
/// command and a 1 MB blob. Neither may be executed, and neither may cause a reconnect loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn retained_commands_are_ignored_and_a_retained_megabyte_does_not_loop() {
    for blob in [false, true] {
        let broker = Mosquitto::start().await;
        let sub = Subscriber::start(broker.port, BASE, false).await;
        let client = publisher(broker.port).await;
        let payload = if blob {
            vec![b'x'; 1024 * 1024]
        } else {
            br#"{"cmd":"ack","characteristic":"bore","alarm_seq":"all","by":"retained"}"#.to_vec()
        };
        client
            .publish(format!("{BASE}/cmd"), QoS::AtLeastOnce, true, payload)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = load(&config(dir.path(), broker.port), dir.path());
        let (stop, task) = spawn_agent(cfg);
        assert!(wait_for(Duration::from_secs(20), || sub.max_seq() > 200).await);
        assert!(
            wait_for(Duration::from_secs(20), || {
                forwarder_status(&sub)["commands"]["retained_ignored"].as_u64() >= Some(1)
            })
            .await,
            "the retained message is counted as ignored: {}",
            forwarder_status(&sub)
        );
        let before = sub.max_seq();
        assert!(
            wait_for(Duration::from_secs(20), || sub.max_seq() > before + 500).await,
            "forwarding continues"
        );
        let f = forwarder_status(&sub);
        assert_eq!(f["reconnects"], 0, "no reconnect loop (blob: {blob}): {f}");
        assert_eq!(f["commands"]["accepted"], 0, "{f}");
        {
            let seen = sub.seen.lock().unwrap();
            assert!(
                !seen
                    .alarms
                    .iter()
                    .any(|a| a["kind"] == "agent.command_rejected" || a["kind"] == "spc.ack"),
                "the retained command was not executed (nor answered): {:?}",
                seen.alarms
            );
        }
        stop_agent(stop, task).await;
    }
}

fn spawn_binary(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lineside"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start lineside")
}

/// Peak resident memory of a process (kB), from /proc.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 300,000 commands in a burst (rebirths and garbage): memory stays bounded, the log and the events
/// stay small, status messages are coalesced, and forwarding continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_burst_of_300k_commands_is_bounded() {
    let broker = Mosquitto::start().await;
    let sub = Subscriber::start(broker.port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), broker.port);
    load(&text, dir.path());
    let config_path = dir.path().join("lineside.toml");
    let mut agent = spawn_binary(&config_path);
    let stderr = agent.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        use std::io::Read;
        let mut all = Vec::new();
        let _ = std::io::BufReader::new(stderr).read_to_end(&mut all);
        all
    });
    assert!(wait_for(Duration::from_secs(20), || sub.max_seq() > 200).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = peak_rss_kb(agent.id());
    let status_before = sub.seen.lock().unwrap().status.len();

    let client = publisher(broker.port).await;
    let topic = format!("{BASE}/cmd");
    let t = Instant::now();
    for i in 0..300_000u32 {
        let body: &[u8] = if i % 2 == 0 {
            br#"{"cmd":"rebirth"}"#
        } else {
            b"not json at all"
        };
        client
            .publish(&topic, QoS::AtMostOnce, false, body.to_vec())
            .await
            .unwrap();
    }
    let sent_in = t.elapsed();
    assert!(
        wait_for(Duration::from_secs(120), || {
            forwarder_status(&sub)["commands"]["received"]
                .as_u64()
                .unwrap_or(0)
                >= 250_000
        })
        .await,
        "the agent read the burst: {}",
        forwarder_status(&sub)
    );
    let burst_secs = t.elapsed().as_secs_f64();
    let before = sub.max_seq();
    assert!(
        wait_for(Duration::from_secs(30), || sub.max_seq() > before + 1000).await,
        "forwarding continues after the burst"
    );
    let rss_after = peak_rss_kb(agent.id());
    let status_during = sub.seen.lock().unwrap().status.len() - status_before;
    let f = forwarder_status(&sub);
    Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    assert!(agent.wait().unwrap().success());
    let log = log.join().unwrap();
    let alarms = sub.seen.lock().unwrap().alarms.len();
    eprintln!(
        "burst: 300000 commands sent in {sent_in:?}, read within {burst_secs:.1} s; peak RSS {rss_before} kB before, {rss_after} kB after; \
         {status_during} status messages; {alarms} events; {} bytes of log; counters {f}",
        log.len()
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "peak RSS grew from {rss_before} kB to {rss_after} kB"
    );
    assert!(
        log.len() < 64 * 1024,
        "{} bytes of log for the burst",
        log.len()
    );
    assert!(
        (status_during as f64) < burst_secs * 2.0 + 10.0,
        "rebirth is coalesced: {status_during} status messages in {burst_secs:.1} s"
    );
    assert!(alarms < 100, "rejections are rate-limited: {alarms} events");
}
