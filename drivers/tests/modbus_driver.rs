//! The Modbus driver against in-process tokio-modbus servers: Modbus TCP, RTU over TCP, and RTU on a
//! pseudo-terminal pair. The device is driven through its public `Device::run`, exactly as the agent runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "modbus")]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lineside_drivers::modbus::{self, Area, ByteOrder, DataType, ModbusDevice, Raw};
use lineside_drivers::{Device, Quality, Value};
use tokio::net::TcpListener;
use tokio_modbus::{Request, Response, SlaveRequest};

mod modbus_support;
use modbus_support::*;

// ---------------------------------------------------------------------------------------------------------

/// Lays out every multi-register type in every byte order (plus bits, bools, strings and scaling) at known
/// addresses, and checks that the driver reads back exactly those values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_byte_order_over_tcp() {
    let samples = [
        (DataType::U16, Raw::Unsigned(54_321)),
        (DataType::I16, Raw::Signed(-12_345)),
        (DataType::U32, Raw::Unsigned(3_000_000_123)),
        (DataType::I32, Raw::Signed(-1_234_567_890)),
        (DataType::U64, Raw::Unsigned(9_000_000_000_000_000_123)),
        (DataType::I64, Raw::Signed(-8_000_000_000_000_000_321)),
        (DataType::F32, Raw::Float(f64::from(-1234.5f32))),
        (DataType::F64, Raw::Float(-6.022_140_76e23)),
        (DataType::String, Raw::Text("LOT-2026-A7".into())),
    ];
    let mut mem = Mem::default();
    let mut tags = String::new();
    let mut expected: Vec<(String, Value)> = Vec::new();
    let mut address = 0u16;
    for (ty, raw) in &samples {
        for order in ByteOrder::ALL {
            let words = modbus::decode::encode_registers(raw, *ty, order);
            mem.put(Area::HoldingRegister, address, &words);
            let name = format!("{ty}_{order}");
            let length = if *ty == DataType::String {
                format!("length = {}\n", words.len())
            } else {
                String::new()
            };
            tags.push_str(&format!(
                "[[tag]]\nname = '{name}'\naddress = {address}\ntype = '{ty}'\norder = '{order}'\n{length}"
            ));
            let v = match raw {
                Raw::Unsigned(u) => Value::I64(*u as i64),
                Raw::Signed(i) => Value::I64(*i),
                Raw::Float(f) => Value::F64(*f),
                Raw::Text(t) => Value::Str(t.as_str().into()),
                Raw::Bool(b) => Value::Bool(*b),
            };
            expected.push((name, v));
            address += words.len() as u16 + 1; // a one-register hole between values
        }
    }
    // Bits of a status word, a scaled value in the input registers, coils and discrete inputs.
    mem.put(Area::HoldingRegister, 1000, &[0b1000_0000_0000_0101]);
    mem.put(Area::InputRegister, 7, &[0xFF9C]); // -100 as i16
    mem.coils.insert(3, true);
    mem.discrete.insert(9, true);
    tags.push_str(
        "[[tag]]\nname = 'bit0'\naddress = 1000\ntype = 'bit'\nbit = 0\n\
         [[tag]]\nname = 'bit1'\naddress = 1000\ntype = 'bit'\nbit = 1\n\
         [[tag]]\nname = 'bit15'\naddress = 1000\ntype = 'bit'\nbit = 15\n\
         [[tag]]\nname = 'word_nonzero'\naddress = 1000\ntype = 'bool'\n\
         [[tag]]\nname = 'scaled'\narea = 'input-register'\naddress = 7\ntype = 'i16'\nscale = 0.5\noffset = 10.0\neng_unit = 'mm'\n\
         [[tag]]\nname = 'coil3'\narea = 'coil'\naddress = 3\n\
         [[tag]]\nname = 'coil4'\narea = 'coil'\naddress = 4\n\
         [[tag]]\nname = 'di9'\narea = 'discrete-input'\naddress = 9\n",
    );
    let plant = Plant::default().with_unit(1, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);

    let config = format!(
        "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '1h'\ntimeout = '5s'\nmax_gap = 1\n{tags}"
    );
    let dev = ModbusDevice::from_table("plc", toml::from_str(&config).unwrap()).unwrap();
    let blocks = dev.blocks().to_vec();
    let mut run = start_device(Box::new(dev.clone()));
    let batch = run.next_batch().await;

    for (name, want) in &expected {
        let r = find(&batch, name).unwrap_or_else(|| panic!("no reading for {name}"));
        assert_eq!(r.quality, Quality::Good, "{name}");
        assert_eq!(r.value.as_ref(), Some(want), "{name}");
    }
    assert_eq!(value(&batch, "bit0"), Some(Value::Bool(true)));
    assert_eq!(value(&batch, "bit1"), Some(Value::Bool(false)));
    assert_eq!(value(&batch, "bit15"), Some(Value::Bool(true)));
    assert_eq!(value(&batch, "word_nonzero"), Some(Value::Bool(true)));
    assert_eq!(
        value(&batch, "scaled"),
        Some(Value::F64(-100.0 * 0.5 + 10.0))
    );
    assert_eq!(find(&batch, "scaled").unwrap().unit.as_deref(), Some("mm"));
    assert_eq!(value(&batch, "coil3"), Some(Value::Bool(true)));
    assert_eq!(value(&batch, "coil4"), Some(Value::Bool(false)));
    assert_eq!(value(&batch, "di9"), Some(Value::Bool(true)));
    assert_eq!(batch.len(), expected.len() + 8);

    // One timestamp per request, shared by all of its tags.
    let specs = &dev.spec().tags;
    for b in &blocks {
        let stamps: HashSet<_> = b
            .tags
            .iter()
            .map(|&i| find(&batch, &specs[i].name).unwrap().ts)
            .collect();
        assert_eq!(stamps.len(), 1, "block at {} {}", b.area, b.start);
    }
    // Exactly the planned requests went out, all in one poll.
    assert_eq!(plant.requests(), blocks.len());
    assert_eq!(
        run.metrics().requests.load(Ordering::Relaxed),
        blocks.len() as u64
    );
    run.stop().await;
    server.abort();
}

/// The plan merges tags across small gaps (never over the caps), and the server sees exactly the planned
/// number of requests per poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_is_verified_by_the_server() {
    let mut tags = String::new();
    // 300 contiguous registers (three requests of at most 125), two tags behind a 3-register hole, and 40
    // coils: with max_gap = 3 the hole is read through.
    for i in 0..300 {
        tags.push_str(&format!("[[tag]]\nname = 'r{i}'\naddress = {i}\n"));
    }
    tags.push_str("[[tag]]\nname = 'after_gap'\naddress = 303\ntype = 'u32'\n");
    for i in 0..40 {
        tags.push_str(&format!(
            "[[tag]]\nname = 'c{i}'\narea = 'coil'\naddress = {}\n",
            100 + i
        ));
    }
    let mut mem = Mem::default();
    for i in 0..310u16 {
        mem.holding.insert(i, i * 3);
    }
    let plant = Plant::default().with_unit(1, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);

    for (max_gap, expected_requests) in [(3u16, 4usize), (0, 5)] {
        let before = plant.requests();
        let config = format!(
            "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '1h'\ntimeout = '5s'\nmax_gap = {max_gap}\n{tags}"
        );
        let dev = ModbusDevice::from_table("plc", toml::from_str(&config).unwrap()).unwrap();
        assert_eq!(
            dev.blocks().len(),
            expected_requests,
            "{}",
            dev.plan().unwrap()
        );
        assert!(
            dev.blocks()
                .iter()
                .all(|b| b.count <= 125 || !b.area.is_register())
        );
        let mut run = start_device(Box::new(dev));
        let batch = run.next_batch().await;
        assert_eq!(batch.len(), 341);
        assert!(batch.iter().all(|r| r.quality.is_good()));
        assert_eq!(value(&batch, "r299"), Some(Value::I64(897)));
        run.stop().await;
        assert_eq!(
            plant.requests() - before,
            expected_requests,
            "max_gap = {max_gap}"
        );
    }
    server.abort();
}

/// An exception on a merged request is narrowed down to the refused register: only its tag is bad, the
/// rest keep flowing and the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_marks_only_the_refused_register_bad() {
    let mut mem = Mem::default();
    mem.put(Area::HoldingRegister, 0, &[11, 12]);
    mem.put(Area::HoldingRegister, 100, &[21, 22]);
    let plant = Plant::default().with_unit(1, mem);
    plant
        .0
        .lock()
        .unwrap()
        .refuse
        .push((1, Area::HoldingRegister, 101, 102));
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let mut run = start(
        "plc",
        &format!(
            "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '50ms'\ntimeout = '5s'\n\
             [[tag]]\nname = 'a'\naddress = 0\n[[tag]]\nname = 'b'\naddress = 1\n\
             [[tag]]\nname = 'c'\naddress = 100\n[[tag]]\nname = 'd'\naddress = 101\n"
        ),
    );
    // The read of 100..=101 is refused; split, 100 reads fine and only 101 is bad.
    let batch = run.next_batch().await;
    assert_eq!(value(&batch, "a"), Some(Value::I64(11)));
    assert_eq!(value(&batch, "b"), Some(Value::I64(12)));
    assert_eq!(value(&batch, "c"), Some(Value::I64(21)));
    assert_eq!(reason(&batch, "d"), "exception: IllegalDataAddress");
    assert!(find(&batch, "d").unwrap().value.is_none());
    let m = run.metrics();
    assert!(
        m.exceptions.load(Ordering::Relaxed) >= 2,
        "the merged read and d's own"
    );
    assert_eq!(
        m.reconnects.load(Ordering::Relaxed),
        0,
        "an exception is an answer"
    );
    assert_eq!(m.timeouts.load(Ordering::Relaxed), 0);
    assert!(m.last_error().unwrap().contains("IllegalDataAddress"));
    assert_eq!(m.state(), lineside_drivers::DeviceState::Connected);
    assert_eq!(plant.connections(), 1);
    // The device fixes its map: the tags recover without a restart.
    plant.0.lock().unwrap().refuse.clear();
    run.until("c and d good again", |b| is_good(b, "c") && is_good(b, "d"))
        .await;
    run.stop().await;
    server.abort();
}

/// A Modbus TCP server that stops answering: timeouts, a dropped connection, bad readings; when it answers
/// again the driver reconnects and the values flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tcp_server_times_out_and_recovers() {
    let mut mem = Mem::default();
    mem.put(Area::HoldingRegister, 0, &[42]);
    let plant = Plant::default().with_unit(1, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let mut run = start(
        "plc",
        &format!(
            "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '50ms'\ntimeout = '200ms'\n\
             reconnect_min = '50ms'\nreconnect_max = '200ms'\n\
             [[tag]]\nname = 'a'\naddress = 0\n"
        ),
    );
    run.until("a good", |b| is_good(b, "a")).await;
    plant.set_silent(1, true);
    let batch = run
        .until("a bad", |b| {
            find(b, "a").is_some_and(|r| !r.quality.is_good())
        })
        .await;
    assert!(
        reason(&batch, "a").starts_with("timeout"),
        "{}",
        reason(&batch, "a")
    );
    // It keeps timing out: counted on every poll, reported once (report by exception).
    let m = run.metrics();
    for _ in 0..300 {
        if m.timeouts.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(m.timeouts.load(Ordering::Relaxed) >= 2);
    plant.set_silent(1, false);
    let batch = run.until("a good again", |b| is_good(b, "a")).await;
    assert_eq!(value(&batch, "a"), Some(Value::I64(42)));
    let m = run.metrics();
    assert!(m.timeouts.load(Ordering::Relaxed) >= 2);
    assert!(
        m.reconnects.load(Ordering::Relaxed) >= 1,
        "a timeout drops the TCP connection"
    );
    assert!(plant.connections() >= 2);
    run.stop().await;
    server.abort();
}

/// The server goes away (connection closed, port refusing) and comes back on the same port: the driver
/// reports the outage as bad readings and reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_reconnects_after_a_server_restart() {
    let mut mem = Mem::default();
    mem.put(Area::HoldingRegister, 5, &[1]);
    let plant = Plant::default().with_unit(1, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let mut run = start(
        "plc",
        &format!(
            "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '50ms'\ntimeout = '500ms'\n\
             reconnect_min = '50ms'\nreconnect_max = '300ms'\n\
             [[tag]]\nname = 'v'\naddress = 5\n"
        ),
    );
    run.until("v = 1", |b| value(b, "v") == Some(Value::I64(1)))
        .await;
    server.abort();
    let _ = server.await;
    let batch = run
        .until("v bad while the server is down", |b| {
            find(b, "v").is_some_and(|r| !r.quality.is_good())
        })
        .await;
    let why = reason(&batch, "v");
    assert!(
        why.starts_with("transport")
            || why.starts_with("not connected")
            || why.starts_with("protocol"),
        "{why}"
    );
    run.until("connect refused", |b| {
        reason(b, "v").starts_with("not connected")
    })
    .await;

    // Restart on the same port with a new value.
    plant.put(1, Area::HoldingRegister, 5, &[2]);
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = serve(plant.clone(), listener, false);
    run.until("v = 2 from the restarted server", |b| {
        value(b, "v") == Some(Value::I64(2))
    })
    .await;
    let m = run.metrics();
    assert!(m.reconnects.load(Ordering::Relaxed) >= 1);
    assert!(m.errors.load(Ordering::Relaxed) >= 1);
    assert_eq!(m.state(), lineside_drivers::DeviceState::Connected);
    run.stop().await;
    server.abort();
}

/// Two devices on one RTU-over-TCP gateway share one connection (one bus owner). A unit that stops
/// answering costs only its own timeout: the other units, on the same device and on the other device,
/// keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_on_a_shared_bus_does_not_stall_the_others() {
    let unit = |v: u16| {
        let mut m = Mem::default();
        m.put(Area::InputRegister, 0, &[v, v + 1]);
        m
    };
    let plant = Plant::default()
        .with_unit(1, unit(100))
        .with_unit(2, unit(200))
        .with_unit(3, unit(300));
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, true);
    let common = format!(
        "transport = 'rtu-over-tcp'\naddress = '{addr}'\npoll_interval = '100ms'\ntimeout = '1s'\n"
    );
    let mut gauges = start(
        "gauges",
        &format!(
            "{common}\
             [[tag]]\nname = 'u1'\nunit_id = 1\narea = 'input-register'\naddress = 0\n\
             [[tag]]\nname = 'u1b'\nunit_id = 1\narea = 'input-register'\naddress = 1\n\
             [[tag]]\nname = 'u2'\nunit_id = 2\narea = 'input-register'\naddress = 0\n\
             [[tag]]\nname = 'u2b'\nunit_id = 2\narea = 'input-register'\naddress = 10\n"
        ),
    );
    let mut other = start(
        "other",
        &format!(
            "{common}unit_id = 3\n[[tag]]\nname = 'u3'\narea = 'input-register'\naddress = 1\n"
        ),
    );
    gauges
        .until("all good", |b| {
            ["u1", "u2", "u2b"].iter().all(|t| is_good(b, t))
        })
        .await;
    let b = other.until("u3 good", |b| is_good(b, "u3")).await;
    assert_eq!(value(&b, "u3"), Some(Value::I64(301)));

    plant.set_silent(2, true);
    let batch = gauges
        .until("u2 timing out", |b| reason(b, "u2").starts_with("timeout"))
        .await;
    assert!(
        is_good(&batch, "u1"),
        "unit 1 keeps flowing in the same poll"
    );
    assert_eq!(value(&batch, "u1b"), Some(Value::I64(101)));
    // u2b is a second request to the dead unit: not sent again in the same poll.
    assert!(
        reason(&batch, "u2b").contains("not asked again"),
        "{}",
        reason(&batch, "u2b")
    );
    // Several more polls: unit 1 and unit 3 (other device) stay good throughout.
    for _ in 0..3 {
        let b = gauges
            .until("a poll with u1", |b| find(b, "u1").is_some())
            .await;
        assert!(is_good(&b, "u1"));
        assert!(!is_good(&b, "u2"));
        let b = other
            .until("a poll with u3", |b| find(b, "u3").is_some())
            .await;
        assert!(is_good(&b, "u3"), "{:?}", find(&b, "u3"));
    }
    assert!(gauges.metrics().timeouts.load(Ordering::Relaxed) >= 3);
    assert_eq!(other.metrics().timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(
        plant.connections(),
        1,
        "both devices go through one bus connection"
    );
    assert!(plant.requests_of(1) > 0 && plant.requests_of(3) > 0);

    plant.set_silent(2, false);
    gauges
        .until("u2 back", |b| is_good(b, "u2") && is_good(b, "u2b"))
        .await;
    gauges.stop().await;
    other.stop().await;
    server.abort();
}

/// Modbus RTU on a serial line (a pseudo-terminal pair): the tokio-modbus RTU server on one end, the
/// driver opening the other end by path, several units, one of them dead; a second device on the same
/// port joins the bus, a third naming other line settings is refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_pty_bus() {
    use tokio_serial::SerialPort as _;
    // The pair's own slave end stays open (unlocked) so the master never sees a hang-up; the driver opens
    // the slave end again by path, as it would open /dev/ttyUSB0.
    let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
    let path = slave.name().expect("a pty has a name");
    let mut m1 = Mem::default();
    m1.put(
        Area::HoldingRegister,
        0,
        &modbus::decode::encode_registers(
            &Raw::Float(f64::from(74.125f32)),
            DataType::F32,
            ByteOrder::Cdab,
        ),
    );
    let mut m2 = Mem::default();
    m2.put(Area::HoldingRegister, 0, &[7]);
    let plant = Plant::default().with_unit(11, m1).with_unit(12, m2);
    plant.set_silent(13, true);
    let server_plant = plant.clone();
    let server = tokio::spawn(async move {
        let _ = tokio_modbus::server::rtu::Server::new(master)
            .serve_forever(server_plant)
            .await;
    });
    let line = format!("transport = 'rtu'\npath = '{path}'\nbaud = 19200\nparity = 'even'\n");
    let mut gauges = start(
        "gauges",
        &format!(
            "{line}poll_interval = '100ms'\ntimeout = '1s'\n\
             [[tag]]\nname = 'd1'\nunit_id = 11\naddress = 0\ntype = 'f32'\norder = 'cdab'\neng_unit = 'mm'\n\
             [[tag]]\nname = 'dead'\nunit_id = 13\naddress = 0\n"
        ),
    );
    // The first device opens the bus; the others join it (or are refused) afterwards.
    // The dead unit is reported when it first fails (later repeats of the same fault are held back).
    let first = gauges
        .until("the bus is open", |b| find(b, "d1").is_some())
        .await;
    let mut second = start(
        "second",
        &format!(
            "{line}unit_id = 12\npoll_interval = '100ms'\n[[tag]]\nname = 'd2'\naddress = 0\n"
        ),
    );
    let mut wrong = start(
        "wrong",
        &format!(
            "transport = 'rtu'\npath = '{path}'\nbaud = 9600\nparity = 'none'\nunit_id = 12\n\
             poll_interval = '100ms'\n[[tag]]\nname = 'w'\naddress = 0\n"
        ),
    );
    let b = gauges.until("d1 over RTU", |b| is_good(b, "d1")).await;
    assert_eq!(value(&b, "d1"), Some(Value::F64(74.125)));
    assert!(
        reason(&first, "dead").starts_with("timeout"),
        "{}",
        reason(&first, "dead")
    );
    let b = second.until("d2 over RTU", |b| is_good(b, "d2")).await;
    assert_eq!(value(&b, "d2"), Some(Value::I64(7)));
    let b = wrong.next_batch().await;
    assert!(
        reason(&b, "w").contains("already in use"),
        "{}",
        reason(&b, "w")
    );
    // Keeps flowing over several polls despite the dead unit.
    for _ in 0..3 {
        let b = gauges.until("a poll", |b| find(b, "d1").is_some()).await;
        assert!(is_good(&b, "d1"));
    }
    assert_eq!(
        gauges.metrics().reconnects.load(Ordering::Relaxed),
        0,
        "timeouts keep the port open"
    );
    gauges.stop().await;
    second.stop().await;
    wrong.stop().await;
    server.abort();
    drop(slave);
}

/// The commissioning read returns the raw window, and the report decodes it in every type and order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commissioning_read_once() {
    let mut mem = Mem::default();
    mem.put(
        Area::HoldingRegister,
        40,
        &modbus::decode::encode_registers(
            &Raw::Float(f64::from(12.56f32)),
            DataType::F32,
            ByteOrder::Badc,
        ),
    );
    let plant = Plant::default().with_unit(5, mem);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let r = modbus::ReadOnce {
        endpoint: modbus::Endpoint::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        unit_id: 5,
        area: Area::HoldingRegister,
        address: 39,
        count: 4,
        timeout: Duration::from_secs(5),
    };
    let data = modbus::read_once(&r).await.unwrap();
    let text = modbus::render(&r, &data, &DataType::ALL);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("40  f32"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(" 12.56 "), "{row}");
    // A unit that is not there: a readable timeout, not a hang.
    let missing = modbus::ReadOnce {
        unit_id: 9,
        timeout: Duration::from_millis(300),
        ..r.clone()
    };
    let err = modbus::read_once(&missing).await.unwrap_err();
    assert!(
        matches!(
            err,
            modbus::commission::ReadOnceError::Transaction {
                error: modbus::transport::TxError::Timeout(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("timeout"), "{err}");
    server.abort();
}

/// A Modbus TCP peer that answers with malformed replies: a wrong transaction id, then the wrong number of
/// registers, then correctly. Device bytes are never trusted: the bad replies become bad readings and a
/// reconnect, never a panic or a wrong value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_replies_are_faults_not_values() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, addr) = bind().await;
    let server = tokio::spawn(async move {
        let mut connection = 0u32;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            connection += 1;
            let n = connection;
            tokio::spawn(async move {
                let mut req = [0u8; 12];
                while stream.read_exact(&mut req).await.is_ok() {
                    let (tid, unit, qty) = (
                        u16::from_be_bytes([req[0], req[1]]),
                        req[6],
                        u16::from_be_bytes([req[10], req[11]]),
                    );
                    let (tid, words) = match n {
                        1 => (tid.wrapping_add(7), qty), // a reply to some other transaction
                        2 => (tid, qty + 1),             // one register too many
                        _ => (tid, qty),
                    };
                    let mut reply = Vec::new();
                    reply.extend_from_slice(&tid.to_be_bytes());
                    reply.extend_from_slice(&[0, 0]);
                    reply.extend_from_slice(&(3 + 2 * words).to_be_bytes());
                    reply.extend_from_slice(&[unit, 0x03, (2 * words) as u8]);
                    for i in 0..words {
                        reply.extend_from_slice(&(1000 + i).to_be_bytes());
                    }
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut run = start(
        "odd-plc",
        &format!(
            "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '50ms'\ntimeout = '2s'\n\
             reconnect_min = '50ms'\nreconnect_max = '200ms'\n\
             [[tag]]\nname = 'a'\naddress = 0\n[[tag]]\nname = 'b'\naddress = 1\n"
        ),
    );
    let first = run.next_batch().await;
    assert!(
        reason(&first, "a").starts_with("protocol: reply header does not match"),
        "{}",
        reason(&first, "a")
    );
    let second = run.next_batch().await;
    assert!(
        reason(&second, "b").contains("answered 3 register(s) for a read of 2"),
        "{}",
        reason(&second, "b")
    );
    let good = run.until("good values", |b| is_good(b, "a")).await;
    assert_eq!(value(&good, "a"), Some(Value::I64(1000)));
    assert_eq!(value(&good, "b"), Some(Value::I64(1001)));
    let m = run.metrics();
    assert!(m.errors.load(Ordering::Relaxed) >= 2);
    assert!(m.reconnects.load(Ordering::Relaxed) >= 2);
    run.stop().await;
    server.abort();
}

/// Shutdown does not wait for a pending request's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_while_a_request_is_pending() {
    let plant = Plant::default().with_unit(1, Mem::default());
    plant.set_silent(1, true);
    let (listener, addr) = bind().await;
    let server = serve(plant.clone(), listener, false);
    let run = start(
        "plc",
        &format!(
            "transport = 'tcp'\naddress = '{addr}'\ntimeout = '1h'\n[[tag]]\nname = 'a'\naddress = 0\n"
        ),
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while plant.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request reached the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    run.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    server.abort();
}

/// CRC-16/MODBUS, appended low byte first.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// An RTU line behind a TCP gateway where every unit is its own device: each request is answered by its
/// unit after that unit's delay, independently of the others (unlike tokio-modbus's server, which answers
/// one request at a time). Handles the 8-byte read-registers requests the test sends.
fn serve_rtu_line(plant: Plant, listener: TcpListener) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            plant.0.lock().unwrap().connections += 1;
            let (mut rd, wr) = stream.into_split();
            let wr = Arc::new(tokio::sync::Mutex::new(wr));
            let plant = plant.clone();
            tokio::spawn(async move {
                let mut frame = [0u8; 8];
                while rd.read_exact(&mut frame).await.is_ok() {
                    if crc16(&frame[..6]) != u16::from_le_bytes([frame[6], frame[7]]) {
                        continue;
                    }
                    let unit = frame[0];
                    let (addr, qty) = (
                        u16::from_be_bytes([frame[2], frame[3]]),
                        u16::from_be_bytes([frame[4], frame[5]]),
                    );
                    let request = match frame[1] {
                        3 => Request::ReadHoldingRegisters(addr, qty),
                        _ => continue,
                    };
                    let delay = plant.0.lock().unwrap().slow.get(&unit).copied();
                    let answer = plant.answer(SlaveRequest {
                        slave: unit,
                        request,
                    });
                    let wr = wr.clone();
                    tokio::spawn(async move {
                        if let Some(d) = delay {
                            tokio::time::sleep(d).await;
                        }
                        let mut out = vec![unit];
                        match answer {
                            Ok(Some(Response::ReadHoldingRegisters(words))) => {
                                out.extend_from_slice(&[3, (2 * words.len()) as u8]);
                                for w in words {
                                    out.extend_from_slice(&w.to_be_bytes());
                                }
                            }
                            Err(code) => out.extend_from_slice(&[0x83, u8::from(code)]),
                            _ => return,
                        }
                        let crc = crc16(&out);
                        out.extend_from_slice(&crc.to_le_bytes());
                        let _ = wr.lock().await.write_all(&out).await;
                    });
                }
            });
        }
    })
}

/// A unit that answers later than its timeout, on an RTU bus: its late replies arrive while the next
/// transactions are under way. They are recognised (wrong unit) and discarded, and the interrupted request
/// asked again, so the other unit never sees a bad reading and the line is never reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_on_a_bus_does_not_spoil_the_next_transaction() {
    let unit = |v: u16| {
        let mut m = Mem::default();
        m.put(Area::HoldingRegister, 0, &[v]);
        m
    };
    let plant = Plant::default()
        .with_unit(1, unit(11))
        .with_unit(2, unit(22));
    {
        let mut s = plant.0.lock().unwrap();
        s.slow.insert(1, Duration::from_millis(200));
        // Unit 2 answers just after its 1 s timeout, i.e. during unit 1's next transaction.
        s.slow.insert(2, Duration::from_millis(1100));
    }
    let (listener, addr) = bind().await;
    let server = serve_rtu_line(plant.clone(), listener);
    let mut run = start(
        "gauges",
        &format!(
            "transport = 'rtu-over-tcp'\naddress = '{addr}'\npoll_interval = '50ms'\ntimeout = '1s'\n\
             [[tag]]\nname = 'fast'\nunit_id = 1\naddress = 0\n\
             [[tag]]\nname = 'slow'\nunit_id = 2\naddress = 0\n"
        ),
    );
    // RTU has no transaction id: on a loaded machine a late reply can arrive while unit 2's NEXT request
    // is pending and then answers it (same unit, same registers), so unit 2 is not late every time. The
    // scenario needs only a few late replies; bound the wait so a slow machine cannot stretch it out
    // (it once took 176 s to see four).
    let mut late = 0;
    let bound = std::time::Instant::now() + Duration::from_secs(45);
    while late < 4 && std::time::Instant::now() < bound {
        let b = run.until("a poll", |b| find(b, "fast").is_some()).await;
        assert!(
            is_good(&b, "fast"),
            "unit 1 must not suffer from unit 2's late replies: {:?}",
            find(&b, "fast")
        );
        assert_eq!(value(&b, "fast"), Some(Value::I64(11)));
        if !is_good(&b, "slow") {
            late += 1;
        }
    }
    assert!(
        late >= 1,
        "unit 2 never answered late: the scenario did not happen"
    );
    assert_eq!(plant.connections(), 1, "the bus link is kept");
    assert_eq!(run.metrics().reconnects.load(Ordering::Relaxed), 0);
    run.stop().await;
    server.abort();
}
