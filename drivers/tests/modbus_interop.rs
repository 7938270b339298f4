//! Interop: the Modbus driver against pymodbus's server (a different implementation of the protocol), over
//! Modbus TCP, RTU framing over TCP, and RTU on a serial line (a pseudo-terminal that pymodbus opens with
//! pyserial). The peer script is tests/interop/modbus_server.py; python comes from `LINESIDE_PYTHON`
//! (default `python3`) and needs `pip install pymodbus==3.16.1 pyserial`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "modbus")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lineside_drivers::modbus;
use lineside_drivers::{DeviceContext, DeviceMetrics, Reading, ReadingSink, Value};

/// The pymodbus server process; killed when dropped.
struct Peer {
    child: Child,
    /// Where to reach it: a TCP port or a pty path (the script's first stdout line).
    at: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer(mode: &str) -> Peer {
    let python = std::env::var("LINESIDE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/interop/modbus_server.py"
    );
    let mut child = Command::new(&python)
        .arg(script)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} {script}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let at = line.trim().to_string();
    assert!(
        !at.is_empty(),
        "the pymodbus peer printed nothing (is pymodbus installed for {python}?)"
    );
    Peer { child, at }
}

const TAGS: &str = "
[[tag]]\nname = 'u16'\naddress = 0\ntype = 'u16'
[[tag]]\nname = 'i16'\naddress = 1\ntype = 'i16'
[[tag]]\nname = 'u32'\naddress = 2\ntype = 'u32'\norder = 'abcd'
[[tag]]\nname = 'f32'\naddress = 4\ntype = 'f32'\norder = 'cdab'
[[tag]]\nname = 'f64'\naddress = 6\ntype = 'f64'\norder = 'abcd'
[[tag]]\nname = 'i64'\naddress = 10\ntype = 'i64'\norder = 'dcba'
[[tag]]\nname = 'text'\naddress = 14\ntype = 'string'\nlength = 4
[[tag]]\nname = 'bit0'\naddress = 18\ntype = 'bit'\nbit = 0
[[tag]]\nname = 'bit1'\naddress = 18\ntype = 'bit'\nbit = 1
[[tag]]\nname = 'bit15'\naddress = 18\ntype = 'bit'\nbit = 15
[[tag]]\nname = 'scaled'\narea = 'input-register'\naddress = 0\ntype = 'i16'\nscale = 0.5
[[tag]]\nname = 'coil0'\narea = 'coil'\naddress = 0
[[tag]]\nname = 'coil1'\narea = 'coil'\naddress = 1
[[tag]]\nname = 'di6'\narea = 'discrete-input'\naddress = 6
[[tag]]\nname = 'di7'\narea = 'discrete-input'\naddress = 7
[[tag]]\nname = 'undefined'\naddress = 100
[[tag]]\nname = 'unit2'\nunit_id = 2\naddress = 0
[[tag]]\nname = 'dead'\nunit_id = 3\naddress = 0
";

fn expected() -> Vec<(&'static str, Value)> {
    vec![
        ("u16", Value::I64(54321)),
        ("i16", Value::I64(-12345)),
        ("u32", Value::I64(3_000_000_123)),
        ("f32", Value::F64(-1234.5)),
        ("f64", Value::F64(-6.022_140_76e23)),
        ("i64", Value::I64(-8_000_000_000_000_000_321)),
        ("text", Value::Str("PYMODBUS".into())),
        ("bit0", Value::Bool(true)),
        ("bit1", Value::Bool(false)),
        ("bit15", Value::Bool(true)),
        ("scaled", Value::F64(-50.0)),
        ("coil0", Value::Bool(true)),
        ("coil1", Value::Bool(false)),
        ("di6", Value::Bool(true)),
        ("di7", Value::Bool(false)),
        ("unit2", Value::I64(4242)),
    ]
}

async fn check_against(endpoint: &str) {
    let config = format!("{endpoint}poll_interval = '200ms'\ntimeout = '500ms'\n{TAGS}");
    let table: toml::Table = toml::from_str(&config).unwrap();
    let dev = modbus::parse("pymodbus", table).unwrap_or_else(|e| panic!("{e:?}"));
    let (sink, rx) = ReadingSink::bounded(64);
    let ctx = DeviceContext {
        sink,
        metrics: Arc::new(DeviceMetrics::new("pymodbus", "modbus")),
        shutdown: Default::default(),
        state_dir: std::env::temp_dir(),
    };
    // Every poll's bad readings are checked here, so none are held back as repeats.
    ctx.metrics.set_bad_heartbeat(Duration::ZERO);
    let task = tokio::spawn(dev.run(ctx.clone()));
    let find = |b: &[Reading], t: &str| b.iter().find(|r| &*r.tag == t).cloned();
    let mut good_polls = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while good_polls < 3 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let batch = match tokio::time::timeout(left, rx.recv_async()).await {
            Ok(Ok(b)) => b,
            _ => panic!(
                "no complete poll from pymodbus within 60s; last batch: {last:#?}; last error: {:?}",
                ctx.metrics.last_error()
            ),
        };
        let all_good = expected().iter().all(|(tag, want)| {
            find(&batch, tag).is_some_and(|r| r.quality.is_good() && r.value.as_ref() == Some(want))
        });
        let undefined =
            find(&batch, "undefined").and_then(|r| r.quality.reason().map(str::to_string));
        let dead = find(&batch, "dead").and_then(|r| r.quality.reason().map(str::to_string));
        if all_good
            && undefined.as_deref() == Some("exception: IllegalDataAddress")
            && dead.as_deref().is_some_and(|d| d.starts_with("timeout"))
        {
            good_polls += 1;
        }
        last = batch;
    }
    assert!(ctx.metrics.exceptions.load(Ordering::Relaxed) >= 3);
    assert!(ctx.metrics.timeouts.load(Ordering::Relaxed) >= 3);
    ctx.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pymodbus; run by scripts/test"]
async fn pymodbus_tcp() {
    let p = peer("tcp");
    check_against(&format!(
        "transport = 'tcp'\naddress = '127.0.0.1:{}'\n",
        p.at
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pymodbus; run by scripts/test"]
async fn pymodbus_rtu_over_tcp() {
    let p = peer("rtu-over-tcp");
    check_against(&format!(
        "transport = 'rtu-over-tcp'\naddress = '127.0.0.1:{}'\n",
        p.at
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pymodbus and pyserial; run by scripts/test"]
async fn pymodbus_rtu_serial() {
    let p = peer("serial");
    check_against(&format!(
        "transport = 'rtu'\npath = '{}'\nbaud = 19200\nparity = 'none'\n",
        p.at
    ))
    .await;
}

/// Exception isolation against an independent server: ten contiguous registers are one read, pymodbus
/// refuses register 205 (not defined); the read is split until only that tag is bad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pymodbus; run by scripts/test"]
async fn pymodbus_isolates_an_undefined_register() {
    let p = peer("tcp");
    let mut config = format!(
        "transport = 'tcp'\naddress = '127.0.0.1:{}'\npoll_interval = '200ms'\ntimeout = '2s'\n",
        p.at
    );
    for a in 200..210 {
        config.push_str(&format!("[[tag]]\nname = 'h{a}'\naddress = {a}\n"));
    }
    let table: toml::Table = toml::from_str(&config).unwrap();
    let dev = modbus::parse("pymodbus", table).unwrap_or_else(|e| panic!("{e:?}"));
    let (sink, rx) = ReadingSink::bounded(64);
    let ctx = DeviceContext {
        sink,
        metrics: Arc::new(DeviceMetrics::new("pymodbus", "modbus")),
        shutdown: Default::default(),
        state_dir: std::env::temp_dir(),
    };
    let task = tokio::spawn(dev.run(ctx.clone()));
    let batch = tokio::time::timeout(Duration::from_secs(60), rx.recv_async())
        .await
        .expect("a poll within 60 s")
        .unwrap();
    for a in 200..210 {
        let tag = format!("h{a}");
        let r = batch
            .iter()
            .find(|r| *r.tag == *tag)
            .unwrap_or_else(|| panic!("{tag}: {batch:#?}"));
        if a == 205 {
            assert_eq!(
                r.quality.reason(),
                Some("exception: IllegalDataAddress"),
                "{r:?}"
            );
        } else {
            assert_eq!(r.value, Some(Value::I64(a)), "{r:?}");
        }
    }
    ctx.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
