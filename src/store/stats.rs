//! Counters the store keeps for metrics and the status message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::tag_slots::TagSlots;

#[derive(Debug, Default)]
pub struct StoreStats {
    /// Readings received from drivers.
    pub received: AtomicU64,
    /// Readings committed.
    pub committed: AtomicU64,
    pub transactions: AtomicU64,
    pub commit_errors: AtomicU64,
    pub events: AtomicU64,
    /// Unforwarded readings dropped to keep within the disk budget or max age.
    pub dropped_unforwarded: AtomicU64,
    /// Readings pruned in total (forwarded or not).
    pub pruned: AtomicU64,
    /// Unforwarded events dropped (events over their share of the budget, or unreadable).
    pub dropped_events: AtomicU64,
    /// Events pruned in total (forwarded or not).
    pub events_pruned: AtomicU64,
    /// Events that could not be stored (disk full) and are waiting in memory.
    pub events_held: AtomicU64,
    /// Events refused because the store could not write and too many were waiting, or still waiting at
    /// a stop.
    pub events_lost: AtomicU64,
    /// Events shortened to the size limit.
    pub events_truncated: AtomicU64,
    /// Bytes the events take (kind + body + per-row overhead), kept under a size budget.
    pub event_bytes: AtomicU64,
    /// Problems the integrity check at start found (0: none, or not finished).
    pub integrity_problems: AtomicU64,
    /// The store's epoch (see `identity`): part of every message's identity.
    pub epoch: AtomicU64,
    pub last_seq: AtomicU64,
    pub cursor_readings: AtomicU64,
    pub last_event_seq: AtomicU64,
    pub cursor_events: AtomicU64,
    /// Database + WAL bytes on disk at the last check.
    pub disk_bytes: AtomicU64,
    /// Timestamp (µs) of the oldest unforwarded reading at the last check, 0 when none.
    pub oldest_unforwarded_us: AtomicU64,
    pub tags: Mutex<TagSlots<TagCounters>>,
    /// Reading seqs `(gap_after, gap_to]` were never used: the start after an unclean stop (or a
    /// reset) continued above the seqs reserved before it. Set once at open.
    pub gap_after: AtomicU64,
    pub gap_to: AtomicU64,
}

/// Per-tag counts. The names are shared with the writer's tag table (no copy per tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagCounters {
    pub device: Arc<str>,
    pub tag: Arc<str>,
    pub committed: u64,
    pub bad: u64,
}

impl Default for TagCounters {
    fn default() -> Self {
        TagCounters {
            device: empty(),
            tag: empty(),
            committed: 0,
            bad: 0,
        }
    }
}

/// One shared empty name for unused counter slots (an `Arc<str>` of "" still allocates its counts).
fn empty() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

impl StoreStats {
    /// Readings committed but not yet acknowledged by the broker.
    pub fn backlog(&self) -> u64 {
        let cursor = self.cursor_readings.load(Relaxed);
        // The part of the unused seqs that is still above the cursor holds no readings.
        let gap = self
            .gap_to
            .load(Relaxed)
            .saturating_sub(self.gap_after.load(Relaxed).max(cursor));
        self.last_seq
            .load(Relaxed)
            .saturating_sub(cursor)
            .saturating_sub(gap)
    }

    /// The epoch as it appears in payloads.
    pub fn epoch_str(&self) -> String {
        super::identity::format_epoch(self.epoch.load(Relaxed))
    }

    pub fn tag_counters(&self) -> Vec<TagCounters> {
        self.tags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, c)| c)
            .filter(|c| !c.tag.is_empty())
            .cloned()
            .collect()
    }
}
