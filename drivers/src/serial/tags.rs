//! From a frame's measurements (or a fault) to one reading per configured tag, with unit normalization.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::config::{DeviceConfig, TagConfig, TagField};
use super::protocols::Measurement;
use super::units::{Unit, convert};
use crate::reading::{Reading, Value};

struct Tag {
    cfg: TagConfig,
    name: Arc<str>,
    unit: Option<Arc<str>>,
}

/// The device's tags, ready to turn measurements into readings.
pub(crate) struct TagSet {
    device: Arc<str>,
    tags: Vec<Tag>,
    instrument_unit: Option<Unit>,
}

impl TagSet {
    pub fn new(device: &str, cfg: &DeviceConfig) -> Self {
        TagSet {
            device: Arc::from(device),
            tags: cfg
                .tags
                .iter()
                .map(|t| Tag {
                    name: Arc::from(t.name.as_str()),
                    unit: t.unit.as_ref().map(|u| Arc::from(u.name())),
                    cfg: t.clone(),
                })
                .collect(),
            instrument_unit: cfg.instrument_unit.clone(),
        }
    }

    pub fn all(&self) -> std::ops::Range<usize> {
        0..self.tags.len()
    }

    /// Readings for the tags `which` from one frame. With `require` (a poll reply, which must answer for
    /// all its tags) a tag the frame has no value for gets a bad reading; without it (a streamed frame
    /// from one of several channels) it gets nothing.
    pub fn readings(
        &self,
        measurements: &[Measurement],
        which: impl IntoIterator<Item = usize>,
        require: bool,
        ts: DateTime<Utc>,
    ) -> Vec<Reading> {
        let mut out = Vec::new();
        for tag in which.into_iter().filter_map(|i| self.tags.get(i)) {
            match self.reading(tag, measurements, ts) {
                Some(r) => out.push(r),
                None if require => out.push(self.bad(tag, missing_reason(tag, measurements), ts)),
                None => {}
            }
        }
        out
    }

    /// One bad reading per tag in `which`, all with `reason`.
    pub fn fault(
        &self,
        which: impl IntoIterator<Item = usize>,
        reason: &Arc<str>,
        ts: DateTime<Utc>,
    ) -> Vec<Reading> {
        which
            .into_iter()
            .filter_map(|i| self.tags.get(i))
            .map(|tag| self.bad(tag, reason.clone(), ts))
            .collect()
    }

    fn bad(&self, tag: &Tag, reason: Arc<str>, ts: DateTime<Utc>) -> Reading {
        Reading::bad(&self.device, &tag.name, ts, reason, tag.unit.as_ref())
    }

    fn reading(&self, tag: &Tag, ms: &[Measurement], ts: DateTime<Utc>) -> Option<Reading> {
        let channel_ok = |m: &Measurement| match &tag.cfg.channel {
            None => true,
            Some(c) => m.channel.as_deref() == Some(c.as_str()),
        };
        let Some(field) = tag.cfg.field.measurement_field() else {
            // A status tag: text, no unit.
            let m = ms.iter().find(|m| channel_ok(m) && m.status.is_some())?;
            let status = m.status.as_deref().unwrap_or_default();
            return Some(Reading::good(
                &self.device,
                &tag.name,
                ts,
                Value::Str(Arc::from(status)),
                None,
            ));
        };
        let m = ms.iter().find(|m| channel_ok(m) && m.field == field)?;
        let Some(value) = m.value else {
            let reason = match &m.status {
                Some(s) => format!("no value in the frame (status {s})"),
                None => "no value in the frame".to_string(),
            };
            return Some(self.bad(tag, Arc::from(reason), ts));
        };
        let source = m.unit.as_ref().or(self.instrument_unit.as_ref());
        let (value, unit) = match (source, &tag.cfg.unit) {
            (Some(from), Some(to)) => match convert(value, from, to) {
                Ok(v) => (v, tag.unit.clone()),
                Err(e) => return Some(self.bad(tag, Arc::from(e.to_string()), ts)),
            },
            // The frame says nothing: the tag's unit is taken as the instrument's.
            (None, Some(_)) => (value, tag.unit.clone()),
            (Some(from), None) => (value, Some(Arc::from(from.name()))),
            (None, None) => (value, None),
        };
        Some(Reading::good(
            &self.device,
            &tag.name,
            ts,
            Value::F64(value),
            unit.as_ref(),
        ))
    }
}

fn missing_reason(tag: &Tag, ms: &[Measurement]) -> Arc<str> {
    let channel = tag.cfg.channel.as_deref();
    let same_channel = ms
        .iter()
        .find(|m| channel.is_none() || m.channel.as_deref() == channel);
    let reason = match (same_channel, tag.cfg.field) {
        (Some(_), TagField::Status) => "no status in the reply".to_string(),
        (Some(m), wanted) => format!(
            "the reply holds the {} and not the {} (instrument in another mode?)",
            m.field.name(),
            wanted.name()
        ),
        (None, _) => match channel {
            Some(c) => format!("no value for channel {c} in the reply"),
            None => "no value in the reply".to_string(),
        },
    };
    Arc::from(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Quality;
    use crate::serial::config::parse as parse_config;
    use crate::serial::protocols::Field;

    fn set(tags: &str) -> TagSet {
        let cfg = parse_config(
            toml::from_str(&format!(
                "port='p'\nprotocol='mitutoyo-id'\ninstrument_unit='mm'\n{tags}"
            ))
            .unwrap(),
        )
        .unwrap();
        TagSet::new("gauge", &cfg)
    }

    fn m(channel: &str, field: Field, value: f64, unit: Option<&str>) -> Measurement {
        Measurement {
            channel: Some(channel.into()),
            field,
            value: Some(value),
            unit: unit.map(Unit::parse),
            status: None,
        }
    }

    #[test]
    fn channels_fields_and_units_map_to_tags() {
        let s = set("[[tag]]\nname='a'\nchannel=1\nunit='um'\n\
                     [[tag]]\nname='b'\nchannel=2\n\
                     [[tag]]\nname='a_max'\nchannel=1\nfield='max'\nunit='mm'\n");
        let ms = [
            m("1", Field::Value, 0.0125, None),
            m("2", Field::Value, 1.0, Some("in")),
        ];
        let r = s.readings(&ms, s.all(), true, Utc::now());
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0].value,
            Some(Value::F64(12.5)),
            "mm converted to the tag's um"
        );
        assert_eq!(r[0].unit.as_deref(), Some("um"));
        assert_eq!(r[1].value, Some(Value::F64(1.0)), "no tag unit: as sent");
        assert_eq!(r[1].unit.as_deref(), Some("in"));
        assert_eq!(
            r[2].quality,
            Quality::Bad(
                "the reply holds the value and not the max (instrument in another mode?)".into()
            )
        );
        // Without `require`, tags the frame does not speak of get nothing.
        let r = s.readings(&ms[1..], s.all(), false, Utc::now());
        assert_eq!(r.len(), 1);
        assert_eq!(&*r[0].tag, "b");
    }

    #[test]
    fn incompatible_units_are_bad_with_the_reason() {
        let s = set("[[tag]]\nname='a'\nchannel=1\nunit='mm'\n");
        let r = s.readings(
            &[m("1", Field::Value, 5.0, Some("deg"))],
            s.all(),
            true,
            Utc::now(),
        );
        assert!(matches!(&r[0].quality, Quality::Bad(why) if why.contains("`deg`")));
        assert_eq!(r[0].value, None);
        let r = s.readings(
            &[m("2", Field::Value, 5.0, None)],
            s.all(),
            true,
            Utc::now(),
        );
        assert_eq!(
            r[0].quality,
            Quality::Bad("no value for channel 1 in the reply".into())
        );
    }

    #[test]
    fn faults_hit_every_tag_asked_for() {
        let s = set("[[tag]]\nname='a'\nchannel=1\n[[tag]]\nname='b'\nchannel=2\n");
        let why: Arc<str> = Arc::from("timeout");
        let r = s.fault([1], &why, Utc::now());
        assert_eq!(r.len(), 1);
        assert_eq!((&*r[0].tag, r[0].quality.reason()), ("b", Some("timeout")));
    }
}
