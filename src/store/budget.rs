//! The disk budget and the age limit.
//!
//! Readings are only ever pruned as a prefix in sequence order, oldest first. Because forwarded readings
//! are exactly the prefix up to the forwarding cursor, "forwarded data first, then the oldest unforwarded"
//! is simply "delete the oldest", and whatever part of the deleted range lies past the cursor is a drop
//! that must be counted and reported.

use std::path::Path;

use rusqlite::Connection;

use crate::config::StoreConfig;

/// How a size budget is split between the database and its WAL.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The WAL is checkpointed and truncated at about this size.
    pub wal_limit: u64,
    /// Prune when the live pages exceed this...
    high: u64,
    /// ...down to this, so pruning runs in chunks rather than on every batch.
    low: u64,
}

impl Budget {
    pub fn new(total: u64) -> Self {
        let wal_limit = (total / 16).clamp(32 * 1024, 64 * 1024 * 1024);
        let high = total.saturating_sub(wal_limit).saturating_sub(total / 20);
        Budget {
            wal_limit,
            high,
            low: high / 10 * 8,
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub pruned: u64,
    pub dropped: Option<Dropped>,
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
    cursor: u64,
    event_cursor: u64,
) -> rusqlite::Result<Outcome> {
    let mut out = Outcome::default();
    let mut cut: Option<(u64, &'static str)> = None;
    let (min_seq, max_seq) = seq_range(conn)?;
    if min_seq == 0 {
        return Ok(out);
    }
    if let Some(max_age) = cfg.max_age {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let scan_end = min_seq.saturating_add(MAX_ROWS_PER_TICK);
        let first_young: Option<i64> = conn.query_row(
            "SELECT min(seq) FROM readings WHERE seq >= ?1 AND seq < ?2 AND ts >= ?3",
            rusqlite::params![min_seq as i64, scan_end as i64, cutoff.timestamp_micros()],
            |r| r.get(0),
        )?;
        let until = first_young
            .map(|s| s as u64)
            .unwrap_or(scan_end.min(max_seq + 1));
        if until > min_seq {
            cut = Some((until, "max_age"));
        }
        conn.execute(
            "DELETE FROM events WHERE seq <= ?1 AND ts < ?2",
            rusqlite::params![event_cursor as i64, cutoff.timestamp_micros()],
        )?;
    }
    if let Some(b) = budget {
        let used = live_bytes(conn)? + wal_bytes(&cfg.path);
        if used > b.high {
            let rows = max_seq - min_seq + 1;
            let per_row = (used as f64 / rows as f64).max(1.0);
            let n = (((used - b.low) as f64 / per_row).ceil() as u64)
                .clamp(1, MAX_ROWS_PER_TICK)
                .min(rows);
            let until = min_seq + n;
            if cut.is_none_or(|(c, _)| until > c) {
                cut = Some((until, "max_size"));
            }
        }
    }
    let Some((until, reason)) = cut else {
        return Ok(out);
    };
    let tx = conn.transaction()?;
    let deleted = tx.execute("DELETE FROM readings WHERE seq < ?1", [until as i64])? as u64;
    tx.commit()?;
    out.pruned = deleted;
    let last_deleted = until - 1;
    if last_deleted > cursor {
        let first = cursor.max(min_seq - 1) + 1;
        out.dropped = Some(Dropped {
            first_seq: first,
            last_seq: last_deleted,
            count: last_deleted - first + 1,
            reason,
        });
    }
    if budget.is_some() {
        // Give the freed pages back so the file itself stays within the budget.
        // The pragma yields a row per step; it must be stepped to the end to free every page.
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(out)
}

fn seq_range(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
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

/// Bytes in pages that hold data (the file minus its free list).
fn live_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * page_size) as u64)
}

/// Whether the live data (with the WAL) is over the pruning threshold: cheap enough to ask after every
/// commit, so the file never grows far past the budget between maintenance ticks.
pub fn over(conn: &Connection, path: &Path, budget: &Budget) -> rusqlite::Result<bool> {
    Ok(live_bytes(conn)? + wal_bytes(path) > budget.high)
}

fn wal_bytes(path: &Path) -> u64 {
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
    fn budget_split_leaves_room_for_the_wal() {
        let b = Budget::new(4 * 1024 * 1024);
        assert_eq!(b.wal_limit, 262_144);
        assert!(b.high + b.wal_limit < 4 * 1024 * 1024);
        assert!(b.low < b.high);
    }
}
