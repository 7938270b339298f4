//! A message the broker refuses again and again cannot stop the stream (issue 10, item 2): after
//! three dropped connections with it oldest unacknowledged, it is quarantined (kept in the store,
//! skipped by the cursor, announced) and everything else arrives.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};

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
    // Data messages stay well under the broker's limit.
    let text = sim_config(dir.path(), broker.port, 2, 5, "20ms", "").replace(
        "max_readings_per_message = 200\n",
        "max_readings_per_message = 20\nmax_message_size = \"4KiB\"\nstatus_interval = \"1s\"\n",
    );
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(wait_for(Duration::from_secs(20), || sub.max_seq() > 200).await);

    // A 6 kB command the agent accepts; SPC's rejection event echoes its id twice (> 8 KiB), so the
    // broker drops the agent's connection every time the event is published.
    let mut opts = MqttOptions::new("test-pub", "127.0.0.1", broker.port);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let body = serde_json::json!({"cmd": "nonsense", "id": "i".repeat(6000)}).to_string();
    client
        .publish(format!("{BASE}/cmd"), QoS::AtLeastOnce, false, body)
        .await
        .unwrap();

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
    let committed = db_max_seq(&db);
    assert!(sub.wait_for_all(committed, Duration::from_secs(30)).await);
    let seen = sub.seen.lock().unwrap();
    let q = seen
        .alarms
        .iter()
        .find(|a| a["kind"] == "agent.message_quarantined")
        .unwrap();
    assert_eq!(q["stream"], "events");
    assert_eq!(q["reason"], "refused_by_broker");
    assert_eq!(q["first_seq"], q["last_seq"]);
    assert!(
        !seen
            .alarms
            .iter()
            .any(|a| a["kind"] == "agent.command_rejected"),
        "the refused event itself never got through"
    );
    let status = seen
        .status
        .iter()
        .rev()
        .find(|s| s["state"] == "online")
        .unwrap();
    assert_eq!(status["metrics"]["forwarder"]["quarantined"], 1);
}
