//! Store ingest rate: readings committed per second through the writer thread, at synchronous=normal
//! and synchronous=full. Run: `cargo bench --bench store_ingest`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lineside::config::{StoreConfig, Synchronous};
use lineside::store::Store;
use lineside_drivers::{Quality, Reading, Value};

const BATCH: usize = 100; // readings per driver batch, like one poll of a 100-tag PLC

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
    const N: usize = 100_000;
    group.throughput(Throughput::Elements(N as u64));
    for sync in [Synchronous::Normal, Synchronous::Full] {
        group.bench_function(format!("{sync:?}").to_lowercase(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let cfg = StoreConfig {
                        path: dir.path().join("bench.db"),
                        synchronous: sync,
                        ..StoreConfig::default()
                    };
                    let store = Store::open(&cfg, 1024).unwrap();
                    let data = batches(N);
                    let sink = store.sink();
                    let t = Instant::now();
                    rt.block_on(async {
                        for batch in data {
                            sink.send(batch).await.unwrap();
                        }
                        store.flush().await.unwrap();
                    });
                    total += t.elapsed();
                    drop(sink);
                    store.close();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
