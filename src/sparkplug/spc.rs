//! SPC state as metrics of a Sparkplug device (default id `spc`).
//!
//! The SPC runtime publishes derived JSON messages through the forwarder's side channel (points,
//! capability, open alarms). In Sparkplug mode the forwarder turns each into metrics of the `spc`
//! device instead, named by characteristic (and partition) so a host's tag browser shows one folder
//! per characteristic:
//!
//! | side message | metrics (datatype) |
//! |---|---|
//! | `spc/<ch>/points` | `<ch>[/<partition>]/<chart>/Value`, `UCL`, `CL`, `LCL` (Double), `Rules Broken` (String) |
//! | `spc/<ch>/capability` | `<ch>[/<partition>]/Capability/Cp`, `Cpk`, `Pp`, `Ppk`, `Mean` (Double) |
//! | `alarms/active/<ch>` | `<ch>/Alarms/Open` (Int64): open alarm episodes |
//!
//! Alarm events themselves stay on the JSON alarms topic (from the store, QoS 1, acknowledged there):
//! these metrics are the current state for an HMI or a historian, the JSON topic is the alarm record.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lineside_drivers::Value;
use serde_json::Value as Json;

/// Which SPC side message a topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpcKind {
    Points,
    Capability,
    OpenAlarms,
}

/// Recognises an SPC side topic under `<prefix>/<agent>` and returns (characteristic, kind).
pub fn parse_topic<'a>(base: &str, topic: &'a str) -> Option<(&'a str, SpcKind)> {
    let rest = topic.strip_prefix(base)?.strip_prefix('/')?;
    if let Some(ch) = rest.strip_prefix("alarms/active/") {
        return Some((ch, SpcKind::OpenAlarms));
    }
    let rest = rest.strip_prefix("spc/")?;
    let (ch, what) = rest.rsplit_once('/')?;
    match what {
        "points" => Some((ch, SpcKind::Points)),
        "capability" => Some((ch, SpcKind::Capability)),
        _ => None,
    }
}

/// One metric update of the `spc` device.
#[derive(Debug, Clone, PartialEq)]
pub struct SpcMetric {
    pub name: String,
    pub ts: DateTime<Utc>,
    pub value: Value,
}

fn ts_of(body: &Json, now: DateTime<Utc>) -> DateTime<Utc> {
    body.get("ts")
        .and_then(Json::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc))
}

/// Sparkplug metric names use `/` for folders: a `/` inside an id would open a folder.
fn clean(s: &str) -> String {
    s.replace('/', "_")
}

/// The metrics a side message updates (empty when the body is not what SPC publishes).
pub fn metrics(ch: &str, kind: SpcKind, body: &Json, now: DateTime<Utc>) -> Vec<SpcMetric> {
    let ts = ts_of(body, now);
    let mut base = clean(ch);
    if let Some(p) = body.get("partition").and_then(Json::as_str) {
        base = format!("{base}/{}", clean(p));
    }
    let mut out = Vec::new();
    let mut num = |name: String, v: Option<f64>| {
        if let Some(x) = v {
            out.push(SpcMetric {
                name,
                ts,
                value: Value::F64(x),
            });
        }
    };
    match kind {
        SpcKind::Points => {
            let chart = body.get("chart").and_then(Json::as_str).unwrap_or("chart");
            let prefix = format!("{base}/{}", clean(chart));
            num(
                format!("{prefix}/Value"),
                body.get("value").and_then(Json::as_f64),
            );
            if let Some(l) = body.get("limits").filter(|l| l.is_object()) {
                num(format!("{prefix}/UCL"), l.get("ucl").and_then(Json::as_f64));
                num(
                    format!("{prefix}/CL"),
                    l.get("centre").and_then(Json::as_f64),
                );
                num(format!("{prefix}/LCL"), l.get("lcl").and_then(Json::as_f64));
            }
            if let Some(rules) = body.get("rules").and_then(Json::as_array) {
                let list: Vec<&str> = rules.iter().filter_map(Json::as_str).collect();
                out.push(SpcMetric {
                    name: format!("{prefix}/Rules Broken"),
                    ts,
                    value: Value::Str(Arc::from(list.join(",").as_str())),
                });
            }
        }
        SpcKind::Capability => {
            for (key, name) in [
                ("cp", "Cp"),
                ("cpk", "Cpk"),
                ("pp", "Pp"),
                ("ppk", "Ppk"),
                ("mean", "Mean"),
            ] {
                num(
                    format!("{base}/Capability/{name}"),
                    body.get(key).and_then(Json::as_f64),
                );
            }
        }
        SpcKind::OpenAlarms => {
            let count = body.get("count").and_then(Json::as_i64).or_else(|| {
                body.get("alarms")
                    .and_then(Json::as_array)
                    .map(|a| a.len() as i64)
            });
            if let Some(n) = count {
                out.push(SpcMetric {
                    name: format!("{}/Alarms/Open", clean(ch)),
                    ts,
                    value: Value::I64(n),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn topics_are_recognised() {
        let base = "lineside/gw";
        assert_eq!(
            parse_topic(base, "lineside/gw/spc/bore/points"),
            Some(("bore", SpcKind::Points))
        );
        assert_eq!(
            parse_topic(base, "lineside/gw/spc/bore/capability"),
            Some(("bore", SpcKind::Capability))
        );
        assert_eq!(
            parse_topic(base, "lineside/gw/alarms/active/bore"),
            Some(("bore", SpcKind::OpenAlarms))
        );
        assert_eq!(parse_topic(base, "lineside/gw/spc/bore/limits"), None);
        assert_eq!(parse_topic(base, "lineside/other/spc/bore/points"), None);
    }

    #[test]
    fn points_capability_and_alarms_become_metrics() {
        let now = Utc::now();
        let p = metrics(
            "bore",
            SpcKind::Points,
            &json!({"characteristic": "bore", "ts": "2026-11-28T10:00:00.5Z", "chart": "i",
                    "value": 10.02, "limits": {"centre": 10.0, "ucl": 10.3, "lcl": 9.7},
                    "rules": ["nelson-1"], "partition": "M/1"}),
            now,
        );
        let names: Vec<&str> = p.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bore/M_1/i/Value",
                "bore/M_1/i/UCL",
                "bore/M_1/i/CL",
                "bore/M_1/i/LCL",
                "bore/M_1/i/Rules Broken"
            ]
        );
        assert_eq!(p[0].value, Value::F64(10.02));
        assert_eq!(p[0].ts.timestamp_millis() % 1000, 500);
        assert_eq!(p[4].value, Value::Str(Arc::from("nelson-1")));

        let provisional = metrics(
            "bore",
            SpcKind::Points,
            &json!({"chart": "i", "value": 1.0, "limits": null, "rules": []}),
            now,
        );
        assert_eq!(
            provisional.len(),
            2,
            "value and (empty) rules, no limits yet"
        );

        let c = metrics(
            "bore",
            SpcKind::Capability,
            &json!({"cpk": 1.4, "ppk": null, "mean": 10.0}),
            now,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "bore/Capability/Cpk");

        let a = metrics(
            "bore",
            SpcKind::OpenAlarms,
            &json!({"count": 2, "alarms": []}),
            now,
        );
        assert_eq!(a[0].name, "bore/Alarms/Open");
        assert_eq!(a[0].value, Value::I64(2));
        assert!(metrics("bore", SpcKind::OpenAlarms, &json!("x"), now).is_empty());
    }
}
