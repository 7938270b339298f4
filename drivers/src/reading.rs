//! The unit of data that flows from a driver to the store.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// One sample of one tag. The store assigns the sequence number when it commits the reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: Arc<str>,
    pub tag: Arc<str>,
    /// Source timestamp where the protocol gives one, else the time the driver received the value.
    pub ts: DateTime<Utc>,
    /// `None` when the device gave no usable value (the quality says why).
    pub value: Option<Value>,
    pub quality: Quality,
    pub unit: Option<Arc<str>>,
}

impl Reading {
    pub fn good(
        device: &Arc<str>,
        tag: &Arc<str>,
        ts: DateTime<Utc>,
        value: Value,
        unit: Option<&Arc<str>>,
    ) -> Self {
        Reading {
            device: device.clone(),
            tag: tag.clone(),
            ts,
            value: Some(value),
            quality: Quality::Good,
            unit: unit.cloned(),
        }
    }

    /// A reading that records a fault: no value, bad quality with the reason.
    pub fn bad(
        device: &Arc<str>,
        tag: &Arc<str>,
        ts: DateTime<Utc>,
        reason: Arc<str>,
        unit: Option<&Arc<str>>,
    ) -> Self {
        Reading {
            device: device.clone(),
            tag: tag.clone(),
            ts,
            value: None,
            quality: Quality::Bad(reason),
            unit: unit.cloned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(Arc<str>),
}

impl Value {
    /// The numeric view used by SPC: booleans count as 0/1, strings have none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        }
    }
}

/// Quality as OPC UA and most historians classify it; the reason names the fault (e.g. `timeout`,
/// `exception: IllegalDataAddress`, `parse: unparsable number`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quality {
    Good,
    Uncertain(Arc<str>),
    Bad(Arc<str>),
}

impl Quality {
    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }

    /// The short name used in payloads and in the store: `good`, `uncertain`, `bad`.
    pub fn name(&self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain(_) => "uncertain",
            Quality::Bad(_) => "bad",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Quality::Good => None,
            Quality::Uncertain(r) | Quality::Bad(r) => Some(r),
        }
    }
}
