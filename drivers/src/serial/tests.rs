//! Unit tests of the trigger loops over an in-memory port whose DTR line can be observed, which a
//! pseudo-terminal cannot offer (ptys have no modem lines). Integration tests over real ptys live in
//! `drivers/tests/serial_*.rs`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::parse as parse_config;
use super::port::LinePort;
use super::tags::TagSet;
use super::trigger::{Session, SessionEnd};
use crate::device::{DeviceContext, DeviceMetrics, ErrorBurst, ReadingSink};
use crate::reading::{Quality, Reading, Value};

/// One end of an in-memory pipe with a DTR line that reports its changes.
struct MockPort {
    io: DuplexStream,
    dtr: mpsc::UnboundedSender<(Instant, bool)>,
    dtr_works: bool,
}

impl AsyncRead for MockPort {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for MockPort {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl LinePort for MockPort {
    fn set_dtr(&mut self, level: bool) -> io::Result<()> {
        if !self.dtr_works {
            return Err(io::Error::from_raw_os_error(25)); // ENOTTY, as a pty answers
        }
        let _ = self.dtr.send((Instant::now(), level));
        Ok(())
    }
    fn set_rts(&mut self, _level: bool) -> io::Result<()> {
        Ok(())
    }
}

struct Rig {
    ctx: DeviceContext,
    rx: flume::Receiver<Vec<Reading>>,
}

fn rig() -> Rig {
    let (sink, rx) = ReadingSink::bounded(64);
    Rig {
        ctx: DeviceContext {
            sink,
            metrics: Arc::new(DeviceMetrics::new("g", "serial")),
            shutdown: CancellationToken::new(),
            state_dir: std::env::temp_dir(),
        },
        rx,
    }
}

async fn next_batch(rx: &flume::Receiver<Vec<Reading>>) -> Vec<Reading> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv_async())
        .await
        .expect("a batch in time")
        .expect("sink open")
}

/// A Sylvac on a simplex cable: it answers each DTR pulse of at least 110 ms with a reading, and
/// ignores shorter pulses.
async fn simplex_sylvac(
    mut dtr: mpsc::UnboundedReceiver<(Instant, bool)>,
    mut wire: DuplexStream,
    log: Arc<Mutex<Vec<(Instant, bool)>>>,
) {
    let mut low_since = None;
    let mut n = 0;
    while let Some((at, level)) = dtr.recv().await {
        log.lock().unwrap().push((at, level));
        match (level, low_since) {
            (false, _) => low_since = Some(at),
            (true, Some(since)) if at - since >= Duration::from_millis(110) => {
                n += 1;
                // The reply comes in two pieces, as a slow UART would deliver it.
                let reply = format!("+{n}.250\r");
                let (a, b) = reply.as_bytes().split_at(3);
                let _ = wire.write_all(a).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = wire.write_all(b).await;
                low_since = None;
            }
            _ => low_since = None,
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dtr_pulse_drops_dtr_for_the_configured_time_and_reads_the_reply() {
    let cfg = parse_config(
        toml::from_str(
            "port='mock'\nprotocol='sylvac'\ntrigger='dtr-pulse'\ninterval='1s'\npulse='150ms'\n\
             timeout='500ms'\ninstrument_unit='mm'\n[[tag]]\nname='height'\nunit='mm'\n",
        )
        .unwrap(),
    )
    .unwrap();
    let (ours, theirs) = tokio::io::duplex(256);
    let (dtr_tx, dtr_rx) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(simplex_sylvac(dtr_rx, theirs, log.clone()));
    let mut port = MockPort {
        io: ours,
        dtr: dtr_tx,
        dtr_works: true,
    };
    let r = rig();
    let tags = TagSet::new("g", &cfg);
    let stop = r.ctx.shutdown.clone();
    let ctx = r.ctx.clone();
    let session = tokio::spawn(async move {
        let mut burst = ErrorBurst::new(Duration::from_secs(60));
        Session::new(&mut port, &cfg, &tags, &ctx, &mut burst, "g")
            .run()
            .await
    });
    for n in 1..=3 {
        let batch = next_batch(&r.rx).await;
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].quality, Quality::Good, "{batch:?}");
        assert_eq!(batch[0].value, Some(Value::F64(n as f64 + 0.25)));
    }
    stop.cancel();
    assert!(matches!(session.await.unwrap(), SessionEnd::Shutdown));
    let log = log.lock().unwrap().clone();
    // low, high, low, high, ... with each low lasting exactly the pulse (the clock is paused).
    assert!(log.len() >= 6, "{log:?}");
    for pair in log.chunks(2).take(3) {
        assert_eq!((pair[0].1, pair[1].1), (false, true));
        assert_eq!(pair[1].0 - pair[0].0, Duration::from_millis(150));
    }
    assert_eq!(
        log[2].0 - log[0].0,
        Duration::from_secs(1),
        "one pulse per interval"
    );
    let m = &r.ctx.metrics;
    assert_eq!(m.requests.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(m.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dtr_pulse_without_a_dtr_line_reports_bad_quality_and_keeps_going() {
    let cfg = parse_config(
        toml::from_str(
            "port='mock'\nprotocol='sylvac'\ntrigger='dtr-pulse'\ninterval='1s'\n[[tag]]\nname='h'\n",
        )
        .unwrap(),
    )
    .unwrap();
    let (ours, theirs) = tokio::io::duplex(256);
    let (dtr_tx, _dtr_rx) = mpsc::unbounded_channel();
    let mut port = MockPort {
        io: ours,
        dtr: dtr_tx,
        dtr_works: false,
    };
    let r = rig();
    let tags = TagSet::new("g", &cfg);
    let ctx = r.ctx.clone();
    let session = tokio::spawn(async move {
        let mut burst = ErrorBurst::new(Duration::from_secs(60));
        Session::new(&mut port, &cfg, &tags, &ctx, &mut burst, "g")
            .run()
            .await
    });
    let batch = next_batch(&r.rx).await;
    let reason = batch[0].quality.reason().unwrap_or_default().to_string();
    assert!(reason.starts_with("dtr-pulse: cannot drop DTR"), "{reason}");
    // The same fault on the next pulses: counted every time, reported once (report by exception).
    let errors = || {
        r.ctx
            .metrics
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while errors() < 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        r.rx.try_recv().is_err(),
        "a repeat of the same fault was passed on"
    );
    assert!(
        r.ctx
            .metrics
            .bad_suppressed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    // The far end closing is a lost port, not a hang.
    drop(theirs);
    let end = session.await.unwrap();
    assert!(matches!(end, SessionEnd::PortLost { .. }), "{end:?}");
}

/// The shipped examples must always parse: they are what users copy.
#[test]
fn example_configs_parse() {
    let examples = [
        (
            "serial-caliper.toml",
            include_str!("../../../config/examples/serial-caliper.toml"),
        ),
        (
            "serial-sylvac-indicator.toml",
            include_str!("../../../config/examples/serial-sylvac-indicator.toml"),
        ),
        (
            "serial-generic-line.toml",
            include_str!("../../../config/examples/serial-generic-line.toml"),
        ),
    ];
    for (file, text) in examples {
        let doc: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let devices = doc["device"].as_array().expect("[[device]]");
        assert!(!devices.is_empty(), "{file}");
        for d in devices {
            let mut table = d.as_table().unwrap().clone();
            let name = table.remove("name").unwrap();
            assert_eq!(table.remove("driver").unwrap().as_str(), Some("serial"));
            let dev = super::parse(name.as_str().unwrap(), table)
                .unwrap_or_else(|issues| panic!("{file}: {issues:?}"));
            let plan = dev.plan().unwrap();
            eprintln!("{file}:\n{plan}");
            assert!(plan.contains("port /dev/serial/by-id/"), "{file}: {plan}");
            assert!(!dev.tags().is_empty());
        }
    }
}
