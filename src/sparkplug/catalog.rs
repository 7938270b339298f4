//! What the node has announced: every metric's name, alias, datatype and unit, per device, plus the
//! latest value of each (a birth must carry the current value of every metric).
//!
//! Aliases are unique across the whole edge node (specification 6.4.5) and stable for the life of the
//! process; hosts learn them again from every birth, so they need not survive a restart. A device's
//! metric set may grow (a tag added by a reload, the first value of a tag whose type was unknown, an
//! SPC characteristic): the device is then marked for a new DBIRTH before its next DDATA.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lineside_drivers::{Quality, Value};

use super::datatype::{self, DataType};
use super::proto;

/// One device metric as announced in its DBIRTH.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDef {
    pub alias: u64,
    pub datatype: DataType,
    pub unit: Option<Arc<str>>,
}

/// The latest known sample of a metric, for births.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ts: DateTime<Utc>,
    pub value: Option<Value>,
    pub quality: Quality,
}

#[derive(Debug, Default)]
struct DeviceEntry {
    metrics: BTreeMap<Arc<str>, MetricDef>,
    latest: BTreeMap<Arc<str>, Sample>,
    /// The announced metric set changed since the last DBIRTH.
    stale_birth: bool,
}

/// A tag known from the configuration before any of its values was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSpec {
    pub device: String,
    pub tag: String,
    pub unit: Option<String>,
    /// The datatype to announce while no value is known (numeric tags: Double, others: String).
    pub datatype: DataType,
}

/// What happened when a sample was offered to the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The metric is announced and its type holds the value: DDATA can carry it by alias.
    Announced(u64),
    /// The metric is new or changed type: the device needs a DBIRTH first (already recorded).
    NeedsBirth,
}

#[derive(Debug, Default)]
pub struct Catalog {
    devices: BTreeMap<Arc<str>, DeviceEntry>,
    /// Next free alias; node-level metrics take theirs from the same counter.
    next_alias: u64,
}

impl Catalog {
    pub fn new(tags: &[TagSpec]) -> Self {
        let mut c = Catalog {
            devices: BTreeMap::new(),
            next_alias: 1,
        };
        for t in tags {
            let alias = c.take_alias();
            let entry = c.devices.entry(Arc::from(t.device.as_str())).or_default();
            entry.metrics.insert(
                Arc::from(t.tag.as_str()),
                MetricDef {
                    alias,
                    datatype: t.datatype,
                    unit: t.unit.as_deref().map(Arc::from),
                },
            );
        }
        c
    }

    pub fn take_alias(&mut self) -> u64 {
        let a = self.next_alias;
        self.next_alias += 1;
        a
    }

    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(|d| &**d)
    }

    pub fn has_device(&self, device: &str) -> bool {
        self.devices.contains_key(device)
    }

    /// Records the latest sample of a tag without checking the announced set (births read it).
    pub fn remember(&mut self, device: &Arc<str>, tag: &Arc<str>, sample: Sample) {
        let entry = self.devices.entry(device.clone()).or_default();
        let newer = entry.latest.get(tag).is_none_or(|s| s.ts <= sample.ts);
        if newer {
            entry.latest.insert(tag.clone(), sample);
        }
    }

    /// Checks a value against the announced metric, defining or re-typing it (and marking the device
    /// for a new birth) when needed.
    pub fn fit(
        &mut self,
        device: &Arc<str>,
        tag: &Arc<str>,
        value: Option<&Value>,
        unit: Option<&Arc<str>>,
    ) -> Fit {
        let wanted = value.map(DataType::of);
        let known = self
            .devices
            .get(device)
            .and_then(|e| e.metrics.get(tag))
            .map(|m| (m.alias, m.datatype));
        match known {
            Some((alias, dt)) => match value {
                // No value (bad quality) fits any type: it is sent with is_null.
                None => Fit::Announced(alias),
                Some(v) if datatype::encode(dt, v).is_some() => Fit::Announced(alias),
                Some(_) => {
                    let entry = self.devices.entry(device.clone()).or_default();
                    if let (Some(m), Some(w)) = (entry.metrics.get_mut(tag), wanted) {
                        m.datatype = w;
                    }
                    entry.stale_birth = true;
                    Fit::NeedsBirth
                }
            },
            None => {
                let alias = self.take_alias();
                let entry = self.devices.entry(device.clone()).or_default();
                entry.metrics.insert(
                    tag.clone(),
                    MetricDef {
                        alias,
                        datatype: wanted.unwrap_or(DataType::Double),
                        unit: unit.cloned(),
                    },
                );
                entry.stale_birth = true;
                Fit::NeedsBirth
            }
        }
    }

    pub fn datatype(&self, device: &str, tag: &str) -> Option<DataType> {
        self.devices
            .get(device)?
            .metrics
            .get(tag)
            .map(|m| m.datatype)
    }

    pub fn needs_birth(&self, device: &str) -> bool {
        self.devices.get(device).is_some_and(|e| e.stale_birth)
    }

    /// The DBIRTH metrics of a device: every metric with its latest value (or `is_null`), and marks
    /// the device's birth as current.
    pub fn birth_metrics(&mut self, device: &str, now: DateTime<Utc>) -> Vec<proto::Metric> {
        let Some(entry) = self.devices.get_mut(device) else {
            return Vec::new();
        };
        entry.stale_birth = false;
        entry
            .metrics
            .iter()
            .map(|(tag, def)| {
                let sample = entry.latest.get(tag);
                let mut m = metric(
                    sample.map_or(now, |s| s.ts),
                    def.datatype,
                    sample.and_then(|s| s.value.as_ref()),
                    sample.map_or(&Quality::Good, |s| &s.quality),
                    false,
                );
                m.name = Some(tag.to_string());
                m.alias = Some(def.alias);
                m.datatype = Some(def.datatype.code());
                if let Some(unit) = &def.unit {
                    add_property(
                        &mut m,
                        "engUnit",
                        DataType::String,
                        &Value::Str(unit.clone()),
                    );
                }
                m
            })
            .collect()
    }
}

/// Quality codes of the specification (6.4.8): the only valid values are 0, 192 and 500.
pub const QUALITY_BAD: i64 = 0;
pub const QUALITY_GOOD: i64 = 192;
pub const QUALITY_STALE: i64 = 500;

/// Sparkplug has no "uncertain" code: an uncertain reading is sent as STALE (500) with its reason, so
/// a host neither shows it as good nor throws the value away as bad.
pub fn quality_code(q: &Quality) -> i64 {
    match q {
        Quality::Good => QUALITY_GOOD,
        Quality::Uncertain(_) => QUALITY_STALE,
        Quality::Bad(_) => QUALITY_BAD,
    }
}

fn add_property(m: &mut proto::Metric, key: &str, dt: DataType, v: &Value) {
    if let Some(pv) = datatype::property(dt, v) {
        let set = m.properties.get_or_insert_with(Default::default);
        set.keys.push(key.to_string());
        set.values.push(pv);
    }
}

/// A metric value as sent in births and DDATA (without name/alias/datatype, which the caller sets).
/// Non-good quality adds the `Quality` property (Int32) and a `Quality Reason` (String).
pub fn metric(
    ts: DateTime<Utc>,
    dt: DataType,
    value: Option<&Value>,
    quality: &Quality,
    historical: bool,
) -> proto::Metric {
    let encoded = value.and_then(|v| datatype::encode(dt, v));
    let mut m = proto::Metric {
        timestamp: Some(ts.timestamp_millis().max(0) as u64),
        is_historical: historical.then_some(true),
        is_null: encoded.is_none().then_some(true),
        value: encoded,
        ..Default::default()
    };
    if !quality.is_good() {
        add_property(
            &mut m,
            "Quality",
            DataType::Int32,
            &Value::I64(quality_code(quality)),
        );
        if let Some(reason) = quality.reason().filter(|r| !r.is_empty()) {
            add_property(
                &mut m,
                "Quality Reason",
                DataType::String,
                &Value::Str(Arc::from(reason)),
            );
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn aliases_are_unique_across_devices_and_new_tags_need_a_birth() {
        let mut c = Catalog::new(&[
            TagSpec {
                device: "press".into(),
                tag: "force".into(),
                unit: Some("kN".into()),
                datatype: DataType::Double,
            },
            TagSpec {
                device: "oven".into(),
                tag: "temp".into(),
                unit: None,
                datatype: DataType::Double,
            },
        ]);
        let f1 = c.fit(&a("press"), &a("force"), Some(&Value::F64(1.0)), None);
        let f2 = c.fit(&a("oven"), &a("temp"), Some(&Value::I64(3)), None);
        assert!(matches!((f1, f2), (Fit::Announced(x), Fit::Announced(y)) if x != y));
        assert!(!c.needs_birth("press"));
        assert_eq!(
            c.fit(&a("press"), &a("mode"), Some(&Value::Str(a("auto"))), None),
            Fit::NeedsBirth
        );
        assert!(c.needs_birth("press"));
        let birth = c.birth_metrics("press", Utc::now());
        assert!(!c.needs_birth("press"));
        let aliases: Vec<u64> = birth.iter().map(|m| m.alias.unwrap()).collect();
        assert_eq!(aliases.len(), 2);
        assert!(!aliases.contains(&match f2 {
            Fit::Announced(x) => x,
            Fit::NeedsBirth => 0,
        }));
        let force = birth
            .iter()
            .find(|m| m.name.as_deref() == Some("force"))
            .unwrap();
        assert_eq!(force.datatype, Some(DataType::Double.code()));
        assert_eq!(force.is_null, Some(true), "no value seen yet");
        let props = force.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["engUnit"]);
    }

    #[test]
    fn a_value_the_type_cannot_hold_retypes_the_metric() {
        let mut c = Catalog::new(&[TagSpec {
            device: "d".into(),
            tag: "count".into(),
            unit: None,
            datatype: DataType::Double,
        }]);
        assert!(matches!(
            c.fit(&a("d"), &a("count"), Some(&Value::I64(5)), None),
            Fit::Announced(_)
        ));
        assert_eq!(
            c.fit(&a("d"), &a("count"), Some(&Value::Str(a("x"))), None),
            Fit::NeedsBirth
        );
        c.remember(
            &a("d"),
            &a("count"),
            Sample {
                ts: Utc::now(),
                value: Some(Value::Str(a("x"))),
                quality: Quality::Good,
            },
        );
        let birth = c.birth_metrics("d", Utc::now());
        assert_eq!(birth[0].datatype, Some(DataType::String.code()));
        assert_eq!(
            birth[0].value,
            Some(proto::metric::Value::StringValue("x".into()))
        );
    }

    #[test]
    fn bad_and_uncertain_quality_become_properties() {
        let m = metric(
            Utc::now(),
            DataType::Double,
            None,
            &Quality::Bad(a("timeout")),
            true,
        );
        assert_eq!(m.is_null, Some(true));
        assert_eq!(m.is_historical, Some(true));
        let p = m.properties.unwrap();
        assert_eq!(p.keys, ["Quality", "Quality Reason"]);
        assert_eq!(p.values[0].r#type, Some(3), "Int32");
        assert_eq!(
            p.values[0].value,
            Some(proto::property_value::Value::IntValue(0))
        );
        let u = metric(
            Utc::now(),
            DataType::Double,
            Some(&Value::F64(1.0)),
            &Quality::Uncertain(a("clamped")),
            false,
        );
        assert_eq!(
            u.properties.unwrap().values[0].value,
            Some(proto::property_value::Value::IntValue(500))
        );
        assert_eq!(u.is_historical, None);
        let g = metric(
            Utc::now(),
            DataType::Double,
            Some(&Value::F64(1.0)),
            &Quality::Good,
            false,
        );
        assert!(g.properties.is_none(), "good quality needs no property");
    }
}
