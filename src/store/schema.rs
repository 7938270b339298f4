//! The database layout. Readings and events have separate sequence spaces so a subscriber can check each
//! stream for gaps on its own; both are assigned by the writer and never reused (high-water marks live in
//! `meta`, so pruning everything does not reset them, and outside the database in the identity file, so
//! losing the database's tail is noticed — see `identity`).

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Synchronous;

/// 1: v0.1.0. 2: `meta.epoch` and the `arrivals` table.
pub const SCHEMA_VERSION: i64 = 2;

/// Page cache of the writer's connection, KiB. SQLite's default (2,000 KiB) fills over the first minutes
/// of a long run and stays allocated: appended readings pass through the cache once and are never read
/// back by the writer, so an idle agent's memory grew by 1.6 MiB in 15 minutes for nothing (issue 14).
/// Appending touches only the right edge of each b-tree; a transaction larger than the cache spills
/// dirty pages to the WAL before its commit, which the commit would write anyway.
pub const WRITER_CACHE_KIB: i64 = 256;
/// Page cache of a reader's connection, KiB: readers read ranges of fresh readings once, in order, so
/// only the few interior pages above them are read again; whatever a catch-up filled the cache with
/// stays allocated for the rest of the run.
pub const READER_CACHE_KIB: i64 = 128;

pub fn open_writer(
    path: &std::path::Path,
    sync: Synchronous,
    wal_limit_bytes: u64,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // auto_vacuum must be chosen before the first table exists; INCREMENTAL lets the budget code give
    // freed pages back to the file system after pruning.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        },
    )?;
    // No checkpoint inside commits: the writer checkpoints (PASSIVE) from its maintenance and when the
    // WAL passes `wal_limit_bytes` after a commit (see `Writer::checkpoint_if_large`). Under a small disk
    // budget (WAL limit below 4 MiB) SQLite's own checkpoint stays on as well, so the WAL never grows
    // past the limit within a burst of commits.
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let wal_pages = if wal_limit_bytes < 4 * 1024 * 1024 {
        (wal_limit_bytes as i64 / page_size.max(512)).clamp(16, 1000)
    } else {
        0
    };
    conn.pragma_update(None, "wal_autocheckpoint", wal_pages)?;
    conn.pragma_update(None, "journal_size_limit", wal_limit_bytes as i64)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS tags (
             id INTEGER PRIMARY KEY,
             device TEXT NOT NULL,
             tag TEXT NOT NULL,
             unit TEXT NOT NULL, -- '' when the tag has no unit (NULLs would defeat UNIQUE)
             UNIQUE (device, tag, unit)
         );
         -- kind: 0 no value, 1 f64, 2 i64, 3 bool, 4 text. quality: 0 good, 1 uncertain, 2 bad.
         -- ts: microseconds since the Unix epoch, UTC.
         CREATE TABLE IF NOT EXISTS readings (
             seq INTEGER PRIMARY KEY,
             tag_id INTEGER NOT NULL,
             ts INTEGER NOT NULL,
             kind INTEGER NOT NULL,
             value,
             quality INTEGER NOT NULL,
             reason TEXT
         );
         CREATE TABLE IF NOT EXISTS events (
             seq INTEGER PRIMARY KEY,
             ts INTEGER NOT NULL,
             kind TEXT NOT NULL,
             body TEXT NOT NULL
         );
         -- When readings arrived, sparsely: every reading with a seq below `seq` was received before
         -- `received` (µs, on the store's arrival clock). One row per commit at most every few seconds,
         -- so max_age costs nothing per reading.
         CREATE TABLE IF NOT EXISTS arrivals (
             seq INTEGER PRIMARY KEY,
             received INTEGER NOT NULL
         );",
    )?;
    let version: Option<i64> = meta_get(&conn, "schema_version")?;
    match version {
        None => meta_set(&conn, "schema_version", SCHEMA_VERSION)?,
        Some(1) => {
            // v0.1.0: the tables above were added by CREATE IF NOT EXISTS; the epoch is created by the
            // identity check, and readings stored before the upgrade count as received now (their
            // device timestamps are not trusted for max_age).
            let next: i64 =
                conn.query_row("SELECT ifnull(max(seq), 0) + 1 FROM readings", [], |r| {
                    r.get(0)
                })?;
            conn.execute(
                "INSERT OR IGNORE INTO arrivals (seq, received) VALUES (?1, ?2)",
                params![next, chrono::Utc::now().timestamp_micros()],
            )?;
            meta_set(&conn, "schema_version", SCHEMA_VERSION)?;
            tracing::info!(from = 1, to = SCHEMA_VERSION, "store schema migrated");
        }
        Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "database schema version {v} is newer than this lineside ({SCHEMA_VERSION}); upgrade lineside"
            )));
        }
    }
    Ok(conn)
}

pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn meta_set(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute(params![key, value])?;
    Ok(())
}

/// Meta keys.
pub mod keys {
    pub const NEXT_READING_SEQ: &str = "next_reading_seq";
    pub const NEXT_EVENT_SEQ: &str = "next_event_seq";
    pub const CURSOR_READINGS: &str = "cursor_readings";
    pub const CURSOR_EVENTS: &str = "cursor_events";
    pub const DROPPED_UNFORWARDED: &str = "dropped_unforwarded";
    pub const DROPPED_EVENTS: &str = "dropped_events";
    /// The store's identity: a random 63-bit number created with the database (see `identity`).
    pub const EPOCH: &str = "epoch";
}

/// A connection's page cache limit, KiB (tests; `cache_size` holds it negated when set in KiB).
#[cfg(test)]
pub(super) fn cache_size_kib(conn: &Connection) -> i64 {
    let size: i64 = conn
        .pragma_query_value(None, "cache_size", |r| r.get(0))
        .unwrap();
    -size
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's default page cache (2,000 KiB per connection) filled over the first minutes of an idle
    /// run and stayed allocated (issue 14): the writer's and the readers' caches are capped.
    #[test]
    fn the_page_caches_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lineside.db");
        let writer = open_writer(&path, Synchronous::Normal, 64 * 1024 * 1024).unwrap();
        assert_eq!(cache_size_kib(&writer), WRITER_CACHE_KIB);
        let reader = crate::store::StoreReader::open(&path).unwrap();
        assert_eq!(reader.cache_size_kib(), READER_CACHE_KIB);
    }
}
