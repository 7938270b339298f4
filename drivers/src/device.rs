//! The driver contract: what a configured device is, what it gets to run, and how it reports.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::reading::Reading;
use crate::report::BadReports;

pub type DeviceFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A device parsed from one `[[device]]` table, ready to run. Built by [`crate::parse_device`].
pub trait Device: Send + 'static {
    fn name(&self) -> &str;
    /// The driver kind as written in the config (`sim`, `modbus`, ...).
    fn kind(&self) -> &'static str;
    /// The tags this device produces, so the agent can check references (e.g. SPC source tags).
    fn tags(&self) -> Vec<TagInfo>;
    /// A human-readable request plan for `lineside check --plan`, where the driver has one.
    fn plan(&self) -> Option<String> {
        None
    }
    /// Runs until `ctx.shutdown` is cancelled. Must never return early on device faults: it reports them as
    /// bad-quality readings and keeps retrying with backoff.
    fn run(self: Box<Self>, ctx: DeviceContext) -> DeviceFuture;
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagInfo {
    pub name: String,
    pub unit: Option<String>,
    /// True when the tag yields numbers (SPC can chart it).
    pub numeric: bool,
    /// True only when the config explicitly allows writes to this tag.
    pub writable: bool,
}

/// What a running device gets from the agent.
#[derive(Clone)]
pub struct DeviceContext {
    pub sink: ReadingSink,
    pub metrics: Arc<DeviceMetrics>,
    pub shutdown: CancellationToken,
    /// The agent's state directory (e.g. /var/lib/lineside): where a driver keeps files it owns, such as
    /// the OPC UA PKI directory. Relative paths in a device's config resolve against it.
    pub state_dir: PathBuf,
}

impl DeviceContext {
    /// Hands a batch to the store (waits when the store is behind: back-pressure, not loss) and counts it.
    /// Repeats of a fault are dropped first (report by exception, see [`crate::report`]).
    /// Returns `Err` only when the agent is shutting down.
    pub async fn publish(&self, mut batch: Vec<Reading>) -> Result<(), SinkClosed> {
        self.metrics.filter_bad(&mut batch);
        if batch.is_empty() {
            return Ok(());
        }
        let bad = batch.iter().filter(|r| !r.quality.is_good()).count() as u64;
        let n = batch.len() as u64;
        self.sink.send(batch).await?;
        self.metrics.readings.fetch_add(n, Ordering::Relaxed);
        self.metrics.bad_readings.fetch_add(bad, Ordering::Relaxed);
        Ok(())
    }
}

/// The sending end of the bounded ingest channel into the store.
#[derive(Clone)]
pub struct ReadingSink(flume::Sender<Vec<Reading>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

impl std::fmt::Display for SinkClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the store is closed")
    }
}
impl std::error::Error for SinkClosed {}

impl ReadingSink {
    pub fn new(tx: flume::Sender<Vec<Reading>>) -> Self {
        ReadingSink(tx)
    }

    /// A sink and its receiving end with room for `capacity` batches, for tests and the agent.
    pub fn bounded(capacity: usize) -> (Self, flume::Receiver<Vec<Reading>>) {
        let (tx, rx) = flume::bounded(capacity);
        (ReadingSink(tx), rx)
    }

    pub async fn send(&self, batch: Vec<Reading>) -> Result<(), SinkClosed> {
        self.0.send_async(batch).await.map_err(|_| SinkClosed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DeviceState {
    Starting = 0,
    Connected = 1,
    Disconnected = 2,
    Stopped = 3,
}

impl DeviceState {
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Starting => "starting",
            DeviceState::Connected => "connected",
            DeviceState::Disconnected => "disconnected",
            DeviceState::Stopped => "stopped",
        }
    }
}

/// Counters per device, read by the agent's metrics endpoint and status message. Drivers update them;
/// `readings`/`bad_readings` are counted by [`DeviceContext::publish`].
#[derive(Debug)]
pub struct DeviceMetrics {
    pub device: String,
    pub kind: &'static str,
    pub readings: AtomicU64,
    pub bad_readings: AtomicU64,
    /// Requests sent to the device (polls, reads, transactions).
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    /// Protocol-level refusals from the device (Modbus exceptions, instrument `ERRn`, OPC UA bad status).
    pub exceptions: AtomicU64,
    /// Transport and framing errors (I/O errors, malformed frames, parse failures).
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    /// Bad readings not passed on because they repeated a fault already reported (report by exception).
    pub bad_suppressed: AtomicU64,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    notes: Mutex<Vec<String>>,
    bad_reports: Mutex<BadReports>,
}

impl DeviceMetrics {
    pub fn new(device: &str, kind: &'static str) -> Self {
        DeviceMetrics {
            device: device.to_string(),
            kind,
            readings: AtomicU64::new(0),
            bad_readings: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            bad_suppressed: AtomicU64::new(0),
            state: AtomicU8::new(DeviceState::Starting as u8),
            last_error: Mutex::new(None),
            notes: Mutex::new(Vec::new()),
            bad_reports: Mutex::new(BadReports::default()),
        }
    }

    /// How often a tag that stays bad for the same reason is reported again (`ZERO`: every time).
    pub fn set_bad_heartbeat(&self, heartbeat: Duration) {
        if let Ok(mut f) = self.bad_reports.lock() {
            f.set_heartbeat(heartbeat);
        }
    }

    pub fn bad_heartbeat(&self) -> Duration {
        self.bad_reports
            .lock()
            .map(|f| f.heartbeat())
            .unwrap_or(crate::report::DEFAULT_BAD_HEARTBEAT)
    }

    fn filter_bad(&self, batch: &mut Vec<Reading>) {
        if let Ok(mut f) = self.bad_reports.lock() {
            let dropped = f.filter(batch, Instant::now());
            self.bad_suppressed
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    pub fn set_state(&self, state: DeviceState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> DeviceState {
        match self.state.load(Ordering::Relaxed) {
            1 => DeviceState::Connected,
            2 => DeviceState::Disconnected,
            3 => DeviceState::Stopped,
            _ => DeviceState::Starting,
        }
    }

    pub fn set_last_error(&self, error: impl Into<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error.into());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// What the driver changed at run time that an operator should know (e.g. Modbus read requests split
    /// after exceptions); shown in `/status`. Replaces the previous notes.
    pub fn set_notes(&self, notes: Vec<String>) {
        if let Ok(mut slot) = self.notes.lock() {
            *slot = notes;
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Logs the first error of a burst and then stays quiet until the device recovers or `quiet` has
/// passed, so a dead device does not flood the journal. Call [`ErrorBurst::error`] on every failure and
/// [`ErrorBurst::ok`] on every success.
#[derive(Debug)]
pub struct ErrorBurst {
    quiet: Duration,
    started: Option<Instant>,
    suppressed: u64,
}

impl ErrorBurst {
    pub fn new(quiet: Duration) -> Self {
        ErrorBurst {
            quiet,
            started: None,
            suppressed: 0,
        }
    }

    /// Returns true when this error should be logged (first of a burst, or a periodic reminder that
    /// carries the number suppressed since, available from [`ErrorBurst::suppressed`]).
    pub fn error(&mut self) -> bool {
        let now = Instant::now();
        match self.started {
            Some(t) if now.duration_since(t) < self.quiet => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.started = Some(now);
                true
            }
        }
    }

    /// Number of errors suppressed in the current burst; reset by [`ErrorBurst::take_suppressed`].
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// Ends the burst. Returns how many errors were suppressed in it, so the caller can log a recovery line.
    pub fn ok(&mut self) -> Option<u64> {
        self.started.take().map(|_| self.take_suppressed())
    }
}

/// Exponential backoff with full jitter, for reconnect loops.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in [cap/2, cap] where cap doubles per attempt up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX);
        let cap = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(1),
            "after many attempts the delay sits near the cap: {late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn error_burst_logs_first_and_counts_the_rest() {
        let mut burst = ErrorBurst::new(Duration::from_secs(60));
        assert!(burst.error());
        assert!(!burst.error());
        assert!(!burst.error());
        assert_eq!(burst.ok(), Some(2));
        assert_eq!(burst.ok(), None);
        assert!(burst.error(), "a new burst after recovery is logged again");
    }
}
