//! The Modbus driver and faults that must not cost good values or flood the stream: a register the device
//! refuses inside a merged read (exception isolation), 64-bit integers at the ends of their ranges, and a
//! server that goes away (report by exception, stable and readable reasons).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "modbus")]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lineside_drivers::modbus::Area;
use lineside_drivers::{Quality, Value};

mod modbus_support;
use modbus_support::*;

/// Ten contiguous registers are one read; the device refuses register 5. The read is split until only
/// register 5's tag is bad, the split is kept for later polls, and shown in the device's notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_one_invalid_register_ends_with_only_that_register_bad() {
    let mut mem = Mem::default();
    let words: Vec<u16> = (0..10).map(|i| 100 + i).collect();
    mem.put(Area::HoldingRegister, 0, &words);
    let plant = Plant::default().with_unit(1, mem);
    plant
        .0
        .lock()
        .unwrap()
        .refuse
        .push((1, Area::HoldingRegister, 5, 6));
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let mut tags = String::new();
    for i in 0..10 {
        tags.push_str(&format!("[[tag]]\nname = 'r{i}'\naddress = {i}\n"));
    }
    let mut run = start(
        "plc",
        &format!(
            "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '100ms'\ntimeout = '2s'\n{tags}"
        ),
    );
    let first = run.next_batch().await;
    for i in 0..10 {
        let tag = format!("r{i}");
        if i == 5 {
            assert_eq!(reason(&first, &tag), "exception: IllegalDataAddress");
        } else {
            assert_eq!(
                value(&first, &tag),
                Some(Value::I64(100 + i)),
                "{tag}: {first:?}"
            );
        }
    }
    // Later polls use the split: [0..=4], [5], [6], [7..=9] (found by halving), no more merged attempts.
    let before = plant.requests();
    let second = run.next_batch().await;
    let third = run.next_batch().await;
    let per_poll = (plant.requests() - before) as f64 / 2.0;
    assert!(
        per_poll <= 4.0,
        "{per_poll} requests per poll after the split"
    );
    for b in [&second, &third] {
        assert_eq!(b.iter().filter(|r| r.quality.is_good()).count(), 9, "{b:?}");
    }
    let notes = run.metrics().notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("split after exceptions") && n.contains("5..=5")),
        "{notes:?}"
    );
    run.stop().await;
    server.abort();
}

/// Every u64 and i64 arrives exactly, without scaling: u64::MAX, a value above i64::MAX, i64::MIN/MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_bit_integers_arrive_exactly() {
    fn words(v: u64) -> [u16; 4] {
        [
            (v >> 48) as u16,
            (v >> 32) as u16,
            (v >> 16) as u16,
            v as u16,
        ]
    }
    let cases: [(&str, &str, u64, Value); 5] = [
        ("umax", "u64", u64::MAX, Value::U64(u64::MAX)),
        (
            "ubig",
            "u64",
            12_345_678_901_234_567_890,
            Value::U64(12_345_678_901_234_567_890),
        ),
        ("usmall", "u64", 7, Value::I64(7)),
        ("imin", "i64", i64::MIN as u64, Value::I64(i64::MIN)),
        ("imax", "i64", i64::MAX as u64, Value::I64(i64::MAX)),
    ];
    let mut mem = Mem::default();
    let mut tags = String::new();
    for (n, (name, ty, raw, _)) in cases.iter().enumerate() {
        let at = n as u16 * 4;
        mem.put(Area::HoldingRegister, at, &words(*raw));
        tags.push_str(&format!(
            "[[tag]]\nname = '{name}'\naddress = {at}\ntype = '{ty}'\n"
        ));
    }
    let plant = Plant::default().with_unit(1, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant, listener, false);
    let mut run = start(
        "plc",
        &format!("transport = 'tcp'\naddress = '{addr}'\npoll_interval = '100ms'\n{tags}"),
    );
    let batch = run.next_batch().await;
    for (name, _, _, want) in &cases {
        let r = find(&batch, name).unwrap();
        assert_eq!(r.quality, Quality::Good, "{r:?}");
        assert_eq!(r.value.as_ref(), Some(want), "{name}");
    }
    run.stop().await;
    server.abort();
}

/// A server that stops: one bad reading per tag when it goes, then one per `bad_heartbeat`, not one per
/// poll; the reasons are stable (no retry timings) and read as what happened (no "os error").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_gives_bounded_stable_bad_readings() {
    let mut mem = Mem::default();
    mem.put(Area::HoldingRegister, 0, &[1, 2]);
    let plant = Plant::default().with_unit(1, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let table: toml::Table = toml::from_str(&format!(
        "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '10ms'\ntimeout = '500ms'\n\
         reconnect_min = '10ms'\nreconnect_max = '40ms'\nbad_heartbeat = '1s'\n\
         [[tag]]\nname = 'a'\naddress = 0\n[[tag]]\nname = 'b'\naddress = 1\n"
    ))
    .unwrap();
    let dev = lineside_drivers::parse_device("plc", "modbus", table).unwrap();
    let mut run = start_device(dev);
    run.until("a good", |b| is_good(b, "a")).await;
    server.abort();
    let _ = server.await;
    // Collect everything for 2.5 s of outage.
    let outage = Duration::from_millis(2500);
    let end = tokio::time::Instant::now() + outage;
    let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Ok(Some(batch)) = tokio::time::timeout_at(end, run.rx.recv()).await {
        for r in batch {
            if let Quality::Bad(why) = &r.quality {
                bad.entry(r.tag.to_string())
                    .or_default()
                    .push(why.to_string());
            }
        }
    }
    let polls = outage.as_millis() / 10;
    for tag in ["a", "b"] {
        let reasons = bad.get(tag).cloned().unwrap_or_default();
        // The transition (maybe two causes: the connection closing, then refused connects) and a
        // heartbeat per second: a handful, where one per poll would be ~250.
        assert!(
            (1..=6).contains(&reasons.len()),
            "{tag}: {} bad readings in {polls} polls: {reasons:#?}",
            reasons.len()
        );
        let mut distinct = reasons.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() <= 2, "{tag}: reasons churn: {distinct:#?}");
        for why in &reasons {
            assert!(!why.contains("os error"), "{why}");
            assert!(!why.contains("next attempt"), "{why}");
        }
        assert!(
            reasons[0].starts_with("transport: connection closed by peer")
                || reasons[0].starts_with("not connected"),
            "the server went away: {}",
            reasons[0]
        );
        let last = reasons.last().unwrap();
        assert!(
            last.contains("connection refused"),
            "a stopped server refuses connections: {last}"
        );
    }
    let m = run.metrics();
    assert!(
        m.bad_suppressed.load(Ordering::Relaxed) > 0,
        "the repeats were dropped, and counted"
    );
    run.stop().await;
}
