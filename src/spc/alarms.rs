//! SPC alarms: the stored event bodies, their de-duplication key, and the set of alarms that are
//! active (raised and not yet acknowledged) per characteristic.

use std::collections::BTreeMap;

use lineside_spc::{FrozenLimits, OutOfSpec, Violation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::commands::AlarmSel;

/// Event kinds SPC stores (and the forwarder publishes on `<prefix>/<agent>/alarms`).
pub const VIOLATION: &str = "spc.violation";
pub const OUT_OF_SPEC: &str = "spc.out_of_spec";
pub const LIMITS: &str = "spc.limits";
pub const ACK: &str = "spc.ack";
pub const RECALCULATE: &str = "spc.recalculate";
pub const REJECTED: &str = "agent.command_rejected";

/// Active alarms kept per characteristic. Beyond this the oldest are dropped from the active set
/// (the events themselves stay in the store and upstream): memory stays bounded when nobody acks.
const MAX_ACTIVE: usize = 1000;
/// Alarms listed in the retained message (the newest; `count` gives the total), and the bytes they may
/// take: the message must stay well below the smallest MQTT packet limit the agent allows (64 KiB).
const MAX_LISTED: usize = 100;
const MAX_LISTED_BYTES: usize = 48 * 1024;

pub fn ts_string(micros: i64) -> String {
    crate::timefmt::rfc3339(chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default())
}

pub fn violation_body(ch: &str, unit: Option<&str>, v: &Violation) -> Value {
    json!({
        "characteristic": ch,
        "chart": v.chart,
        "partition": v.context.partition(),
        "rule": v.rule,
        "severity": v.severity,
        "point_seq": v.seq,
        "point_seq_first": v.seq_first,
        "point_ts": ts_string(v.ts_micros),
        "value": v.value,
        "limits": v.limits,
        "context": v.context,
        "unit": unit,
    })
}

pub fn out_of_spec_body(ch: &str, unit: Option<&str>, o: &OutOfSpec) -> Value {
    json!({
        "characteristic": ch,
        "partition": o.context.partition(),
        "side": o.side,
        "limit": o.limit,
        "severity": "violation",
        "point_seq": o.seq,
        "point_ts": ts_string(o.ts_micros),
        "value": o.value,
        "context": o.context,
        "unit": unit,
    })
}

/// `reason`: "baseline" (phase I completed) or "recalculate" (on request).
pub fn limits_body(ch: &str, f: &FrozenLimits, reason: &str) -> Value {
    json!({
        "characteristic": ch,
        "partition": f.partition,
        "limits": f.limits,
        "subgroups": f.subgroups,
        "excluded": f.excluded,
        "seq_first": f.seq_first,
        "seq_last": f.seq_last,
        "reason": reason,
    })
}

/// The identity of an alarm event, the same for a live alarm and its stored event: a replay after a
/// restart flags the same points again, and an alarm whose key is already stored is dropped
/// (characteristic, chart, chart_per value, rule, point's seq; see lineside-spc's docs).
pub fn dedup_key(kind: &str, body: &Value) -> Option<String> {
    let ch = body.get("characteristic")?.as_str()?;
    let part = body.get("partition").unwrap_or(&Value::Null);
    match kind {
        VIOLATION => Some(format!(
            "{kind}|{ch}|{}|{part}|{}|{}",
            body.get("chart")?,
            body.get("rule")?,
            body.get("point_seq")?.as_u64()?
        )),
        OUT_OF_SPEC => Some(format!(
            "{kind}|{ch}|{part}|{}|{}",
            body.get("side")?,
            body.get("point_seq")?.as_u64()?
        )),
        LIMITS => Some(format!(
            "{kind}|{ch}|{part}|{}|{}|{}",
            body.get("seq_first")?.as_u64()?,
            body.get("seq_last")?.as_u64()?,
            body.get("reason")?
        )),
        _ => None,
    }
}

/// Whether events of this kind are alarms that stay active until acknowledged.
pub fn is_alarm(kind: &str) -> bool {
    kind == VIOLATION || kind == OUT_OF_SPEC
}

/// An alarm raised and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlarm {
    /// The event's sequence number: what upstream acknowledges.
    pub alarm_seq: u64,
    pub kind: String,
    /// When the event was stored (RFC 3339).
    pub ts: String,
    pub body: Value,
}

impl ActiveAlarm {
    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("alarm_seq".into(), self.alarm_seq.into());
        m.insert("kind".into(), self.kind.clone().into());
        m.insert("ts".into(), self.ts.clone().into());
        if let Value::Object(body) = &self.body {
            for (k, v) in body {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Value::Object(m)
    }
}

/// The active alarms of one characteristic, by alarm seq.
#[derive(Debug, Default)]
pub struct ActiveSet {
    alarms: BTreeMap<u64, ActiveAlarm>,
    /// Alarms pushed out of the set by `MAX_ACTIVE` since start.
    pub evicted: u64,
}

impl ActiveSet {
    pub fn from_saved(saved: Vec<ActiveAlarm>) -> Self {
        let mut set = ActiveSet::default();
        for a in saved {
            set.insert(a);
        }
        set
    }

    pub fn saved(&self) -> Vec<ActiveAlarm> {
        self.alarms.values().cloned().collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.alarms.len()
    }

    pub fn insert(&mut self, a: ActiveAlarm) {
        self.alarms.insert(a.alarm_seq, a);
        while self.alarms.len() > MAX_ACTIVE {
            if self.alarms.pop_first().is_some() {
                self.evicted += 1;
            }
        }
    }

    pub fn remove(&mut self, seqs: &[u64]) {
        for s in seqs {
            self.alarms.remove(s);
        }
    }

    /// The active alarms a request names; an error names what is not active.
    pub fn select(&self, sel: &AlarmSel) -> Result<Vec<u64>, String> {
        let seqs: Vec<u64> = match sel {
            AlarmSel::All => self.alarms.keys().copied().collect(),
            AlarmSel::One(s) => vec![*s],
            AlarmSel::Many(v) => v.clone(),
        };
        let missing: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| !self.alarms.contains_key(s))
            .collect();
        if !missing.is_empty() {
            return Err(format!("not an active alarm: {missing:?}"));
        }
        if seqs.is_empty() {
            return Err("there is no active alarm".into());
        }
        Ok(seqs)
    }

    /// The retained message on `<prefix>/<agent>/alarms/active/<characteristic>`.
    pub fn payload(&self, ch: &str, now: &str) -> Vec<u8> {
        let mut listed = Vec::new();
        let mut bytes = 0;
        for a in self.alarms.values().rev().take(MAX_LISTED) {
            let j = a.json();
            bytes += j.to_string().len() + 1;
            if bytes > MAX_LISTED_BYTES {
                break;
            }
            listed.push(j);
        }
        let body = json!({
            "characteristic": ch,
            "ts": now,
            "count": self.alarms.len(),
            "truncated": self.alarms.len() > listed.len(),
            "alarms": listed,
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(seq: u64) -> ActiveAlarm {
        ActiveAlarm {
            alarm_seq: seq,
            kind: VIOLATION.into(),
            ts: "t".into(),
            body: json!({"characteristic": "c", "rule": "nelson-1", "point_seq": seq * 10}),
        }
    }

    #[test]
    fn select_acknowledge_and_payload() {
        let mut set = ActiveSet::from_saved(vec![alarm(3), alarm(5)]);
        assert_eq!(set.select(&AlarmSel::One(5)), Ok(vec![5]));
        assert!(set.select(&AlarmSel::One(4)).unwrap_err().contains("[4]"));
        assert!(set.select(&AlarmSel::Many(vec![3, 9])).is_err());
        assert_eq!(set.select(&AlarmSel::All), Ok(vec![3, 5]));
        set.remove(&[3]);
        let p: Value = serde_json::from_slice(&set.payload("c", "now")).unwrap();
        assert_eq!(p["count"], 1);
        assert_eq!(p["alarms"][0]["alarm_seq"], 5);
        assert_eq!(p["alarms"][0]["point_seq"], 50);
        assert_eq!(p["alarms"][0]["kind"], VIOLATION);
        set.remove(&[5]);
        assert!(set.select(&AlarmSel::All).is_err());
    }

    #[test]
    fn the_set_is_bounded() {
        let mut set = ActiveSet::default();
        for s in 0..(MAX_ACTIVE as u64 + 5) {
            set.insert(alarm(s));
        }
        assert_eq!(set.len(), MAX_ACTIVE);
        assert_eq!(set.evicted, 5);
        assert!(set.select(&AlarmSel::One(4)).is_err(), "oldest went first");
        let p: Value = serde_json::from_slice(&set.payload("c", "now")).unwrap();
        assert_eq!(p["alarms"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(p["truncated"], true);
        assert_eq!(
            p["alarms"][0]["alarm_seq"],
            MAX_ACTIVE as u64 + 4,
            "newest first"
        );
    }

    #[test]
    fn the_retained_message_stays_small() {
        let mut set = ActiveSet::default();
        for s in 0..50 {
            let mut a = alarm(s);
            a.body["context"] = json!({"note": "x".repeat(2000)});
            set.insert(a);
        }
        let payload = set.payload("c", "now");
        assert!(
            payload.len() <= MAX_LISTED_BYTES + 1024,
            "{}",
            payload.len()
        );
        let p: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            (p["count"].as_u64(), p["truncated"].as_bool()),
            (Some(50), Some(true))
        );
    }

    #[test]
    fn keys_match_between_live_and_stored_bodies() {
        let body = json!({"characteristic": "c", "chart": "i", "partition": null, "rule": "nelson-2", "point_seq": 7});
        let stored: Value = serde_json::from_str(&body.to_string()).unwrap();
        assert_eq!(dedup_key(VIOLATION, &body), dedup_key(VIOLATION, &stored));
        let other = json!({"characteristic": "c", "chart": "mr", "partition": null, "rule": "nelson-2", "point_seq": 7});
        assert_ne!(dedup_key(VIOLATION, &body), dedup_key(VIOLATION, &other));
        assert_eq!(dedup_key(ACK, &body), None);
    }
}
