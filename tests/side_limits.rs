//! Side and status messages larger than the broker accepts (issue 10, "no message can block the
//! stream"): they are cut down to the configured message size, and to less once the broker refused
//! one again and again, instead of dropping the connection in a loop. Here the status message of an
//! agent with many devices (≈ 12 kB) meets mosquitto's `max_packet_size 8192`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const BASE: &str = "lineside/test-gw";

async fn broker_with_packet_limit() -> Mosquitto {
    Mosquitto::start_with(|dir, port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 8192\n\
             persistence_location {}/\n",
            dir.display()
        )
    })
    .await
}

/// The newest status message with `state = online`, once it lists fewer devices than it counts.
fn cut_status(sub: &Subscriber) -> Option<serde_json::Value> {
    let seen = sub.seen.lock().unwrap();
    seen.status
        .iter()
        .rev()
        .find(|s| s["state"] == "online")
        .filter(|s| s["metrics"]["devices_truncated"] == true)
        .cloned()
}

fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["metrics"]["forwarder"][name]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Starts an agent with 60 devices (a status message of ≈ 12 kB); `mqtt_extra` goes into `[mqtt]`.
fn many_devices(dir: &std::path::Path, port: u16, mqtt_extra: &str) -> lineside::config::Config {
    let text = sim_config(dir, port, 60, 1, "200ms", "").replace(
        "max_readings_per_message = 200\n",
        &format!("max_readings_per_message = 200\nstatus_interval = \"1s\"\n{mqtt_extra}"),
    );
    load(&text, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_status_over_the_configured_size_is_cut_down() {
    let broker = broker_with_packet_limit().await;
    let sub = Subscriber::start(broker.port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = many_devices(dir.path(), broker.port, "max_message_size = \"4KiB\"\n");
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(30), || cut_status(&sub).is_some()).await,
        "a cut-down status message arrives"
    );
    let before = sub.max_seq();
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq() > before + 500).await,
        "readings flow"
    );
    let status = cut_status(&sub).unwrap();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    let devices = status["metrics"]["devices"].as_array().unwrap().len();
    eprintln!(
        "status lists {devices} of {} devices; forwarder: {}",
        status["metrics"]["devices_total"], status["metrics"]["forwarder"]
    );
    assert_eq!(status["metrics"]["devices_total"], 60);
    assert!(devices < 60);
    assert!(serde_json::to_vec(&status).unwrap().len() <= 4096);
    assert_eq!(
        counter(&status, "reconnects"),
        0,
        "the broker never refused it"
    );
    assert!(counter(&status, "side_degraded") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_status_the_broker_refuses_is_cut_down_instead_of_looping() {
    let broker = broker_with_packet_limit().await;
    let sub = Subscriber::start(broker.port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    // The default message size (far above the broker's limit): only the broker's refusals tell.
    let cfg = many_devices(dir.path(), broker.port, "");
    let (stop, task) = spawn_agent(cfg);
    let arrived = wait_for(Duration::from_secs(60), || cut_status(&sub).is_some()).await;
    let first = cut_status(&sub);
    // No loop: once cut down, the connection holds (status every second, readings flowing).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = cut_status(&sub);
    let max_seq = sub.max_seq();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    assert!(
        arrived,
        "a status message arrives (statuses seen: {})",
        sub.seen.lock().unwrap().status.len()
    );
    let (first, later) = (first.unwrap(), later.unwrap());
    eprintln!("forwarder: {}", later["metrics"]["forwarder"]);
    assert!(counter(&later, "side_refused") >= 1);
    assert_eq!(
        counter(&first, "reconnects"),
        counter(&later, "reconnects"),
        "the connection holds once the status is cut down"
    );
    assert!(
        counter(&later, "reconnects") <= 12,
        "a bounded number of reconnects"
    );
    assert!(max_seq > 0, "readings flow");
    assert_eq!(later["metrics"]["devices_total"], 60);
}
