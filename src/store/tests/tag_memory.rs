//! Memory per configured tag (issue 14): the store's tag tables share one allocation per name instead
//! of copying it, so an idle agent with 10,000 tags does not hold tens of thousands of small strings.

use std::sync::Arc;

use chrono::Utc;
use lineside_drivers::{Quality, Reading, Value};

use super::cfg;
use crate::store::*;

fn reading(device: &Arc<str>, tag: &Arc<str>, unit: &Arc<str>) -> Reading {
    Reading {
        device: device.clone(),
        tag: tag.clone(),
        ts: Utc::now(),
        value: Some(Value::F64(1.0)),
        quality: Quality::Good,
        unit: Some(unit.clone()),
    }
}

#[tokio::test]
async fn tag_counters_share_the_readings_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let (d, u): (Arc<str>, Arc<str>) = (Arc::from("plc"), Arc::from("mm"));
    let tags: Vec<Arc<str>> = (0..3)
        .map(|i| Arc::from(format!("t{i}").as_str()))
        .collect();
    store
        .sink()
        .send(tags.iter().map(|t| reading(&d, t, &u)).collect())
        .await
        .unwrap();
    store.flush().await.unwrap();
    let counters = store.stats().tag_counters();
    assert_eq!(counters.len(), 3);
    for c in &counters {
        assert!(
            Arc::ptr_eq(&c.device, &d),
            "the device name is the reading's"
        );
        assert!(
            tags.iter().any(|t| Arc::ptr_eq(&c.tag, t)),
            "the tag name is the reading's, not a copy"
        );
    }
    store.close();
}

#[tokio::test]
async fn tags_loaded_at_start_share_device_and_unit_names() {
    let dir = tempfile::tempdir().unwrap();
    let (d, u): (Arc<str>, Arc<str>) = (Arc::from("plc"), Arc::from("mm"));
    let tags: Vec<Arc<str>> = (0..3)
        .map(|i| Arc::from(format!("t{i}").as_str()))
        .collect();
    {
        let store = Store::open(&cfg(dir.path()), 16).unwrap();
        store
            .sink()
            .send(tags.iter().map(|t| reading(&d, t, &u)).collect())
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.close();
    }
    // A restart: the writer and a reader load the tag table from the database.
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let counters = store.stats().tag_counters();
    assert_eq!(counters.len(), 3);
    assert!(
        counters
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].device, &w[1].device)),
        "one device name for all its tags in the writer's table"
    );
    let read = store.reader().unwrap().readings_after(0, 100).unwrap();
    assert_eq!(read.len(), 3);
    for w in read.windows(2) {
        let (a, b) = (&w[0].reading, &w[1].reading);
        assert!(
            Arc::ptr_eq(&a.device, &b.device),
            "one device name per reader"
        );
        let (Some(ua), Some(ub)) = (&a.unit, &b.unit) else {
            panic!("units kept");
        };
        assert!(Arc::ptr_eq(ua, ub), "one unit name per reader");
        assert!(!Arc::ptr_eq(&a.tag, &b.tag));
    }
    store.close();
}

/// A closed store in `dir` holding one reading of plc/t0 (mm), for tests that then damage the file.
async fn one_reading_stored(dir: &std::path::Path) -> (Arc<str>, Arc<str>, Arc<str>) {
    let (d, u): (Arc<str>, Arc<str>) = (Arc::from("plc"), Arc::from("mm"));
    let t0: Arc<str> = Arc::from("t0");
    let store = Store::open(&cfg(dir), 16).unwrap();
    store.sink().send(vec![reading(&d, &t0, &u)]).await.unwrap();
    store.flush().await.unwrap();
    store.close();
    (d, u, t0)
}

/// Tag ids come from the file: a damaged or hand-edited `tags` row with a huge or negative id must not
/// make the writer or a reader allocate by it (they used to index vectors by id and would abort), and
/// tags added after it still count and read back by name.
#[tokio::test]
async fn a_damaged_tag_id_neither_aborts_nor_loses_names() {
    let dir = tempfile::tempdir().unwrap();
    let (d, u, t0) = one_reading_stored(dir.path()).await;
    {
        let conn = rusqlite::Connection::open(cfg(dir.path()).path).unwrap();
        for (id, tag) in [(1i64 << 40, "far"), (-5, "negative"), (i64::MAX, "last")] {
            conn.execute(
                "INSERT INTO tags (id, device, tag, unit) VALUES (?1, 'plc', ?2, '')",
                rusqlite::params![id, tag],
            )
            .unwrap();
        }
    }
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    // A new tag now gets an id SQLite picks above (or, past i64::MAX, anywhere among) the damaged ones.
    let t1: Arc<str> = Arc::from("t1");
    store
        .sink()
        .send(vec![reading(&d, &t0, &u), reading(&d, &t1, &u)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    let mut counters = store.stats().tag_counters();
    counters.sort_by(|a, b| a.tag.cmp(&b.tag));
    let counts: Vec<(&str, u64)> = counters.iter().map(|c| (&*c.tag, c.committed)).collect();
    assert_eq!(
        counts,
        [
            ("far", 0),
            ("last", 0),
            ("negative", 0),
            ("t0", 1),
            ("t1", 1)
        ]
    );
    let read = store.reader().unwrap().readings_after(0, 100).unwrap();
    let tags: Vec<&str> = read.iter().map(|r| &*r.reading.tag).collect();
    assert_eq!(tags, ["t0", "t0", "t1"]);
    store.close();
}

/// Rows naming a tag the table does not have (a damaged database) are skipped, and the tag table is
/// read again once per read, not once per such row.
#[tokio::test]
async fn readings_of_an_unknown_tag_are_skipped_with_one_reload_per_read() {
    let dir = tempfile::tempdir().unwrap();
    one_reading_stored(dir.path()).await;
    {
        let conn = rusqlite::Connection::open(cfg(dir.path()).path).unwrap();
        for seq in 2..=1001i64 {
            conn.execute(
                "INSERT INTO readings (seq, tag_id, ts, kind, value, quality) VALUES (?1, 999, 0, 0, 1.0, 0)",
                rusqlite::params![seq],
            )
            .unwrap();
        }
    }
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let mut reader = store.reader().unwrap();
    let read = reader.readings_after(0, 2000).unwrap();
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
    assert!(
        reader.tag_loads <= 2,
        "{} tag table reads",
        reader.tag_loads
    );
    store.close();
}
