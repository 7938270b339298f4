//! The store's integrity under faults (issue 10): the disk budget covers events, identity survives
//! storage loss, damaged pages, a full disk, age by arrival, bounded events.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::Utc;
use lineside_drivers::{Reading, Value};

use super::{cfg, reading};
use crate::config::StoreConfig;
use crate::store::budget::{self, Budget};
use crate::store::*;
use crate::store::{arrivals, identity, schema};

fn budget_cfg(dir: &std::path::Path, max: u64) -> StoreConfig {
    let mut c = cfg(dir);
    c.max_size = Some(max);
    c.maintenance_interval = Duration::from_millis(20);
    c
}

fn alarm_body(i: u64) -> serde_json::Value {
    serde_json::json!({
        "kind": "spc.rule", "severity": "violation", "characteristic": "bore", "rule": "nelson-1",
        "value": 74.1 + i as f64 * 1e-4, "limits": {"ucl": 74.01, "lcl": 73.99, "cl": 74.0},
        "context": {"part": "P-1", "lot": "L2611-02", "operator": "op-7", "note": "x".repeat(120)}
    })
}

/// Item 5: an SPC alarm storm with the broker up (events acknowledged as they are stored) and readings
/// not yet forwarded: the file stays within the budget and not one unforwarded reading is dropped.
#[tokio::test]
async fn an_alarm_storm_prunes_alarms_not_unforwarded_readings() {
    let dir = tempfile::tempdir().unwrap();
    let c = budget_cfg(dir.path(), 1024 * 1024);
    let store = Store::open(&c, 16).unwrap();
    let sink = store.sink();
    for i in 0..5 {
        sink.send(
            (0..1000)
                .map(|j| reading("a", (i * 1000 + j) as f64))
                .collect(),
        )
        .await
        .unwrap();
    }
    store.flush().await.unwrap();
    let stats = store.stats();
    let mut max_disk = 0;
    for i in 0..12_000u64 {
        let seq = store
            .append_event("spc.rule", Utc::now(), alarm_body(i))
            .await
            .unwrap();
        if i % 2 == 0 {
            store.acker().ack(Stream::Events, seq); // the broker is up (with a little lag)
        }
        if i % 500 == 0 {
            max_disk = max_disk.max(budget::disk_bytes(&c.path).unwrap());
        }
    }
    store.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    max_disk = max_disk.max(budget::disk_bytes(&c.path).unwrap());
    assert!(
        max_disk <= 1024 * 1024 * 11 / 10,
        "database + WAL reached {max_disk} bytes"
    );
    assert_eq!(
        stats.dropped_unforwarded.load(Relaxed),
        0,
        "no unforwarded reading may go"
    );
    let mut reader = store.reader().unwrap();
    assert_eq!(reader.readings_after(0, 100_000).unwrap().len(), 5000);
    assert!(
        stats.events_pruned.load(Relaxed) > 5000,
        "the old alarms went"
    );
    let events = reader.events_after(0, 100_000).unwrap();
    assert_eq!(
        events.last().unwrap().seq,
        store.watch_committed().borrow().events
    );
}

/// Item 5, broker down: unforwarded alarms beyond their share are dropped (counted per stream and
/// announced), readings are kept.
#[tokio::test]
async fn events_over_their_share_are_dropped_counted_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let c = budget_cfg(dir.path(), 1024 * 1024);
    let store = Store::open(&c, 16).unwrap();
    store
        .sink()
        .send((0..2000).map(|j| reading("a", j as f64)).collect())
        .await
        .unwrap();
    for i in 0..4000u64 {
        store
            .append_event("spc.rule", Utc::now(), alarm_body(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = store.stats();
    assert_eq!(stats.dropped_unforwarded.load(Relaxed), 0);
    let dropped = stats.dropped_events.load(Relaxed);
    assert!(dropped > 1000, "dropped {dropped}");
    assert!(stats.event_bytes.load(Relaxed) <= Budget::new(1024 * 1024, 10).events_high + 1024);
    let mut reader = store.reader().unwrap();
    let events = reader.events_after(0, 100_000).unwrap();
    let notice = events
        .iter()
        .find(|e| e.kind == "agent.data_dropped")
        .expect("announced");
    assert_eq!(notice.body["stream"], "events");
    assert_eq!(notice.body["reason"], "max_size");
    assert_eq!(reader.readings_after(0, 10_000).unwrap().len(), 2000);
}

/// Event size cap: nothing stored can exceed the MQTT packet size.
#[tokio::test]
async fn oversized_events_are_bounded_when_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let body = serde_json::json!({"kind": "agent.command_rejected", "id": "i".repeat(140_000),
        "request": {"cmd": "x", "seqs": (0..20_000).collect::<Vec<u64>>()}});
    store
        .append_event("agent.command_rejected", Utc::now(), body)
        .await
        .unwrap();
    let e = &store.reader().unwrap().events_after(0, 10).unwrap()[0];
    assert!(e.body.to_string().len() <= MAX_EVENT_BYTES);
    assert_eq!(e.body["truncated"], true);
    assert_eq!(e.body["kind"], "agent.command_rejected");
    assert_eq!(store.stats().events_truncated.load(Relaxed), 1);
}

fn epoch_of(store: &Store) -> u64 {
    store.reader().unwrap().epoch()
}

async fn fill(store: &Store, n: usize) {
    store
        .sink()
        .send((0..n).map(|j| reading("a", j as f64)).collect())
        .await
        .unwrap();
    store.flush().await.unwrap();
}

/// Item 6: a clean restart keeps the epoch; a database that lost its tail (WAL deleted after a kill -9,
/// a power cut) starts a new epoch with sequences above the high-water mark, announced.
#[tokio::test]
async fn a_database_that_went_backwards_gets_a_new_epoch_and_no_seq_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let store = Store::open(&c, 16).unwrap();
    let epoch = epoch_of(&store);
    assert_ne!(epoch, 0);
    fill(&store, 1000).await;
    store.close();

    let store = Store::open(&c, 16).unwrap();
    assert_eq!(epoch_of(&store), epoch, "a clean restart keeps the epoch");
    assert_eq!(store.stats().epoch_str(), format_epoch(epoch));
    store.close();

    // The tail is lost: as if the WAL holding seqs 501..1000 were gone.
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute("DELETE FROM readings WHERE seq > 500", [])
            .unwrap();
        conn.execute(
            "UPDATE meta SET value = 501 WHERE key = 'next_reading_seq'",
            [],
        )
        .unwrap();
    }
    let store = Store::open(&c, 16).unwrap();
    let new_epoch = epoch_of(&store);
    assert_ne!(new_epoch, epoch, "a new epoch");
    fill(&store, 10).await;
    let mut reader = store.reader().unwrap();
    let readings = reader.readings_after(500, 100).unwrap();
    assert_eq!(
        readings[0].seq, 1001,
        "seqs continue above the high-water mark"
    );
    let events = reader.events_after(0, 10).unwrap();
    let reset = events
        .iter()
        .find(|e| e.kind == "agent.store_reset")
        .expect("announced");
    assert_eq!(reset.body["old_epoch"], format_epoch(epoch));
    assert_eq!(reset.body["new_epoch"], format_epoch(new_epoch));
    assert_eq!(reset.body["readings"]["high_water"], 1000);
    assert_eq!(reset.body["readings"]["last_seq_in_database"], 500);
    drop(reader);
    store.close();

    // Truncated to 0 bytes: a new database, while the marks say 1010.
    for suffix in ["", "-wal", "-shm"] {
        let mut p = c.path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p);
    }
    let store = Store::open(&c, 16).unwrap();
    assert_ne!(epoch_of(&store), new_epoch);
    fill(&store, 1).await;
    let mut reader = store.reader().unwrap();
    assert_eq!(reader.readings_after(0, 10).unwrap()[0].seq, 1011);
    let events = reader.events_after(0, 10).unwrap();
    assert_eq!(events[0].kind, "agent.store_reset");
    assert_eq!(events[0].body["reason"], "new database");
    assert!(events[0].seq > 1, "event seqs continue too");
}

/// Schema migration: a v0.1.0 database opens, keeps its data and gets an epoch.
#[tokio::test]
async fn a_v0_1_0_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE tags (id INTEGER PRIMARY KEY, device TEXT NOT NULL, tag TEXT NOT NULL, unit TEXT NOT NULL, UNIQUE (device, tag, unit));
             CREATE TABLE readings (seq INTEGER PRIMARY KEY, tag_id INTEGER NOT NULL, ts INTEGER NOT NULL, kind INTEGER NOT NULL, value, quality INTEGER NOT NULL, reason TEXT);
             CREATE TABLE events (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', 1), ('next_reading_seq', 3), ('next_event_seq', 2), ('cursor_readings', 1);
             INSERT INTO tags VALUES (1, 'd1', 'a', 'mm');
             INSERT INTO readings VALUES (1, 1, 1700000000000000, 1, 1.5, 0, NULL), (2, 1, 1700000000000000, 1, 2.5, 0, NULL);
             INSERT INTO events VALUES (1, 1700000000000000, 'test', '{}');",
        )
        .unwrap();
    }
    let mut c2 = c.clone();
    c2.max_age = Some(Duration::from_secs(3600)); // device timestamps from 2023: not pruned by age
    let store = Store::open(&c2, 16).unwrap();
    assert_ne!(epoch_of(&store), 0);
    fill(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut reader = store.reader().unwrap();
    let all = reader.readings_after(0, 10).unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(reader.cursor(Stream::Readings).unwrap(), 1);
    store.close();
    let conn = rusqlite::Connection::open(&c.path).unwrap();
    assert_eq!(
        schema::meta_get(&conn, "schema_version").unwrap(),
        Some(schema::SCHEMA_VERSION)
    );
}

/// Item 11: max_age counts from arrival, not from the device's timestamp.
#[tokio::test]
async fn max_age_counts_from_arrival_not_the_device_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_age = Some(Duration::from_secs(24 * 3600));
    c.maintenance_interval = Duration::from_millis(10);
    let store = Store::open(&c, 16).unwrap();
    let mut r = reading("a", 1.0);
    r.ts = Utc::now() - chrono::Duration::days(10); // a device clock that was wrong (or set later)
    store.sink().send(vec![r; 100]).await.unwrap();
    store.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .reader()
            .unwrap()
            .readings_after(0, 1000)
            .unwrap()
            .len(),
        100
    );
    assert_eq!(store.stats().dropped_unforwarded.load(Relaxed), 0);
}

#[derive(Clone)]
struct FakeClock {
    wall_us: Arc<std::sync::atomic::AtomicI64>,
    mono_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl arrivals::Clock for FakeClock {
    fn wall_us(&self) -> i64 {
        self.wall_us.load(Relaxed)
    }
    fn mono(&self) -> Duration {
        Duration::from_millis(self.mono_ms.load(Relaxed))
    }
}

/// Item 11: readings received before the wall clock stepped forward (NTP fixing a clock that was wrong at
/// boot) are not pruned as too old; they are once they really spent max_age in the store.
#[tokio::test]
async fn a_clock_step_does_not_age_stored_readings() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_age = Some(Duration::from_secs(3600));
    c.maintenance_interval = Duration::from_millis(10);
    let clock = FakeClock {
        wall_us: Arc::new(1_577_836_800_000_000i64.into()), // 2020-01-01, as after a boot without RTC
        mono_ms: Arc::new(0u64.into()),
    };
    let store = Store::open_with_clock(&c, 16, Box::new(clock.clone()), None).unwrap();
    store
        .sink()
        .send(vec![reading("a", 1.0); 50])
        .await
        .unwrap();
    store.flush().await.unwrap();
    // A minute passes (the arrival marks cover the readings).
    clock.wall_us.fetch_add(60_000_000, Relaxed);
    clock.mono_ms.fetch_add(60_000, Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // NTP steps the clock six years forward; a second passes.
    clock.wall_us.store(Utc::now().timestamp_micros(), Relaxed);
    clock.mono_ms.fetch_add(1000, Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut reader = store.reader().unwrap();
    assert_eq!(
        reader.readings_after(0, 1000).unwrap().len(),
        50,
        "not pruned after the step"
    );
    // Two hours really pass.
    clock.wall_us.fetch_add(7_200_000_000, Relaxed);
    clock.mono_ms.fetch_add(7_200_000, Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        reader.readings_after(0, 1000).unwrap().len(),
        0,
        "pruned by age"
    );
    assert_eq!(store.stats().dropped_unforwarded.load(Relaxed), 50);
}

/// Item 10: an event that cannot be stored (disk full) is held and stored once there is room again; a
/// stop while a commit keeps failing still returns promptly.
#[tokio::test]
async fn events_survive_a_full_disk_and_close_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let store = Arc::new(Store::open(&c, 16).unwrap());
    fill(&store, 100).await;
    let pages: i64 = rusqlite::Connection::open(&c.path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store.set_pragma("max_page_count", pages); // the "disk" is full
    let big = serde_json::json!({"kind": "spc.rule", "note": "n".repeat(8000)});
    let s = store.clone();
    let pending = tokio::spawn(async move { s.append_event("spc.rule", Utc::now(), big).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "the event waits instead of being lost"
    );
    assert_eq!(store.stats().events_held.load(Relaxed), 1);
    store.set_pragma("max_page_count", 1 << 30); // room again
    let seq = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(
        store.reader().unwrap().events_after(0, 10).unwrap().len(),
        1
    );

    // Full again, with readings that cannot be committed: close still returns in bounded time.
    store.set_pragma("max_page_count", pages);
    store
        .sink()
        .send((0..5000).map(|j| reading("big", j as f64)).collect())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = Arc::try_unwrap(store).ok().unwrap();
    let t = std::time::Instant::now();
    let finished = tokio::task::spawn_blocking(move || store.close_in_time())
        .await
        .unwrap();
    assert!(finished, "the writer gave up the failing commit");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "close took {:?}",
        t.elapsed()
    );
    let conn = rusqlite::Connection::open(&c.path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100, "what was committed stays committed");
}

/// Item 7: a damaged page among unforwarded readings: the reader skips what it cannot read, the drop
/// is counted and announced with reason "corrupt", and reading goes on to the end.
#[tokio::test]
async fn a_damaged_page_is_skipped_counted_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let store = Store::open(&c, 16).unwrap();
    for _ in 0..20 {
        fill(&store, 1000).await;
    }
    store.close();
    // A leaf page of the readings table in the middle of the file.
    let (page, page_size) = {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        let pages: Vec<i64> = conn
            .prepare("SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf' ORDER BY path")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (pages[pages.len() / 2], size)
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&c.path)
            .unwrap();
        f.seek(SeekFrom::Start(((page - 1) * page_size) as u64))
            .unwrap();
        f.write_all(&[0xFF; 16]).unwrap(); // the b-tree page header
    }
    let store = Store::open(&c, 16).unwrap();
    let mut reader = store.reader().unwrap();
    let mut after = 0;
    let mut got = 0;
    for _ in 0..1000 {
        let rows = reader.readings_after(after, 500).unwrap();
        let Some(last) = rows.last() else { break };
        got += rows.len() as u64;
        after = last.seq;
        store.acker().ack(Stream::Readings, after);
    }
    assert_eq!(after, 20_000, "reading went on to the end");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dropped = store.stats().dropped_unforwarded.load(Relaxed);
    assert!(dropped > 0 && dropped < 1000, "dropped {dropped}");
    assert_eq!(got + dropped, 20_000, "every seq is either read or counted");
    let events = reader.events_after(0, 10).unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "agent.data_dropped")
        .expect("announced");
    assert_eq!(e.body["reason"], "corrupt");
    assert_eq!(e.body["stream"], "readings");
    // The integrity check at start saw it too.
    assert!(
        wait_until(|| store.stats().integrity_problems.load(Relaxed) > 0).await,
        "quick_check reports the damage"
    );
}

async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Integers at the ends of both 64-bit ranges come back exactly (a u64 above i64::MAX does not fit
/// SQLite's INTEGER and is kept as decimal text with its own kind).
#[tokio::test]
async fn sixty_four_bit_integers_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let values = [
        Value::U64(u64::MAX),
        Value::U64(12_345_678_901_234_567_890),
        Value::from_u64(i64::MAX as u64 + 1),
        Value::I64(i64::MIN),
        Value::I64(i64::MAX),
        Value::I64(0),
    ];
    let batch: Vec<Reading> = values
        .iter()
        .map(|v| Reading {
            value: Some(v.clone()),
            ..reading("n", 0.0)
        })
        .collect();
    store.sink().send(batch).await.unwrap();
    store.flush().await.unwrap();
    let back: Vec<Option<Value>> = store
        .reader()
        .unwrap()
        .readings_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|s| s.reading.value)
        .collect();
    let want: Vec<Option<Value>> = values.into_iter().map(Some).collect();
    assert_eq!(back, want);
}

#[tokio::test]
async fn latest_per_tag_is_bounded_by_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cfg(dir.path()), 16).unwrap();
    let sink = store.sink();
    // seq 1..=6: a, b, a, c, a, b
    let batch = ["a", "b", "a", "c", "a", "b"]
        .iter()
        .enumerate()
        .map(|(i, t)| reading(t, i as f64 + 1.0))
        .collect();
    sink.send(batch).await.unwrap();
    store.flush().await.unwrap();
    let mut reader = store.reader().unwrap();
    let latest = reader.latest_per_tag(6, 100).unwrap();
    let got: Vec<(u64, &str)> = latest.iter().map(|r| (r.seq, &*r.reading.tag)).collect();
    assert_eq!(got, [(4, "c"), (5, "a"), (6, "b")]);
    let upto5 = reader.latest_per_tag(5, 100).unwrap();
    assert_eq!(upto5.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 4, 5]);
    let recent = reader.latest_per_tag(6, 2).unwrap();
    assert_eq!(
        recent.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [5, 6],
        "c is older than the window"
    );
    drop(sink);
    store.close();
}

/// The forwarder's view of the store ends at the durable high-water marks: while the marks cannot be
/// written, newly committed readings and events stay in the store (committed, not forwardable), and
/// they follow as soon as the marks are written again.
#[tokio::test]
async fn the_forwarding_reader_stops_at_the_durable_marks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg(dir.path());
    let store = Store::open(&cfg, 16).unwrap();
    let mut durable = store.watch_durable();
    store
        .sink()
        .send((0..100).map(|i| reading("a", i as f64)).collect())
        .await
        .unwrap();
    store.flush().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        durable.wait_for(|d| d.readings == 100),
    )
    .await
    .unwrap()
    .unwrap();
    // What the marks file reserves: commits up to it go out without a write.
    let marks = identity::marks_path(&cfg.path);
    let reserved = identity::read_marks(&marks).unwrap().1.reserved;
    assert!(reserved.readings > 100 && reserved.events > 0);
    // A directory where the marks file and its temporary file go: every write fails.
    std::fs::remove_file(&marks).unwrap();
    std::fs::create_dir(&marks).unwrap();
    let mut tmp = marks.as_os_str().to_owned();
    tmp.push(".tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::create_dir(&tmp).unwrap();
    // Past the reservation by 50 readings: those must wait for a write that cannot happen.
    let total = reserved.readings + 50;
    let more = (total - 100) as usize;
    for chunk in (0..more).collect::<Vec<_>>().chunks(4096) {
        store
            .sink()
            .send(chunk.iter().map(|i| reading("a", *i as f64)).collect())
            .await
            .unwrap();
    }
    // (`flush` waits for the marks to cover what it committed: not here; give it its time instead.)
    let _ = tokio::time::timeout(Duration::from_secs(2), store.flush()).await;
    store
        .append_event("test", Utc::now(), serde_json::json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.watch_committed().borrow().readings, total);
    assert_eq!(
        *store.watch_durable().borrow(),
        Committed {
            readings: reserved.readings,
            events: 1
        },
        "readings up to the reservation on disk, the event inside its own"
    );
    let mut reader = store.forwarding_reader().unwrap();
    let rows = reader.readings_after(reserved.readings - 10, 1000).unwrap();
    assert_eq!(rows.last().map(|r| r.seq), Some(reserved.readings));
    assert_eq!(reader.events_after(0, 10).unwrap().len(), 1);
    assert_eq!(
        store
            .reader()
            .unwrap()
            .readings_after(reserved.readings - 10, 1000)
            .unwrap()
            .len(),
        60
    );
    // Writable again: the retry covers everything committed meanwhile.
    std::fs::remove_dir(&marks).unwrap();
    std::fs::remove_dir(&tmp).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        durable.wait_for(|d| d.readings == total && d.events == 1),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        reader
            .readings_after(reserved.readings - 10, 1000)
            .unwrap()
            .len(),
        60
    );
    assert_eq!(reader.events_after(0, 10).unwrap().len(), 1);
    store.close();
}

/// After an unclean stop the seqs continue above the reservation; the unused seqs between are no
/// backlog (the status page and metrics counted them until the forwarder passed the gap).
#[tokio::test]
async fn the_backlog_does_not_count_seqs_skipped_after_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg(dir.path());
    {
        let store = Store::open(&cfg, 16).unwrap();
        store
            .sink()
            .send((0..100).map(|i| reading("a", i as f64)).collect())
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.acker().ack(Stream::Readings, 40);
        store.flush().await.unwrap();
        store.close();
    }
    // What a kill -9 leaves: the marks file with the reservation still ahead of the commits.
    let marks = identity::marks_path(&cfg.path);
    let (epoch, mut m) = identity::read_marks(&marks).unwrap();
    m.reserved.readings = 20_000;
    identity::write_marks(&marks, epoch, m).unwrap();
    let store = Store::open(&cfg, 16).unwrap();
    store
        .sink()
        .send((0..10).map(|i| reading("a", i as f64)).collect())
        .await
        .unwrap();
    store.flush().await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.last_seq.load(Relaxed), 20_010, "seqs continue above");
    assert_eq!(stats.backlog(), 70, "60 unacknowledged before, 10 after");
    store.acker().ack(Stream::Readings, 100);
    store.flush().await.unwrap();
    assert_eq!(stats.backlog(), 10, "the gap is not backlog");
    store.acker().ack(Stream::Readings, 20_005);
    store.flush().await.unwrap();
    assert_eq!(stats.backlog(), 5);
    store.close();
}
