//! The writer's event side: storing events (bounded in size, see `event_cap`), holding them in memory
//! while they cannot be stored (disk full, I/O error), and the agent alarms the store raises itself when
//! data is dropped.

use std::sync::atomic::Ordering::Relaxed;

use chrono::{DateTime, Utc};
use rusqlite::params;
use tokio::sync::{oneshot, watch};

use super::Committed;
use super::budget::{Dropped, EVENT_ROW_OVERHEAD};
use super::event_cap;
use super::model::{Stream, micros};
use super::schema::{self, keys};
use super::writer::Writer;

/// Events held in memory while they cannot be stored; beyond this they are refused (and counted).
pub const MAX_HELD_EVENTS: usize = 1024;

/// An event waiting to be stored; `reply` gets its seq once it is.
pub(crate) struct HeldEvent {
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub body: serde_json::Value,
    pub reply: Option<oneshot::Sender<Result<u64, String>>>,
}

impl Writer {
    /// Stores an event now, or holds it (in order) while storing fails.
    pub(super) fn submit_event(&mut self, ev: HeldEvent) {
        if self.held.is_empty() {
            match self.append_event(ev.ts, &ev.kind, &ev.body) {
                Ok(seq) => {
                    if let Some(reply) = ev.reply {
                        let _ = reply.send(Ok(seq));
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, kind = ev.kind, "cannot store an event now; it is held in memory and retried");
                }
            }
        }
        if self.held.len() >= MAX_HELD_EVENTS {
            self.stats.events_lost.fetch_add(1, Relaxed);
            tracing::error!(
                kind = ev.kind,
                held = self.held.len(),
                "cannot store an event and too many are waiting; it is lost"
            );
            if let Some(reply) = ev.reply {
                let _ = reply.send(Err(
                    "the store cannot write and its event queue is full".into()
                ));
            }
            return;
        }
        self.held.push_back(ev);
        self.stats
            .events_held
            .store(self.held.len() as u64, Relaxed);
        self.flush_held();
    }

    /// Stores held events, oldest first, until one fails.
    pub(super) fn flush_held(&mut self) {
        let mut stored = 0;
        while let Some(ev) = self.held.pop_front() {
            match self.append_event(ev.ts, &ev.kind, &ev.body) {
                Ok(seq) => {
                    stored += 1;
                    if let Some(reply) = ev.reply {
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(_) => {
                    self.held.push_front(ev);
                    break;
                }
            }
        }
        self.stats
            .events_held
            .store(self.held.len() as u64, Relaxed);
        if stored > 0 {
            tracing::info!(stored, waiting = self.held.len(), "held events stored");
        }
    }

    /// At a stop: what is still held cannot be kept.
    pub(super) fn fail_held(&mut self, why: &str) {
        if self.held.is_empty() {
            return;
        }
        tracing::error!(events = self.held.len(), "{why}: events lost");
        for ev in self.held.drain(..) {
            self.stats.events_lost.fetch_add(1, Relaxed);
            if let Some(reply) = ev.reply {
                let _ = reply.send(Err(why.to_string()));
            }
        }
        self.stats.events_held.store(0, Relaxed);
    }

    /// One event in its own transaction; the body is bounded first.
    pub(super) fn append_event(
        &mut self,
        ts: DateTime<Utc>,
        kind: &str,
        body: &serde_json::Value,
    ) -> rusqlite::Result<u64> {
        let (kind, text, cut) = event_cap::bound(kind, body);
        if cut {
            self.stats.events_truncated.fetch_add(1, Relaxed);
            tracing::warn!(
                kind,
                bytes = text.len(),
                "an event was too large and was shortened"
            );
        }
        let seq = self.next_event_seq;
        let tx = self.conn.transaction()?;
        tx.prepare_cached("INSERT INTO events (seq, ts, kind, body) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![seq as i64, micros(ts), kind, text])?;
        schema::meta_set(&tx, keys::NEXT_EVENT_SEQ, (seq + 1) as i64)?;
        tx.commit()?;
        self.next_event_seq += 1;
        if self.budget.is_some() {
            self.event_bytes += (text.len() + kind.len()) as u64 + EVENT_ROW_OVERHEAD;
        }
        self.stats.events.fetch_add(1, Relaxed);
        self.stats.last_event_seq.store(seq, Relaxed);
        let head = self.committed();
        self.high_water.update(head, None);
        // After the seq moved, so the marks written before the checkpoint cover this event.
        self.checkpoint_if_large();
        if self
            .budget
            .is_some_and(|b| self.event_bytes > b.events_high)
        {
            // An alarm storm: prune events now rather than at the next tick.
            self.pending_maintenance = true;
        }
        Ok(seq)
    }

    /// Data of a stream had to go: count, log, move the cursor past it (when it was next in line) and
    /// raise an agent alarm.
    pub(super) fn record_drop(
        &mut self,
        stream: Stream,
        drop: Dropped,
        committed: &watch::Sender<Committed>,
    ) {
        let (counter, key, name) = match stream {
            Stream::Readings => (
                &self.stats.dropped_unforwarded,
                keys::DROPPED_UNFORWARDED,
                "readings",
            ),
            Stream::Events => (&self.stats.dropped_events, keys::DROPPED_EVENTS, "events"),
        };
        let total = counter.fetch_add(drop.count, Relaxed) + drop.count;
        tracing::warn!(
            stream = name,
            first_seq = drop.first_seq,
            last_seq = drop.last_seq,
            count = drop.count,
            total,
            reason = drop.reason,
            "dropped unforwarded data"
        );
        let cursor = match stream {
            Stream::Readings => self.cursor_readings,
            Stream::Events => self.cursor_events,
        };
        if drop.first_seq <= cursor + 1 {
            self.ack(stream, drop.last_seq);
        }
        let body = serde_json::json!({
            "kind": "agent.data_dropped",
            "severity": "violation",
            "stream": name,
            "reason": drop.reason,
            "first_seq": drop.first_seq,
            "last_seq": drop.last_seq,
            "count": drop.count,
            "total_dropped": total,
        });
        let result = (|| -> rusqlite::Result<()> {
            schema::meta_set(&self.conn, key, total as i64)?;
            self.persist_cursors()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record dropped data");
        }
        self.submit_event(HeldEvent {
            ts: Utc::now(),
            kind: "agent.data_dropped".into(),
            body,
            reply: None,
        });
        let _ = committed.send(self.committed());
    }

    /// A reader could not read `first_seq..=last_seq` (damaged pages) and skipped it.
    pub(super) fn record_unreadable(
        &mut self,
        stream: Stream,
        first_seq: u64,
        last_seq: u64,
        committed: &watch::Sender<Committed>,
    ) {
        let reported = match stream {
            Stream::Readings => &mut self.corrupt_reported.0,
            Stream::Events => &mut self.corrupt_reported.1,
        };
        let first = first_seq.max(*reported + 1);
        if last_seq < first {
            return; // already counted (another reader, or a restart of the forwarder)
        }
        *reported = last_seq;
        self.record_drop(
            stream,
            Dropped {
                first_seq: first,
                last_seq,
                count: last_seq - first + 1,
                reason: "corrupt",
            },
            committed,
        );
    }
}
