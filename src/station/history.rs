//! The history a characteristic page opens with, read from the store once when the station starts.
//!
//! The store keeps readings, not plotted points (points are derived and re-derivable). So the station
//! takes the newest `history × subgroup size` good readings of each characteristic's source tag and
//! charts them with the same pure engine SPC runs (`lineside-spc`), with the limits SPC has now (the
//! configured ones, or the computed ones from SPC's state file). Subgroups are re-formed from those
//! readings, so their boundaries can differ from the live ones and context tags are not replayed; live
//! points follow as SPC publishes them.

use std::path::Path;

use lineside_spc::{Characteristic, FrozenLimits, Observation, Output};
use rusqlite::{Connection, OpenFlags, params};
use serde_json::Value;

use crate::config::CharacteristicConfig;

/// Readings read per characteristic at most, whatever `history` says.
const MAX_READINGS: usize = 50_000;

/// Newest good numeric readings of one tag, oldest first: (seq, ts µs, value).
fn tag_values(
    conn: &Connection,
    device: &str,
    tag: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(u64, i64, f64)>> {
    // Schema: src/store/schema.rs (kind 1 f64, 2 i64, 3 bool; quality 0 good).
    let mut stmt = conn.prepare(
        "SELECT r.seq, r.ts, r.value FROM readings r JOIN tags t ON t.id = r.tag_id
         WHERE t.device = ?1 AND t.tag = ?2 AND r.quality = 0 AND r.kind IN (1, 2, 3)
         ORDER BY r.seq DESC LIMIT ?3",
    )?;
    let mut rows: Vec<(u64, i64, f64)> = stmt
        .query_map(params![device, tag, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, f64>(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.reverse();
    Ok(rows)
}

/// The limits SPC computed, from its state file (README: Restart), per characteristic.
fn computed_limits(state_file: &Path, name: &str) -> Vec<FrozenLimits> {
    let Ok(bytes) = std::fs::read(state_file) else {
        return Vec::new();
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Vec::new();
    };
    doc.get("characteristics")
        .and_then(|c| c.get(name))
        .and_then(|c| c.get("limits"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// A characteristic's history: points as SPC's point messages (README, SPC section), and the raw
/// values for the histogram.
pub struct History {
    pub points: Vec<Value>,
    pub values: Vec<f64>,
}

pub fn load(
    db: &Path,
    state_file: &Path,
    c: &CharacteristicConfig,
    history: usize,
) -> Result<History, String> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let n = c.spec.subgroup_size.unwrap_or(1).max(1) as usize;
    let want = (history * n).min(MAX_READINGS);
    let rows = tag_values(&conn, &c.source.device, &c.source.tag, want)
        .map_err(|e| format!("reading {}: {e}", c.source))?;
    let mut engine = Characteristic::new(c.spec.clone())
        .map_err(|issues| format!("{} issue(s) in the spec", issues.len()))?;
    for f in computed_limits(state_file, &c.spec.name) {
        let _ = engine.restore_limits(&f);
    }
    let mut out = Vec::new();
    let mut points = Vec::new();
    for &(seq, ts, value) in &rows {
        out.clear();
        engine.push(Observation::new(seq, ts, value), &mut out);
        for o in &out {
            if let Output::Point(p) = o {
                points.push(point_doc(c, p));
            }
        }
    }
    Ok(History {
        points,
        values: rows.iter().map(|r| r.2).collect(),
    })
}

/// The same document SPC publishes for a point (src/spc/messages.rs).
fn point_doc(c: &CharacteristicConfig, p: &lineside_spc::Point) -> Value {
    let mut doc = serde_json::to_value(p).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut doc {
        m.insert("characteristic".into(), c.spec.name.clone().into());
        m.insert(
            "ts".into(),
            crate::timefmt::rfc3339(
                chrono::DateTime::from_timestamp_micros(p.ts_micros).unwrap_or_default(),
            )
            .into(),
        );
        if let Some(u) = &c.unit {
            m.insert("unit".into(), u.clone().into());
        }
        m.insert("history".into(), true.into());
    }
    doc
}
