//! kill -9 the real binary mid-stream and start it again: every reading committed before the kill
//! arrives, and sequence numbers continue without a gap or reuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn spawn_binary(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lineside"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start lineside")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_nothing_that_was_committed() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, "lineside/test-gw", false).await;
    let dir = tempfile::tempdir().unwrap();
    let text = sim_config(dir.path(), port, 2, 5, "10ms", "");
    let cfg = load(&text, dir.path());
    let config_path = dir.path().join("lineside.toml");
    let db = cfg.store.path.clone();

    let mut agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq() > 1000).await,
        "data flows"
    );
    agent.kill().unwrap(); // SIGKILL: no flush, no goodbye
    agent.wait().unwrap();
    let committed_at_kill = db_max_seq(&db);
    assert!(committed_at_kill > 1000);

    let mut agent = spawn_binary(&config_path);
    assert!(
        sub.wait_for_all(committed_at_kill, Duration::from_secs(30))
            .await,
        "readings committed before the kill arrive after the restart: missing {:?}",
        sub.seen
            .lock()
            .unwrap()
            .gaps(committed_at_kill)
            .iter()
            .take(10)
            .collect::<Vec<_>>()
    );
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq()
            > committed_at_kill + 500)
        .await,
        "new readings continue the sequence"
    );

    // A clean stop with SIGTERM flushes and exits within 5 s.
    let t = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        t.elapsed()
    );

    // After the kill the sequences continue above the seqs the killed agent had reserved: every
    // stored reading arrived, and no seq was reused (the identities below the kill are unchanged).
    let committed = db_max_seq(&db);
    let stored = db_seqs(&db, committed);
    assert!(sub.wait_for_stored(&stored, Duration::from_secs(30)).await);
    let seen = sub.seen.lock().unwrap();
    assert!(seen.missing(&stored).is_empty());
    assert!(
        seen.order_violations.is_empty(),
        "{:?}",
        &seen.order_violations[..seen.order_violations.len().min(5)]
    );
}
