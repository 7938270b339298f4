//! Requests on the command topic that SPC answers. Parsed by hand from JSON so that each mistake
//! gets a precise answer (sent back as an `agent.command_rejected` event).
//!
//! ```json
//! {"cmd": "ack", "characteristic": "bore", "alarm_seq": 17, "by": "j.doe",
//!  "cause": "worn insert", "action": "insert replaced", "id": "optional correlation id"}
//! {"cmd": "ack", "characteristic": "bore", "alarm_seq": "all", "by": "j.doe", ...}
//! {"cmd": "recalculate", "characteristic": "bore", "by": "j.doe"}
//! {"cmd": "capability", "characteristic": "bore"}     (without "characteristic": all of them)
//! ```

use serde_json::Value;

/// Which active alarms an acknowledgement is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmSel {
    All,
    One(u64),
    Many(Vec<u64>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Ack {
        characteristic: String,
        alarms: AlarmSel,
        by: String,
        cause: Option<String>,
        action: Option<String>,
    },
    Recalculate {
        characteristic: String,
        by: Option<String>,
    },
    Capability {
        characteristic: Option<String>,
    },
}

/// Longest free text accepted in a command field (it ends up in stored events).
const MAX_TEXT: usize = 1000;

/// Parses a command body; the error is the reason sent back to the requester.
pub fn parse(body: &Value) -> Result<Request, String> {
    let obj = body.as_object().ok_or("a command must be a JSON object")?;
    let cmd = obj
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or("missing \"cmd\"")?;
    let allowed: &[&str] = match cmd {
        "ack" => &[
            "cmd",
            "id",
            "characteristic",
            "alarm_seq",
            "by",
            "cause",
            "action",
        ],
        "recalculate" => &["cmd", "id", "characteristic", "by"],
        "capability" => &["cmd", "id", "characteristic"],
        other => {
            return Err(format!(
                "unknown command \"{other}\" (known: ack, recalculate, capability, rebirth)"
            ));
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown field \"{k}\" for \"{cmd}\" (expected one of {})",
            allowed.join(", ")
        ));
    }
    let text = |key: &str, required: bool| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(format!("\"{key}\" is required")),
            Some(Value::String(s)) if s.trim().is_empty() && required => {
                Err(format!("\"{key}\" must not be empty"))
            }
            Some(Value::String(s)) if s.len() > MAX_TEXT => {
                Err(format!("\"{key}\" is longer than {MAX_TEXT} bytes"))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let required = |key: &str| -> Result<String, String> {
        text(key, true)?.ok_or_else(|| format!("\"{key}\" is required"))
    };
    match cmd {
        "ack" => Ok(Request::Ack {
            characteristic: required("characteristic")?,
            alarms: alarm_sel(obj.get("alarm_seq"))?,
            by: required("by")?,
            cause: text("cause", false)?,
            action: text("action", false)?,
        }),
        "recalculate" => Ok(Request::Recalculate {
            characteristic: required("characteristic")?,
            by: text("by", false)?,
        }),
        _ => Ok(Request::Capability {
            characteristic: text("characteristic", false)?,
        }),
    }
}

fn alarm_sel(v: Option<&Value>) -> Result<AlarmSel, String> {
    const HELP: &str = "\"alarm_seq\" must be an alarm's seq, a list of them, or \"all\"";
    match v {
        None => Err(format!("{HELP} (it is missing)")),
        Some(Value::String(s)) if s == "all" => Ok(AlarmSel::All),
        Some(Value::Number(n)) => n.as_u64().map(AlarmSel::One).ok_or_else(|| HELP.into()),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_u64().ok_or_else(|| HELP.to_string()))
            .collect::<Result<_, _>>()
            .map(AlarmSel::Many),
        Some(_) => Err(HELP.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn acknowledgements() {
        let r = parse(
            &json!({"cmd": "ack", "characteristic": "c", "alarm_seq": 4, "by": "qe",
            "cause": "tool", "action": "replaced", "id": 9}),
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Ack {
                characteristic: "c".into(),
                alarms: AlarmSel::One(4),
                by: "qe".into(),
                cause: Some("tool".into()),
                action: Some("replaced".into()),
            }
        );
        let all =
            parse(&json!({"cmd": "ack", "characteristic": "c", "alarm_seq": "all", "by": "qe"}));
        assert!(matches!(
            all,
            Ok(Request::Ack {
                alarms: AlarmSel::All,
                cause: None,
                ..
            })
        ));
        let many =
            parse(&json!({"cmd": "ack", "characteristic": "c", "alarm_seq": [1, 2], "by": "qe"}));
        assert!(matches!(many, Ok(Request::Ack { alarms: AlarmSel::Many(v), .. }) if v == [1, 2]));
    }

    #[test]
    fn mistakes_get_a_precise_reason() {
        let reason = |v: Value| parse(&v).unwrap_err();
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "alarm_seq": 1}))
                .contains("\"by\" is required")
        );
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "alarm_seq": 1, "by": " "}))
                .contains("empty")
        );
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "alarm_seq": -1, "by": "x"}))
                .contains("alarm_seq")
        );
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "alarm_seq": "some", "by": "x"}))
                .contains("alarm_seq")
        );
        assert!(reason(json!({"cmd": "ack", "characteristic": "c", "alarm_seq": 1, "by": "x", "actoin": "y"})).contains("unknown field \"actoin\""));
        assert!(
            reason(json!({"cmd": "ack", "characteristic": 5, "alarm_seq": 1, "by": "x"}))
                .contains("must be a string")
        );
        assert!(reason(json!({"cmd": "recalc"})).contains("unknown command"));
        assert!(reason(json!({"cmd": "recalculate"})).contains("\"characteristic\" is required"));
        assert!(reason(json!([1])).contains("object"));
        assert_eq!(
            parse(&json!({"cmd": "capability"})),
            Ok(Request::Capability {
                characteristic: None
            })
        );
    }
}
