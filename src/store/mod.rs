//! The store: SQLite in WAL mode, owned by one writer thread fed through channels.
//!
//! Drivers send batches of readings into a bounded channel ([`Store::sink`]); the writer assigns each
//! reading the next sequence number, commits in batches (on size or interval), and only then tells the
//! rest of the agent: the forwarder through [`Store::watch_committed`], SPC and the console through
//! [`Store::subscribe`]. Events (alarms, agent notices) and forwarding cursors go through the control
//! channel. The disk budget is enforced by the same thread (see `budget`).

mod budget;
mod model;
mod reader;
mod schema;
mod stats;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use lineside_drivers::ReadingSink;
use tokio::sync::{broadcast, oneshot, watch};

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

pub(crate) enum Control {
    Event {
        ts: DateTime<Utc>,
        kind: String,
        body: serde_json::Value,
        reply: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// The forwarder's acknowledged prefix: everything up to `seq` reached the broker.
    Ack {
        stream: Stream,
        seq: u64,
    },
    Flush(oneshot::Sender<()>),
    Shutdown,
}

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
    committed: watch::Receiver<Committed>,
    batches: broadcast::Sender<Arc<CommittedBatch>>,
    stats: Arc<StoreStats>,
    thread: Option<JoinHandle<()>>,
}

impl Store {
    /// Opens (or creates) the database and starts the writer thread.
    pub fn open(cfg: &StoreConfig, ingest_queue: usize) -> Result<Store, StoreError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        }
        let (data_tx, data_rx) = flume::bounded(ingest_queue);
        let (ctrl_tx, ctrl_rx) = flume::unbounded();
        let stats = Arc::new(StoreStats::default());
        let (batches, _) = broadcast::channel(1024);
        let w = writer::Writer::open(cfg.clone(), stats.clone(), batches.clone())
            .map_err(|e| StoreError::Open(cfg.path.clone(), e))?;
        let (committed_tx, committed) = watch::channel(w.committed());
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(data_rx, ctrl_rx, committed_tx))
            .map_err(|e| StoreError::Write(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            path: cfg.path.clone(),
            ctrl: ctrl_tx,
            data: data_tx,
            committed,
            batches,
            stats,
            thread: Some(thread),
        })
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

    /// Every committed batch, in order. A receiver that falls behind gets `Lagged` and must read the
    /// missed readings back from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.batches.subscribe()
    }

    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// A read-only connection, e.g. for the forwarder.
    pub fn reader(&self) -> rusqlite::Result<StoreReader> {
        StoreReader::open(&self.path)
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
        Acker(self.ctrl.clone())
    }

    /// Commits everything received so far.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ctrl
            .send(Control::Flush(tx))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)
    }

    /// Commits what is pending, persists the cursors and stops the writer. Readings still in the channel
    /// are committed first.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.ctrl.send(Control::Shutdown);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Lets the forwarder report acknowledged prefixes without holding the whole store.
#[derive(Clone)]
pub struct Acker(flume::Sender<Control>);

impl Acker {
    pub fn ack(&self, stream: Stream, seq: u64) {
        let _ = self.0.send(Control::Ack { stream, seq });
    }
}

#[cfg(test)]
mod tests;
