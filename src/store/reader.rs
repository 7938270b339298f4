//! Read-only access for the forwarder and for rebuilding state after a restart. WAL lets readers run
//! beside the writer without blocking it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use lineside_drivers::Reading;
use rusqlite::{Connection, OpenFlags};

use super::model::{StoredEvent, StoredReading, Stream, from_micros, quality_from, value_from};
use super::schema::{self, keys};

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
    tags: HashMap<i64, TagKey>,
}

impl StoreReader {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(StoreReader {
            conn,
            tags: HashMap::new(),
        })
    }

    fn load_tags(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, device, tag, unit FROM tags")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (id, device, tag, unit) = row?;
            let unit = (!unit.is_empty()).then(|| Arc::from(unit.as_str()));
            self.tags.insert(
                id,
                (Arc::from(device.as_str()), Arc::from(tag.as_str()), unit),
            );
        }
        Ok(())
    }

    /// Up to `limit` readings with seq > `after`, in seq order.
    pub fn readings_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<StoredReading>> {
        self.readings_where(
            "seq > ?1 ORDER BY seq LIMIT ?2",
            rusqlite::params![after as i64, limit as i64],
        )
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
            .filter(|(_, (d, t, _))| &**d == device && &**t == tag)
            .map(|(id, _)| *id)
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
        for (seq, tag_id, ts, kind, value, quality, reason) in rows {
            if !self.tags.contains_key(&tag_id) {
                self.load_tags()?;
            }
            let Some((device, tag, unit)) = self.tags.get(&tag_id) else {
                tracing::error!(seq, tag_id, "reading refers to an unknown tag; skipped");
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
        Ok(out)
    }

    pub fn events_after(&mut self, after: u64, limit: usize) -> rusqlite::Result<Vec<StoredEvent>> {
        self.events_where(
            "seq > ?1 ORDER BY seq LIMIT ?2",
            rusqlite::params![after as i64, limit as i64],
        )
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
