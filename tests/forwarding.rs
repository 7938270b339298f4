//! End to end: sim → SQLite → MQTT → a real subscriber, with the broker going away in between.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const BASE: &str = "lineside/test-gw";

/// Runs the agent for `run`, stops it cleanly, and returns the highest committed seq.
async fn run_for(cfg: lineside::config::Config, run: Duration) -> u64 {
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    tokio::time::sleep(run).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("agent stops within 10 s")
        .unwrap()
        .unwrap();
    db_max_seq(&db)
}

fn assert_complete(sub: &Subscriber, upto: u64) {
    let seen = sub.seen.lock().unwrap();
    let gaps = seen.gaps(upto);
    assert!(
        gaps.is_empty(),
        "{} of {upto} readings missing, first {:?}",
        gaps.len(),
        &gaps[..gaps.len().min(10)]
    );
    assert!(
        seen.order_violations.is_empty(),
        "out of order per tag: {:?}",
        &seen.order_violations[..seen.order_violations.len().min(10)]
    );
}

/// The largest value of a forwarder counter in the status messages seen (the stop publishes the last).
fn forwarder_counter(sub: &Subscriber, name: &str) -> u64 {
    let seen = sub.seen.lock().unwrap();
    seen.status
        .iter()
        .filter_map(|s| s["metrics"]["forwarder"][name].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_once_in_order_through_the_embedded_broker() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(&sim_config(dir.path(), port, 3, 4, "20ms", ""), dir.path());
    let committed = run_for(cfg, Duration::from_secs(3)).await;
    assert!(committed > 1000, "only {committed} readings committed");
    assert!(
        sub.wait_for_all(committed, Duration::from_secs(20)).await,
        "not everything arrived"
    );
    assert_complete(&sub, committed);
    // Caught up at a low rate: the forwarder packs the committed batches from memory.
    let from_memory = forwarder_counter(&sub, "packed_from_memory");
    assert!(
        from_memory > committed / 2,
        "fast path: {from_memory} of {committed} readings packed from memory"
    );
    let seen = sub.seen.lock().unwrap();
    assert!(seen.status.iter().any(|s| {
        s["state"] == "online"
            && s["config_hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("sha256:"))
    }));
    assert!(
        seen.status.iter().any(|s| s["state"] == "offline"),
        "a clean stop publishes offline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_loses_nothing() {
    let port = rumqttd().await;
    let proxy = Proxy::start(port).await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(
        &sim_config(dir.path(), proxy.port, 2, 5, "10ms", ""),
        dir.path(),
    );
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(10), || sub.max_seq() > 300).await,
        "data flows before the cut"
    );
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = sub.max_seq();
    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq() > during + 500).await,
        "data flows after the cut"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let committed = db_max_seq(&db);
    assert!(sub.wait_for_all(committed, Duration::from_secs(20)).await);
    assert_complete(&sub, committed);
    // Both paths ran: from memory while caught up, from the store to catch up after the cut.
    let from_store = forwarder_counter(&sub, "packed_from_store");
    let from_memory = forwarder_counter(&sub, "packed_from_memory");
    assert!(
        from_store > 0 && from_memory > 0,
        "catch-up {from_store}, fast path {from_memory}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn mosquitto_end_to_end_with_a_broker_outage() {
    let mut broker = Mosquitto::start().await;
    // A persistent session: messages published while this subscriber reconnects are queued for it.
    let sub = Subscriber::start(broker.port, BASE, true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(
        &sim_config(dir.path(), broker.port, 3, 5, "10ms", ""),
        dir.path(),
    );
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(10), || sub.max_seq() > 500).await,
        "data flows through mosquitto"
    );
    broker.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let committed_during_outage = db_max_seq(&db);
    broker.restart().await;
    sub.wait_connected().await;
    assert!(
        wait_for(Duration::from_secs(30), || sub.max_seq()
            > committed_during_outage)
        .await,
        "delivery resumes after the outage"
    );
    let backlog_end = db_max_seq(&db);
    assert!(
        sub.wait_for_all(backlog_end, Duration::from_secs(30)).await,
        "the backlog from the outage is delivered"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let committed = db_max_seq(&db);
    assert!(sub.wait_for_all(committed, Duration::from_secs(30)).await);
    assert_complete(&sub, committed);
}
