//! What the store hands out: committed readings and events with their sequence numbers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lineside_drivers::{Quality, Reading, Value};

/// The two streams the store sequences and the forwarder publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Readings,
    Events,
}

/// A batch the writer committed: `readings[i]` has seq `first_seq + i`.
#[derive(Debug)]
pub struct CommittedBatch {
    pub first_seq: u64,
    pub readings: Vec<Reading>,
}

impl CommittedBatch {
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Reading)> {
        self.readings
            .iter()
            .enumerate()
            .map(|(i, r)| (self.first_seq + i as u64, r))
    }
}

/// A reading read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub seq: u64,
    pub reading: Reading,
}

/// An event (alarm, agent notice) in the store. `body` is the JSON published upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub body: serde_json::Value,
}

pub(crate) fn micros(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

pub(crate) fn quality_code(q: &Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::Uncertain(_) => 1,
        Quality::Bad(_) => 2,
    }
}

pub(crate) fn quality_from(code: i64, reason: Option<String>) -> Quality {
    let reason = || Arc::<str>::from(reason.clone().unwrap_or_default().as_str());
    match code {
        0 => Quality::Good,
        1 => Quality::Uncertain(reason()),
        _ => Quality::Bad(reason()),
    }
}

pub(crate) fn value_from(kind: i64, v: rusqlite::types::Value) -> Option<Value> {
    use rusqlite::types::Value as Sql;
    match (kind, v) {
        (1, Sql::Real(x)) => Some(Value::F64(x)),
        (1, Sql::Integer(x)) => Some(Value::F64(x as f64)),
        (1, Sql::Null) => Some(Value::F64(f64::NAN)),
        (2, Sql::Integer(x)) => Some(Value::I64(x)),
        (3, Sql::Integer(x)) => Some(Value::Bool(x != 0)),
        (4, Sql::Text(s)) => Some(Value::Str(Arc::from(s.as_str()))),
        (5, Sql::Text(s)) => s.parse().ok().map(Value::from_u64),
        (5, Sql::Integer(x)) => u64::try_from(x).ok().map(Value::from_u64),
        _ => None,
    }
}
