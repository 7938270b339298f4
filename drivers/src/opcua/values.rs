//! From OPC UA `DataValue`s to lineside readings: value kinds, quality from the StatusCode (with the code's
//! name as the reason), and the timestamp (source, else server, else the time the driver received it).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use opcua::types::{DataValue, StatusCode, Variant};

use crate::reading::{Quality, Reading, Value};

/// What kind of value a tag is expected to carry; decides `TagInfo::numeric` and rejects strings on
/// numeric tags (SPC would otherwise silently see no data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Number,
    Bool,
    String,
}

impl Kind {
    pub fn numeric(self) -> bool {
        !matches!(self, Kind::String)
    }
}

/// How one tag turns its values into readings.
#[derive(Debug, Clone)]
pub struct TagShape {
    pub device: Arc<str>,
    pub name: Arc<str>,
    pub unit: Option<Arc<str>>,
    pub kind: Kind,
    /// `Some(n)`: the node holds an array, published as readings `name[0]` .. `name[n-1]`.
    pub elements: Option<Vec<Arc<str>>>,
}

impl TagShape {
    pub fn new(
        device: &Arc<str>,
        name: &str,
        unit: Option<&str>,
        kind: Kind,
        elements: Option<u32>,
    ) -> Self {
        TagShape {
            device: device.clone(),
            name: Arc::from(name),
            unit: unit.map(Arc::from),
            kind,
            elements: elements.map(|n| (0..n).map(|i| Arc::from(format!("{name}[{i}]"))).collect()),
        }
    }

    /// The names of the readings this tag produces.
    pub fn reading_names(&self) -> Vec<Arc<str>> {
        match &self.elements {
            Some(names) => names.clone(),
            None => vec![self.name.clone()],
        }
    }

    /// One bad reading per produced reading name, e.g. when the node is missing or the link is down.
    pub fn bad(&self, ts: DateTime<Utc>, reason: &Arc<str>, out: &mut Vec<Reading>) {
        for name in self.reading_names() {
            out.push(Reading::bad(
                &self.device,
                &name,
                ts,
                reason.clone(),
                self.unit.as_ref(),
            ));
        }
    }

    /// Maps one data value (from a read or a data change notification) into readings.
    pub fn map(&self, dv: &DataValue, received: DateTime<Utc>, out: &mut Vec<Reading>) {
        let ts = timestamp(dv, received);
        let status = dv.status.unwrap_or(StatusCode::Good);
        let quality = quality(status);
        if status.is_bad() {
            // Part 4: a Bad status means the value is not usable, whatever the server put in it.
            self.bad(ts, &Arc::from(quality.reason().unwrap_or("bad")), out);
            return;
        }
        let value = dv.value.as_ref().unwrap_or(&Variant::Empty);
        match (&self.elements, value) {
            (Some(names), Variant::Array(array)) => {
                for (i, name) in names.iter().enumerate() {
                    let reading = match array.values.get(i) {
                        Some(v) => self.reading(name, ts, v, &quality),
                        None => self.bad_one(
                            name,
                            ts,
                            format!(
                                "array has {} elements, element {i} is missing",
                                array.values.len()
                            ),
                        ),
                    };
                    out.push(reading);
                }
            }
            (Some(_), other) => {
                let reason = format!(
                    "type: expected an array (array_elements is set), got {}",
                    type_name(other)
                );
                self.bad(ts, &Arc::from(reason), out);
            }
            (None, Variant::Array(array)) => {
                let reason = format!(
                    "type: the node holds an array of {} elements; set array_elements on the tag to get one \
                     reading per element",
                    array.values.len()
                );
                out.push(self.bad_one(&self.name, ts, reason));
            }
            (None, v) => out.push(self.reading(&self.name, ts, v, &quality)),
        }
    }

    fn bad_one(&self, name: &Arc<str>, ts: DateTime<Utc>, reason: String) -> Reading {
        Reading::bad(
            &self.device,
            name,
            ts,
            Arc::from(reason),
            self.unit.as_ref(),
        )
    }

    fn reading(
        &self,
        name: &Arc<str>,
        ts: DateTime<Utc>,
        v: &Variant,
        quality: &Quality,
    ) -> Reading {
        match scalar(v) {
            Ok(value) => {
                if self.kind.numeric() && matches!(value, Value::Str(_)) {
                    let mismatch = ValueError::KindMismatch {
                        expected: if self.kind == Kind::Bool {
                            "bool"
                        } else {
                            "number"
                        },
                        found: type_name(v),
                    };
                    return self.bad_one(name, ts, mismatch.to_string());
                }
                Reading {
                    device: self.device.clone(),
                    tag: name.clone(),
                    ts,
                    value: Some(value),
                    quality: quality.clone(),
                    unit: self.unit.clone(),
                }
            }
            Err(e) => self.bad_one(name, ts, e.to_string()),
        }
    }
}

/// Source timestamp when the server gave one, else the server timestamp, else the receive time.
pub fn timestamp(dv: &DataValue, received: DateTime<Utc>) -> DateTime<Utc> {
    [dv.source_timestamp.as_ref(), dv.server_timestamp.as_ref()]
        .into_iter()
        .flatten()
        .find(|t| !t.is_null())
        .map(|t| t.as_chrono())
        .unwrap_or(received)
}

/// Good / Uncertain / Bad with the status code's name (e.g. `BadNodeIdUnknown`) as the reason.
pub fn quality(status: StatusCode) -> Quality {
    if status.is_good() {
        Quality::Good
    } else if status.is_uncertain() {
        Quality::Uncertain(Arc::from(status.to_string()))
    } else {
        Quality::Bad(Arc::from(status.to_string()))
    }
}

/// The name of a variant's type, for error messages.
pub fn type_name(v: &Variant) -> String {
    match v {
        Variant::Array(a) => format!("array of {:?}", a.value_type),
        other => match other.type_id() {
            opcua::types::VariantTypeId::Empty => "empty value".to_string(),
            opcua::types::VariantTypeId::Scalar(t) => format!("{t:?}"),
            opcua::types::VariantTypeId::Array(t, _) => format!("array of {t:?}"),
        },
    }
}

/// Why a node's value gives no reading value; the text is the reading's reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("value: the server sent no value (Null)")]
    Null,
    #[error("value: non-finite number {0}")]
    NonFinite(f64),
    #[error("type: {0} values are not supported; point the tag at a scalar field of the structure")]
    Structure(String),
    #[error("type: unexpected {0}")]
    Unexpected(String),
    #[error(
        "type: expected a {expected} but the node holds a {found} (set kind = \"string\" on the tag)"
    )]
    KindMismatch {
        expected: &'static str,
        found: String,
    },
}

/// Maps a scalar variant to a reading value. Structures and other values without a natural reading
/// form are reported, not guessed.
pub fn scalar(v: &Variant) -> Result<Value, ValueError> {
    Ok(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64(i64::from(*x)),
        Variant::Byte(x) => Value::I64(i64::from(*x)),
        Variant::Int16(x) => Value::I64(i64::from(*x)),
        Variant::UInt16(x) => Value::I64(i64::from(*x)),
        Variant::Int32(x) => Value::I64(i64::from(*x)),
        Variant::UInt32(x) => Value::I64(i64::from(*x)),
        Variant::Int64(x) => Value::I64(*x),
        // Exact over the whole range: above i64::MAX it is a `Value::U64`.
        Variant::UInt64(x) => Value::from_u64(*x),
        Variant::Float(x) => finite(f32_to_f64(*x))?,
        Variant::Double(x) => finite(*x)?,
        Variant::String(s) => Value::Str(Arc::from(s.as_ref())),
        Variant::LocalizedText(t) => Value::Str(Arc::from(t.text.as_ref())),
        // `2:PartNo`: the namespace index is part of the name (the form `lineside opcua browse` prints).
        Variant::QualifiedName(q) => Value::Str(Arc::from(format!(
            "{}:{}",
            q.namespace_index,
            q.name.as_ref()
        ))),
        Variant::DateTime(t) => Value::Str(Arc::from(
            t.as_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )),
        Variant::Guid(g) => Value::Str(Arc::from(g.to_string())),
        Variant::StatusCode(s) => Value::Str(Arc::from(s.to_string())),
        Variant::ByteString(b) => Value::Str(Arc::from(b.as_base64())),
        Variant::XmlElement(x) => Value::Str(Arc::from(x.to_string())),
        Variant::NodeId(n) => Value::Str(Arc::from(super::nodeid::format_node_id(n))),
        Variant::ExpandedNodeId(n) => Value::Str(Arc::from(n.to_string())),
        Variant::Variant(inner) => return scalar(inner),
        Variant::DataValue(dv) => return scalar(dv.value.as_ref().unwrap_or(&Variant::Empty)),
        Variant::Empty => return Err(ValueError::Null),
        Variant::ExtensionObject(_) | Variant::DiagnosticInfo(_) => {
            return Err(ValueError::Structure(type_name(v)));
        }
        Variant::Array(_) => return Err(ValueError::Unexpected(type_name(v))),
    })
}

fn finite(x: f64) -> Result<Value, ValueError> {
    if x.is_finite() {
        Ok(Value::F64(x))
    } else {
        Err(ValueError::NonFinite(x))
    }
}

/// Widens a float the way it was displayed: 0.1f32 becomes 0.1, not 0.10000000149011612.
pub fn f32_to_f64(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    x.to_string().parse::<f64>().unwrap_or(f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{
        Array, ByteString, DateTime as UaDateTime, LocalizedText, QualifiedName,
        VariantScalarTypeId,
    };

    fn shape(kind: Kind, elements: Option<u32>) -> TagShape {
        TagShape::new(&Arc::from("dev"), "t", Some("mm"), kind, elements)
    }

    fn map_one(shape: &TagShape, dv: DataValue) -> Vec<Reading> {
        let mut out = Vec::new();
        shape.map(&dv, Utc::now(), &mut out);
        out
    }

    #[test]
    fn scalars_map_to_reading_kinds() {
        assert_eq!(scalar(&Variant::Boolean(true)), Ok(Value::Bool(true)));
        assert_eq!(scalar(&Variant::SByte(-3)), Ok(Value::I64(-3)));
        assert_eq!(
            scalar(&Variant::UInt32(u32::MAX)),
            Ok(Value::I64(4_294_967_295))
        );
        assert_eq!(scalar(&Variant::UInt64(7)), Ok(Value::I64(7)));
        assert_eq!(scalar(&Variant::UInt64(u64::MAX)), Ok(Value::U64(u64::MAX)));
        assert_eq!(
            scalar(&Variant::UInt64(12_345_678_901_234_567_890)),
            Ok(Value::U64(12_345_678_901_234_567_890))
        );
        assert_eq!(scalar(&Variant::Int64(i64::MIN)), Ok(Value::I64(i64::MIN)));
        assert_eq!(
            scalar(&Variant::QualifiedName(Box::new(QualifiedName::new(
                2, "PartNo"
            )))),
            Ok(Value::Str("2:PartNo".into()))
        );
        assert_eq!(scalar(&Variant::Float(0.1)), Ok(Value::F64(0.1)));
        assert_eq!(scalar(&Variant::Double(74.012)), Ok(Value::F64(74.012)));
        assert!(
            scalar(&Variant::Double(f64::NAN))
                .unwrap_err()
                .to_string()
                .contains("non-finite")
        );
        assert_eq!(
            scalar(&Variant::from("lot-7")),
            Ok(Value::Str("lot-7".into()))
        );
        assert_eq!(
            scalar(&Variant::LocalizedText(Box::new(LocalizedText::new(
                "en", "Running"
            )))),
            Ok(Value::Str("Running".into()))
        );
        assert_eq!(
            scalar(&Variant::StatusCode(StatusCode::BadNodeIdUnknown)),
            Ok(Value::Str("BadNodeIdUnknown".into()))
        );
        assert_eq!(
            scalar(&Variant::ByteString(ByteString::from(vec![1u8, 2, 3]))),
            Ok(Value::Str("AQID".into()))
        );
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            scalar(&Variant::DateTime(Box::new(UaDateTime::from(t)))),
            Ok(Value::Str("2026-03-01T10:00:00Z".into()))
        );
        assert_eq!(
            scalar(&Variant::Variant(Box::new(Variant::Int16(5)))),
            Ok(Value::I64(5))
        );
        assert!(
            scalar(&Variant::Empty)
                .unwrap_err()
                .to_string()
                .contains("no value")
        );
    }

    #[test]
    fn status_becomes_quality_with_the_code_name() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::Uncertain("UncertainLastUsableValue".into())
        );
        assert_eq!(
            quality(StatusCode::BadNodeIdUnknown),
            Quality::Bad("BadNodeIdUnknown".into())
        );

        let s = shape(Kind::Number, None);
        let mut dv = DataValue::new_now(1.5f64);
        dv.status = Some(StatusCode::UncertainSensorNotAccurate);
        let r = map_one(&s, dv);
        assert_eq!(r[0].value, Some(Value::F64(1.5)));
        assert_eq!(
            r[0].quality,
            Quality::Uncertain("UncertainSensorNotAccurate".into())
        );

        let mut dv = DataValue::new_now(1.5f64);
        dv.status = Some(StatusCode::BadSensorFailure);
        let r = map_one(&s, dv);
        assert_eq!(r[0].value, None, "a bad value is not passed on");
        assert_eq!(r[0].quality, Quality::Bad("BadSensorFailure".into()));
    }

    #[test]
    fn timestamps_prefer_source_then_server_then_receive() {
        let src = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z")
            .unwrap()
            .to_utc();
        let srv = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:02Z")
            .unwrap()
            .to_utc();
        let rcv = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:03Z")
            .unwrap()
            .to_utc();
        let mut dv = DataValue::value_only(1i32);
        assert_eq!(timestamp(&dv, rcv), rcv);
        dv.server_timestamp = Some(srv.into());
        assert_eq!(timestamp(&dv, rcv), srv);
        dv.source_timestamp = Some(src.into());
        assert_eq!(timestamp(&dv, rcv), src);
        dv.source_timestamp = Some(UaDateTime::null());
        assert_eq!(
            timestamp(&dv, rcv),
            srv,
            "a null source timestamp counts as absent"
        );
    }

    #[test]
    fn arrays_expand_per_element_or_are_rejected() {
        let arr = Variant::Array(Box::new(
            Array::new(
                VariantScalarTypeId::Double,
                vec![Variant::Double(1.0), Variant::Double(2.0)],
            )
            .unwrap(),
        ));
        let r = map_one(&shape(Kind::Number, None), DataValue::new_now(arr.clone()));
        assert_eq!(r.len(), 1);
        assert!(
            r[0].quality.reason().unwrap().contains("array_elements"),
            "{:?}",
            r[0]
        );

        let r = map_one(&shape(Kind::Number, Some(3)), DataValue::new_now(arr));
        let names: Vec<_> = r.iter().map(|r| r.tag.to_string()).collect();
        assert_eq!(names, ["t[0]", "t[1]", "t[2]"]);
        assert_eq!(r[1].value, Some(Value::F64(2.0)));
        assert!(!r[2].quality.is_good());

        let r = map_one(&shape(Kind::Number, Some(2)), DataValue::new_now(3.0f64));
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .all(|r| r.quality.reason().unwrap().contains("expected an array"))
        );
    }

    #[test]
    fn strings_on_numeric_tags_are_flagged() {
        let r = map_one(&shape(Kind::Number, None), DataValue::new_now("abc"));
        assert!(r[0].quality.reason().unwrap().contains("kind = \"string\""));
        let r = map_one(&shape(Kind::String, None), DataValue::new_now("abc"));
        assert_eq!(r[0].value, Some(Value::Str("abc".into())));
        let r = map_one(&shape(Kind::String, None), DataValue::new_now(5i32));
        assert_eq!(
            r[0].value,
            Some(Value::I64(5)),
            "numbers on a string tag pass unchanged"
        );
    }
}
