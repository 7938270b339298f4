//! Store ingest: readings committed per second through the writer thread, side by side with the
//! physical ceiling: a plain rusqlite loop (one cached single-row INSERT per reading) writing the same
//! rows, in transactions of the same size as the writer made, into the same schema on the same disk.
//! The ratio writer / plain is the writer's efficiency (target ≥ 80 %).
//!
//! Run: `cargo bench --bench store_ingest` (criterion prints both rates; the ratio is printed too).

// A bench is a measurement harness: a failed step ends the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lineside::config::{StoreConfig, Synchronous};
use lineside::store::Store;
use lineside_drivers::{Quality, Reading, Value};
use rusqlite::params;

const BATCH: usize = 100; // readings per driver batch, like one poll of a 100-tag PLC
const N: usize = 100_000;

fn batches(n: usize) -> Vec<Vec<Reading>> {
    let device: Arc<str> = Arc::from("plc-1");
    let tags: Vec<Arc<str>> = (0..BATCH)
        .map(|i| Arc::from(format!("tag{i}").as_str()))
        .collect();
    let unit: Arc<str> = Arc::from("mm");
    (0..n / BATCH)
        .map(|b| {
            tags.iter()
                .enumerate()
                .map(|(i, t)| Reading {
                    device: device.clone(),
                    tag: t.clone(),
                    ts: Utc::now(),
                    value: Some(Value::F64((b * BATCH + i) as f64 * 0.001)),
                    quality: Quality::Good,
                    unit: Some(unit.clone()),
                })
                .collect()
        })
        .collect()
}

/// One run through the writer; returns the time and the transactions it made.
fn through_writer(rt: &tokio::runtime::Runtime, sync: Synchronous) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        path: dir.path().join("bench.db"),
        synchronous: sync,
        ..StoreConfig::default()
    };
    let store = Store::open(&cfg, 1024).unwrap();
    let data = batches(N);
    let sink = store.sink();
    let tx0 = store.stats().transactions.load(Relaxed);
    let t = Instant::now();
    rt.block_on(async {
        for batch in data {
            sink.send(batch).await.unwrap();
        }
        store.flush().await.unwrap();
    });
    let took = t.elapsed();
    let txs = store.stats().transactions.load(Relaxed) - tx0;
    drop(sink);
    store.close();
    (took, txs)
}

/// The same rows in transactions of `per_tx` rows through a plain loop, into a database the store
/// created (same schema and pragmas).
fn plain_loop(sync: Synchronous, per_tx: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let cfg = StoreConfig {
        path: path.clone(),
        synchronous: sync,
        ..StoreConfig::default()
    };
    Store::open(&cfg, 16).unwrap().close();
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        },
    )
    .unwrap();
    for i in 0..BATCH {
        conn.execute(
            "INSERT INTO tags (id, device, tag, unit) VALUES (?1, 'plc-1', ?2, 'mm')",
            params![i as i64 + 1, format!("tag{i}")],
        )
        .unwrap();
    }
    let rows: Vec<Reading> = batches(N).into_iter().flatten().collect();
    let t = Instant::now();
    let mut seq = 1i64;
    for chunk in rows.chunks(per_tx.max(1)) {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO readings (seq, tag_id, ts, kind, value, quality, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for (i, r) in chunk.iter().enumerate() {
                let v = match r.value {
                    Some(Value::F64(x)) => x,
                    _ => 0.0,
                };
                insert
                    .execute(params![
                        seq,
                        (i % BATCH) as i64 + 1,
                        r.ts.timestamp_micros(),
                        1i64,
                        v,
                        0i64,
                        None::<&str>
                    ])
                    .unwrap();
                seq += 1;
            }
        }
        tx.commit().unwrap();
    }
    t.elapsed()
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("store_ingest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(N as u64));
    for sync in [Synchronous::Normal, Synchronous::Full] {
        let name = format!("{sync:?}").to_lowercase();
        // The writer decides its transaction sizes (group commit); the plain loop copies them.
        let (_, txs) = through_writer(&rt, sync);
        let per_tx = N / txs.max(1) as usize;
        eprintln!("{name}: the writer made {txs} transactions, {per_tx} rows each on average");
        let mut writer_total = (Duration::ZERO, 0u32);
        let mut plain_total = (Duration::ZERO, 0u32);
        group.bench_function(format!("writer_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += through_writer(&rt, sync).0;
                }
                writer_total.0 += total;
                writer_total.1 += iters as u32;
                total
            })
        });
        group.bench_function(format!("plain_rusqlite_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += plain_loop(sync, per_tx);
                }
                plain_total.0 += total;
                plain_total.1 += iters as u32;
                total
            })
        });
        let w = N as f64 * writer_total.1 as f64 / writer_total.0.as_secs_f64();
        let p = N as f64 * plain_total.1 as f64 / plain_total.0.as_secs_f64();
        eprintln!(
            "{name}: writer {w:.0} readings/s, plain rusqlite {p:.0} rows/s, ratio {:.0} %",
            100.0 * w / p
        );
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
