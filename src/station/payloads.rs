//! Every reading of SPC's payloads the station does is here, so a change of the message schemas
//! (README, SPC section) touches one file. The station passes the documents to the browser as they
//! are; it only needs the topic's meaning and a few fields for the overview.

use serde_json::Value;

/// What a side message on one of SPC's topics is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `spc/<name>/points`: one plotted point.
    Point,
    /// `spc/<name>/limits` (retained): the current limits of every chart.
    Limits,
    /// `spc/<name>/capability`.
    Capability,
    /// `alarms/active/<name>` (retained): the open alarms.
    Active,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Point => "point",
            Kind::Limits => "limits",
            Kind::Capability => "capability",
            Kind::Active => "active",
        }
    }
}

/// The kind and characteristic of a side message's topic, given the agent's topic base
/// (`<prefix>/<agent>/`); None for topics the station does not show.
pub fn classify<'a>(base: &str, topic: &'a str) -> Option<(Kind, &'a str)> {
    let rest = topic.strip_prefix(base)?.strip_prefix('/')?;
    if let Some(name) = rest.strip_prefix("alarms/active/") {
        return Some((Kind::Active, name));
    }
    let (name, what) = rest.strip_prefix("spc/")?.rsplit_once('/')?;
    let kind = match what {
        "points" => Kind::Point,
        "limits" => Kind::Limits,
        "capability" => Kind::Capability,
        _ => return None,
    };
    Some((kind, name))
}

/// A point's identity within its characteristic: (chart, partition, seq). A later message with the same
/// identity replaces the earlier one (points sent again when a baseline completes).
pub fn point_key(p: &Value) -> Option<(String, String, u64)> {
    Some((
        p.get("chart")?.as_str()?.to_string(),
        p.get("partition")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        p.get("seq")?.as_u64()?,
    ))
}

/// The overview's state of a characteristic from its latest point and open alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No point yet.
    Waiting,
    /// Collecting the baseline (points without limits).
    Baseline,
    Ok,
    /// The latest point broke a rule, or alarms are open.
    Alarm,
}

pub fn point_has_limits(p: &Value) -> bool {
    p.get("limits").is_some_and(|l| !l.is_null())
}

pub fn point_rules(p: &Value) -> usize {
    p.get("rules").and_then(Value::as_array).map_or(0, Vec::len)
}

pub fn point_value(p: &Value) -> Option<f64> {
    p.get("value").and_then(Value::as_f64)
}

/// Open alarms in an `alarms/active` document (0 for an empty, cleared message).
pub fn open_alarms(doc: &Value) -> u64 {
    doc.get("count").and_then(Value::as_u64).unwrap_or(0)
}

/// Cpk of a capability message (None when it could not be computed).
pub fn cpk(doc: &Value) -> Option<f64> {
    doc.get("cpk").and_then(Value::as_f64)
}

/// The acknowledgement command SPC takes (README, SPC section), on behalf of a station user.
pub fn ack_command(
    characteristic: &str,
    alarms: &Value,
    by: &str,
    cause: Option<&str>,
    action: Option<&str>,
) -> Value {
    let mut body = serde_json::json!({
        "cmd": "ack",
        "characteristic": characteristic,
        "alarm_seq": alarms,
        "by": by,
    });
    if let Some(c) = cause {
        body["cause"] = c.into();
    }
    if let Some(a) = action {
        body["action"] = a.into();
    }
    body
}

pub fn recalculate_command(characteristic: &str, by: &str) -> Value {
    serde_json::json!({"cmd": "recalculate", "characteristic": characteristic, "by": by})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let base = "lineside/gw";
        assert_eq!(
            classify(base, "lineside/gw/spc/bore/points"),
            Some((Kind::Point, "bore"))
        );
        assert_eq!(
            classify(base, "lineside/gw/spc/bore/limits"),
            Some((Kind::Limits, "bore"))
        );
        assert_eq!(
            classify(base, "lineside/gw/alarms/active/bore"),
            Some((Kind::Active, "bore"))
        );
        assert_eq!(classify(base, "lineside/gw/status"), None);
        assert_eq!(classify(base, "lineside/other/spc/bore/points"), None);
    }

    #[test]
    fn point_identity() {
        let p = serde_json::json!({"chart": "xbar", "seq": 9, "value": 1.0, "limits": null, "rules": []});
        assert_eq!(point_key(&p), Some(("xbar".into(), String::new(), 9)));
        assert!(!point_has_limits(&p));
    }
}
