//! The store's identity: a random `epoch` created with each database, and high-water marks of both
//! sequences kept *outside* the database, so that losing the database's tail (a WAL deleted after a
//! crash, a power cut with `synchronous = normal`, a truncated file, a restored backup) is noticed
//! instead of silently handing out sequence numbers that subscribers already saw.
//!
//! Policy when the database is behind its high-water mark, or new while a mark exists: the store starts
//! a **new epoch** and also **continues both sequences above the mark**, so neither `(agent, epoch, seq)`
//! nor even `(agent, seq)` is ever reused for different data. The reset is logged and stored as an
//! `agent.store_reset` alarm. The marks are kept ahead of what the forwarder publishes (see
//! `high_water`), so whatever a subscriber has seen is at or below them.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::schema::{self, keys};

/// The epoch as it appears in payloads: 16 lowercase hex digits.
pub fn format_epoch(epoch: u64) -> String {
    format!("{epoch:016x}")
}

fn parse_epoch(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// A fresh random epoch: 63 bits (it is stored as a positive SQLite integer), never 0.
pub fn random_epoch() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // RandomState is keyed from the OS's random source; fastrand adds its own seed.
    let v = RandomState::new().hash_one((nanos, std::process::id())) ^ fastrand::u64(..);
    (v >> 1).max(1)
}

/// Where the marks of the database at `db` are kept: beside it, so the pair moves together.
pub fn marks_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".highwater");
    PathBuf::from(p)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MarksFile {
    epoch: String,
    readings: u64,
    events: u64,
}

/// High-water marks read back from the broker at start (the forwarder's retained `<base>/highwater`
/// message): a second source beside the marks file, which catches a database lost *together with* its
/// marks file (a new disk, a restored backup of both). It trails the file by up to
/// `mqtt.status_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerMarks {
    /// The epoch the message named (None when it was not parseable).
    pub epoch: Option<u64>,
    pub readings: u64,
    pub events: u64,
}

/// What the identity check found at start when the database went backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    pub reason: &'static str,
    /// Which high-water marks showed it: `"file"` (the marks file beside the database) or `"broker"`
    /// (the retained high-water message).
    pub marks_source: &'static str,
    pub old_epoch: Option<u64>,
    pub new_epoch: u64,
    /// Last seqs found in the database.
    pub db_readings: u64,
    pub db_events: u64,
    /// The high-water marks the sequences continue above: per stream the larger of the marks file's
    /// and the broker's.
    pub mark_readings: u64,
    pub mark_events: u64,
}

impl Reset {
    pub fn event_body(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "agent.store_reset",
            "severity": "violation",
            "reason": self.reason,
            "marks_source": self.marks_source,
            "old_epoch": self.old_epoch.map(format_epoch),
            "new_epoch": format_epoch(self.new_epoch),
            "readings": {"last_seq_in_database": self.db_readings, "high_water": self.mark_readings},
            "events": {"last_seq_in_database": self.db_events, "high_water": self.mark_events},
        })
    }
}

/// Decides the epoch at start and moves `next_seq`/`next_event_seq` above the marks when the database
/// went backwards. Writes the epoch into `meta`. `broker` is the second marks source (see
/// [`BrokerMarks`]): the effective marks are, per stream, the larger of the two.
pub fn settle(
    conn: &Connection,
    marks_path: &Path,
    broker: Option<BrokerMarks>,
    next_seq: &mut u64,
    next_event_seq: &mut u64,
) -> rusqlite::Result<(u64, Option<Reset>)> {
    let db_epoch = schema::meta_get(conn, keys::EPOCH)?.map(|e| e as u64);
    let marks = read_marks(marks_path);
    let (db_r, db_e) = (*next_seq - 1, *next_event_seq - 1);
    let file_reason = match (&marks, db_epoch) {
        (None, _) => None,
        (Some((_, r, e)), None) if *r > 0 || *e > 0 => Some("new database"),
        (Some(_), None) => None,
        (Some((m_epoch, _, _)), Some(epoch)) if *m_epoch != epoch => {
            Some("the database is not the one the high-water marks belong to")
        }
        (Some((_, r, e)), Some(_)) if db_r < *r || db_e < *e => {
            Some("the database lost committed data (sequence numbers went backwards)")
        }
        _ => None,
    };
    // The broker's marks only count where they are above the database: they trail the file, and an
    // older epoch's message is harmless once the sequences are past it.
    let broker_reason = broker
        .filter(|b| db_r < b.readings || db_e < b.events)
        .map(|_| match db_epoch {
            None => "new database",
            Some(_) => "the database is behind the high-water marks retained on the broker",
        });
    let (file_r, file_e) = marks.map(|(_, r, e)| (r, e)).unwrap_or((0, 0));
    let broker_above_file =
        broker.is_some_and(|b| marks.is_none() || b.readings > file_r || b.events > file_e);
    let (reason, marks_source) = match (file_reason, broker_reason) {
        (Some(_), Some(b)) if broker_above_file => (Some(b), "broker"),
        (Some(f), _) => (Some(f), "file"),
        (None, Some(b)) => (Some(b), "broker"),
        (None, None) => (None, "file"),
    };
    let (epoch, reset) = match reason {
        Some(reason) => {
            let r = file_r.max(broker.map_or(0, |b| b.readings));
            let e = file_e.max(broker.map_or(0, |b| b.events));
            let new_epoch = random_epoch();
            *next_seq = (*next_seq).max(r + 1);
            *next_event_seq = (*next_event_seq).max(e + 1);
            (
                new_epoch,
                Some(Reset {
                    reason,
                    marks_source,
                    // A new database has none: the marks tell which epoch came before.
                    old_epoch: db_epoch
                        .or(marks.map(|(m, _, _)| m))
                        .or(broker.and_then(|b| b.epoch)),
                    new_epoch,
                    db_readings: db_r,
                    db_events: db_e,
                    mark_readings: r,
                    mark_events: e,
                }),
            )
        }
        None => (db_epoch.unwrap_or_else(random_epoch), None),
    };
    if db_epoch != Some(epoch) {
        schema::meta_set(conn, keys::EPOCH, epoch as i64)?;
        // Keep the moved sequences even if nothing is committed before the next crash.
        schema::meta_set(conn, keys::NEXT_READING_SEQ, *next_seq as i64)?;
        schema::meta_set(conn, keys::NEXT_EVENT_SEQ, *next_event_seq as i64)?;
    }
    Ok((epoch, reset))
}

/// Parses an epoch as payloads write it (16 hex digits).
pub fn parse_epoch_hex(s: &str) -> Option<u64> {
    parse_epoch(s)
}

pub(super) fn read_marks(path: &Path) -> Option<(u64, u64, u64)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the store's high-water marks");
            return None;
        }
    };
    match serde_json::from_str::<MarksFile>(&text) {
        Ok(m) => parse_epoch(&m.epoch).map(|e| (e, m.readings, m.events)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the store's high-water marks file is damaged; ignored");
            None
        }
    }
}

/// The marks file's length: the JSON padded with spaces, so that rewriting it in place needs no new
/// blocks (the fallback on a full disk).
const MARKS_LEN: usize = 128;

/// Writes the marks: atomically (temporary file, fsync, rename, fsync of the directory); when that
/// fails (a full disk cannot take the temporary file) by rewriting the existing file in place, which
/// needs no new blocks.
pub(super) fn write_marks(
    path: &Path,
    epoch: u64,
    readings: u64,
    events: u64,
) -> std::io::Result<()> {
    let marks = MarksFile {
        epoch: format_epoch(epoch),
        readings,
        events,
    };
    let mut bytes = serde_json::to_vec(&marks).map_err(std::io::Error::other)?;
    if bytes.len() < MARKS_LEN {
        bytes.resize(MARKS_LEN - 1, b' ');
        bytes.push(b'\n');
    }
    match write_atomically(path, &bytes) {
        Ok(()) => Ok(()),
        Err(e) => match rewrite_in_place(path, &bytes) {
            Ok(()) => Ok(()),
            Err(_) => Err(e),
        },
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Overwrites an existing marks file of the same length (one small write within its first block).
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.len() != bytes.len() as u64 {
        return Err(std::io::Error::other("the marks file has another length"));
    }
    f.write_all(bytes)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_random_positive_and_formatted_as_16_hex_digits() {
        let a = random_epoch();
        let b = random_epoch();
        assert_ne!(a, b);
        assert!(a > 0 && a <= i64::MAX as u64);
        assert_eq!(format_epoch(a).len(), 16);
        assert_eq!(parse_epoch(&format_epoch(a)), Some(a));
    }

    #[test]
    fn the_marks_file_round_trips_and_is_rewritten_in_place_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let p = marks_path(&dir.path().join("x.db"));
        write_marks(&p, 42, 10, 3).unwrap();
        assert_eq!(read_marks(&p), Some((42, 10, 3)));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), MARKS_LEN as u64);
        // The temporary file cannot be created (a directory in its way, as a full disk would refuse
        // it): the existing file is rewritten in place.
        let mut tmp = p.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::create_dir(PathBuf::from(tmp)).unwrap();
        write_marks(&p, 42, 11, 4).unwrap();
        assert_eq!(read_marks(&p), Some((42, 11, 4)));
    }

    fn db(dir: &Path) -> Connection {
        schema::open_writer(
            &dir.join("x.db"),
            crate::config::Synchronous::default(),
            1 << 20,
        )
        .unwrap()
    }

    fn broker(readings: u64, events: u64) -> Option<BrokerMarks> {
        Some(BrokerMarks {
            epoch: Some(9),
            readings,
            events,
        })
    }

    #[test]
    fn a_new_database_without_its_marks_file_continues_above_the_broker_marks() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db(dir.path());
        let (mut r, mut e) = (1, 1);
        let marks = marks_path(&dir.path().join("x.db"));
        let (epoch, reset) = settle(&conn, &marks, broker(100, 7), &mut r, &mut e).unwrap();
        let reset = reset.expect("a reset");
        assert_eq!((r, e), (101, 8));
        assert_eq!(reset.marks_source, "broker");
        assert_eq!(reset.old_epoch, Some(9));
        assert_eq!(reset.new_epoch, epoch);
        assert_eq!((reset.mark_readings, reset.mark_events), (100, 7));
        assert_eq!(reset.event_body()["marks_source"], "broker");
    }

    #[test]
    fn broker_marks_below_the_database_change_nothing_and_the_larger_marks_win() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db(dir.path());
        let marks = marks_path(&dir.path().join("x.db"));
        let (mut r, mut e) = (1, 1);
        let (epoch, _) = settle(&conn, &marks, None, &mut r, &mut e).unwrap();
        // The database is at 50/5: broker marks at or below it (they trail) are no reset.
        let (mut r, mut e) = (51, 6);
        let (same, reset) = settle(&conn, &marks, broker(50, 5), &mut r, &mut e).unwrap();
        assert_eq!((same, reset, r, e), (epoch, None, 51, 6));
        // The file is ahead of the broker: the file's marks, and the source says so.
        write_marks(&marks, epoch, 80, 5).unwrap();
        let (mut r, mut e) = (51, 6);
        let (_, reset) = settle(&conn, &marks, broker(60, 9), &mut r, &mut e).unwrap();
        let reset = reset.expect("a reset");
        assert_eq!(
            reset.marks_source, "broker",
            "the broker is above the file for events"
        );
        assert_eq!((r, e), (81, 10), "per stream the larger of the two");
    }
}
