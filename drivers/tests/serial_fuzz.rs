//! Property tests ("fuzzing") of everything that reads bytes from a gauge: the framer, the decoder, every
//! protocol parser and the number parser, over arbitrary bytes and over inputs built from the characters
//! gauges send (which reach the parsers' deeper branches far more often than random bytes do).
//!
//! No input may panic, hang or yield a non-finite value. The number of cases per property is
//! `LINESIDE_FUZZ_CASES` (default 100 000, well under a minute in a debug build); the ignored
//! `long_run` property runs 2 000 000 cases of the full pipeline:
//!   cargo test -p lineside-drivers --features serial --test serial_fuzz -- --include-ignored --nocapture

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "serial")]

use std::sync::atomic::{AtomicU64, Ordering};

use lineside_drivers::serial::commission::interpret;
use lineside_drivers::serial::framing::{FrameEvent, Framer, Terminator, decode};
use lineside_drivers::serial::protocols::{
    LineProtocol, NumberStyle, Parsed, Protocol, parse_number,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Characters Mitutoyo, Sylvac, Mahr and typical `line` instruments put in their frames.
const ALPHABET: &[u8] = b"0123456789+-. ,;=<>?ACDEGIMNRWXmnirkNu\"\t\r\n\xB0\xB5\x80\xFF";

fn cases() -> u32 {
    std::env::var("LINESIDE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // Nothing written into the source tree; a failure prints its minimal input instead.
        failure_persistence: None,
        ..Config::default()
    })
}

/// Valid frames of each protocol, mutated below so that parsers get near-misses, not only noise.
const SEEDS: &[&[u8]] = &[
    b"01A+0000.123",
    b"02A-0012.500",
    b"GN01,+0016.2345",
    b"GW99,-0000.0042",
    b" 12.345<",
    b"-0.004 IN",
    b"ERR3",
    b"1 +012.34 mm;2 -000.12 mm;3 +001.00 in =",
    b"+012.345mm",
    b"CH2 +12.5E-1 N OK",
];

/// A seed frame with up to four random edits (replace, insert or delete a byte).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(SEEDS.to_vec()),
        proptest::collection::vec((0u8..3, any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(seed, edits)| {
            let mut v = seed.to_vec();
            for (op, pos, byte) in edits {
                let at = pos % (v.len() + 1);
                match op {
                    0 if at < v.len() => v[at] = byte,
                    1 => v.insert(at, byte),
                    _ if at < v.len() => {
                        v.remove(at);
                    }
                    _ => {}
                }
            }
            v
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..max),
        proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), 0..max),
        mutated(),
    ]
}

fn protocols() -> Vec<Protocol> {
    vec![
        Protocol::Mitutoyo,
        Protocol::MitutoyoId,
        Protocol::Sylvac,
        Protocol::Mahr,
        Protocol::Line(
            LineProtocol::new(
                r"^(?:CH(?P<channel>\d+)\s+)?(?P<value>[-+]?\s*[\d.,]+(?:[eE][-+]?\d+)?)\s*(?P<unit>[a-zA-Zµ°]+)?\s*(?P<status>OK|NG|[<=>])?$",
                Some(r"^E(?P<code>\d+)$"),
                false,
            )
            .unwrap(),
        ),
    ]
}

fn check_parsed(p: &Parsed) -> Result<(), TestCaseError> {
    if let Ok(ms) = p {
        for m in ms {
            if let Some(v) = m.value {
                prop_assert!(v.is_finite(), "non-finite value {v}");
            }
        }
    }
    Ok(())
}

static TOTAL: AtomicU64 = AtomicU64::new(0);

fn run<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let ran = AtomicU64::new(0);
    runner(cases)
        .run(&strategy, |v| {
            ran.fetch_add(1, Ordering::Relaxed);
            test(v)
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let n = ran.load(Ordering::Relaxed);
    TOTAL.fetch_add(n, Ordering::Relaxed);
    eprintln!("fuzz {name}: {n} cases, no panic");
}

#[test]
fn every_protocol_parser_survives_arbitrary_frames() {
    for proto in protocols() {
        let readings = AtomicU64::new(0);
        run(proto.name(), cases(), bytes(160), |raw| {
            // Through the decoder, as the driver does, and as lossy text (reaches more parser branches).
            if let Ok(text) = decode(&raw, false) {
                check_parsed(&proto.parse(&text))?;
            }
            let parsed = proto.parse(&String::from_utf8_lossy(&raw));
            check_parsed(&parsed)?;
            if parsed.is_ok_and(|ms| !ms.is_empty()) {
                readings.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        // How often random input happened to be a valid reading: shows the deep branches were reached.
        eprintln!(
            "fuzz {}: {} inputs parsed as readings",
            proto.name(),
            readings.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn the_framer_is_split_invariant_and_bounded() {
    let max = 24;
    let terminators = [
        Terminator::CrOrLf,
        Terminator::Bytes(b"\r\n".to_vec()),
        Terminator::Bytes(b"=".to_vec()),
    ];
    for term in terminators {
        let name = format!("framer {}", term.describe());
        run(
            &name,
            cases(),
            (bytes(200), proptest::collection::vec(0usize..200, 0..8)),
            |(raw, mut cuts)| {
                let mut whole = Framer::new(term.clone(), max);
                let mut expected = Vec::new();
                whole.push(&raw, &mut expected);
                // The same bytes delivered in arbitrary pieces give the same frames.
                cuts.push(0);
                cuts.push(raw.len());
                cuts.iter_mut().for_each(|c| *c = (*c).min(raw.len()));
                cuts.sort_unstable();
                let mut split = Framer::new(term.clone(), max);
                let mut got = Vec::new();
                for w in cuts.windows(2) {
                    split.push(&raw[w[0]..w[1]], &mut got);
                }
                prop_assert_eq!(&got, &expected);
                for ev in &expected {
                    if let FrameEvent::Frame(f) = ev {
                        prop_assert!(!f.is_empty());
                        prop_assert!(f.len() <= max, "frame of {} bytes", f.len());
                        if term == Terminator::CrOrLf {
                            prop_assert!(!f.contains(&b'\r') && !f.contains(&b'\n'));
                        }
                    }
                }
                prop_assert!(whole.pending() <= max + 2);
                Ok(())
            },
        );
    }
}

#[test]
fn numbers_parse_to_finite_values_or_errors() {
    let styles = [
        NumberStyle::default(),
        NumberStyle {
            decimal_comma: true,
            exponent: true,
        },
    ];
    run("parse_number", cases(), bytes(48), |raw| {
        let text = String::from_utf8_lossy(&raw);
        for style in styles {
            if let Ok(v) = parse_number(&text, style) {
                prop_assert!(v.is_finite());
            }
        }
        Ok(())
    });
}

#[test]
fn commissioning_interpretation_survives_arbitrary_frames() {
    let line = match protocols().pop() {
        Some(Protocol::Line(l)) => l,
        _ => unreachable!(),
    };
    run("listen interpret", cases() / 4, bytes(160), |raw| {
        let _ = interpret(&raw, true, Some(&line));
        let _ = interpret(&raw, false, None);
        Ok(())
    });
}

/// The whole receive path on a long run: bytes → framer → decoder → every parser.
#[test]
#[ignore = "long fuzz run (2M cases, minutes); run with --include-ignored"]
fn long_run() {
    let protos = protocols();
    run("pipeline (long)", 2_000_000, bytes(400), |raw| {
        let mut framer = Framer::new(Terminator::CrOrLf, 128);
        let mut events = Vec::new();
        framer.push(&raw, &mut events);
        for ev in events {
            if let FrameEvent::Frame(f) = ev
                && let Ok(text) = decode(&f, false)
            {
                for p in &protos {
                    check_parsed(&p.parse(&text))?;
                }
            }
        }
        Ok(())
    });
    eprintln!(
        "fuzz total in this process: {}",
        TOTAL.load(Ordering::Relaxed)
    );
}
