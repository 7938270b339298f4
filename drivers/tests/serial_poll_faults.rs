//! Poll mode against a misbehaving gauge, for every serial protocol, over pseudo-terminal pairs: garbage
//! lines before the answer, answers split across writes, error replies, an answer whose tail arrives after
//! the timeout (while the next request is already out), and garbage instead of an answer.
//!
//! What must hold: every value the gauge sends as an answer arrives exactly once, as the answer to its own
//! request; no value is invented (the tail of a late reply never answers the next request); error replies
//! are instrument errors (counted as exceptions) with the instrument's code; garbage is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(unix, feature = "serial"))]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lineside_drivers::serial::framing::{FrameEvent, Framer, Terminator};
use lineside_drivers::{DeviceContext, DeviceMetrics, Quality, Reading, ReadingSink, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
/// The driver's reply timeout in these tests.
const TIMEOUT_MS: u64 = 400;

/// What the gauge does for one request.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// A garbage line, then the answer.
    GarbageThenValue(u32),
    /// The answer in two writes with a short pause (well within the timeout).
    Split(u32),
    /// The instrument's error reply.
    Error,
    /// The answer's first half, then its tail only after the driver's timeout: the next request is out
    /// by then, and the tail must not answer it.
    LateTail(u32),
    /// Line noise (bytes no gauge sends) and nothing else: no answer.
    NoiseOnly,
    /// A plain answer.
    Value(u32),
}

/// The request sequence: each value appears once; the LateTail value must never arrive.
const SCRIPT: &[Act] = &[
    Act::Value(1),
    Act::GarbageThenValue(2),
    Act::Split(3),
    Act::Error,
    Act::LateTail(5),
    Act::Value(6),
    Act::NoiseOnly,
    Act::GarbageThenValue(8),
    Act::Split(9),
    Act::Error,
    Act::Value(11),
];

/// How one protocol writes things.
struct Dialect {
    name: &'static str,
    config: &'static str,
    /// Request as the gauge sees it (terminator removed).
    request: &'static [u8],
    request_terminator: Terminator,
    eol: &'static str,
    /// The answer carrying `v`, split in two at a point inside the number.
    answer: fn(f64) -> (String, String),
    error: &'static str,
    /// How the error reads in the reading's reason (a prefix).
    error_reason: &'static str,
    /// The value a good reading carries for `v` (unit conversion).
    reads_as: fn(f64) -> f64,
}

fn value_of(n: u32) -> f64 {
    70.0 + f64::from(n) + 0.5
}

fn dialects() -> Vec<Dialect> {
    vec![
        Dialect {
            name: "mitutoyo",
            config: "protocol = \"mitutoyo\"\ntrigger = \"poll\"\nrequest = \"R\\r\"\ninstrument_unit = \"mm\"\n[[tag]]\nname = \"x\"\nunit = \"mm\"\n",
            request: b"R",
            request_terminator: Terminator::CrOrLf,
            eol: "\r",
            answer: |v| {
                let s = format!("01A+{v:08.3}");
                let (a, b) = s.split_at(8);
                (a.to_string(), b.to_string())
            },
            error: "01E001",
            error_reason: "instrument error E001 (channel 1)",
            reads_as: |v| v,
        },
        Dialect {
            name: "mitutoyo-id",
            config: "protocol = \"mitutoyo-id\"\n[[tag]]\nname = \"x\"\nchannel = 1\nunit = \"mm\"\n",
            request: b"GA01",
            request_terminator: Terminator::Bytes(b"\r\n".to_vec()),
            eol: "\r\n",
            answer: |v| {
                let s = format!("GN01,+{:09.4}", v);
                let (a, b) = s.split_at(9);
                (a.to_string(), b.to_string())
            },
            error: "Err05",
            error_reason: "instrument error \"Err05\"",
            reads_as: |v| v,
        },
        Dialect {
            name: "sylvac",
            config: "protocol = \"sylvac\"\ninstrument_unit = \"mm\"\n[[tag]]\nname = \"x\"\nunit = \"mm\"\n",
            request: b"?",
            request_terminator: Terminator::CrOrLf,
            eol: "\r",
            answer: |v| {
                let s = format!(" {:.3}", v);
                let (a, b) = s.split_at(4);
                (a.to_string(), b.to_string())
            },
            error: "ERR3",
            error_reason: "ERR3: out of range",
            reads_as: |v| v,
        },
        Dialect {
            name: "mahr",
            config: "protocol = \"mahr\"\n[[tag]]\nname = \"x\"\nunit = \"um\"\n",
            request: b"?",
            request_terminator: Terminator::CrOrLf,
            eol: "\r",
            // `73.` + `500mm`: the split of the report.
            answer: |v| {
                let s = format!("{:.3}mm", v);
                let (a, b) = s.split_at(3);
                (a.to_string(), b.to_string())
            },
            error: "E03",
            error_reason: "instrument error E03",
            reads_as: |v| v * 1000.0,
        },
        Dialect {
            name: "line",
            config: "protocol = \"line\"\nrequest = \"M\\r\\n\"\ninstrument_unit = \"mm\"\nterminator = \"\\r\\n\"\npattern = '^V=(?P<value>[-+]?[0-9.]+)$'\nerror_pattern = '^E(?P<code>\\d+)$'\n[[tag]]\nname = \"x\"\nunit = \"mm\"\n",
            request: b"M",
            request_terminator: Terminator::Bytes(b"\r\n".to_vec()),
            eol: "\r\n",
            answer: |v| {
                let s = format!("V={:.3}", v);
                let (a, b) = s.split_at(4);
                (a.to_string(), b.to_string())
            },
            error: "E07",
            error_reason: "instrument error \"07\"",
            reads_as: |v| v,
        },
    ]
}

/// The gauge: answers the n-th request as `SCRIPT[n-1]` says (then plain values), each chunk after its
/// delay. It reads requests only between answers, as a simple instrument does.
fn gauge(mut master: SerialStream, d: &Dialect) -> tokio::task::JoinHandle<()> {
    let term = d.request_terminator.clone();
    let expected_request = d.request.to_vec();
    let eol = d.eol;
    let answer = d.answer;
    let error = d.error;
    tokio::spawn(async move {
        let mut framer = Framer::new(term, 256);
        let mut events = Vec::new();
        let mut buf = [0u8; 256];
        let mut n = 0usize;
        loop {
            let got = match master.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(got) => got,
            };
            framer.push(&buf[..got], &mut events);
            for ev in std::mem::take(&mut events) {
                let FrameEvent::Frame(request) = ev else {
                    continue;
                };
                assert_eq!(request, expected_request);
                n += 1;
                let act = SCRIPT
                    .get(n - 1)
                    .copied()
                    .unwrap_or(Act::Value(100 + n as u32));
                let ms = Duration::from_millis;
                let chunks: Vec<(Duration, String)> = match act {
                    Act::Value(v) => {
                        let (a, b) = answer(value_of(v));
                        vec![(ms(0), format!("{a}{b}{eol}"))]
                    }
                    Act::GarbageThenValue(v) => {
                        let (a, b) = answer(value_of(v));
                        vec![
                            (ms(0), format!("#~junk~#{eol}")),
                            (ms(30), format!("{a}{b}{eol}")),
                        ]
                    }
                    Act::Split(v) => {
                        let (a, b) = answer(value_of(v));
                        vec![(ms(0), a), (ms(80), format!("{b}{eol}"))]
                    }
                    Act::Error => vec![(ms(0), format!("{error}{eol}"))],
                    Act::LateTail(v) => {
                        let (a, b) = answer(value_of(v));
                        vec![(ms(0), a), (ms(TIMEOUT_MS + 250), format!("{b}{eol}"))]
                    }
                    Act::NoiseOnly => vec![(ms(0), format!("\u{80}\u{81}{eol}"))],
                };
                for (delay, text) in chunks {
                    tokio::time::sleep(delay).await;
                    // Noise goes out as raw high bytes, not UTF-8.
                    let bytes: Vec<u8> = if text.starts_with('\u{80}') {
                        let mut b = vec![0x80, 0x81];
                        b.extend_from_slice(eol.as_bytes());
                        b
                    } else {
                        text.into_bytes()
                    };
                    if master.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

async fn run_dialect(d: Dialect) {
    let (master, slave) = SerialStream::pair().expect("a pty pair");
    let slave_path = slave.name().expect("the slave has a path");
    let sim = gauge(master, &d);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "port = {slave_path:?}\ninterval = \"20ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\n{}",
        d.config
    );
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", d.name));
    let dev = lineside_drivers::parse_device("gauge", "serial", table)
        .unwrap_or_else(|issues| panic!("{}: {issues:?}", d.name));
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

    // One reading per request (one tag); the script plus two plain answers after it.
    let n = SCRIPT.len() + 2;
    let mut got: Vec<Reading> = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout(WAIT, rx.recv_async())
            .await
            .unwrap_or_else(|_| panic!("{}: only {} readings: {got:#?}", d.name, got.len()))
            .expect("the device holds the sink");
        got.extend(batch);
    }
    drop(slave);
    stop.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    sim.abort();

    let mut errors_expected = 0;
    let mut sent_values = Vec::new();
    for (i, act) in SCRIPT
        .iter()
        .copied()
        .chain([
            Act::Value(100 + SCRIPT.len() as u32 + 1),
            Act::Value(100 + SCRIPT.len() as u32 + 2),
        ])
        .enumerate()
    {
        let r = &got[i];
        let ctx = format!("{} request {} ({act:?}): {r:?}", d.name, i + 1);
        match act {
            Act::Value(v) | Act::GarbageThenValue(v) | Act::Split(v) => {
                assert_eq!(r.quality, Quality::Good, "{ctx}");
                let want = (d.reads_as)(value_of(v));
                match r.value {
                    Some(Value::F64(x)) => assert!((x - want).abs() < 1e-6, "{ctx}: {x} != {want}"),
                    _ => panic!("{ctx}"),
                }
                sent_values.push(want);
                if matches!(act, Act::GarbageThenValue(_)) {
                    errors_expected += 1;
                }
            }
            Act::Error => match &r.quality {
                Quality::Bad(why) => assert!(why.starts_with(d.error_reason), "{ctx}"),
                _ => panic!("{ctx}"),
            },
            Act::LateTail(_) => match &r.quality {
                Quality::Bad(why) => assert!(why.starts_with("timeout: incomplete reply"), "{ctx}"),
                _ => panic!("{ctx}"),
            },
            Act::NoiseOnly => {
                errors_expected += 1;
                match &r.quality {
                    Quality::Bad(why) => {
                        assert!(
                            why.starts_with("no valid reply: framing: invalid byte 0x80"),
                            "{ctx}"
                        )
                    }
                    _ => panic!("{ctx}"),
                }
            }
        }
    }
    // Nothing invented: one reading per request, each checked above, so the late reply's value (and any
    // other value the gauge did not send as that request's answer) never arrived.
    assert_eq!(
        got.len(),
        n,
        "{}: more readings than requests: {got:#?}",
        d.name
    );
    assert_eq!(sent_values.len(), n - 4, "{}", d.name);
    let exceptions = metrics.exceptions.load(Ordering::Relaxed);
    assert!(
        exceptions >= 2,
        "{}: two error replies, {exceptions} exceptions",
        d.name
    );
    let errors = metrics.errors.load(Ordering::Relaxed);
    assert!(
        errors >= errors_expected,
        "{}: {errors} errors, garbage lines {errors_expected}",
        d.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_mitutoyo() {
    run_dialect(dialects().remove(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_mitutoyo_id() {
    run_dialect(dialects().remove(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_sylvac() {
    run_dialect(dialects().remove(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_mahr() {
    run_dialect(dialects().remove(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_line() {
    run_dialect(dialects().remove(4)).await;
}
