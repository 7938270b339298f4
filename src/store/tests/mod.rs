use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::Utc;
use lineside_drivers::{Quality, Reading, Value};

use super::*;
use crate::config::{StoreConfig, Synchronous};

pub(super) fn cfg(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("t.db"),
        flush_interval: Duration::from_millis(5),
        ..StoreConfig::default()
    }
}

pub(super) fn reading(tag: &str, v: f64) -> Reading {
    Reading {
        device: Arc::from("d1"),
        tag: Arc::from(tag),
        ts: Utc::now(),
        value: Some(Value::F64(v)),
        quality: Quality::Good,
        unit: Some(Arc::from("mm")),
    }
}

#[tokio::test]
async fn sequences_are_contiguous_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let sink = store.sink();
    for i in 0..10 {
        sink.send(
            (0..100)
                .map(|j| reading("a", (i * 100 + j) as f64))
                .collect(),
        )
        .await
        .unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(store.watch_committed().borrow().readings, 1000);
    let ev = store
        .append_event("test", Utc::now(), serde_json::json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(ev, 1);
    store.acker().ack(Stream::Readings, 400);
    drop(sink);
    store.close();

    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let mut reader = store.reader().unwrap();
    assert_eq!(
        reader.cursor(Stream::Readings).unwrap(),
        400,
        "cursor persisted at shutdown"
    );
    store.sink().send(vec![reading("b", 1.0)]).await.unwrap();
    store.flush().await.unwrap();
    let all = reader.readings_after(0, 10_000).unwrap();
    assert_eq!(all.len(), 1001);
    assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    assert_eq!(all[999].reading.value, Some(Value::F64(999.0)));
    assert_eq!(&*all[1000].reading.tag, "b");
    assert_eq!(all[0].reading.unit.as_deref(), Some("mm"));
    assert_eq!(
        store
            .append_event("test", Utc::now(), serde_json::json!({}))
            .await
            .unwrap(),
        2
    );
    let tags = store.stats().tag_counters();
    assert_eq!(
        tags.iter().map(|t| t.committed).sum::<u64>(),
        1,
        "counters count this process's commits"
    );
}

#[tokio::test]
async fn every_value_kind_and_quality_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let mut batch = vec![reading("f", 1.5)];
    let mut r = reading("i", 0.0);
    r.value = Some(Value::I64(-7));
    r.unit = None;
    batch.push(r);
    let mut r = reading("b", 0.0);
    r.value = Some(Value::Bool(true));
    batch.push(r);
    let mut r = reading("s", 0.0);
    r.value = Some(Value::Str(Arc::from("LOT-42")));
    batch.push(r);
    let mut r = reading("x", 0.0);
    r.value = None;
    r.quality = Quality::Bad(Arc::from("timeout"));
    batch.push(r);
    let mut r = reading("u", 2.0);
    r.quality = Quality::Uncertain(Arc::from("sensor not calibrated"));
    batch.push(r);
    store.sink().send(batch.clone()).await.unwrap();
    store.flush().await.unwrap();
    let back: Vec<Reading> = store
        .reader()
        .unwrap()
        .readings_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|s| s.reading)
        .collect();
    for (a, b) in batch.iter().zip(&back) {
        assert_eq!(a.value, b.value);
        assert_eq!(a.quality, b.quality);
        assert_eq!(a.unit, b.unit);
        assert_eq!(a.ts.timestamp_micros(), b.ts.timestamp_micros());
    }
}

#[tokio::test]
async fn committed_batches_are_broadcast_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let mut rx = store.subscribe();
    store
        .sink()
        .send(vec![reading("a", 1.0), reading("a", 2.0)])
        .await
        .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.first_seq, 1);
    assert_eq!(batch.iter().map(|(s, _)| s).collect::<Vec<_>>(), [1, 2]);
    // Durable before it is announced: a second connection sees it.
    assert_eq!(
        store.reader().unwrap().readings_after(0, 10).unwrap().len(),
        2
    );
}

#[tokio::test]
async fn the_budget_prunes_oldest_first_and_counts_unforwarded_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_size = Some(1024 * 1024);
    c.maintenance_interval = Duration::from_millis(20);
    c.synchronous = Synchronous::Normal;
    let store = Store::open(&c, 16).unwrap();
    let sink = store.sink();
    // Forwarded up to 1000; then far more than 1 MiB of readings.
    for i in 0..60 {
        sink.send(
            (0..1000)
                .map(|j| reading("a", (i * 1000 + j) as f64))
                .collect(),
        )
        .await
        .unwrap();
        if i == 1 {
            store.flush().await.unwrap();
            store.acker().ack(Stream::Readings, 1000);
        }
    }
    store.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = store.stats();
    let disk = stats.disk_bytes.load(Relaxed);
    assert!(
        disk <= 1024 * 1024 * 11 / 10,
        "database + WAL {disk} bytes exceeds the budget"
    );
    let dropped = stats.dropped_unforwarded.load(Relaxed);
    assert!(dropped > 0);
    let mut reader = store.reader().unwrap();
    let left = reader.readings_after(0, 100_000).unwrap();
    let first = left[0].seq;
    assert_eq!(
        left.last().unwrap().seq,
        60_000,
        "the newest readings are kept"
    );
    assert_eq!(
        dropped,
        first - 1 - 1000,
        "every pruned reading past the cursor counts as dropped"
    );
    let events = reader.events_after(0, 100).unwrap();
    assert!(
        events.iter().any(|e| e.kind == "agent.data_dropped"),
        "an agent alarm is raised"
    );
    assert!(
        stats.cursor_readings.load(Relaxed) >= first - 1,
        "the cursor skips what was dropped"
    );
}

mod integrity;
mod tag_memory;
