//! Bytes on the wire per reading and CPU per 1,000 readings, JSON (default and compact) vs Sparkplug B, side by side in one
//! run, through the encoders the forwarder uses (`forward::Packer`, `sparkplug::EdgeNode::pack`).
//! Run: `cargo bench --bench encoding` (prints a table; no criterion statistics).
//!
//! Wire bytes count the whole MQTT PUBLISH packet at QoS 1 (fixed header, topic, packet id, payload);
//! the 4-byte PUBACK coming back is left out for both. CPU is the encoding thread's own time from
//! /proc/thread-self/schedstat (falls back to wall time elsewhere), so other load on the machine does
//! not inflate it. Sparkplug's births are counted separately: they are sent once per session.

// A bench is a measurement harness: a failed step ends the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lineside::config::JsonFormat;
use lineside::forward::Packer;
use lineside::sparkplug::{Catalog, DataType, EdgeNode, NodeTopics, PackLimits, TagSpec};
use lineside::store::StoredReading;
use lineside_drivers::{Quality, Reading, Value};

const DEVICES: usize = 10;
const TAGS: usize = 10;
const READINGS: usize = 200_000;

fn readings() -> Vec<StoredReading> {
    let t0 = DateTime::from_timestamp_millis(1_764_000_000_000).unwrap_or_default();
    let devices: Vec<Arc<str>> = (0..DEVICES)
        .map(|d| Arc::from(format!("press-{d}").as_str()))
        .collect();
    let tags: Vec<Arc<str>> = (0..TAGS)
        .map(|t| Arc::from(format!("bore_diameter_{t}").as_str()))
        .collect();
    let unit: Arc<str> = Arc::from("mm");
    let mut rng = fastrand::Rng::with_seed(7);
    (0..READINGS)
        .map(|i| {
            let poll = i / (DEVICES * TAGS);
            let d = (i / TAGS) % DEVICES;
            let t = i % TAGS;
            let bad = rng.u32(0..1000) == 0;
            StoredReading {
                seq: i as u64 + 1,
                reading: Reading {
                    device: devices[d].clone(),
                    tag: tags[t].clone(),
                    ts: t0 + chrono::Duration::microseconds(poll as i64 * 100_000 + t as i64 * 137),
                    value: (!bad).then(|| Value::F64(12.0 + rng.f64() * 0.05)),
                    quality: if bad {
                        Quality::Bad(Arc::from("timeout"))
                    } else {
                        Quality::Good
                    },
                    unit: Some(unit.clone()),
                },
            }
        })
        .collect()
}

fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.with(|s| s.elapsed()))
}

thread_local! {
    static START: Instant = Instant::now();
}

/// Size of an MQTT 3.1.1 PUBLISH packet at QoS 1.
fn publish_bytes(topic: &str, payload: usize) -> usize {
    let remaining = 2 + topic.len() + 2 + payload;
    let len_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_bytes + remaining
}

struct Figures {
    name: String,
    messages: usize,
    payload: usize,
    wire: usize,
    cpu: Duration,
    extra: String,
}

fn json(rows: &[StoredReading], per_message: usize, format: JsonFormat) -> Figures {
    let cpu0 = cpu_time();
    let (mut messages, mut payload, mut wire) = (0, 0, 0);
    for chunk in rows.chunks(20_000) {
        let mut packer =
            Packer::with_format("gw-1", "00000000000000e1", per_message, 256 * 1024, format);
        for r in chunk {
            assert!(packer.push(r, usize::MAX));
        }
        for m in packer.finish() {
            let topic = format!("lineside/gw-1/data/{}", m.device);
            messages += 1;
            payload += m.payload.len();
            wire += publish_bytes(&topic, m.payload.len());
        }
    }
    Figures {
        name: match format {
            JsonFormat::Default => format!("JSON, {per_message}/msg"),
            JsonFormat::Compact => format!("compact JSON, {per_message}/msg"),
        },
        messages,
        payload,
        wire,
        cpu: cpu_time() - cpu0,
        extra: String::new(),
    }
}

fn sparkplug(rows: &[StoredReading], per_message: usize) -> Figures {
    let tags: Vec<TagSpec> = (0..DEVICES)
        .flat_map(|d| {
            (0..TAGS).map(move |t| TagSpec {
                device: format!("press-{d}"),
                tag: format!("bore_diameter_{t}"),
                unit: Some("mm".into()),
                datatype: DataType::Double,
            })
        })
        .collect();
    let mut node = EdgeNode::new(
        NodeTopics::new("Plant A", "gw-1").unwrap_or_else(|e| panic!("{e}")),
        Catalog::new(&tags),
        Duration::from_secs(5),
    );
    node.connect(0, Utc::now());
    let births = node.birth(Utc::now(), &[], 0, Instant::now());
    let birth_wire: usize = births
        .iter()
        .map(|m| publish_bytes(&m.topic, m.payload.len()))
        .sum();
    let limits = PackLimits {
        max_metrics: per_message,
        max_bytes: 256 * 1024,
        max_messages: usize::MAX,
    };
    let cpu0 = cpu_time();
    let (mut messages, mut payload, mut wire) = (0, 0, 0);
    for chunk in rows.chunks(20_000) {
        let packed = node.pack(chunk, Utc::now(), limits);
        assert_eq!(packed.taken, chunk.len());
        for m in packed.messages {
            messages += 1;
            payload += m.payload.len();
            wire += publish_bytes(&m.topic, m.payload.len());
        }
    }
    Figures {
        name: format!("Sparkplug B, {per_message}/msg"),
        messages,
        payload,
        wire,
        cpu: cpu_time() - cpu0,
        extra: format!(
            "births once per session: {} messages, {birth_wire} B",
            births.len()
        ),
    }
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rows = readings();
    let rows = if quick { &rows[..2_000] } else { &rows[..] };
    let mut figures = Vec::new();
    for per_message in [10, 100, 1000] {
        // Warm up, then measure.
        for format in [JsonFormat::Default, JsonFormat::Compact] {
            json(rows, per_message, format);
            figures.push(json(rows, per_message, format));
        }
        sparkplug(rows, per_message);
        figures.push(sparkplug(rows, per_message));
    }
    println!(
        "{} readings ({DEVICES} devices × {TAGS} tags, f64 with unit, 0.1% bad), one run:",
        rows.len()
    );
    println!(
        "{:<22} {:>9} {:>14} {:>14} {:>18}",
        "encoding", "messages", "payload B/rdg", "wire B/rdg", "CPU µs/1000 rdg"
    );
    for f in &figures {
        let n = rows.len() as f64;
        println!(
            "{:<22} {:>9} {:>14.1} {:>14.1} {:>18.0}  {}",
            f.name,
            f.messages,
            f.payload as f64 / n,
            f.wire as f64 / n,
            f.cpu.as_secs_f64() * 1e6 / n * 1000.0,
            f.extra
        );
    }
}
