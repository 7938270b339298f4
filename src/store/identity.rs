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

/// The marks file's JSON. `reserved_*` are absent in files of earlier versions (read as the committed
/// marks: nothing reserved beyond them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MarksFile {
    epoch: String,
    readings: u64,
    events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reserved_readings: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reserved_events: Option<u64>,
}

/// What the marks file says of each stream (see `high_water`): the seqs committed when it was written,
/// and the reservation, a ceiling of everything the forwarder may have published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Marks {
    pub committed: super::Committed,
    pub reserved: super::Committed,
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

/// A restart after an unclean stop: the database is not behind the committed marks, but seqs up to the
/// reservation may have been published (they would be, had the database lost a tail the committed
/// marks were too old to show), so the sequences continue above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip {
    pub db_readings: u64,
    pub db_events: u64,
    pub reserved_readings: u64,
    pub reserved_events: u64,
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

/// What [`settle`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub epoch: u64,
    /// The database went backwards: a new epoch, sequences above every mark.
    pub reset: Option<Reset>,
    /// An unclean stop with seqs reserved above the database: the sequences continue above them.
    pub skip: Option<Skip>,
}

/// Decides the epoch at start and moves `next_seq`/`next_event_seq` above the marks when the database
/// went backwards, or above the reservation after an unclean stop. Writes the epoch (and moved
/// sequences) into `meta`. `broker` is the second marks source (see [`BrokerMarks`]): the effective
/// marks are, per stream, the larger of the two.
pub fn settle(
    conn: &Connection,
    marks_path: &Path,
    broker: Option<BrokerMarks>,
    next_seq: &mut u64,
    next_event_seq: &mut u64,
) -> rusqlite::Result<Settled> {
    let db_epoch = schema::meta_get(conn, keys::EPOCH)?.map(|e| e as u64);
    let file = read_marks(marks_path);
    let marks = file.map(|(epoch, m)| (epoch, m.committed.readings, m.committed.events));
    let reserved = file.map(|(_, m)| m.reserved);
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
    // Above the reservation too (a reservation of another epoch's file counts as well: its seqs may
    // have been published under the epoch the database does not have).
    let (res_r, res_e) = reserved.map_or((0, 0), |m| (m.readings, m.events));
    let mut skip = None;
    let (epoch, reset) = match reason {
        Some(reason) => {
            let r = file_r.max(res_r).max(broker.map_or(0, |b| b.readings));
            let e = file_e.max(res_e).max(broker.map_or(0, |b| b.events));
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
        None => {
            if db_r < res_r || db_e < res_e {
                skip = Some(Skip {
                    db_readings: db_r,
                    db_events: db_e,
                    reserved_readings: res_r,
                    reserved_events: res_e,
                });
                *next_seq = (*next_seq).max(res_r + 1);
                *next_event_seq = (*next_event_seq).max(res_e + 1);
            }
            (db_epoch.unwrap_or_else(random_epoch), None)
        }
    };
    if db_epoch != Some(epoch) || skip.is_some() {
        schema::meta_set(conn, keys::EPOCH, epoch as i64)?;
        // Keep the moved sequences even if nothing is committed before the next crash.
        schema::meta_set(conn, keys::NEXT_READING_SEQ, *next_seq as i64)?;
        schema::meta_set(conn, keys::NEXT_EVENT_SEQ, *next_event_seq as i64)?;
    }
    Ok(Settled { epoch, reset, skip })
}

/// Parses an epoch as payloads write it (16 hex digits).
pub fn parse_epoch_hex(s: &str) -> Option<u64> {
    parse_epoch(s)
}

/// The epoch and marks of the marks file; None when there is none or it cannot be read.
pub(super) fn read_marks(path: &Path) -> Option<(u64, Marks)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the store's high-water marks");
            return None;
        }
    };
    match serde_json::from_str::<MarksFile>(&text) {
        Ok(m) => {
            let committed = super::Committed {
                readings: m.readings,
                events: m.events,
            };
            let reserved = super::Committed {
                readings: m.reserved_readings.unwrap_or(m.readings),
                events: m.reserved_events.unwrap_or(m.events),
            }
            .max(committed);
            parse_epoch(&m.epoch).map(|e| {
                (
                    e,
                    Marks {
                        committed,
                        reserved,
                    },
                )
            })
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the store's high-water marks file is damaged; ignored");
            None
        }
    }
}

/// The marks file's length: the JSON padded with spaces, so that rewriting it in place needs no new
/// blocks (the fallback on a full disk).
const MARKS_LEN: usize = 256;

/// Writes the marks: atomically (temporary file, fsync, rename, fsync of the directory); when that
/// fails (a full disk cannot take the temporary file) by rewriting the existing file in place, which
/// needs no new blocks.
pub(super) fn write_marks(path: &Path, epoch: u64, marks: Marks) -> std::io::Result<()> {
    let reserved = marks.reserved.max(marks.committed);
    let marks = MarksFile {
        epoch: format_epoch(epoch),
        readings: marks.committed.readings,
        events: marks.committed.events,
        reserved_readings: (reserved.readings > marks.committed.readings)
            .then_some(reserved.readings),
        reserved_events: (reserved.events > marks.committed.events).then_some(reserved.events),
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

    fn c(readings: u64, events: u64) -> super::super::Committed {
        super::super::Committed { readings, events }
    }

    fn m(readings: u64, events: u64) -> Marks {
        Marks {
            committed: c(readings, events),
            reserved: c(readings, events),
        }
    }

    #[test]
    fn the_marks_file_round_trips_and_is_rewritten_in_place_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let p = marks_path(&dir.path().join("x.db"));
        write_marks(&p, 42, m(10, 3)).unwrap();
        assert_eq!(read_marks(&p), Some((42, m(10, 3))));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), MARKS_LEN as u64);
        // The temporary file cannot be created (a directory in its way, as a full disk would refuse
        // it): the existing file is rewritten in place.
        let mut tmp = p.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::create_dir(PathBuf::from(tmp)).unwrap();
        let reserving = Marks {
            committed: c(11, 4),
            reserved: c(u64::MAX, u64::MAX),
        };
        write_marks(&p, 42, reserving).unwrap();
        assert_eq!(read_marks(&p), Some((42, reserving)));
    }

    #[test]
    fn a_marks_file_of_an_earlier_version_reserves_nothing_beyond_its_marks() {
        let dir = tempfile::tempdir().unwrap();
        let p = marks_path(&dir.path().join("x.db"));
        std::fs::write(
            &p,
            r#"{"epoch":"000000000000002a","readings":10,"events":3}"#,
        )
        .unwrap();
        assert_eq!(read_marks(&p), Some((42, m(10, 3))));
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
        let s = settle(&conn, &marks, broker(100, 7), &mut r, &mut e).unwrap();
        let (epoch, reset) = (s.epoch, s.reset.expect("a reset"));
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
        let epoch = settle(&conn, &marks, None, &mut r, &mut e).unwrap().epoch;
        // The database is at 50/5: broker marks at or below it (they trail) are no reset.
        let (mut r, mut e) = (51, 6);
        let s = settle(&conn, &marks, broker(50, 5), &mut r, &mut e).unwrap();
        assert_eq!((s.epoch, s.reset, s.skip, r, e), (epoch, None, None, 51, 6));
        // The file is ahead of the broker: the file's marks, and the source says so.
        write_marks(&marks, epoch, m(80, 5)).unwrap();
        let (mut r, mut e) = (51, 6);
        let s = settle(&conn, &marks, broker(60, 9), &mut r, &mut e).unwrap();
        let reset = s.reset.expect("a reset");
        assert_eq!(
            reset.marks_source, "broker",
            "the broker is above the file for events"
        );
        assert_eq!((r, e), (81, 10), "per stream the larger of the two");
    }

    #[test]
    fn after_an_unclean_stop_the_sequences_continue_above_the_reservation_in_the_same_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db(dir.path());
        let marks = marks_path(&dir.path().join("x.db"));
        let (mut r, mut e) = (1, 1);
        let epoch = settle(&conn, &marks, None, &mut r, &mut e).unwrap().epoch;
        // Killed at 50/5 committed, with seqs reserved up to 20,000/300 (some may have been published
        // had the database lost a tail the committed marks were too old to show).
        write_marks(
            &marks,
            epoch,
            Marks {
                committed: c(40, 5),
                reserved: c(20_000, 300),
            },
        )
        .unwrap();
        let (mut r, mut e) = (51, 6);
        let s = settle(&conn, &marks, None, &mut r, &mut e).unwrap();
        assert_eq!(
            (s.epoch, s.reset),
            (epoch, None),
            "no loss shown: same epoch"
        );
        assert_eq!(
            s.skip,
            Some(Skip {
                db_readings: 50,
                db_events: 5,
                reserved_readings: 20_000,
                reserved_events: 300
            })
        );
        assert_eq!((r, e), (20_001, 301));
        // Kept in the database: a second crash before anything is committed skips nothing twice.
        assert_eq!(
            schema::meta_get(&conn, keys::NEXT_READING_SEQ).unwrap(),
            Some(20_001)
        );
        // A clean stop wrote the reservation down: no gap.
        write_marks(&marks, epoch, m(50, 5)).unwrap();
        let (mut r, mut e) = (51, 6);
        let s = settle(&conn, &marks, None, &mut r, &mut e).unwrap();
        assert_eq!((s.reset, s.skip, r, e), (None, None, 51, 6));
    }

    #[test]
    fn a_lost_tail_continues_above_the_reservation_with_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db(dir.path());
        let marks = marks_path(&dir.path().join("x.db"));
        let (mut r, mut e) = (1, 1);
        let epoch = settle(&conn, &marks, None, &mut r, &mut e).unwrap().epoch;
        write_marks(
            &marks,
            epoch,
            Marks {
                committed: c(90, 5),
                reserved: c(20_000, 300),
            },
        )
        .unwrap();
        let (mut r, mut e) = (51, 6);
        let s = settle(&conn, &marks, None, &mut r, &mut e).unwrap();
        let reset = s.reset.expect("the database is behind its committed marks");
        assert_ne!(s.epoch, epoch);
        assert_eq!((reset.mark_readings, reset.mark_events), (20_000, 300));
        assert_eq!((r, e), (20_001, 301));
    }
}
