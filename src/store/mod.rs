//! The store: SQLite in WAL mode, owned by one writer thread fed through channels.
//!
//! Drivers send batches of readings into a bounded channel ([`Store::sink`]); the writer assigns each
//! reading the next sequence number, commits in batches (on size or interval), and only then tells the
//! rest of the agent: the forwarder through [`Store::watch_committed`], SPC and the console through
//! [`Store::subscribe`]. Events (alarms, agent notices) and forwarding cursors go through the control
//! channel. The disk budget is enforced by the same thread (see `budget`). Each database has a random
//! epoch, and high-water marks outside it catch a database that went backwards (see `identity`); the
//! forwarder publishes only what those marks already cover ([`Store::watch_durable`], see `high_water`).

mod arrivals;
mod budget;
mod event_cap;
mod events;
mod high_water;
mod identity;
mod maintenance;
mod model;
mod reader;
mod schema;
mod stats;
mod tag_cache;
mod tag_slots;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lineside_drivers::ReadingSink;
use tokio::sync::{broadcast, oneshot, watch};

pub use event_cap::MAX_EVENT_BYTES;
pub use identity::{BrokerMarks, format_epoch, marks_path, parse_epoch_hex};
pub use model::{CommittedBatch, StoredEvent, StoredReading, Stream};
pub use reader::StoreReader;
pub use stats::{StoreStats, TagCounters};

use crate::config::StoreConfig;

/// Highest committed sequence number of each stream (0 before the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub readings: u64,
    pub events: u64,
}

impl Committed {
    /// The larger of each stream's seq.
    pub fn max(self, other: Committed) -> Committed {
        Committed {
            readings: self.readings.max(other.readings),
            events: self.events.max(other.events),
        }
    }

    /// Whether both streams are at or above `other`'s.
    pub fn covers(&self, other: Committed) -> bool {
        self.readings >= other.readings && self.events >= other.events
    }
}

pub(crate) enum Control {
    Event {
        ts: DateTime<Utc>,
        kind: String,
        body: serde_json::Value,
        reply: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// A reader skipped `first_seq..=last_seq` of a stream because it could not be read (damaged pages).
    Unreadable {
        stream: Stream,
        first_seq: u64,
        last_seq: u64,
    },
    Flush(oneshot::Sender<()>),
    /// Tests: set a pragma on the writer's connection (e.g. `max_page_count` to make the disk "full").
    #[cfg(test)]
    Pragma(String, i64),
    Shutdown,
}

/// How long [`Store::close`] waits for the writer to finish its work before telling it to stop at once.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long [`Store::close`] waits in all.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot open the database {0}: {1}")]
    Open(PathBuf, rusqlite::Error),
    #[error("the store has stopped")]
    Stopped,
    #[error("{0}")]
    Write(String),
}

/// Handle to the running store. Cheap to clone the parts it hands out.
pub struct Store {
    path: PathBuf,
    ctrl: flume::Sender<Control>,
    data: flume::Sender<Vec<lineside_drivers::Reading>>,
    acked: Arc<Acked>,
    committed: watch::Receiver<Committed>,
    batches: broadcast::Sender<Arc<CommittedBatch>>,
    /// What the high-water marks on disk cover: the forwarder's upper bound.
    durable: watch::Receiver<Committed>,
    /// Committed batches once the marks cover them.
    durable_batches: broadcast::Sender<Arc<CommittedBatch>>,
    stats: Arc<StoreStats>,
    epoch: u64,
    thread: Option<JoinHandle<()>>,
    /// Set when the writer must stop now (a commit that keeps failing is abandoned).
    abort: Arc<AtomicBool>,
    /// Closed by the writer thread when it ends.
    ended: flume::Receiver<()>,
}

impl Store {
    /// Opens (or creates) the database and starts the writer thread.
    pub fn open(cfg: &StoreConfig, ingest_queue: usize) -> Result<Store, StoreError> {
        Self::open_with_broker_marks(cfg, ingest_queue, None)
    }

    /// [`Store::open`], with the high-water marks read back from the broker as a second source beside
    /// the marks file (see [`BrokerMarks`]).
    pub fn open_with_broker_marks(
        cfg: &StoreConfig,
        ingest_queue: usize,
        broker_marks: Option<BrokerMarks>,
    ) -> Result<Store, StoreError> {
        Self::open_with_clock(
            cfg,
            ingest_queue,
            Box::new(arrivals::SystemClock::new()),
            broker_marks,
        )
    }

    fn open_with_clock(
        cfg: &StoreConfig,
        ingest_queue: usize,
        clock: Box<dyn arrivals::Clock>,
        broker_marks: Option<BrokerMarks>,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        }
        let (data_tx, data_rx) = flume::bounded(ingest_queue);
        let (ctrl_tx, ctrl_rx) = flume::unbounded();
        let stats = Arc::new(StoreStats::default());
        let (batches, _) = broadcast::channel(1024);
        let abort = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Acked::default());
        let w = writer::Writer::open(
            cfg.clone(),
            stats.clone(),
            batches.clone(),
            abort.clone(),
            clock,
            broker_marks,
            acked.clone(),
        )
        .map_err(|e| StoreError::Open(cfg.path.clone(), e))?;
        let epoch = w.epoch;
        let durable = w.high_water.watch_durable();
        let durable_batches = w.high_water.batches();
        let (committed_tx, committed) = watch::channel(w.committed());
        let (ended_tx, ended) = flume::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                w.run(data_rx, ctrl_rx, committed_tx);
                drop(ended_tx);
            })
            .map_err(|e| StoreError::Write(format!("cannot start the writer thread: {e}")))?;
        maintenance::quick_check_in_background(cfg.path.clone(), stats.clone());
        Ok(Store {
            path: cfg.path.clone(),
            ctrl: ctrl_tx,
            data: data_tx,
            acked,
            committed,
            batches,
            durable,
            durable_batches,
            stats,
            epoch,
            thread: Some(thread),
            abort,
            ended,
        })
    }

    /// The random id of this database (see the README's delivery contract): a subscriber de-duplicates
    /// on (agent, epoch, seq).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A sink for a driver: readings sent here are committed in order of arrival.
    pub fn sink(&self) -> ReadingSink {
        ReadingSink::new(self.data.clone())
    }

    /// Changes whenever something is committed.
    pub fn watch_committed(&self) -> watch::Receiver<Committed> {
        self.committed.clone()
    }

    /// The highest seqs the high-water marks on disk cover (≤ [`Store::watch_committed`]). The
    /// forwarder publishes nothing above them, so a store that loses its tail (a WAL lost right after a
    /// checkpoint) can never hand out again a seq that a subscriber has seen.
    pub fn watch_durable(&self) -> watch::Receiver<Committed> {
        self.durable.clone()
    }

    /// Committed batches once the high-water marks cover them, in order (the forwarder's fast path).
    /// A receiver that falls behind gets `Lagged` and reads the missed readings from the store.
    pub fn subscribe_durable(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.durable_batches.subscribe()
    }

    /// Every committed batch, in order. A receiver that falls behind gets `Lagged` and must read the
    /// missed readings back from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.batches.subscribe()
    }

    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// A read-only connection, e.g. for the forwarder. It skips ranges it cannot read (damaged pages)
    /// and reports them to the writer, which counts and announces them.
    pub fn reader(&self) -> rusqlite::Result<StoreReader> {
        Ok(StoreReader::open(&self.path)?.reporting_to(self.ctrl.clone()))
    }

    /// A reader for the forwarder: like [`Store::reader`], but it never returns a reading or an event
    /// above [`Store::watch_durable`].
    pub fn forwarding_reader(&self) -> rusqlite::Result<StoreReader> {
        Ok(self.reader()?.bounded_by(self.durable.clone()))
    }

    /// Stores an event and returns its sequence number once it is committed.
    pub async fn append_event(
        &self,
        kind: &str,
        ts: DateTime<Utc>,
        body: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ctrl
            .send(Control::Event {
                ts,
                kind: kind.to_string(),
                body,
                reply: Some(tx),
            })
            .map_err(|_| StoreError::Stopped)?;
        rx.await
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::Write)
    }

    pub fn acker(&self) -> Acker {
        Acker(self.acked.clone())
    }

    /// Commits everything received so far, and returns once the high-water marks cover it (the
    /// forwarder may publish it).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ctrl
            .send(Control::Flush(tx))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    #[cfg(test)]
    pub(crate) fn set_pragma(&self, name: &str, value: i64) {
        let _ = self.ctrl.send(Control::Pragma(name.to_string(), value));
    }

    /// Commits what is pending, persists the cursors and stops the writer. Readings still in the channel
    /// are committed first. Returns within [`CLOSE_LIMIT`] even when the disk is full: after
    /// [`CLOSE_GRACE`] the writer is told to give up a commit that keeps failing (what is committed
    /// stays committed).
    pub fn close(self) {
        self.close_in_time();
    }

    /// [`Store::close`], telling whether the writer finished its work (false: it was abandoned).
    pub fn close_in_time(mut self) -> bool {
        self.shutdown(CLOSE_GRACE, CLOSE_LIMIT)
    }

    fn shutdown(&mut self, grace: Duration, limit: Duration) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let _ = self.ctrl.send(Control::Shutdown);
        let started = std::time::Instant::now();
        if self.ended.recv_timeout(grace).is_ok() || self.ended.is_disconnected() {
            return join(thread);
        }
        tracing::warn!("the store is still busy at shutdown (disk full?); telling it to stop now");
        self.abort.store(true, Relaxed);
        let left = limit.saturating_sub(started.elapsed());
        if self.ended.recv_timeout(left).is_ok() || self.ended.is_disconnected() {
            return join(thread);
        }
        tracing::error!(
            "the store writer did not stop in time; leaving it (committed data is safe in the database)"
        );
        false
    }
}

fn join(thread: JoinHandle<()>) -> bool {
    if thread.join().is_err() {
        tracing::error!("the store writer thread panicked");
        return false;
    }
    true
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown(CLOSE_GRACE, CLOSE_LIMIT);
    }
}

/// The forwarder's acknowledged prefixes: everything up to these seqs reached the broker. Plain
/// atomics, not messages: an acknowledgement arrives with every published message, and waking the
/// writer thread for each one cost more than the commit it follows. The writer takes them when it
/// wakes anyway (a commit, its maintenance tick, an event, a flush, the stop).
#[derive(Default)]
pub(crate) struct Acked {
    pub readings: AtomicU64,
    pub events: AtomicU64,
}

/// Lets the forwarder report acknowledged prefixes without holding the whole store.
#[derive(Clone)]
pub struct Acker(Arc<Acked>);

impl Acker {
    pub fn ack(&self, stream: Stream, seq: u64) {
        match stream {
            Stream::Readings => self.0.readings.fetch_max(seq, Relaxed),
            Stream::Events => self.0.events.fetch_max(seq, Relaxed),
        };
    }
}

#[cfg(test)]
mod tests;
