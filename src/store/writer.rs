//! The writer thread: the only code that writes to the database.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use lineside_drivers::Reading;
use rusqlite::{Connection, params};
use tokio::sync::{broadcast, watch};

use super::arrivals::{Arrivals, Clock};
use super::budget::{self, Budget};
use super::events::HeldEvent;
use super::high_water::HighWater;
use super::identity;
use super::model::{CommittedBatch, Stream, micros, quality_code};
use super::schema::{self, keys};
use super::stats::{StoreStats, TagCounters};
use super::tag_cache::TagCache;
use super::tag_slots::TagSlots;
use super::{Committed, Control};
use crate::config::StoreConfig;

/// Tags a batch added: (id, device, tag), clones of the readings' `Arc`s.
type NewTags = Vec<(i64, Arc<str>, Arc<str>)>;

/// device → tag → [(unit, tag id)]: one entry per unit the tag was seen with, almost always one, so an
/// exactly sized slice rather than a `Vec` (which would reserve four).
type TagIds = HashMap<Arc<str>, HashMap<Arc<str>, Box<[(Option<Arc<str>>, i64)]>>>;

pub(super) struct Writer {
    pub(super) cfg: StoreConfig,
    pub(super) conn: Connection,
    pub(super) stats: Arc<StoreStats>,
    batches: broadcast::Sender<Arc<CommittedBatch>>,
    pub(super) budget: Option<Budget>,
    pub(super) next_seq: u64,
    pub(super) next_event_seq: u64,
    pub(super) cursor_readings: u64,
    pub(super) cursor_events: u64,
    pub(super) cursor_dirty: bool,
    /// device → tag → [(unit, tag id)]: avoids a query per reading and a key allocation per lookup.
    tag_ids: TagIds,
    /// Tag ids by the identity of the readings' `Arc<str>`s: drivers hand out one `Arc` per tag, so
    /// after a tag's first reading its id is found without hashing or comparing strings.
    tag_cache: TagCache,
    /// The tag id of each reading of the batch being written (reused buffer).
    batch_ids: Vec<i64>,
    /// Per-tag counts accumulated in the current batch, indexed by tag id.
    tag_counts: TagSlots<(u64, u64)>,
    pub(super) epoch: u64,
    pub(super) high_water: HighWater,
    /// The forwarder's acknowledged prefixes (see `Acked`), taken whenever the thread wakes.
    acked: Arc<super::Acked>,
    pub(super) arrivals: Arrivals,
    /// Bytes the events take (see `budget::EVENT_ROW_OVERHEAD`); kept only under a size budget.
    pub(super) event_bytes: u64,
    /// Events that could not be stored yet (disk full, I/O error), oldest first; retried.
    pub(super) held: VecDeque<HeldEvent>,
    /// Set by `Store::close` when the writer must stop now even if a commit keeps failing.
    abort: Arc<AtomicBool>,
    /// Highest seq of each stream already reported as unreadable, so a range is counted once.
    pub(super) corrupt_reported: (u64, u64),
    /// The events outgrew their share: prune before waiting for more work.
    pub(super) pending_maintenance: bool,
    /// WAL size past which a commit is followed by a PASSIVE checkpoint.
    pub(super) wal_limit: u64,
}

enum Got {
    Data(Vec<Reading>),
    Ctrl(Control),
    DataClosed,
    CtrlClosed,
    Timeout,
}

impl Writer {
    pub fn open(
        cfg: StoreConfig,
        stats: Arc<StoreStats>,
        batches: broadcast::Sender<Arc<CommittedBatch>>,
        abort: Arc<AtomicBool>,
        clock: Box<dyn Clock>,
        broker_marks: Option<identity::BrokerMarks>,
        acked: Arc<super::Acked>,
    ) -> rusqlite::Result<Self> {
        let budget = cfg.max_size.map(|m| Budget::new(m, cfg.events_share));
        let wal_limit = budget
            .as_ref()
            .map(|b| b.wal_limit)
            .unwrap_or(64 * 1024 * 1024);
        let conn = schema::open_writer(&cfg.path, cfg.synchronous, wal_limit)?;
        let get = |k| schema::meta_get(&conn, k).map(|v| v.unwrap_or(0).max(0) as u64);
        let max_seq: u64 = conn
            .query_row("SELECT ifnull(max(seq), 0) FROM readings", [], |r| {
                r.get::<_, i64>(0)
            })?
            .max(0) as u64;
        let max_event: u64 = conn
            .query_row("SELECT ifnull(max(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })?
            .max(0) as u64;
        let mut next_seq = get(keys::NEXT_READING_SEQ)?.max(max_seq + 1).max(1);
        let mut next_event_seq = get(keys::NEXT_EVENT_SEQ)?.max(max_event + 1).max(1);
        let marks = identity::marks_path(&cfg.path);
        let identity::Settled { epoch, reset, skip } = identity::settle(
            &conn,
            &marks,
            broker_marks,
            &mut next_seq,
            &mut next_event_seq,
        )?;
        if let Some(skip) = skip {
            tracing::info!(
                last_seq_in_database = skip.db_readings,
                reserved = skip.reserved_readings,
                last_event_seq_in_database = skip.db_events,
                events_reserved = skip.reserved_events,
                "the last run did not stop cleanly: sequences continue above the seqs it had reserved, so none it could have forwarded is reused (the ones between are never used)"
            );
        }
        let cursor_readings = get(keys::CURSOR_READINGS)?.min(next_seq - 1);
        let cursor_events = get(keys::CURSOR_EVENTS)?.min(next_event_seq - 1);
        let event_bytes = match budget {
            // A damaged events table must not keep the agent from starting.
            Some(_) => budget::event_bytes(&conn).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot measure the stored events; counting from zero");
                0
            }),
            None => 0,
        };
        stats.epoch.store(epoch, Relaxed);
        // Seqs between the last reading in the database and the next one to hand out hold nothing
        // (skipped after an unclean stop, or a reset): the backlog does not count them.
        stats.gap_after.store(max_seq, Relaxed);
        stats.gap_to.store((next_seq - 1).max(max_seq), Relaxed);
        stats
            .dropped_unforwarded
            .store(get(keys::DROPPED_UNFORWARDED)?, Relaxed);
        stats
            .dropped_events
            .store(get(keys::DROPPED_EVENTS)?, Relaxed);
        stats.last_seq.store(next_seq - 1, Relaxed);
        stats.last_event_seq.store(next_event_seq - 1, Relaxed);
        stats.cursor_readings.store(cursor_readings, Relaxed);
        stats.cursor_events.store(cursor_events, Relaxed);
        let arrivals = Arrivals::new(&conn, clock, cfg.max_age)?;
        let mut w = Writer {
            cfg,
            conn,
            stats,
            batches,
            budget,
            next_seq,
            next_event_seq,
            cursor_readings,
            cursor_events,
            cursor_dirty: false,
            tag_ids: HashMap::new(),
            tag_cache: TagCache::default(),
            batch_ids: Vec::new(),
            tag_counts: TagSlots::default(),
            epoch,
            high_water: HighWater::new(marks, epoch),
            acked,
            arrivals,
            event_bytes,
            held: VecDeque::new(),
            abort,
            corrupt_reported: (cursor_readings, cursor_events),
            pending_maintenance: false,
            wal_limit,
        };
        w.load_tags()?;
        if let Some(reset) = reset {
            tracing::error!(
                reason = reset.reason,
                marks_source = reset.marks_source,
                old_epoch = reset.old_epoch.map(identity::format_epoch),
                new_epoch = %identity::format_epoch(reset.new_epoch),
                last_seq_in_database = reset.db_readings,
                high_water = reset.mark_readings,
                last_event_seq_in_database = reset.db_events,
                event_high_water = reset.mark_events,
                "the store went backwards (lost its tail or was replaced): a new epoch starts and sequences continue above the high-water marks, so no (epoch, seq) is reused"
            );
            w.append_event(chrono::Utc::now(), "agent.store_reset", &reset.event_body())?;
        }
        // The marks cover everything in the database before anything is forwarded.
        let start = w.committed();
        w.high_water.ensure_durable(start);
        Ok(w)
    }

    pub fn committed(&self) -> Committed {
        Committed {
            readings: self.next_seq - 1,
            events: self.next_event_seq - 1,
        }
    }

    fn load_tags(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, device, tag, unit FROM tags ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        // The counters are plain numbers: a panic elsewhere while holding the lock leaves nothing
        // inconsistent that matters here.
        let mut counters = self
            .stats
            .tags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut units: Vec<Arc<str>> = Vec::new();
        for row in rows {
            let (id, device, tag, unit) = row?;
            // One allocation per device and per distinct unit, shared by the id map and the counters.
            let device = match self.tag_ids.get_key_value(device.as_str()) {
                Some((d, _)) => d.clone(),
                None => Arc::from(device.as_str()),
            };
            let unit = (!unit.is_empty()).then(|| intern(&mut units, &unit));
            let tag: Arc<str> = Arc::from(tag.as_str());
            add_tag(&mut self.tag_ids, &device, &tag, unit, id);
            *counters.slot(id) = TagCounters {
                device,
                tag,
                committed: 0,
                bad: 0,
            };
        }
        counters.shrink_to_fit();
        Ok(())
    }

    pub fn run(
        mut self,
        data: flume::Receiver<Vec<Reading>>,
        ctrl: flume::Receiver<Control>,
        committed: watch::Sender<Committed>,
    ) {
        let mut pending: Vec<Reading> = Vec::with_capacity(self.cfg.batch_size);
        let mut first_at: Option<Instant> = None;
        let mut next_maintenance = Instant::now();
        let mut data_open = true;
        let mut flush_waiters = Vec::new();
        let mut shutting_down = false;
        let mut drained = false;
        loop {
            let now = Instant::now();
            self.take_acks();
            // Group commit: commit once the queue is drained (nothing more to batch now, after the
            // `commit_delay` below); under load the queue refills while a commit runs, so batches
            // grow by themselves, up to `batch_size`; `flush_interval` bounds the wait otherwise.
            let due = drained
                || first_at.is_some_and(|t| now >= t + self.cfg.flush_interval)
                || pending.len() >= self.cfg.batch_size;
            if due || shutting_down || !flush_waiters.is_empty() {
                if shutting_down || !flush_waiters.is_empty() {
                    // Take everything sent before the flush or shutdown request.
                    for batch in data.drain() {
                        self.stats.received.fetch_add(batch.len() as u64, Relaxed);
                        pending.extend(batch);
                    }
                }
                self.commit_with_retry(&mut pending, &committed, shutting_down);
                first_at = None;
                drained = false;
                if !flush_waiters.is_empty() {
                    // A flush ends when the forwarder may publish what it committed (at shutdown the
                    // forwarder's last turn comes right after it).
                    let head = self.committed();
                    self.high_water.ensure_durable(head);
                }
                for w in flush_waiters.drain(..) {
                    let _: Result<(), ()> = tokio::sync::oneshot::Sender::send(w, ());
                }
                if shutting_down {
                    break;
                }
            }
            if now >= next_maintenance || self.pending_maintenance {
                self.maintenance(&committed);
                next_maintenance = Instant::now() + self.cfg.maintenance_interval;
            }
            let deadline = match first_at {
                Some(t) => (t + self.cfg.flush_interval).min(next_maintenance),
                None => next_maintenance,
            };
            let mut sel =
                flume::Selector::new().recv(&ctrl, |r| r.map(Got::Ctrl).unwrap_or(Got::CtrlClosed));
            if data_open {
                sel = sel.recv(&data, |r| r.map(Got::Data).unwrap_or(Got::DataClosed));
            }
            match sel.wait_deadline(deadline).unwrap_or(Got::Timeout) {
                Got::Data(batch) => {
                    self.stats.received.fetch_add(batch.len() as u64, Relaxed);
                    pending.extend(batch);
                    let arrived = *first_at.get_or_insert_with(Instant::now);
                    // Group commit: take whatever else is already queued, up to the batch size.
                    self.take_queued(&data, &mut pending);
                    drained = data.is_empty();
                    // The queue ran dry: give the polls that fired together with this one
                    // `commit_delay` to arrive, sleeping rather than waiting on the channel, so their
                    // sends wake nobody; then they share this commit (and its message upstream).
                    // Control messages wait as long (a flush, an event, the stop: 2 ms by default).
                    if drained && pending.len() < self.cfg.batch_size {
                        let flush_at = arrived + self.cfg.flush_interval;
                        let nap = self
                            .cfg
                            .commit_delay
                            .min(flush_at.saturating_duration_since(Instant::now()));
                        if !nap.is_zero() {
                            std::thread::sleep(nap);
                            self.take_queued(&data, &mut pending);
                        }
                    }
                }
                Got::Ctrl(Control::Event {
                    ts,
                    kind,
                    body,
                    reply,
                }) => {
                    self.submit_event(HeldEvent {
                        ts,
                        kind,
                        body,
                        reply,
                    });
                    let _ = committed.send(self.committed());
                }
                Got::Ctrl(Control::Unreadable {
                    stream,
                    first_seq,
                    last_seq,
                }) => self.record_unreadable(stream, first_seq, last_seq, &committed),
                Got::Ctrl(Control::Flush(w)) => flush_waiters.push(w),
                #[cfg(test)]
                Got::Ctrl(Control::Pragma(name, value)) => {
                    if let Err(e) = self.conn.pragma_update(None, &name, value) {
                        tracing::error!(error = %e, name, "test pragma failed");
                    }
                }
                Got::Ctrl(Control::Shutdown) | Got::CtrlClosed => shutting_down = true,
                Got::DataClosed => data_open = false,
                Got::Timeout => {}
            }
        }
        self.close();
    }

    /// The last steps of a clean stop: everything committed stays committed whatever fails here.
    fn close(&mut self) {
        self.take_acks();
        if self.abort.load(Relaxed) {
            self.fail_held("the store was stopped before it could store this event");
            tracing::warn!(
                last_seq = self.next_seq - 1,
                "store stopped without its final bookkeeping (it was told to stop at once)"
            );
            let last = self.committed();
            self.high_water.update(last, None);
            self.high_water.finish();
            return;
        }
        self.flush_held();
        self.fail_held("the store stopped before it could store this event");
        if let Err(e) = self.arrivals.mark(&self.conn, self.next_seq) {
            tracing::warn!(error = %e, "cannot record the arrival time of the last readings");
        }
        if let Err(e) = self.persist_cursors() {
            tracing::error!(error = %e, "cannot persist the forwarding cursors at shutdown");
        }
        // Fold the WAL into the database so the next start (or a backup) sees one file.
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
        }
        let last = self.committed();
        self.high_water.update(last, None);
        self.high_water.finish();
        tracing::info!(
            last_seq = self.next_seq - 1,
            cursor = self.cursor_readings,
            epoch = %identity::format_epoch(self.epoch),
            "store closed"
        );
    }

    /// Takes the batches already queued, up to `batch_size` readings pending.
    fn take_queued(&self, data: &flume::Receiver<Vec<Reading>>, pending: &mut Vec<Reading>) {
        while pending.len() < self.cfg.batch_size {
            match data.try_recv() {
                Ok(b) => {
                    self.stats.received.fetch_add(b.len() as u64, Relaxed);
                    pending.extend(b);
                }
                Err(_) => break,
            }
        }
    }

    /// Moves the cursors to what the forwarder has acknowledged since the last look.
    pub(super) fn take_acks(&mut self) {
        let readings = self.acked.readings.load(Relaxed);
        let events = self.acked.events.load(Relaxed);
        self.ack(Stream::Readings, readings);
        self.ack(Stream::Events, events);
    }

    pub(super) fn ack(&mut self, stream: Stream, seq: u64) {
        match stream {
            Stream::Readings if seq > self.cursor_readings => {
                self.cursor_readings = seq.min(self.next_seq - 1);
                self.stats
                    .cursor_readings
                    .store(self.cursor_readings, Relaxed);
                self.cursor_dirty = true;
            }
            Stream::Events if seq > self.cursor_events => {
                self.cursor_events = seq.min(self.next_event_seq - 1);
                self.stats.cursor_events.store(self.cursor_events, Relaxed);
                self.cursor_dirty = true;
            }
            _ => {}
        }
    }

    /// Commits `pending`; on failure (disk full, I/O error) keeps the readings, makes room and retries, so
    /// nothing handed to the store is dropped silently. Drivers see back-pressure meanwhile. Gives up when
    /// `Store::close` says the process must stop now (what is committed stays committed).
    fn commit_with_retry(
        &mut self,
        pending: &mut Vec<Reading>,
        committed: &watch::Sender<Committed>,
        shutting_down: bool,
    ) {
        if pending.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0;
        loop {
            match self.commit(pending) {
                Ok(batch) => {
                    // The batch first: a subscriber that is caught up takes it from memory and then
                    // finds nothing left to read when the new head arrives. The forwarder gets it
                    // from the high-water thread once the marks on disk cover it.
                    let batch = Arc::new(batch);
                    let _ = self.batches.send(batch.clone());
                    let _ = committed.send(self.committed());
                    let head = self.committed();
                    self.high_water.update(head, Some(batch));
                    if !self.held.is_empty() {
                        self.flush_held();
                    }
                    self.checkpoint_if_large();
                    if let Some(b) = &self.budget
                        && budget::over(&self.conn, &self.cfg.path, b, self.event_bytes)
                            .unwrap_or(false)
                    {
                        self.maintenance(committed);
                    }
                    return;
                }
                Err(e) => {
                    attempts += 1;
                    self.stats.commit_errors.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, readings = pending.len(), attempts, "commit failed; retrying");
                    if self.abort.load(Relaxed) || (shutting_down && attempts >= 3) {
                        tracing::error!(
                            readings = pending.len(),
                            "giving up at shutdown: these readings were never acknowledged"
                        );
                        pending.clear();
                        return;
                    }
                    self.maintenance(committed);
                    // Sleep in slices so a stop request is seen at once.
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !self.abort.load(Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// A PASSIVE checkpoint (never waits for readers) once the WAL is past its limit; the regular one
    /// runs from `maintenance`.
    pub(super) fn checkpoint_if_large(&mut self) {
        if budget::wal_bytes(&self.cfg.path) > self.wal_limit {
            self.checkpoint();
        }
    }

    pub(super) fn checkpoint(&mut self) {
        // The high-water marks first: what the checkpoint makes survive a lost WAL must be below them.
        let head = self.committed();
        self.high_water.ensure_durable(head);
        let r = self
            .conn
            .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
            .and_then(|mut s| s.query_row([], |_| Ok(())));
        if let Err(e) = r {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }

    /// One transaction for the whole batch. Returns the committed batch with its first sequence number.
    fn commit(&mut self, pending: &mut Vec<Reading>) -> rusqlite::Result<CommittedBatch> {
        let first_seq = self.next_seq;
        let new_tags = match self.write_batch(pending) {
            Ok(t) => t,
            Err(e) => {
                // Nothing of the transaction exists: forget the ids it interned and its arrival mark.
                self.arrivals.forget_mark(&self.conn);
                self.tag_ids.clear();
                self.tag_cache.clear();
                self.tag_counts.values_mut().for_each(|c| *c = (0, 0));
                self.load_tags()?;
                return Err(e);
            }
        };
        self.cursor_dirty = false;
        let n = pending.len() as u64;
        self.next_seq += n;
        self.stats.committed.fetch_add(n, Relaxed);
        self.stats.transactions.fetch_add(1, Relaxed);
        self.stats.last_seq.store(self.next_seq - 1, Relaxed);
        self.publish_tag_counts(new_tags);
        let readings = std::mem::replace(pending, Vec::with_capacity(self.cfg.batch_size));
        Ok(CommittedBatch {
            first_seq,
            readings,
        })
    }

    /// Inserts and commits the batch; returns the tags it added. Rows go in [`ROWS_PER_INSERT`] at a
    /// time through one cached multi-row statement, values bound straight from the readings.
    fn write_batch(&mut self, pending: &[Reading]) -> rusqlite::Result<NewTags> {
        let first_seq = self.next_seq;
        let tx = self.conn.transaction()?;
        let mut new_tags = Vec::new();
        {
            let mut ids = std::mem::take(&mut self.batch_ids);
            ids.clear();
            for r in pending {
                let id = match self.tag_cache.get(r) {
                    Some(id) => id,
                    None => {
                        let id = match lookup(&self.tag_ids, r) {
                            Some(id) => id,
                            None => {
                                let id = intern_tag(&tx, r)?;
                                add_tag(&mut self.tag_ids, &r.device, &r.tag, r.unit.clone(), id);
                                new_tags.push((id, r.device.clone(), r.tag.clone()));
                                id
                            }
                        };
                        self.tag_cache.insert(r, id);
                        id
                    }
                };
                ids.push(id);
            }
            let mut seq = first_seq;
            let mut chunks = pending.chunks_exact(ROWS_PER_INSERT);
            let mut id_chunks = ids.chunks_exact(ROWS_PER_INSERT);
            if chunks.len() > 0 {
                let mut insert = tx.prepare_cached(insert_sql(ROWS_PER_INSERT))?;
                for (rows, row_ids) in (&mut chunks).zip(&mut id_chunks) {
                    bind_rows(&mut insert, seq, rows, row_ids)?;
                    insert.raw_execute()?;
                    seq += rows.len() as u64;
                }
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut insert = tx.prepare_cached(insert_sql(1))?;
                for (r, id) in rest.iter().zip(id_chunks.remainder()) {
                    bind_rows(&mut insert, seq, std::slice::from_ref(r), &[*id])?;
                    insert.raw_execute()?;
                    seq += 1;
                }
            }
            for (r, &tag_id) in pending.iter().zip(&ids) {
                let counts = self.tag_counts.slot(tag_id);
                counts.0 += 1;
                counts.1 += u64::from(!r.quality.is_good());
            }
            self.batch_ids = ids;
            schema::meta_set(&tx, keys::NEXT_READING_SEQ, seq as i64)?;
            self.arrivals.mark(&tx, seq)?;
            if self.cursor_dirty {
                schema::meta_set(&tx, keys::CURSOR_READINGS, self.cursor_readings as i64)?;
                schema::meta_set(&tx, keys::CURSOR_EVENTS, self.cursor_events as i64)?;
            }
        }
        tx.commit()?;
        Ok(new_tags)
    }

    fn publish_tag_counts(&mut self, new_tags: NewTags) {
        let mut counters = self
            .stats
            .tags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Grow once per batch to what it needs: growing per tag would double the capacity.
        if let Some(max) = new_tags.iter().map(|(id, ..)| *id).max() {
            counters.reserve_up_to(max);
        }
        for (id, device, tag) in new_tags {
            let c = counters.slot(id);
            c.device = device;
            c.tag = tag;
        }
        for (id, (n, bad)) in self.tag_counts.iter_mut() {
            if *n > 0 {
                let c = counters.slot(id);
                c.committed += *n;
                c.bad += *bad;
                *n = 0;
                *bad = 0;
            }
        }
    }
}

fn lookup(ids: &TagIds, r: &Reading) -> Option<i64> {
    ids.get(&*r.device)?
        .get(&*r.tag)?
        .iter()
        .find(|(u, _)| u.as_deref() == r.unit.as_deref())
        .map(|(_, id)| *id)
}

/// Records `id` for (device, tag, unit); the map keeps clones of the given `Arc`s (no new strings).
fn add_tag(ids: &mut TagIds, device: &Arc<str>, tag: &Arc<str>, unit: Option<Arc<str>>, id: i64) {
    let units = ids
        .entry(device.clone())
        .or_default()
        .entry(tag.clone())
        .or_default();
    let mut grown = Vec::with_capacity(units.len() + 1);
    grown.extend(units.iter().cloned());
    grown.push((unit, id));
    *units = grown.into_boxed_slice();
}

/// The shared allocation of `text` among `seen` (a handful of distinct units).
fn intern(seen: &mut Vec<Arc<str>>, text: &str) -> Arc<str> {
    if let Some(a) = seen.iter().find(|a| &***a == text) {
        return a.clone();
    }
    let a: Arc<str> = Arc::from(text);
    seen.push(a.clone());
    a
}

fn intern_tag(tx: &rusqlite::Transaction<'_>, r: &Reading) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT OR IGNORE INTO tags (device, tag, unit) VALUES (?1, ?2, ?3)")?
        .execute(params![
            &*r.device,
            &*r.tag,
            r.unit.as_deref().unwrap_or("")
        ])?;
    tx.prepare_cached("SELECT id FROM tags WHERE device = ?1 AND tag = ?2 AND unit = ?3")?
        .query_row(
            params![&*r.device, &*r.tag, r.unit.as_deref().unwrap_or("")],
            |row| row.get(0),
        )
}

/// Rows per multi-row INSERT: 64 × 7 parameters, well under SQLite's limit of 32,766.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO readings ... VALUES (...), (...)` for `rows` rows; the two variants used are cached
/// by the connection, so each is prepared once.
fn insert_sql(rows: usize) -> &'static str {
    static MANY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    const ONE: &str = "INSERT INTO readings (seq, tag_id, ts, kind, value, quality, reason) VALUES (?,?,?,?,?,?,?)";
    if rows == 1 {
        return ONE;
    }
    MANY.get_or_init(|| {
        let mut sql = String::from(ONE);
        for _ in 1..ROWS_PER_INSERT {
            sql.push_str(",(?,?,?,?,?,?,?)");
        }
        sql
    })
}

/// Binds `rows` (seqs from `seq`) to a statement made by [`insert_sql`], without building
/// intermediate SQL values.
fn bind_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    seq: u64,
    rows: &[Reading],
    ids: &[i64],
) -> rusqlite::Result<()> {
    use lineside_drivers::Value;
    let mut p = 1;
    for (i, (r, &id)) in rows.iter().zip(ids).enumerate() {
        stmt.raw_bind_parameter(p, (seq + i as u64) as i64)?;
        stmt.raw_bind_parameter(p + 1, id)?;
        stmt.raw_bind_parameter(p + 2, micros(r.ts))?;
        match &r.value {
            None => {
                stmt.raw_bind_parameter(p + 3, 0i64)?;
                stmt.raw_bind_parameter(p + 4, rusqlite::types::Null)?;
            }
            Some(Value::F64(x)) => {
                stmt.raw_bind_parameter(p + 3, 1i64)?;
                if x.is_nan() {
                    stmt.raw_bind_parameter(p + 4, rusqlite::types::Null)?;
                } else {
                    stmt.raw_bind_parameter(p + 4, *x)?;
                }
            }
            Some(Value::I64(x)) => {
                stmt.raw_bind_parameter(p + 3, 2i64)?;
                stmt.raw_bind_parameter(p + 4, *x)?;
            }
            // SQLite integers are i64: a u64 above i64::MAX is kept exactly as decimal text.
            Some(Value::U64(x)) => {
                stmt.raw_bind_parameter(p + 3, 5i64)?;
                stmt.raw_bind_parameter(p + 4, x.to_string())?;
            }
            Some(Value::Bool(b)) => {
                stmt.raw_bind_parameter(p + 3, 3i64)?;
                stmt.raw_bind_parameter(p + 4, i64::from(*b))?;
            }
            Some(Value::Str(text)) => {
                stmt.raw_bind_parameter(p + 3, 4i64)?;
                stmt.raw_bind_parameter(p + 4, &**text)?;
            }
        }
        stmt.raw_bind_parameter(p + 5, quality_code(&r.quality))?;
        stmt.raw_bind_parameter(p + 6, r.quality.reason())?;
        p += 7;
    }
    Ok(())
}
