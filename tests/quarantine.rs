//! A message the broker refuses again and again cannot stop the stream (issue 10, item 2): after
//! three dropped connections with it oldest unacknowledged, it is quarantined (kept in the store,
//! skipped by the cursor, announced) and everything else arrives.

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
    // Data messages stay well under the broker's limit. One data message in flight at a time: with more,
    // the "oldest unacknowledged at the drop" rule can strike a neighbour (README, known weakness).
    let text = sim_config(dir.path(), broker.port, 2, 5, "20ms", "").replace(
        "max_readings_per_message = 200\n",
        "max_readings_per_message = 20\nmax_message_size = \"4KiB\"\nstatus_interval = \"1s\"\ninflight = 1\n",
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
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = db_max_seq(&db);
    // Known weakness (README): the quarantine takes the oldest unacknowledged message at each dropped
    // connection, and a neighbour of the refused message can be struck with it; what is asserted here is
    // that the stream moves on, the refused message is quarantined and nothing of it got through.
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
