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

/// A reading's value. Integers are exact over the whole of both 64-bit ranges: a signed or unsigned integer
/// that fits an `i64` is [`Value::I64`]; only unsigned values above `i64::MAX` are [`Value::U64`] (so one
/// integer has one representation, and stores and payloads that only know i64 see the common case
/// unchanged).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    /// An unsigned integer above `i64::MAX` (use [`Value::from_u64`] to build one).
    U64(u64),
    Bool(bool),
    Str(Arc<str>),
}

impl Value {
    /// The exact value of an unsigned integer: [`Value::I64`] when it fits, else [`Value::U64`].
    pub fn from_u64(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::I64(i),
            Err(_) => Value::U64(v),
        }
    }

    /// The numeric view used by SPC: booleans count as 0/1, strings have none. 64-bit integers beyond
    /// 2^53 lose precision here (and only here).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::U64(v) => Some(*v as f64),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_integers_have_one_exact_form() {
        assert_eq!(Value::from_u64(7), Value::I64(7));
        assert_eq!(Value::from_u64(i64::MAX as u64), Value::I64(i64::MAX));
        assert_eq!(
            Value::from_u64(i64::MAX as u64 + 1),
            Value::U64(9_223_372_036_854_775_808)
        );
        assert_eq!(Value::from_u64(u64::MAX), Value::U64(u64::MAX));
        assert_eq!(Value::U64(u64::MAX).as_f64(), Some(u64::MAX as f64));
    }
}
