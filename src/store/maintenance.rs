//! The writer's periodic work: cursors, the disk budget and the age limit, stats, the high-water marks;
//! and the integrity check at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;

use super::Committed;
use super::budget::{self, Position};
use super::model::Stream;
use super::schema::{self, keys};
use super::stats::StoreStats;
use super::writer::Writer;

/// WAL size past which the maintenance tick checkpoints (SQLite's default autocheckpoint is ~4 MiB).
const MAINTENANCE_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// The integrity check at start gives up after this long (it runs beside the agent, not before it).
const QUICK_CHECK_LIMIT: Duration = Duration::from_secs(60);

impl Writer {
    pub(super) fn persist_cursors(&mut self) -> rusqlite::Result<()> {
        if !self.cursor_dirty {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        schema::meta_set(&tx, keys::CURSOR_READINGS, self.cursor_readings as i64)?;
        schema::meta_set(&tx, keys::CURSOR_EVENTS, self.cursor_events as i64)?;
        tx.commit()?;
        self.cursor_dirty = false;
        Ok(())
    }

    /// Periodic work: persist the cursors, enforce the disk budget and the age limit, retry held events,
    /// refresh the stats and the high-water marks.
    pub(super) fn maintenance(&mut self, committed: &watch::Sender<Committed>) {
        self.pending_maintenance = false;
        if let Err(e) = self.persist_cursors() {
            tracing::error!(error = %e, "cannot persist the forwarding cursors");
        }
        if let Err(e) = self.arrivals.mark(&self.conn, self.next_seq) {
            tracing::warn!(error = %e, "cannot record arrival times");
        }
        let arrival_now_us = match self.arrivals.now(&self.conn) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot shift arrival times after a clock step");
                chrono::Utc::now().timestamp_micros()
            }
        };
        let outcome = budget::enforce(
            &mut self.conn,
            &self.cfg,
            self.budget.as_ref(),
            Position {
                cursor: self.cursor_readings,
                event_cursor: self.cursor_events,
                event_bytes: self.event_bytes,
                arrival_now_us,
            },
        );
        match outcome {
            Ok(out) => {
                self.stats.pruned.fetch_add(out.pruned, Relaxed);
                self.stats
                    .events_pruned
                    .fetch_add(out.events_pruned, Relaxed);
                self.event_bytes = self.event_bytes.saturating_sub(out.event_bytes_freed);
                if let Some(drop) = out.dropped {
                    self.record_drop(Stream::Readings, drop, committed);
                }
                if let Some(drop) = out.events_dropped {
                    self.record_drop(Stream::Events, drop, committed);
                }
            }
            Err(e) => tracing::error!(error = %e, "pruning failed"),
        }
        if !self.held.is_empty() {
            self.flush_held();
        }
        // Not at every tick: a checkpoint costs I/O, and a WAL of a few MiB is what SQLite's own
        // autocheckpoint kept. (Whatever a checkpoint moves, the marks cover it first, and the
        // forwarder never publishes above the marks: see `high_water`.)
        if budget::wal_bytes(&self.cfg.path) > self.wal_limit.min(MAINTENANCE_CHECKPOINT_BYTES) {
            self.checkpoint();
        }
        if let Ok(bytes) = budget::disk_bytes(&self.cfg.path) {
            self.stats.disk_bytes.store(bytes, Relaxed);
        }
        self.stats.event_bytes.store(self.event_bytes, Relaxed);
        let oldest = self
            .conn
            .query_row(
                "SELECT ts FROM readings WHERE seq > ?1 ORDER BY seq LIMIT 1",
                [self.cursor_readings as i64],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0);
        self.stats
            .oldest_unforwarded_us
            .store(oldest.max(0) as u64, Relaxed);
        let head = self.committed();
        self.high_water.update(head, None);
    }
}

/// `PRAGMA quick_check` on its own read connection and thread, so a large file does not delay the start;
/// interrupted after [`QUICK_CHECK_LIMIT`]. Problems are logged with what to do, and counted.
pub fn quick_check_in_background(path: PathBuf, stats: Arc<StoreStats>) {
    let spawned = std::thread::Builder::new()
        .name("store-check".into())
        .spawn(move || {
            let conn = match Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the database for its integrity check");
                    return;
                }
            };
            let interrupt = conn.get_interrupt_handle();
            let (done_tx, done_rx) = flume::bounded::<()>(1);
            let _ = std::thread::Builder::new()
                .name("store-check-timer".into())
                .spawn(move || {
                    if done_rx.recv_timeout(QUICK_CHECK_LIMIT).is_err() {
                        interrupt.interrupt();
                    }
                });
            let started = Instant::now();
            let result = quick_check(&conn);
            let _ = done_tx.send(());
            match result {
                Ok(problems) if problems.is_empty() => tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "database integrity check (quick_check) passed"
                ),
                Ok(problems) => {
                    stats.integrity_problems.store(problems.len() as u64, Relaxed);
                    tracing::error!(
                        path = %path.display(),
                        problems = ?problems,
                        "the database is damaged (quick_check). lineside keeps running: unreadable readings and events are skipped, counted as dropped with reason \"corrupt\" and announced. To recover: stop lineside, run `sqlite3 lineside.db \".recover\" | sqlite3 recovered.db`, check it, and put recovered.db in place of lineside.db (remove lineside.db-wal and -shm); or move the file away to start an empty store (a new epoch)"
                    );
                }
                Err(e) if matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::OperationInterrupted)) => {
                    tracing::warn!(
                        seconds = QUICK_CHECK_LIMIT.as_secs(),
                        "database integrity check stopped after its time limit; the part it read was fine"
                    );
                }
                Err(e) => {
                    stats.integrity_problems.store(1, Relaxed);
                    tracing::error!(path = %path.display(), error = %e, "the database integrity check failed; see the README (Operations: damaged database) for recovery");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the database integrity check");
    }
}

/// The problems `quick_check` reports (at most 20), empty when the database is fine.
pub fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows.into_iter().filter(|r| r != "ok").collect())
}
