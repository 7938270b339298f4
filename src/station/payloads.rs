//! Every reading of SPC's payloads the station does is here, so a change of the message schemas
//! (README, SPC section) touches one file. The station passes the documents to the browser as they
//! are; it only needs the topic's meaning and a few fields for the overview.

use serde_json::{Value, json};

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

/// Whether a point is on the chart the overview shows the last value of (the location chart: I, X̄,
/// EWMA, CUSUM C+, attribute charts), not a dispersion chart (MR, R, S) or CUSUM C−.
pub fn is_headline(p: &Value) -> bool {
    !matches!(
        p.get("chart").and_then(Value::as_str),
        Some("mr" | "r" | "s" | "cusum-lower")
    )
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

/// A point in the station's shape: SPC's point message, with `phase` ("baseline" while the point has
/// no limits) filled in for messages from before the field existed.
pub fn normalize_point(mut p: Value) -> Value {
    if p.get("phase").is_none() {
        let phase = if point_has_limits(&p) {
            "monitoring"
        } else {
            "baseline"
        };
        if let Value::Object(m) = &mut p {
            m.insert("phase".into(), phase.into());
        }
    }
    p
}

/// The open alarms of an `alarms/active/<name>` document in the station's shape, which the pages
/// use: `{"count", "suppression", "alarms": [{"id", "kind", "chart", "state", "severity",
/// "raised_at", "rules": [{"rule", "text"}], "points": [{"subgroup", "seq", "value"}],
/// "reaction_plan", "context", "ack", "value", "unit"}]}`.
///
/// Takes both schemas: episodes (SPC-SCHEMA.md: `episodes`, ISA-18.2 states) and the earlier one
/// alarm per broken rule (`alarms`, acknowledged = gone).
pub fn normalize_active(doc: &Value) -> Value {
    let list = |key: &str| doc.get(key).and_then(Value::as_array).cloned();
    let alarms: Vec<Value> = if let Some(episodes) = list("episodes") {
        episodes
            .iter()
            .map(|e| {
                let rules: Vec<Value> = e
                    .get("rules")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .map(|r| json!({"rule": r.get("rule"), "text": r.get("text")}))
                            .collect()
                    })
                    .unwrap_or_default();
                let rules = if rules.is_empty() {
                    vec![json!({"rule": "out-of-spec", "text": null})]
                } else {
                    rules
                };
                json!({
                    "id": e.get("episode"),
                    "kind": e.get("episode_kind"),
                    "chart": e.get("chart"),
                    "partition": e.get("partition"),
                    "state": e.get("state"),
                    "severity": e.get("severity"),
                    "raised_at": e.get("raised_at"),
                    "rules": rules,
                    "points": e.get("points"),
                    "count": e.get("count"),
                    "reaction_plan": e.get("reaction_plan"),
                    "context": e.get("context"),
                    "ack": e.get("ack"),
                    "value": e.get("last").and_then(|l| l.get("value")),
                    "unit": e.get("unit"),
                })
            })
            .collect()
    } else {
        list("alarms")
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let oos = a.get("kind").and_then(Value::as_str) == Some("spc.out_of_spec");
                let rule = if oos {
                    Value::from("out-of-spec")
                } else {
                    a.get("rule").cloned().unwrap_or(Value::Null)
                };
                json!({
                    "id": a.get("alarm_seq"),
                    "kind": if oos { "out-of-spec" } else { "out-of-control" },
                    "chart": a.get("chart"),
                    "partition": a.get("partition"),
                    "state": "active-unacked",
                    "severity": a.get("severity"),
                    "raised_at": a.get("ts"),
                    "rules": [{"rule": rule, "text": null}],
                    "points": [{"subgroup": null, "seq": a.get("point_seq"), "value": a.get("value")}],
                    "count": 1,
                    "reaction_plan": null,
                    "context": a.get("context"),
                    "ack": null,
                    "value": a.get("value"),
                    "unit": a.get("unit"),
                })
            })
            .collect()
    };
    json!({
        "count": doc.get("count").and_then(Value::as_u64).unwrap_or(alarms.len() as u64),
        "truncated": doc.get("truncated"),
        "suppression": doc.get("suppression"),
        "alarms": alarms,
    })
}

/// Alarms that still wait for an acknowledgement (the overview's count).
pub fn unacked(active: &Value) -> u64 {
    active
        .get("alarms")
        .and_then(Value::as_array)
        .map_or(0, |a| {
            a.iter()
                .filter(|e| {
                    e.get("state")
                        .and_then(Value::as_str)
                        .is_none_or(|s| s.ends_with("unacked"))
                })
                .count() as u64
        })
}

/// The acknowledgement command SPC takes (README, SPC section), on behalf of a station user.
/// `alarm_seq` is the field name both schemas accept (SPC-SCHEMA.md: alias of `episode`).
pub fn ack_command(
    characteristic: &str,
    alarms: &Value,
    by: &str,
    cause: Option<&str>,
    action: Option<&str>,
) -> Value {
    let mut body = json!({
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

/// Shelving a characteristic's alarms for a while (`for`: "30m"), or lifting it (`for` None with
/// `unshelve`).
pub fn shelve_command(
    characteristic: &str,
    by: &str,
    unshelve: bool,
    duration: Option<&str>,
    note: Option<&str>,
) -> Value {
    let mut body = json!({
        "cmd": if unshelve { "unshelve" } else { "shelve" },
        "characteristic": characteristic,
        "by": by,
    });
    if let (false, Some(d)) = (unshelve, duration) {
        body["for"] = d.into();
    }
    if let Some(n) = note {
        body["note"] = n.into();
    }
    body
}

pub fn recalculate_command(characteristic: &str, by: &str) -> Value {
    json!({"cmd": "recalculate", "characteristic": characteristic, "by": by})
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
    fn both_active_schemas() {
        let old = json!({"characteristic": "c", "count": 1, "alarms": [
            {"alarm_seq": 7, "kind": "spc.violation", "ts": "t", "rule": "nelson-2", "chart": "i", "point_seq": 70, "value": 1.5}]});
        let n = normalize_active(&old);
        assert_eq!(n["alarms"][0]["id"], 7);
        assert_eq!(n["alarms"][0]["rules"][0]["rule"], "nelson-2");
        assert_eq!(unacked(&n), 1);
        let new = json!({"characteristic": "c", "count": 2, "suppression": null, "episodes": [
            {"episode": 812, "episode_kind": "out-of-control", "chart": "xbar", "state": "active-acked",
             "rules": [{"rule": "nelson-5", "text": {"en": "2 of 3"}}], "points": [{"subgroup": 57, "seq": 1209, "value": 74.0}],
             "last": {"value": 74.0}, "reaction_plan": ["stop"], "ack": {"by": "alice"}},
            {"episode": 830, "episode_kind": "out-of-spec", "chart": null, "state": "rtn-unacked", "rules": []}]});
        let n = normalize_active(&new);
        assert_eq!(n["alarms"][0]["id"], 812);
        assert_eq!(n["alarms"][0]["reaction_plan"][0], "stop");
        assert_eq!(n["alarms"][1]["rules"][0]["rule"], "out-of-spec");
        assert_eq!(unacked(&n), 1);
        assert_eq!(
            normalize_point(json!({"limits": null}))["phase"],
            "baseline"
        );
        assert_eq!(
            normalize_point(json!({"phase": "monitoring"}))["phase"],
            "monitoring"
        );
    }

    #[test]
    fn point_identity() {
        let p = serde_json::json!({"chart": "xbar", "seq": 9, "value": 1.0, "limits": null, "rules": []});
        assert_eq!(point_key(&p), Some(("xbar".into(), String::new(), 9)));
        assert!(!point_has_limits(&p));
    }
}
