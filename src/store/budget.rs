//! The disk budget and the age limit.
//!
//! Policy: `store.max_size` bounds everything the store holds (readings, events, tags, bookkeeping and the
//! WAL). Events may use up to `store.events_share` percent of it (default 10); beyond that the oldest
//! events go, forwarded ones first (they are the prefix up to the events cursor). Readings may use the
//! rest, and whatever part of the events' share the events do not use. Within each stream pruning is a
//! prefix in sequence order, oldest first, so "forwarded first, then the oldest unforwarded" is simply
//! "delete the oldest", and whatever part of the deleted range lies past the cursor is a drop that is
//! counted per stream and reported. An alarm storm therefore prunes alarms, never readings.
//!
//! The age limit counts from when the store received a reading (the `arrivals` marks), not from the
//! device's timestamp, which may come from a clock that was wrong or stepped.

use std::path::Path;

use rusqlite::Connection;

use crate::config::StoreConfig;

/// Bytes an event row costs beyond its kind and body (seq, ts, record and cell headers).
pub const EVENT_ROW_OVERHEAD: u64 = 40;

/// How a size budget is split between the database and its WAL, and between readings and events.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The WAL is checkpointed and truncated at about this size.
    pub wal_limit: u64,
    /// Prune when the live pages exceed this...
    high: u64,
    /// ...down to this, so pruning runs in chunks rather than on every batch.
    low: u64,
    /// Prune events when they take more than this...
    pub events_high: u64,
    /// ...down to this.
    events_low: u64,
}

impl Budget {
    pub fn new(total: u64, events_percent: u8) -> Self {
        let wal_limit = (total / 16).clamp(32 * 1024, 64 * 1024 * 1024);
        let high = total.saturating_sub(wal_limit).saturating_sub(total / 20);
        let events_high = high / 100 * u64::from(events_percent.clamp(1, 90));
        Budget {
            wal_limit,
            high,
            low: high / 10 * 8,
            events_high,
            events_low: events_high / 10 * 7,
        }
    }
}

/// Where the forwarder is and how much the events take, as the writer knows it.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub cursor: u64,
    pub event_cursor: u64,
    /// Bytes the events take (kind + body + [`EVENT_ROW_OVERHEAD`] per row).
    pub event_bytes: u64,
    /// Now on the arrival clock (µs).
    pub arrival_now_us: i64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub pruned: u64,
    pub dropped: Option<Dropped>,
    pub events_pruned: u64,
    pub events_dropped: Option<Dropped>,
    /// Event bytes freed (same measure as [`Position::event_bytes`]).
    pub event_bytes_freed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub reason: &'static str,
}

/// Most rows deleted per maintenance tick, so one tick never stalls ingest for long.
const MAX_ROWS_PER_TICK: u64 = 500_000;

pub fn enforce(
    conn: &mut Connection,
    cfg: &StoreConfig,
    budget: Option<&Budget>,
    pos: Position,
) -> rusqlite::Result<Outcome> {
    let mut out = Outcome::default();
    let mut vacuum = false;
    if let Some(max_age) = cfg.max_age {
        let age_us = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
        let cutoff = pos.arrival_now_us.saturating_sub(age_us);
        let wall_cutoff = chrono::Utc::now().timestamp_micros().saturating_sub(age_us);
        // Forwarded events past the age limit go (their own time is the agent's clock).
        let freed: Option<i64> = conn.query_row(
            "SELECT sum(length(CAST(body AS BLOB)) + length(CAST(kind AS BLOB))) + count(*) * ?3 FROM events WHERE seq <= ?1 AND ts < ?2",
            rusqlite::params![pos.event_cursor as i64, wall_cutoff, EVENT_ROW_OVERHEAD as i64],
            |r| r.get(0),
        )?;
        if let Some(freed) = freed {
            let n = conn.execute(
                "DELETE FROM events WHERE seq <= ?1 AND ts < ?2",
                rusqlite::params![pos.event_cursor as i64, wall_cutoff],
            )?;
            out.events_pruned += n as u64;
            out.event_bytes_freed += freed.max(0) as u64;
        }
        // Readings by arrival: everything below the newest mark old enough.
        let until: Option<i64> = conn.query_row(
            "SELECT max(seq) FROM arrivals WHERE received <= ?1",
            [cutoff],
            |r| r.get(0),
        )?;
        if let Some(until) = until {
            prune_readings(conn, until.max(0) as u64, "max_age", pos.cursor, &mut out)?;
        }
    }
    if let Some(b) = budget {
        let event_bytes = pos.event_bytes.saturating_sub(out.event_bytes_freed);
        if event_bytes > b.events_high {
            prune_events(conn, event_bytes - b.events_low, pos.event_cursor, &mut out)?;
            vacuum = true;
        }
        let event_bytes = pos.event_bytes.saturating_sub(out.event_bytes_freed);
        let used = live_bytes(conn)? + wal_bytes(&cfg.path);
        if used > b.high {
            let (min_seq, max_seq) = seq_range(conn)?;
            if min_seq > 0 {
                let rows = max_seq - min_seq + 1;
                // Readings' share of the used bytes, per row.
                let per_row = (used.saturating_sub(event_bytes) as f64 / rows as f64).max(1.0);
                let n = (((used - b.low) as f64 / per_row).ceil() as u64)
                    .clamp(1, MAX_ROWS_PER_TICK)
                    .min(rows);
                prune_readings(conn, min_seq + n, "max_size", pos.cursor, &mut out)?;
            }
            vacuum = true;
        }
    }
    if vacuum || (budget.is_some() && out.pruned + out.events_pruned > 0) {
        // Give the freed pages back so the file itself stays within the budget.
        // The pragma yields a row per step; it must be stepped to the end to free every page.
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(out)
}

/// Deletes readings with seq < `until` (at most [`MAX_ROWS_PER_TICK`] of them) and the arrival marks
/// they no longer need; records the part past the cursor as dropped.
fn prune_readings(
    conn: &mut Connection,
    until: u64,
    reason: &'static str,
    cursor: u64,
    out: &mut Outcome,
) -> rusqlite::Result<()> {
    let (min_seq, _) = seq_range(conn)?;
    if min_seq == 0 || until <= min_seq {
        return Ok(());
    }
    let until = until.min(min_seq.saturating_add(MAX_ROWS_PER_TICK));
    let tx = conn.transaction()?;
    let deleted = tx.execute("DELETE FROM readings WHERE seq < ?1", [until as i64])? as u64;
    tx.execute("DELETE FROM arrivals WHERE seq < ?1", [until as i64])?;
    tx.commit()?;
    out.pruned += deleted;
    let last_deleted = until - 1;
    if last_deleted > cursor {
        let first = cursor.max(min_seq - 1) + 1;
        merge_drop(
            &mut out.dropped,
            Dropped {
                first_seq: first,
                last_seq: last_deleted,
                count: last_deleted - first + 1,
                reason,
            },
        );
    }
    Ok(())
}

/// Deletes the oldest events until about `to_free` bytes are freed.
fn prune_events(
    conn: &mut Connection,
    to_free: u64,
    event_cursor: u64,
    out: &mut Outcome,
) -> rusqlite::Result<()> {
    let mut freed = 0u64;
    let mut last = None;
    let mut first = None;
    {
        let mut stmt = conn.prepare(
            "SELECT seq, length(CAST(body AS BLOB)) + length(CAST(kind AS BLOB)) FROM events ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)?.max(0) as u64;
            first.get_or_insert(seq);
            freed += row.get::<_, i64>(1)?.max(0) as u64 + EVENT_ROW_OVERHEAD;
            last = Some(seq);
            if freed >= to_free {
                break;
            }
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(());
    };
    let n = conn.execute("DELETE FROM events WHERE seq <= ?1", [last as i64])? as u64;
    out.events_pruned += n;
    out.event_bytes_freed += freed;
    if last > event_cursor {
        let from = event_cursor.max(first - 1) + 1;
        out.events_dropped = Some(Dropped {
            first_seq: from,
            last_seq: last,
            count: last - from + 1,
            reason: "max_size",
        });
    }
    Ok(())
}

/// Two drops in one pass (age, then size) are reported as one contiguous range.
fn merge_drop(slot: &mut Option<Dropped>, d: Dropped) {
    *slot = Some(match slot.take() {
        None => d,
        Some(p) => Dropped {
            first_seq: p.first_seq.min(d.first_seq),
            last_seq: p.last_seq.max(d.last_seq),
            count: p.count + d.count,
            reason: d.reason,
        },
    });
}

pub fn seq_range(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.query_row(
        "SELECT ifnull(min(seq), 0), ifnull(max(seq), 0) FROM readings",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        },
    )
}

/// Bytes the events take, by the same measure the writer keeps up to date.
pub fn event_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT ifnull(sum(length(CAST(body AS BLOB)) + length(CAST(kind AS BLOB))), 0) + count(*) * ?1 FROM events",
        [EVENT_ROW_OVERHEAD as i64],
        |r| r.get::<_, i64>(0),
    )
    .map(|b| b.max(0) as u64)
}

/// Bytes in pages that hold data (the file minus its free list).
fn live_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    // Cached statements: this runs after every commit under a budget.
    let pragma = |sql: &str| -> rusqlite::Result<i64> {
        conn.prepare_cached(sql)?.query_row([], |r| r.get(0))
    };
    let page_size = pragma("PRAGMA page_size")?;
    let pages = pragma("PRAGMA page_count")?;
    let free = pragma("PRAGMA freelist_count")?;
    Ok(((pages - free).max(0) * page_size) as u64)
}

/// Whether the live data (with the WAL) is over the pruning threshold, or the events over their share:
/// cheap enough to ask after every commit, so the file never grows far past the budget between
/// maintenance ticks.
pub fn over(
    conn: &Connection,
    path: &Path,
    budget: &Budget,
    event_bytes: u64,
) -> rusqlite::Result<bool> {
    Ok(event_bytes > budget.events_high || live_bytes(conn)? + wal_bytes(path) > budget.high)
}

pub(super) fn wal_bytes(path: &Path) -> u64 {
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0)
}

/// The database file plus its WAL, as the file system sees them.
pub fn disk_bytes(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.len() + wal_bytes(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_split_leaves_room_for_the_wal_and_gives_events_a_share() {
        let b = Budget::new(4 * 1024 * 1024, 10);
        assert_eq!(b.wal_limit, 262_144);
        assert!(b.high + b.wal_limit < 4 * 1024 * 1024);
        assert!(b.low < b.high);
        assert!(b.events_high * 9 < b.high && b.events_high * 11 > b.high);
        assert!(b.events_low < b.events_high);
    }
}
