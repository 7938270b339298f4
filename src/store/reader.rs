//! Read-only access for the forwarder and for rebuilding state after a restart. WAL lets readers run
//! beside the writer without blocking it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use lineside_drivers::Reading;
use rusqlite::{Connection, OpenFlags};

use super::model::{StoredEvent, StoredReading, Stream, from_micros, quality_from, value_from};
use super::schema::{self, keys};
use super::tag_slots::TagSlots;
use super::{Committed, Control};

/// (device, tag, unit) of a tag id.
type TagKey = (Arc<str>, Arc<str>, Option<Arc<str>>);
/// One `readings` row as selected.
type Row = (
    i64,
    i64,
    i64,
    i64,
    rusqlite::types::Value,
    i64,
    Option<String>,
);

pub struct StoreReader {
    conn: Connection,
    /// Names by tag id. Ids are dense (SQLite rowids from 1, tags are never deleted), so mostly a slice
    /// by id: 48 bytes a tag instead of ~90 in a hash map; a damaged id does not grow it.
    tags: TagSlots<Option<TagKey>>,
    epoch: u64,
    /// Where skipped (unreadable) ranges are reported, when this reader belongs to a running store.
    report: Option<flume::Sender<Control>>,
    /// The forwarder's reader reads nothing above the durable high-water marks.
    bound: Option<tokio::sync::watch::Receiver<Committed>>,
    /// Times the tag table was read (tests: it is not reread per row).
    #[cfg(test)]
    pub(super) tag_loads: usize,
}

impl StoreReader {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "cache_size", -schema::READER_CACHE_KIB)?;
        let epoch = schema::meta_get(&conn, keys::EPOCH)?.unwrap_or(0).max(0) as u64;
        Ok(StoreReader {
            conn,
            tags: TagSlots::default(),
            epoch,
            report: None,
            bound: None,
            #[cfg(test)]
            tag_loads: 0,
        })
    }

    /// The connection's page cache limit, KiB (tests).
    #[cfg(test)]
    pub(super) fn cache_size_kib(&self) -> i64 {
        schema::cache_size_kib(&self.conn)
    }

    pub(super) fn reporting_to(mut self, ctrl: flume::Sender<Control>) -> Self {
        self.report = Some(ctrl);
        self
    }

    pub(super) fn bounded_by(mut self, bound: tokio::sync::watch::Receiver<Committed>) -> Self {
        self.bound = Some(bound);
        self
    }

    /// The highest seq of `stream` this reader may return.
    fn upto(&self, stream: Stream) -> u64 {
        let Some(bound) = &self.bound else {
            return i64::MAX as u64;
        };
        let b = *bound.borrow();
        match stream {
            Stream::Readings => b.readings,
            Stream::Events => b.events,
        }
    }

    /// The store's epoch when this reader was opened (it changes only when the store opens).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch as payloads carry it.
    pub fn epoch_str(&self) -> String {
        super::identity::format_epoch(self.epoch)
    }

    fn load_tags(&mut self) -> rusqlite::Result<()> {
        #[cfg(test)]
        {
            self.tag_loads += 1;
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, device, tag, unit FROM tags ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // A tag id's names never change, so known ids are kept; device and unit names are shared
        // among the tags that have them (one allocation per device, not one per tag).
        let mut names: HashSet<Arc<str>> = self
            .tags
            .iter()
            .filter_map(|(_, k)| k.as_ref())
            .flat_map(|(d, _, u)| std::iter::once(d).chain(u))
            .cloned()
            .collect();
        let mut shared = |text: &str| match names.get(text) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(text);
                names.insert(a.clone());
                a
            }
        };
        if let Some(max) = rows.iter().map(|(id, ..)| *id).max() {
            self.tags.reserve_up_to(max);
        }
        // In id order (the query asks for it), so the dense part grows by its bound and not past it.
        for (id, device, tag, unit) in rows {
            let slot = self.tags.slot(id);
            if slot.is_none() {
                let unit = (!unit.is_empty()).then(|| shared(&unit));
                *slot = Some((shared(&device), Arc::from(tag.as_str()), unit));
            }
        }
        Ok(())
    }

    fn tag(&self, id: i64) -> Option<&TagKey> {
        self.tags.get(id)?.as_ref()
    }

    /// Up to `limit` readings with seq > `after`, in seq order (the forwarder's reader: none above the
    /// durable marks). A range that cannot be read (damaged
    /// pages) is skipped and reported, so one bad page never stalls the stream.
    pub fn readings_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<StoredReading>> {
        let mut after = after;
        let upto = self.upto(Stream::Readings) as i64;
        for _ in 0..MAX_SKIPS {
            match self.readings_where(
                "seq >= ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
                rusqlite::params![after as i64 + 1, limit as i64, upto],
            ) {
                Err(e) if is_damage(&e) => match self.skip_damage(Stream::Readings, after, &e)? {
                    // Hand out what is readable before the damage first (LIMIT stops the scan before it).
                    Damage::ReadableRows(n) => {
                        return self.readings_where(
                            "seq >= ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
                            rusqlite::params![after as i64 + 1, n.min(limit) as i64, upto],
                        );
                    }
                    Damage::SkipTo(to) => after = to,
                },
                other => return other,
            }
        }
        Ok(Vec::new())
    }

    /// After reading past `after` failed with damage: how many rows are readable before the damage, or
    /// else the last seq of the unreadable range (reported to the writer). Point queries only: this runs
    /// on damage alone.
    fn skip_damage(
        &mut self,
        stream: Stream,
        after: u64,
        err: &rusqlite::Error,
    ) -> rusqlite::Result<Damage> {
        let table = match stream {
            Stream::Readings => "readings",
            Stream::Events => "events",
        };
        // Every column, so a row whose record is damaged counts as unreadable.
        // `seq >= m + 1` rather than `seq > m`: the seek then starts in the page that holds m + 1, not
        // in the (possibly damaged) page that holds m.
        let probe = format!("SELECT * FROM {table} WHERE seq >= ?1 ORDER BY seq LIMIT 1");
        let next = |conn: &Connection, m: u64| -> rusqlite::Result<Option<u64>> {
            let mut stmt = conn.prepare_cached(&probe)?;
            let mut rows = stmt.query([m as i64 + 1])?;
            match rows.next()? {
                Some(row) => {
                    // Touch every column.
                    for i in 0..row.as_ref().column_count() {
                        let _ = row.get_ref(i)?;
                    }
                    Ok(Some(row.get::<_, i64>(0)?.max(0) as u64))
                }
                None => Ok(None),
            }
        };
        // 1. The readable rows right after `after`.
        let mut last_good = after;
        let mut readable = 0usize;
        loop {
            match next(&self.conn, last_good) {
                Ok(Some(s)) if s > last_good => {
                    last_good = s;
                    readable += 1;
                }
                // Nothing damaged (any more): the caller tries again.
                Ok(_) => return Ok(Damage::ReadableRows(readable.max(1))),
                Err(e) if is_damage(&e) => break,
                Err(e) => return Err(e),
            }
            if readable >= 10_000 {
                break;
            }
        }
        if readable > 0 {
            return Ok(Damage::ReadableRows(readable));
        }
        // 2. The smallest m > after from which reading works again: exponential, then binary search.
        let key = match stream {
            Stream::Readings => keys::NEXT_READING_SEQ,
            Stream::Events => keys::NEXT_EVENT_SEQ,
        };
        let top = schema::meta_get(&self.conn, key)
            .ok()
            .flatten()
            .map(|n| (n.max(1) - 1) as u64)
            .unwrap_or(u64::MAX / 2)
            .min(self.upto(stream))
            .max(after + 1);
        let ok = |conn: &Connection, m: u64| next(conn, m).is_ok();
        let mut step = 1u64;
        let mut lo = after; // fails from here
        let mut hi = loop {
            let m = after.saturating_add(step).min(top);
            if ok(&self.conn, m) {
                break m;
            }
            lo = m;
            if m >= top {
                break top; // nothing readable up to the last committed seq
            }
            step = step.saturating_mul(2);
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ok(&self.conn, mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        // Reading from `hi` works; `hi` itself may be a readable row (the first of the next page).
        let point = format!("SELECT * FROM {table} WHERE seq = ?1");
        let hi_readable = self
            .conn
            .prepare_cached(&point)
            .and_then(|mut st| {
                st.query_row([hi as i64], |row| {
                    for i in 0..row.as_ref().column_count() {
                        let _ = row.get_ref(i)?;
                    }
                    Ok(())
                })
            })
            .is_ok();
        if hi_readable && hi > after + 1 {
            hi -= 1;
        }
        tracing::error!(
            stream = table,
            first_seq = after + 1,
            last_seq = hi,
            error = %err,
            "the database is damaged: skipping what cannot be read (counted as dropped, reason \"corrupt\")"
        );
        if let Some(report) = &self.report {
            let _ = report.send(Control::Unreadable {
                stream,
                first_seq: after + 1,
                last_seq: hi,
            });
        }
        Ok(Damage::SkipTo(hi))
    }

    /// Readings of one device/tag with seq > `after`, oldest first, at most `limit` (newest `limit` when
    /// `newest` is set) — used to rebuild SPC windows.
    pub fn tag_readings(
        &mut self,
        device: &str,
        tag: &str,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<StoredReading>> {
        if self.tags.is_empty() {
            self.load_tags()?;
        }
        let ids: Vec<i64> = self
            .tags
            .iter()
            .filter_map(|(id, k)| {
                let (d, t, _) = k.as_ref()?;
                (&**d == device && &**t == tag).then_some(id)
            })
            .collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.readings_where(
                "tag_id = ?3 AND seq > ?1 ORDER BY seq LIMIT ?2",
                rusqlite::params![after as i64, limit as i64, id],
            )?);
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    /// The newest reading of each tag among the `window` readings ending at seq `upto` (what a
    /// Sparkplug birth announces as current values). Bounded so a birth never scans the whole table:
    /// a tag silent for longer than the window is announced without a value.
    pub fn latest_per_tag(
        &mut self,
        upto: u64,
        window: u64,
    ) -> rusqlite::Result<Vec<StoredReading>> {
        self.readings_where(
            "seq IN (SELECT MAX(seq) FROM readings WHERE seq > ?1 AND seq <= ?2 GROUP BY tag_id) \
             ORDER BY seq",
            rusqlite::params![upto.saturating_sub(window) as i64, upto as i64],
        )
    }

    fn readings_where(
        &mut self,
        clause: &str,
        params: impl rusqlite::Params,
    ) -> rusqlite::Result<Vec<StoredReading>> {
        let sql = format!(
            "SELECT seq, tag_id, ts, kind, value, quality, reason FROM readings WHERE {clause}"
        );
        let rows: Vec<Row> = {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            stmt.query_map(params, |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        // A tag this reader has not seen is loaded once per read, not once per row: a damaged table
        // with thousands of rows naming a missing tag must not reread the tag table for each.
        let (mut reloaded, mut unknown) = (false, 0u64);
        let mut first_unknown = None;
        for (seq, tag_id, ts, kind, value, quality, reason) in rows {
            if self.tag(tag_id).is_none() && !reloaded {
                self.load_tags()?;
                reloaded = true;
            }
            let Some((device, tag, unit)) = self.tag(tag_id) else {
                unknown += 1;
                first_unknown.get_or_insert((seq, tag_id));
                continue;
            };
            out.push(StoredReading {
                seq: seq as u64,
                reading: Reading {
                    device: device.clone(),
                    tag: tag.clone(),
                    ts: from_micros(ts),
                    value: value_from(kind, value),
                    quality: quality_from(quality, reason),
                    unit: unit.clone(),
                },
            });
        }
        if let Some((seq, tag_id)) = first_unknown {
            tracing::error!(
                first_seq = seq,
                tag_id,
                readings = unknown,
                "readings refer to an unknown tag; skipped"
            );
        }
        Ok(out)
    }

    /// Up to `limit` events with seq > `after`; damaged ranges are skipped and reported as for readings.
    pub fn events_after(&mut self, after: u64, limit: usize) -> rusqlite::Result<Vec<StoredEvent>> {
        let mut after = after;
        let upto = self.upto(Stream::Events) as i64;
        for _ in 0..MAX_SKIPS {
            match self.events_where(
                "seq >= ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
                rusqlite::params![after as i64 + 1, limit as i64, upto],
            ) {
                Err(e) if is_damage(&e) => match self.skip_damage(Stream::Events, after, &e)? {
                    Damage::ReadableRows(n) => {
                        return self.events_where(
                            "seq >= ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
                            rusqlite::params![after as i64 + 1, n.min(limit) as i64, upto],
                        );
                    }
                    Damage::SkipTo(to) => after = to,
                },
                other => return other,
            }
        }
        Ok(Vec::new())
    }

    /// Events whose kind starts with `kind_prefix`, oldest first; for rebuilding alarm state.
    pub fn events_of_kind(&mut self, kind_prefix: &str) -> rusqlite::Result<Vec<StoredEvent>> {
        self.events_where("kind LIKE ?1 ORDER BY seq", [format!("{kind_prefix}%")])
    }

    fn events_where(
        &mut self,
        clause: &str,
        params: impl rusqlite::Params,
    ) -> rusqlite::Result<Vec<StoredEvent>> {
        let sql = format!("SELECT seq, ts, kind, body FROM events WHERE {clause}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, ts, kind, body) = row?;
            // A body that is not JSON (never written by lineside) is kept as a string, not dropped.
            let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            out.push(StoredEvent {
                seq: seq as u64,
                ts: from_micros(ts),
                kind,
                body,
            });
        }
        Ok(out)
    }

    /// The persisted forwarding cursor of a stream.
    pub fn cursor(&self, stream: Stream) -> rusqlite::Result<u64> {
        let key = match stream {
            Stream::Readings => keys::CURSOR_READINGS,
            Stream::Events => keys::CURSOR_EVENTS,
        };
        Ok(schema::meta_get(&self.conn, key)?.unwrap_or(0).max(0) as u64)
    }
}

enum Damage {
    /// This many rows after the position can be read before the damage.
    ReadableRows(usize),
    /// Nothing can be read up to and including this seq.
    SkipTo(u64),
}

/// Damaged ranges skipped in one call at most (each needs a few point queries).
const MAX_SKIPS: usize = 16;

/// Whether an error means the file's content is damaged (as opposed to busy, locked, ...).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}
