//! The SPC events other than episode transitions (see `episodes`): limits computed, recalculations,
//! the audit of accepted commands and the answer to rejected ones; and the de-duplication key that
//! lets a replay after a restart drop what is already stored.

use lineside_spc::FrozenLimits;
use serde_json::{Value, json};

pub use super::episodes::{ALARM, SUPPRESSION};

/// Event kinds SPC stores (and the forwarder publishes on `<prefix>/<agent>/alarms`).
pub const LIMITS: &str = "spc.limits";
pub const RECALCULATE: &str = "spc.recalculate";
/// An accepted command: who, when (the event's time), via what.
pub const COMMAND: &str = "agent.command";
pub const REJECTED: &str = "agent.command_rejected";

pub fn ts_string(micros: i64) -> String {
    crate::timefmt::rfc3339(chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default())
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

/// The identity of an event that a replay regenerates, the same for the live body and the stored
/// one: episode transitions (characteristic, episode, transition, last point, count) and limits.
pub fn dedup_key(kind: &str, body: &Value) -> Option<String> {
    let ch = body.get("characteristic")?.as_str()?;
    match kind {
        ALARM => Some(format!(
            "{ALARM}|{ch}|{}|{}|{}|{}",
            body.get("episode")?.as_u64()?,
            body.get("transition")?.as_str()?,
            body.get("last")
                .and_then(|l| l.get("seq"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            body.get("count")?.as_u64()?
        )),
        LIMITS => {
            let part = body.get("partition").unwrap_or(&Value::Null);
            Some(format!(
                "{kind}|{ch}|{part}|{}|{}|{}",
                body.get("seq_first")?.as_u64()?,
                body.get("seq_last")?.as_u64()?,
                body.get("reason")?
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_between_live_and_stored_bodies() {
        let body = json!({"characteristic": "c", "episode": 35, "transition": "raised",
            "last": {"seq": 2, "value": 1.0}, "count": 1});
        let stored: Value = serde_json::from_str(&body.to_string()).unwrap();
        assert_eq!(dedup_key(ALARM, &body), dedup_key(ALARM, &stored));
        assert_eq!(
            dedup_key(ALARM, &body).unwrap(),
            "spc.alarm|c|35|raised|2|1",
            "the same format as episodes::transition"
        );
        assert_eq!(dedup_key(COMMAND, &body), None);
    }
}
