//! A message the broker refuses again and again cannot stop the stream (issue 10, item 2), and only
//! that message is quarantined: after a drop with several messages in flight the forwarder sends one
//! at a time until they are through, and only a drop with the refused message alone in flight is a
//! strike. After three, it is quarantined (kept in the store, skipped by the cursor, announced); every
//! other reading arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const BASE: &str = "lineside/test-gw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_message_the_broker_refuses_is_quarantined_and_the_stream_moves_on() {
    // The broker disconnects any client that sends a packet over 8 KiB.
    let broker = Mosquitto::start_with(|dir, port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 8192\n\
             max_queued_messages 0\nmax_inflight_messages 0\npersistence_location {}/\n",
            dir.display()
        )
    })
    .await;
    let sub = Subscriber::start(broker.port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    // Data messages stay well under the broker's limit; the default in-flight window, and several
    // devices publishing around the refused one, so its neighbours are in flight with it.
    let text = sim_config(dir.path(), broker.port, 6, 5, "10ms", "").replace(
        "max_readings_per_message = 200\n",
        "max_readings_per_message = 20\nmax_message_size = \"4KiB\"\nstatus_interval = \"1s\"\n",
    );
    // A slow gauge whose one reading is a 9 kB text: its data message is over the broker's limit, so
    // the broker drops the agent's connection every time it is published.
    let big = "s".repeat(9000);
    let text = format!(
        "{text}\n[[device]]\nname = \"big\"\ndriver = \"sim\"\ninterval = \"10m\"\nseed = 9\n\
         [[device.tag]]\nname = \"label\"\nkind = \"cycle\"\nvalues = [\"{big}\"]\nevery = 1\n"
    );
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(wait_for(Duration::from_secs(20), || sub.max_seq() > 200).await);

    assert!(
        wait_for(Duration::from_secs(60), || {
            sub.seen
                .lock()
                .unwrap()
                .alarms
                .iter()
                .any(|a| a["kind"] == "agent.message_quarantined")
        })
        .await,
        "the refused event is quarantined and announced"
    );
    let before = sub.max_seq();
    assert!(
        wait_for(Duration::from_secs(20), || sub.max_seq() > before + 500).await,
        "the stream moves on"
    );
    // Everything but the refused message arrives, while the agent runs.
    let target = db_max_seq(&db);
    let big_seqs = device_seqs(&db, "big");
    assert!(!big_seqs.is_empty());
    let others_missing = || -> Vec<u64> {
        let seen = sub.seen.lock().unwrap();
        seen.gaps(target)
            .into_iter()
            .filter(|s| !big_seqs.contains(s))
            .collect()
    };
    wait_for(Duration::from_secs(60), || others_missing().is_empty()).await;
    let missing = others_missing();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        missing.is_empty(),
        "{} of {target} readings of other devices missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let seen = sub.seen.lock().unwrap();
    let quarantined: Vec<&serde_json::Value> = seen
        .alarms
        .iter()
        .filter(|a| a["kind"] == "agent.message_quarantined")
        .collect();
    eprintln!("quarantined: {quarantined:?}");
    assert!(
        quarantined.iter().any(|q| q["stream"] == "readings"
            && q["device"] == "big"
            && q["reason"] == "refused_by_broker"),
        "{quarantined:?}"
    );
    // Only the refused message's seqs are quarantined: no neighbour was struck with it.
    for q in &quarantined {
        let (lo, hi) = (
            q["first_seq"].as_u64().unwrap(),
            q["last_seq"].as_u64().unwrap(),
        );
        assert!(
            q["device"] == "big" && (lo..=hi).all(|s| big_seqs.contains(&s)),
            "a message of another device was quarantined: {q}"
        );
    }
    assert!(
        !seen.readings.values().any(|(device, _)| device == "big"),
        "the refused message itself never got through"
    );
    let status = seen
        .status
        .iter()
        .rev()
        .find(|s| s["state"] == "online")
        .unwrap();
    assert!(
        status["metrics"]["forwarder"]["quarantined"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

/// The seqs of one device's readings in a database (opened read-only).
fn device_seqs(db: &std::path::Path, device: &str) -> std::collections::BTreeSet<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT r.seq FROM readings r JOIN tags t ON t.id = r.tag_id WHERE t.device = ?1")
        .unwrap();
    stmt.query_map([device], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|s| s.unwrap() as u64)
        .collect()
}
