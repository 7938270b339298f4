//! The retained active set, and the state read back from stored events at start.

use serde_json::{Value, json};

use super::CharAlarms;
use super::model::{ALARM, AlarmState, Episode, SUPPRESSION, Suppression};

impl CharAlarms {
    /// The retained active set.
    pub fn payload(&self, ch: &str, now: &str) -> Vec<u8> {
        const MAX_LISTED: usize = 100;
        const MAX_LISTED_BYTES: usize = 48 * 1024;
        let mut listed = Vec::new();
        let mut bytes = 0;
        for e in self.open.iter().rev().take(MAX_LISTED) {
            let mut j = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut j {
                m.remove("raised_micros");
            }
            bytes += j.to_string().len() + 1;
            if bytes > MAX_LISTED_BYTES {
                break;
            }
            listed.push(j);
        }
        let suppression = self.suppression.as_ref().map(|s| {
            json!({"state": s.state, "until": s.until, "by": s.by, "via": s.via, "note": s.note})
        });
        serde_json::to_vec(&json!({
            "characteristic": ch,
            "ts": now,
            "count": self.open.len(),
            "truncated": self.open.len() > listed.len(),
            "suppression": suppression,
            "episodes": listed,
        }))
        .unwrap_or_default()
    }

    /// Applies a stored transition read back at start (events stored after the saved state).
    pub fn apply_stored(&mut self, kind: &str, body: &Value) {
        match kind {
            ALARM => {
                let Ok(e) = serde_json::from_value::<Episode>(strip_transition(body)) else {
                    return;
                };
                self.open.retain(|o| o.episode != e.episode);
                if e.state != AlarmState::Normal {
                    self.insert(e);
                }
            }
            SUPPRESSION => {
                let t = body.get("transition").and_then(Value::as_str).unwrap_or("");
                let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
                match t {
                    "shelved" | "out-of-service" => {
                        let until = s("until");
                        let until_micros = until
                            .as_deref()
                            .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
                            .map(|d| d.timestamp_micros());
                        self.suppression = Some(Suppression {
                            state: if t == "shelved" {
                                "shelved"
                            } else {
                                "out-of-service"
                            }
                            .into(),
                            until,
                            until_micros,
                            by: s("by").unwrap_or_default(),
                            via: s("via").unwrap_or_default(),
                            note: s("note"),
                        });
                    }
                    _ => self.suppression = None,
                }
            }
            _ => {}
        }
    }
}

fn strip_transition(body: &Value) -> Value {
    let mut b = body.clone();
    if let Value::Object(m) = &mut b {
        m.remove("transition");
        for k in ["seq", "agent", "ts", "kind"] {
            m.remove(k);
        }
    }
    b
}
