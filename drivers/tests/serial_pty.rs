//! The serial driver end to end over pseudo-terminal pairs: a simulated instrument on the master side, the
//! device (through its public `run`) on the slave side, reached through a symlink as a by-id name would
//! be. Ptys ignore baud rate and parity, so these tests are about framing, protocols, triggers and
//! recovery, not timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(unix, feature = "serial"))]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lineside_drivers::serial::framing::{FrameEvent, Framer, Terminator};
use lineside_drivers::{
    DeviceContext, DeviceMetrics, DeviceState, Quality, Reading, ReadingSink, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;

/// Generous: the machine may be busy with other builds.
const WAIT: Duration = Duration::from_secs(30);

/// A pty pair: the master is the instrument's end; the slave path is what the driver opens. The test keeps
/// a slave handle open so the master never sees a hang-up before the driver opens the port.
struct Cable {
    master: SerialStream,
    _slave: SerialStream,
    slave_path: String,
}

fn cable() -> Cable {
    let (master, slave) = SerialStream::pair().expect("a pty pair");
    let slave_path = slave.name().expect("the slave has a path");
    Cable {
        master,
        _slave: slave,
        slave_path,
    }
}

/// Points `link` at `target` atomically (as udev replaces /dev/serial/by-id links).
fn point_link(link: &Path, target: &str) {
    let tmp = link.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

struct Running {
    rx: flume::Receiver<Vec<Reading>>,
    metrics: Arc<DeviceMetrics>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
    link: PathBuf,
}

/// Starts a serial device whose `port` is a symlink to `slave_path`; `config` is the rest of the table.
fn start(slave_path: &str, config: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-Gauge_Sim_0001-if00");
    point_link(&link, slave_path);
    let text = format!(
        "port = {:?}\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{config}",
        link.display().to_string()
    );
    let table: toml::Table = toml::from_str(&text).unwrap();
    let dev = lineside_drivers::parse_device("gauge", "serial", table)
        .unwrap_or_else(|issues| panic!("{issues:?}"));
    let (sink, rx) = ReadingSink::bounded(1024);
    let metrics = Arc::new(DeviceMetrics::new("gauge", "serial"));
    let stop = CancellationToken::new();
    let ctx = DeviceContext {
        sink,
        metrics: metrics.clone(),
        shutdown: stop.clone(),
        state_dir: dir.path().to_path_buf(),
    };
    let task = tokio::spawn(dev.run(ctx));
    Running {
        rx,
        metrics,
        stop,
        task,
        _dir: dir,
        link,
    }
}

impl Running {
    /// The next `n` readings (batches flattened), failing the test after [`WAIT`].
    async fn readings(&self, n: usize) -> Vec<Reading> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(WAIT, self.rx.recv_async())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} readings arrived: {out:#?}", out.len()))
                .expect("the device holds the sink");
            out.extend(batch);
        }
        assert_eq!(out.len(), n, "more readings than expected: {out:#?}");
        out
    }

    async fn wait_state(&self, state: DeviceState) {
        wait_for(
            || self.metrics.state() == state,
            &format!("state {state:?}"),
        )
        .await;
    }

    fn count(&self, which: &str) -> u64 {
        let m = &self.metrics;
        match which {
            "requests" => m.requests.load(Ordering::Relaxed),
            "timeouts" => m.timeouts.load(Ordering::Relaxed),
            "exceptions" => m.exceptions.load(Ordering::Relaxed),
            "errors" => m.errors.load(Ordering::Relaxed),
            "reconnects" => m.reconnects.load(Ordering::Relaxed),
            _ => unreachable!(),
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        assert_eq!(self.metrics.state(), DeviceState::Stopped);
    }
}

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn good(r: &Reading, tag: &str, value: f64, unit: Option<&str>) {
    assert_eq!(&*r.tag, tag, "{r:?}");
    assert_eq!(r.quality, Quality::Good, "{r:?}");
    match &r.value {
        Some(Value::F64(v)) => assert!((v - value).abs() < 1e-9, "{tag}: {v} != {value}"),
        other => panic!("{tag}: expected {value}, got {other:?}"),
    }
    assert_eq!(r.unit.as_deref(), unit, "{r:?}");
}

fn text(r: &Reading, tag: &str, value: &str) {
    assert_eq!(&*r.tag, tag, "{r:?}");
    assert_eq!(r.quality, Quality::Good, "{r:?}");
    assert_eq!(r.value, Some(Value::Str(value.into())), "{r:?}");
}

fn bad(r: &Reading, tag: &str, reason_starts: &str) {
    assert_eq!(&*r.tag, tag, "{r:?}");
    match &r.quality {
        Quality::Bad(why) => assert!(
            why.starts_with(reason_starts),
            "{tag}: reason {why:?} should start with {reason_starts:?}"
        ),
        q => panic!("{tag}: expected bad quality, got {q:?} ({r:?})"),
    }
    assert_eq!(r.value, None);
}

/// The simulated instrument: reads requests split at `terminator`, and answers the n-th request with
/// `replies(n, request)`: a list of chunks written with a pause in between (a reply arriving in pieces).
/// An empty list means no answer (the driver must time out).
fn instrument(
    mut master: SerialStream,
    terminator: Terminator,
    mut replies: impl FnMut(usize, &[u8]) -> Vec<&'static [u8]> + Send + 'static,
) -> JoinHandle<SerialStream> {
    tokio::spawn(async move {
        let mut framer = Framer::new(terminator, 256);
        let mut events = Vec::new();
        let mut buf = [0u8; 256];
        let mut n = 0;
        loop {
            let got = match master.read(&mut buf).await {
                Ok(0) | Err(_) => return master,
                Ok(got) => got,
            };
            framer.push(&buf[..got], &mut events);
            for ev in events.drain(..) {
                let FrameEvent::Frame(request) = ev else {
                    continue;
                };
                n += 1;
                let chunks = replies(n, &request);
                for (i, chunk) in chunks.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(80)).await;
                    }
                    if master.write_all(chunk).await.is_err() {
                        return master;
                    }
                }
            }
        }
    })
}

// ---------------------------------------------------------------- stream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mitutoyo_stream_with_split_lines_garbage_and_over_long_lines() {
    let Cable {
        mut master,
        _slave,
        slave_path,
    } = cable();
    let dev = start(
        &slave_path,
        r#"
protocol = "mitutoyo"
timeout = "1s"
max_line = 32
instrument_unit = "mm"
[[tag]]
name = "od"
channel = 1
unit = "mm"
[[tag]]
name = "id_in"
channel = "02"
unit = "in"
"#,
    );
    dev.wait_state(DeviceState::Connected).await;

    master.write_all(b"01A+0000.123\r").await.unwrap();
    good(&dev.readings(1).await[0], "od", 0.123, Some("mm"));

    // Converted to the tag's unit: -12.7 mm = -0.5 in.
    master.write_all(b"02A-0012.700\r\n").await.unwrap();
    good(&dev.readings(1).await[0], "id_in", -0.5, Some("in"));

    // A line that arrives in three pieces (50 ms apart: well inside the 1 s timeout even on a loaded
    // machine, where 300 ms once let the first two pieces time out).
    for piece in [&b"01A+00"[..], b"00.4", b"56\r"] {
        master.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    good(&dev.readings(1).await[0], "od", 0.456, Some("mm"));

    // Line noise: a frame with control bytes is bad for every tag (it cannot be attributed).
    master.write_all(b"\x15\x7F%%$\r").await.unwrap();
    let r = dev.readings(2).await;
    bad(&r[0], "od", "framing: invalid byte 0x15");
    bad(&r[1], "id_in", "framing: invalid byte 0x15");

    // Text that is not a Mitutoyo frame, and an unparsable number.
    master.write_all(b"hello\r01A+00x0.123\r").await.unwrap();
    let r = dev.readings(4).await;
    bad(&r[0], "od", "mitutoyo: expected");
    bad(&r[2], "od", "mitutoyo: unparsable number");

    // An over-long line is reported once, then everything up to the next CR is dropped (resync).
    master.write_all(&[b'7'; 100]).await.unwrap();
    master
        .write_all(b"01A+0000.999\r01A+0001.000\r")
        .await
        .unwrap();
    let r = dev.readings(3).await;
    bad(&r[0], "od", "framing: line longer than 32 bytes");
    bad(&r[1], "id_in", "framing: line longer than 32 bytes");
    good(&r[2], "od", 1.0, Some("mm"));

    // A line that never ends is dropped after the timeout, and the next one is fine.
    master.write_all(b"01A+00").await.unwrap();
    let r = dev.readings(2).await;
    bad(&r[0], "od", "timeout: incomplete line \"01A+00\"");
    master.write_all(b"01A-0000.010\r").await.unwrap();
    good(&dev.readings(1).await[0], "od", -0.01, Some("mm"));

    assert_eq!(
        dev.count("errors"),
        5,
        "noise, two bad lines, one over-long, one incomplete"
    );
    assert_eq!(dev.count("exceptions"), 0);
    assert_eq!(dev.count("requests"), 0, "stream mode sends nothing");
    assert!(
        dev.metrics
            .last_error()
            .unwrap()
            .starts_with("timeout: incomplete line")
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sylvac_stream_from_the_data_button_with_parity_garbage() {
    let Cable {
        mut master,
        _slave,
        slave_path,
    } = cable();
    // 7E2 (the Sylvac default): bytes with the top bit set cannot come from a correctly set up port.
    let dev = start(
        &slave_path,
        "protocol = \"sylvac\"\ntrigger = \"stream\"\n[[tag]]\nname = \"h\"\nunit = \"mm\"\n",
    );
    dev.wait_state(DeviceState::Connected).await;
    master
        .write_all(b" 0.0125\r\xB0\xB1.\xB2\r-0.0040\r")
        .await
        .unwrap();
    let r = dev.readings(3).await;
    good(&r[0], "h", 0.0125, Some("mm"));
    bad(&r[1], "h", "framing: invalid byte 0xB0 at offset 0 (parity");
    good(&r[2], "h", -0.004, Some("mm"));
    dev.stop().await;
}

// ---------------------------------------------------------------- poll

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sylvac_poll_with_errors_timeouts_split_and_partial_replies() {
    let Cable {
        master,
        _slave,
        slave_path,
    } = cable();
    let sim = instrument(master, Terminator::CrOrLf, |n, request| {
        assert_eq!(request, b"?", "the Sylvac request");
        match n {
            1 => vec![b" 12.345\r"],
            2 => vec![b"ERR3\r"],
            3 => vec![],                  // no answer at all
            4 => vec![b"+1.", b"250=\r"], // in two pieces, with the tolerance mark
            5 => vec![b"\x80\x81\r"],     // parity garbage
            6 => vec![b"oops\r"],         // not a number
            7 => vec![b"+1.2"],           // stops half-way
            // Taken for the tail of reply 7: a late tail must never answer a request, and nothing on
            // the line tells a tail from a reply.
            8 => vec![b"-0.400>\r"],
            _ => vec![b"-0.500>\r"],
        }
    });
    let dev = start(
        &slave_path,
        r#"
protocol = "sylvac"
interval = "50ms"
timeout = "1s"
instrument_unit = "mm"
[[tag]]
name = "h"
unit = "um"
[[tag]]
name = "tol"
field = "status"
"#,
    );
    let r = dev.readings(18).await;
    good(&r[0], "h", 12345.0, Some("um"));
    bad(&r[2], "h", "ERR3: out of range");
    bad(&r[3], "tol", "ERR3: out of range");
    bad(&r[4], "h", "timeout: no reply");
    good(&r[6], "h", 1250.0, Some("um"));
    text(&r[7], "tol", "within");
    bad(&r[8], "h", "no valid reply: framing: invalid byte 0x80");
    bad(&r[10], "h", "no valid reply: sylvac: unparsable number");
    bad(&r[12], "h", "timeout: incomplete reply \"+1.2\"");
    bad(&r[14], "h", "timeout: no reply");
    good(&r[16], "h", -500.0, Some("um"));
    text(&r[17], "tol", "above");
    // A tag the reply has nothing for (no tolerance mark in reply 1) is bad, with the reason.
    bad(&r[1], "tol", "no status in the reply");

    assert_eq!(dev.count("exceptions"), 1, "ERR3");
    assert_eq!(
        dev.count("timeouts"),
        5,
        "no reply, garbage only (twice), incomplete reply, reply taken for a tail"
    );
    assert!(dev.count("requests") >= 8);
    assert!(
        dev.count("errors") >= 3,
        "parity garbage, bad number, missing status"
    );
    dev.stop().await;
    sim.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mitutoyo_id_polls_each_instrument_id() {
    let Cable {
        master,
        _slave,
        slave_path,
    } = cable();
    let sim = instrument(
        master,
        Terminator::Bytes(b"\r\n".to_vec()),
        |_, request| match request {
            // Echo the request first (some interfaces do), then answer.
            b"GA01" => vec![b"GA01\r\nGN01,+0016.2345\r\n"],
            b"GA02" => vec![b"GX02,", b"-0000.0100\r\n"],
            other => panic!("unexpected request {:?}", String::from_utf8_lossy(other)),
        },
    );
    let dev = start(
        &slave_path,
        r#"
protocol = "mitutoyo-id"
interval = "100ms"
timeout = "2s"
[[tag]]
name = "bore"
channel = "01"
unit = "mm"
[[tag]]
name = "runout_max"
channel = 2
field = "max"
[[tag]]
name = "runout"
channel = 2
"#,
    );
    let r = dev.readings(6).await;
    good(&r[0], "bore", 16.2345, Some("mm"));
    good(&r[1], "runout_max", -0.01, None);
    bad(&r[2], "runout", "the reply holds the max and not the value");
    good(&r[3], "bore", 16.2345, Some("mm"));
    assert_eq!(r[4].tag.as_ref(), "runout_max");
    assert!(dev.count("requests") >= 4);
    dev.stop().await;
    sim.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mahr_multi_feature_reply_maps_to_several_tags() {
    let Cable {
        master,
        _slave,
        slave_path,
    } = cable();
    let sim = instrument(master, Terminator::CrOrLf, |n, request| {
        assert_eq!(request, b"?");
        match n {
            1 => vec![b"1 +012.34 mm;2 -000.12 mm;", b"3 +001.00 in =\r"],
            2 => vec![b"1 +012.35 mm;2 -000.11 mm =\r"],
            3 => vec![b"Error 4\r"],
            _ => vec![b"1 +012.36 mm;2 -000.10 mm;3 +000.50 in =\r"],
        }
    });
    let dev = start(
        &slave_path,
        r#"
protocol = "mahr"
interval = "50ms"
timeout = "2s"
[[tag]]
name = "f1"
channel = 1
unit = "mm"
[[tag]]
name = "f2"
channel = 2
unit = "um"
[[tag]]
name = "f3"
channel = 3
unit = "mm"
"#,
    );
    let r = dev.readings(12).await;
    good(&r[0], "f1", 12.34, Some("mm"));
    good(&r[1], "f2", -120.0, Some("um"));
    good(&r[2], "f3", 25.4, Some("mm"));
    good(&r[3], "f1", 12.35, Some("mm"));
    bad(&r[5], "f3", "no value for channel 3 in the reply");
    bad(&r[6], "f1", "instrument error \"Error 4\"");
    good(&r[11], "f3", 12.7, Some("mm"));
    assert_eq!(dev.count("exceptions"), 1);
    dev.stop().await;
    sim.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mahr_single_value_with_unit() {
    let Cable {
        master,
        _slave,
        slave_path,
    } = cable();
    let sim = instrument(master, Terminator::CrOrLf, |n, _| match n {
        1 => vec![b"+012.345mm\r\n"],
        _ => vec![b"-0.0100in\r\n"],
    });
    let dev = start(
        &slave_path,
        "protocol = \"mahr\"\ninterval = \"50ms\"\n[[tag]]\nname = \"len\"\nunit = \"mm\"\n",
    );
    let r = dev.readings(2).await;
    good(&r[0], "len", 12.345, Some("mm"));
    good(&r[1], "len", -0.254, Some("mm"));
    dev.stop().await;
    sim.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_poll_with_pattern_error_pattern_and_units() {
    let Cable {
        master,
        _slave,
        slave_path,
    } = cable();
    let sim = instrument(master, Terminator::Bytes(b"\r\n".to_vec()), |n, request| {
        assert_eq!(request, b"R");
        match n {
            1 => vec![b"CH2 F=+0012.5 N OK\r\n"],
            2 => vec![b"E07\r\n"],
            3 => vec![b"hello\r\n"],
            4 => vec![b"CH2 F=", b"-3.5 kN NG\r\n"],
            5 => vec![b"CH2 F=1.0 deg OK\r\n"],
            _ => vec![b"CH2 F=+0000.0 N OK\r\n"],
        }
    });
    let dev = start(
        &slave_path,
        r#"
protocol = "line"
interval = "50ms"
timeout = "2s"
request = "R\r\n"
terminator = "\r\n"
pattern = '^CH(?P<channel>\d+) F=(?P<value>[-+]?[0-9.]+) (?P<unit>\w+) (?P<status>OK|NG)$'
error_pattern = '^E(?P<code>\d+)$'
[[tag]]
name = "force"
channel = 2
unit = "kN"
[[tag]]
name = "result"
channel = 2
field = "status"
"#,
    );
    let r = dev.readings(10).await;
    good(&r[0], "force", 0.0125, Some("kN"));
    text(&r[1], "result", "OK");
    bad(&r[2], "force", "instrument error \"07\"");
    // A line that does not match is not an answer: the driver waits on, and reports it at the timeout.
    bad(
        &r[4],
        "force",
        "no valid reply: line: \"hello\" does not match the pattern",
    );
    good(&r[6], "force", -3.5, Some("kN"));
    text(&r[7], "result", "NG");
    bad(&r[8], "force", "unit: the instrument sent `deg`");
    text(&r[9], "result", "OK");
    assert_eq!(dev.count("exceptions"), 1);
    dev.stop().await;
    sim.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_stream_without_request() {
    let Cable {
        mut master,
        _slave,
        slave_path,
    } = cable();
    let dev = start(
        &slave_path,
        r#"
protocol = "line"
pattern = '^(?P<value>[-+]?\d+,\d+)\s*(?P<unit>mm)?$'
decimal_comma = true
[[tag]]
name = "x"
"#,
    );
    dev.wait_state(DeviceState::Connected).await;
    master.write_all(b"12,50 mm\n-0,25\n").await.unwrap();
    let r = dev.readings(2).await;
    good(&r[0], "x", 12.5, Some("mm"));
    good(&r[1], "x", -0.25, None);
    dev.stop().await;
}

// ---------------------------------------------------------------- dtr-pulse

/// Linux ptys have no modem lines: TIOCMBIS/TIOCMBIC fail. Over a pty the honest check is that the
/// driver tries the pulse on every interval, reports the failure as bad quality with the OS error,
/// counts it, and keeps running. The pulse timing and the reading of the reply are covered by the unit
/// test `serial::tests::dtr_pulse_drops_dtr_for_the_configured_time_and_reads_the_reply` over an
/// in-memory port whose DTR line can be observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtr_pulse_over_a_pty_reports_the_missing_dtr_line_and_keeps_running() {
    let Cable {
        mut master,
        _slave,
        slave_path,
    } = cable();
    let dev = start(
        &slave_path,
        "protocol = \"sylvac\"\ntrigger = \"dtr-pulse\"\ninterval = \"100ms\"\npulse = \"50ms\"\ntimeout = \"200ms\"\n[[tag]]\nname = \"h\"\n",
    );
    // The same fault on every pulse is reported once (report by exception) and counted every time.
    let r = dev.readings(1).await;
    for reading in &r {
        match reading.quality.reason() {
            // What Linux ptys do.
            Some(why) if why.starts_with("dtr-pulse: cannot drop DTR") => {}
            // Should a pty ever accept the ioctl, the silent simulated gauge gives timeouts instead.
            Some(why) if why.starts_with("timeout: no reply") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    wait_for(|| dev.count("requests") >= 3, "one pulse per interval").await;
    assert!(
        dev.count("errors") + dev.count("timeouts") >= 3,
        "every failed pulse is counted"
    );
    assert_eq!(
        dev.metrics.state(),
        DeviceState::Connected,
        "the port itself is fine"
    );
    // The port still works: data the gauge sends by itself (DATA button) would still be read between
    // pulses, so the session stays up; nothing was written to the instrument.
    let mut buf = [0u8; 16];
    let nothing = tokio::time::timeout(Duration::from_millis(200), master.read(&mut buf)).await;
    assert!(nothing.is_err(), "dtr-pulse writes no request bytes");
    dev.stop().await;
}

// ---------------------------------------------------------------- unplug and replug

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_disappears_is_reopened_when_it_comes_back() {
    let first = cable();
    let dev = start(
        &first.slave_path,
        "protocol = \"mitutoyo\"\ninstrument_unit = \"mm\"\n[[tag]]\nname = \"od\"\n",
    );
    dev.wait_state(DeviceState::Connected).await;
    let Cable {
        mut master,
        _slave,
        slave_path: _,
    } = first;
    master.write_all(b"01A+0001.000\r").await.unwrap();
    good(&dev.readings(1).await[0], "od", 1.0, Some("mm"));

    // Unplug: udev removes the by-id link and the device goes away. (Removing the link also keeps the
    // driver from opening a recycled /dev/pts/N of a test running in parallel.)
    std::fs::remove_file(&dev.link).unwrap();
    drop(master);
    drop(_slave);
    let r = dev.readings(1).await;
    bad(&r[0], "od", "port lost:");
    dev.wait_state(DeviceState::Disconnected).await;
    assert!(dev.metrics.last_error().is_some());
    // While it is gone the driver keeps retrying (with backoff) without flooding bad readings.
    let errors_before = dev.count("errors");
    wait_for(
        || dev.count("errors") >= errors_before + 2,
        "reopen attempts",
    )
    .await;
    assert!(
        dev.rx.try_recv().is_err(),
        "one bad reading per outage, not per retry"
    );
    assert_eq!(dev.metrics.state(), DeviceState::Disconnected);

    // Replug: a new pty appears behind the same link.
    let second = cable();
    point_link(&dev.link, &second.slave_path);
    dev.wait_state(DeviceState::Connected).await;
    assert_eq!(dev.count("reconnects"), 1);
    let mut master = second.master;
    master.write_all(b"01A+0002.000\r").await.unwrap();
    good(&dev.readings(1).await[0], "od", 2.0, Some("mm"));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_missing_at_start_is_reported_once_and_opened_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let dev = start(
        missing.to_str().unwrap(),
        "protocol = \"sylvac\"\ninterval = \"50ms\"\n[[tag]]\nname = \"h\"\n",
    );
    let r = dev.readings(1).await;
    bad(&r[0], "h", "cannot open");
    dev.wait_state(DeviceState::Disconnected).await;
    let c = cable();
    let sim = instrument(c.master, Terminator::CrOrLf, |_, _| vec![b" 0.100\r"]);
    point_link(&dev.link, &c.slave_path);
    dev.wait_state(DeviceState::Connected).await;
    good(&dev.readings(1).await[0], "h", 0.1, None);
    assert_eq!(
        dev.count("reconnects"),
        0,
        "a first open is not a reconnect"
    );
    dev.stop().await;
    sim.abort();
}

// ---------------------------------------------------------------- isolation

/// A device flooded with garbage (no terminators at all) neither stalls nor slows another device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_device_does_not_block_another() {
    let noisy = cable();
    let quiet = cable();
    let flood_dev = start(
        &noisy.slave_path,
        "protocol = \"mitutoyo\"\nmax_line = 64\n[[tag]]\nname = \"a\"\n",
    );
    let good_dev = start(
        &quiet.slave_path,
        "protocol = \"sylvac\"\ninterval = \"20ms\"\n[[tag]]\nname = \"b\"\n",
    );
    let stop_flood = CancellationToken::new();
    let flood = {
        let stop = stop_flood.clone();
        let mut master = noisy.master;
        tokio::spawn(async move {
            let junk = [b'#'; 4096];
            while !stop.is_cancelled() {
                if master.write_all(&junk).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            master
        })
    };
    let sim = instrument(quiet.master, Terminator::CrOrLf, |_, _| vec![b" 1.000\r"]);
    let r = good_dev.readings(20).await;
    assert!(r.iter().all(|r| r.quality.is_good()));
    stop_flood.cancel();
    // Keep the instrument's end open: closing it would be an unplug, which is not this test.
    let _noisy_master = flood.await.unwrap();
    // The flooded device reported the over-long line (once per line, not once per byte).
    let first = flood_dev.readings(1).await;
    bad(&first[0], "a", "framing: line longer than 64 bytes");
    assert!(flood_dev.count("errors") <= 2);
    good_dev.stop().await;
    flood_dev.stop().await;
    sim.abort();
    drop((noisy._slave, quiet._slave));
}

// ---------------------------------------------------------------- commissioning

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_shows_what_every_parser_makes_of_each_frame() {
    use lineside_drivers::serial::PortSettings;
    use lineside_drivers::serial::commission::{Heard, ListenOptions, listen};

    let Cable {
        master,
        _slave,
        slave_path,
    } = cable();
    let sim = instrument(master, Terminator::CrOrLf, |n, request| {
        assert_eq!(request, b"?");
        match n {
            1 => vec![b" 1.250", b"<\r"],
            2 => vec![b"01A+0000.123\r"],
            _ => vec![b"01A+00"], // never finished: shown as partial
        }
    });
    let mut opts = ListenOptions::new(PortSettings::new(slave_path));
    opts.request = Some(b"?\r".to_vec());
    opts.interval = Duration::from_millis(300);
    opts.idle = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let mut heard = Vec::new();
    let run = listen(opts, stop.clone(), |h| {
        heard.push(h);
        !heard.iter().any(|h| matches!(h, Heard::Partial(_)))
    });
    tokio::time::timeout(WAIT, run).await.unwrap().unwrap();

    let frames: Vec<_> = heard
        .iter()
        .filter_map(|h| match h {
            Heard::Frame {
                raw,
                interpretations,
            } => Some((raw.clone(), interpretations.clone().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 2, "{heard:#?}");
    assert_eq!(frames[0].0, b" 1.250<");
    let ok: Vec<_> = frames[0]
        .1
        .iter()
        .filter(|i| i.result.is_ok())
        .map(|i| i.protocol)
        .collect();
    assert_eq!(ok, ["sylvac"], "only sylvac reads ` 1.250<`");
    let ok: Vec<_> = frames[1]
        .1
        .iter()
        .filter(|i| i.result.is_ok())
        .map(|i| i.protocol)
        .collect();
    assert_eq!(ok, ["mitutoyo"]);
    assert!(matches!(heard.first(), Some(Heard::Sent(r)) if r == b"?\r"));
    assert!(matches!(heard.last(), Some(Heard::Partial(p)) if p == b"01A+00"));
    let shown = heard
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(shown.contains("sylvac       ok: 1.25 [below]"), "{shown}");
    sim.abort();
}
