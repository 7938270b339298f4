//! The high-water marks retained on the broker (`<base>/highwater`) as a second identity source: a
//! database lost together with its marks file (a new disk, a restored backup of both) still starts a
//! new epoch above what subscribers saw; a broker that is down or mute at start delays it by at most the
//! fetch bound and changes nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn config(dir: &std::path::Path, port: u16) -> lineside::config::Config {
    let text = sim_config(dir, port, 2, 5, "10ms", "").replace(
        "max_readings_per_message = 200\n",
        "max_readings_per_message = 200\nstatus_interval = \"1s\"\n",
    );
    load(&text, dir)
}

/// Everything of the store goes: the database, its WAL and the marks file beside it.
fn lose_the_disk(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(lineside::store::marks_path(db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_store_lost_with_its_marks_file_continues_above_the_marks_retained_on_the_broker() {
    let broker = Mosquitto::start().await;
    let seen = subscribe_identities(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), broker.port);
    let db = cfg.store.path.clone();

    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(30), || seen
            .lock()
            .unwrap()
            .max_seq(None)
            > 2000)
        .await,
        "data flows"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen_before = seen.lock().unwrap().max_seq(None);
    let old_epochs = seen.lock().unwrap().epochs();
    assert_eq!(old_epochs.len(), 1, "{old_epochs:?}");
    {
        // The retained message covers everything subscribers saw (the last one went out at the stop;
        // the broker may hand it on a moment after the agent had its acknowledgement).
        wait_for(Duration::from_secs(5), || {
            seen.lock()
                .unwrap()
                .high_water
                .last()
                .is_some_and(|h| h["readings"].as_u64().unwrap_or(0) >= seen_before)
        })
        .await;
        let seen = seen.lock().unwrap();
        let last = seen.high_water.last().expect("a high-water message");
        assert_eq!(last["agent"], "test-gw");
        assert_eq!(last["epoch"], old_epochs[0].as_str());
        assert!(
            last["readings"].as_u64().unwrap() >= seen_before,
            "{last} vs {seen_before}"
        );
        assert!(last["ts"].is_string());
    }

    lose_the_disk(&db);
    let (stop, task) = spawn_agent(config(dir.path(), broker.port));
    let new_readings = |s: &Identities| {
        s.readings
            .keys()
            .filter(|(e, _)| *e != old_epochs[0])
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(30), || new_readings(
            &seen.lock().unwrap()
        ) > 500)
        .await,
        "readings of a new epoch: epochs {:?}",
        seen.lock().unwrap().epochs()
    );
    // The announcement, unless the identities are already broken (then the checks below say so).
    wait_for(Duration::from_secs(10), || {
        let s = seen.lock().unwrap();
        s.alarms.iter().any(|a| a["kind"] == "agent.store_reset")
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        seen.reused().is_empty(),
        "an (epoch, seq) named different readings: {:?}",
        seen.reused()
    );
    let epochs = seen.epochs();
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    let new_epoch = epochs.iter().find(|e| **e != old_epochs[0]).unwrap();
    let new_min = seen
        .readings
        .keys()
        .filter(|(e, _)| e == new_epoch)
        .map(|(_, s)| *s)
        .min()
        .unwrap();
    assert!(
        new_min > seen_before,
        "the new epoch's seqs continue above what subscribers saw ({new_min} vs {seen_before}): no seq reused"
    );
    let reset = seen
        .alarms
        .iter()
        .find(|a| a["kind"] == "agent.store_reset")
        .unwrap();
    assert_eq!(reset["marks_source"], "broker", "{reset}");
    assert_eq!(reset["reason"], "new database", "{reset}");
    assert_eq!(reset["old_epoch"], old_epochs[0].as_str(), "{reset}");
    assert_eq!(reset["new_epoch"], new_epoch.as_str(), "{reset}");
    assert!(reset["readings"]["high_water"].as_u64().unwrap() >= seen_before);
}

/// A broker that is down, and one that accepts the connection but never answers: the agent starts
/// after at most the fetch bound (2 s) and works as before (forwards once the broker is up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_broker_down_or_mute_at_start_delays_the_start_by_the_bound_at_most() {
    // Mute: a listener that accepts and never speaks MQTT.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for s in mute.incoming().flatten() {
                held.lock().unwrap().push(s);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), mute_port);
    let db = cfg.store.path.clone();
    let t0 = Instant::now();
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(20), || db_max_seq_or_zero(&db) > 0).await,
        "readings are stored"
    );
    let mute_start = t0.elapsed();
    stop.cancel();
    task.await.unwrap().unwrap();
    eprintln!("mute broker: first reading stored {mute_start:?} after the start");
    assert!(
        mute_start < Duration::from_secs(6),
        "the start waited {mute_start:?} for a mute broker (bound 2 s)"
    );

    // Down: nothing listens at start; the broker comes up afterwards and the readings reach it.
    let mut broker = Mosquitto::start().await;
    broker.stop();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), broker.port);
    let db = cfg.store.path.clone();
    let t0 = Instant::now();
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(20), || db_max_seq_or_zero(&db) > 0).await,
        "readings are stored"
    );
    let down_start = t0.elapsed();
    eprintln!("broker down: first reading stored {down_start:?} after the start");
    assert!(
        down_start < Duration::from_secs(6),
        "the start waited {down_start:?} for a broker that is down (bound 2 s)"
    );
    broker.restart().await;
    let seen = subscribe_identities(broker.port).await;
    assert!(
        wait_for(Duration::from_secs(30), || seen
            .lock()
            .unwrap()
            .max_seq(None)
            > 500)
        .await,
        "readings are forwarded once the broker is up"
    );
    assert!(
        wait_for(Duration::from_secs(10), || !seen
            .lock()
            .unwrap()
            .high_water
            .is_empty())
        .await,
        "the high-water message is published after the connection"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.alarms.iter().all(|a| a["kind"] != "agent.store_reset"));
}
