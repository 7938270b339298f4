//! Sparkplug data types (specification 6.4.16) and how lineside's values map onto them.
//!
//! | lineside value | Sparkplug datatype | protobuf field |
//! |---|---|---|
//! | `F64` | Double (10) | `double_value` |
//! | `I64` | Int64 (4) | `long_value`, two's complement |
//! | `U64` (above i64::MAX) | UInt64 (8) | `long_value` |
//! | `Bool` | Boolean (11) | `boolean_value` |
//! | `Str` | String (12) | `string_value` |
//!
//! A metric keeps the datatype its birth announced. A later value that the announced type holds
//! exactly is encoded in that type (an `I64` of a Double metric within ±2^53); any other value needs
//! a new birth with the new type (see `catalog`).

use lineside_drivers::Value;

use super::proto::{metric, property_value};

/// The Sparkplug datatypes lineside reads or writes (the enum has more: DataSet, Template, arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
}

impl DataType {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<DataType> {
        use DataType::*;
        Some(match code {
            1 => Int8,
            2 => Int16,
            3 => Int32,
            4 => Int64,
            5 => UInt8,
            6 => UInt16,
            7 => UInt32,
            8 => UInt64,
            9 => Float,
            10 => Double,
            11 => Boolean,
            12 => String,
            13 => DateTime,
            14 => Text,
            _ => return None,
        })
    }

    /// The natural Sparkplug type of a value.
    pub fn of(v: &Value) -> DataType {
        match v {
            Value::F64(_) => DataType::Double,
            Value::I64(_) => DataType::Int64,
            Value::U64(_) => DataType::UInt64,
            Value::Bool(_) => DataType::Boolean,
            Value::Str(_) => DataType::String,
        }
    }
}

/// Largest integer a double holds exactly.
const F64_EXACT: i64 = 1 << 53;

/// Encodes `v` as a metric value of type `dt`, or `None` when `dt` cannot hold it exactly (the metric
/// then needs a new birth with [`DataType::of`]).
pub fn encode(dt: DataType, v: &Value) -> Option<metric::Value> {
    use metric::Value as M;
    Some(match (dt, v) {
        (DataType::Double, Value::F64(x)) => M::DoubleValue(*x),
        (DataType::Double, Value::I64(i)) if (-F64_EXACT..=F64_EXACT).contains(i) => {
            M::DoubleValue(*i as f64)
        }
        (DataType::Int64, Value::I64(i)) => M::LongValue(*i as u64),
        (DataType::Double, Value::U64(u)) if *u <= F64_EXACT as u64 => M::DoubleValue(*u as f64),
        (DataType::UInt64, Value::I64(i)) if *i >= 0 => M::LongValue(*i as u64),
        (DataType::UInt64, Value::U64(u)) => M::LongValue(*u),
        (DataType::Boolean, Value::Bool(b)) => M::BooleanValue(*b),
        (DataType::String | DataType::Text, Value::Str(s)) => M::StringValue(s.to_string()),
        _ => return None,
    })
}

/// Decodes a metric value of type `dt` (commands from a host; the tests' own checks).
pub fn decode(dt: DataType, v: &metric::Value) -> Option<Value> {
    use metric::Value as M;
    Some(match (dt, v) {
        (DataType::Int8, M::IntValue(x)) => Value::I64(*x as u8 as i8 as i64),
        (DataType::Int16, M::IntValue(x)) => Value::I64(*x as u16 as i16 as i64),
        (DataType::Int32, M::IntValue(x)) => Value::I64(*x as i32 as i64),
        (DataType::UInt8 | DataType::UInt16 | DataType::UInt32, M::IntValue(x)) => {
            Value::I64(*x as i64)
        }
        (DataType::Int64, M::LongValue(x)) => Value::I64(*x as i64),
        (DataType::UInt64 | DataType::DateTime, M::LongValue(x)) => Value::from_u64(*x),
        (DataType::Float, M::FloatValue(x)) => Value::F64(*x as f64),
        (DataType::Double, M::DoubleValue(x)) => Value::F64(*x),
        (DataType::Boolean, M::BooleanValue(b)) => Value::Bool(*b),
        (DataType::String | DataType::Text, M::StringValue(s)) => Value::Str(s.as_str().into()),
        _ => return None,
    })
}

/// A property value for a PropertySet (births and quality).
pub fn property(dt: DataType, v: &Value) -> Option<super::proto::PropertyValue> {
    use property_value::Value as P;
    let value = match (dt, v) {
        (DataType::Int32, Value::I64(i)) => P::IntValue(i32::try_from(*i).ok()? as u32),
        (DataType::Int64, Value::I64(i)) => P::LongValue(*i as u64),
        (DataType::Double, Value::F64(x)) => P::DoubleValue(*x),
        (DataType::Boolean, Value::Bool(b)) => P::BooleanValue(*b),
        (DataType::String, Value::Str(s)) => P::StringValue(s.to_string()),
        _ => return None,
    };
    Some(super::proto::PropertyValue {
        r#type: Some(dt.code()),
        is_null: None,
        value: Some(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_natural_type() {
        for v in [
            Value::F64(-1.5e300),
            Value::F64(0.1),
            Value::I64(i64::MIN),
            Value::I64(i64::MAX),
            Value::I64(-1),
            Value::U64(u64::MAX),
            Value::U64(i64::MAX as u64 + 1),
            Value::Bool(true),
            Value::Bool(false),
            Value::Str("".into()),
            Value::Str("ü/ß".into()),
        ] {
            let dt = DataType::of(&v);
            let m = encode(dt, &v).unwrap();
            assert_eq!(decode(dt, &m), Some(v.clone()), "{dt:?}");
        }
    }

    #[test]
    fn int64_uses_twos_complement_in_long_value() {
        assert_eq!(
            encode(DataType::Int64, &Value::I64(-1)),
            Some(metric::Value::LongValue(u64::MAX))
        );
        assert_eq!(
            decode(DataType::Int32, &metric::Value::IntValue(u32::MAX)),
            Some(Value::I64(-1))
        );
        assert_eq!(
            decode(DataType::Int8, &metric::Value::IntValue(0x80)),
            Some(Value::I64(-128))
        );
    }

    #[test]
    fn a_type_that_cannot_hold_the_value_exactly_refuses_it() {
        assert!(encode(DataType::Double, &Value::I64(3)).is_some());
        assert!(encode(DataType::Double, &Value::I64((1 << 53) + 1)).is_none());
        assert!(encode(DataType::Int64, &Value::F64(1.0)).is_none());
        assert!(encode(DataType::UInt64, &Value::I64(-1)).is_none());
        assert!(encode(DataType::Int64, &Value::U64(u64::MAX)).is_none());
        assert_eq!(
            encode(DataType::UInt64, &Value::I64(5)),
            Some(metric::Value::LongValue(5)),
            "a u64 tag's small values (I64) stay UInt64"
        );
        assert!(encode(DataType::Boolean, &Value::Str("true".into())).is_none());
    }

    #[test]
    fn codes_are_the_specifications() {
        for code in 1..=14 {
            assert_eq!(DataType::from_code(code).unwrap().code(), code);
        }
        assert_eq!(DataType::from_code(0), None);
        assert_eq!(DataType::Double.code(), 10);
        assert_eq!(DataType::UInt64.code(), 8);
    }
}
