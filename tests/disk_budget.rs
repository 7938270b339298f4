//! A tiny disk budget with the broker down: the database stays within budget, drops are counted and
//! reported (metrics, and an agent alarm once the broker is back), and the agent keeps running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

async fn status(port: u16) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    serde_json::from_str(buf.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

fn disk(db: &std::path::Path) -> u64 {
    let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(db) + len(&db.with_extension("db-wal"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_budget_with_the_broker_down() {
    const BUDGET: u64 = 1024 * 1024;
    // The agent reaches the broker through a proxy that stays closed until the test's subscriber is in
    // place: otherwise the (non-retained) alarm could reach the broker before anyone listens for it.
    let broker_port = free_port(); // nothing listens here yet
    let proxy = Proxy::start(broker_port).await;
    proxy.cut();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut text = sim_config(dir.path(), proxy.port, 4, 25, "10ms", "max_size = \"1MiB\"");
    text = text.replace(
        "[agent]\n",
        &format!("[agent]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);

    let mut peak = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(disk(&db));
    }
    eprintln!("database + WAL peaked at {peak} bytes (budget {BUDGET})");
    assert!(
        peak <= BUDGET * 11 / 10,
        "database + WAL peaked at {peak} bytes, budget {BUDGET}"
    );
    let s1 = status(metrics_port).await;
    let dropped = s1["store"]["dropped_unforwarded"].as_u64().unwrap();
    assert!(dropped > 0, "drops are counted: {s1}");
    assert_eq!(s1["forwarder"]["connected"], false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s2 = status(metrics_port).await;
    assert!(
        s2["store"]["committed"].as_u64() > s1["store"]["committed"].as_u64(),
        "ingest never stops because of the budget"
    );

    // The broker comes back: the drop alarm is delivered, and data flows again.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{broker_port}").parse().unwrap();
    lineside::broker::start(addr).unwrap();
    lineside::broker::wait_ready(addr).await.unwrap();
    let sub = Subscriber::start(broker_port, "lineside/test-gw", false).await;
    proxy.restore();
    assert!(
        wait_for(Duration::from_secs(30), || sub
            .seen
            .lock()
            .unwrap()
            .alarms
            .iter()
            .any(|a| a["kind"] == "agent.data_dropped"))
        .await,
        "the agent alarm for dropped data reaches the broker"
    );
    let alarm = sub
        .seen
        .lock()
        .unwrap()
        .alarms
        .iter()
        .find(|a| a["kind"] == "agent.data_dropped")
        .cloned()
        .unwrap();
    assert!(alarm["count"].as_u64().unwrap() > 0);
    assert_eq!(alarm["reason"], "max_size");
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq() > 0).await,
        "data flows once the broker is back"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
