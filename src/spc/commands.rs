//! Requests on the command topic (and from the operator station) that SPC answers. Parsed by hand
//! from JSON so that each mistake gets a precise answer, sent back as an `agent.command_rejected`
//! event that never echoes more than a few bounded fields of the request.
//!
//! ```json
//! {"cmd": "ack", "characteristic": "bore", "episode": 812, "by": "j.doe",
//!  "cause": "tool-wear", "action": "tool-changed", "note": "free text", "id": "correlation id"}
//! {"cmd": "ack", "characteristic": "bore", "episode": "all", "by": "j.doe"}
//! {"cmd": "shelve", "characteristic": "bore", "for": "30m", "by": "j.doe", "note": "..."}
//! {"cmd": "unshelve" | "out-of-service" | "in-service", "characteristic": "bore", "by": "j.doe"}
//! {"cmd": "recalculate", "characteristic": "bore", "by": "j.doe"}
//! {"cmd": "capability", "characteristic": "bore"}     (without "characteristic": all of them)
//! ```

use std::time::Duration;

use serde_json::{Value, json};

use crate::bus::{Command, Via};
use crate::config::SpcConfig;

/// Longest `by`, `cause`, `action`, `characteristic` and echoed field.
pub const MAX_FIELD: usize = 200;
/// Longest free-text note.
const MAX_NOTE: usize = 1000;
/// Most episode ids one acknowledgement may list.
pub const MAX_IDS: usize = 100;

/// Which open episodes an acknowledgement is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<u64>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Ack {
        characteristic: String,
        episodes: Selection,
        by: String,
        cause: Option<String>,
        action: Option<String>,
        note: Option<String>,
    },
    Shelve {
        characteristic: String,
        duration: Duration,
        by: String,
        note: Option<String>,
    },
    /// `unshelve`, `out-of-service`, `in-service`.
    Suppression {
        cmd: &'static str,
        characteristic: String,
        by: String,
        note: Option<String>,
    },
    Recalculate {
        characteristic: String,
        by: String,
    },
    Capability {
        characteristic: Option<String>,
    },
}

impl Request {
    /// The allow-list a request is checked against (`[spc.allow]`), and its `by`.
    fn permission(&self) -> Option<(&'static str, &str)> {
        match self {
            Request::Ack { by, .. } => Some(("ack", by)),
            Request::Shelve { by, .. } => Some(("shelve", by)),
            Request::Suppression { cmd, by, .. } if *cmd == "unshelve" => Some(("shelve", by)),
            Request::Suppression { by, .. } => Some(("out-of-service", by)),
            Request::Recalculate { by, .. } => Some(("recalculate", by)),
            Request::Capability { .. } => None,
        }
    }
}

/// A command from the operator station, on behalf of a user it authenticated: `by` is that user
/// whatever the body says. Send it on the same channel as the MQTT commands; SPC checks and answers
/// it exactly like one (see `SPC-SCHEMA.md`).
pub fn station_command(user: &str, mut body: Value) -> Command {
    if let Value::Object(m) = &mut body {
        m.insert("by".into(), user.into());
    }
    Command {
        body,
        via: Via::Station {
            user: user.to_string(),
        },
        received: chrono::Utc::now(),
    }
}

/// Cuts a string to at most `max` bytes (at a character boundary), marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What a rejection or an audit event may repeat of a request: a few fields, each bounded.
pub fn echo(body: &Value) -> Value {
    let field = |k: &str| match body.get(k) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => truncate(s, MAX_FIELD).into(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(v) => truncate(&v.to_string(), MAX_FIELD).into(),
    };
    json!({
        "cmd": field("cmd"),
        "id": field("id"),
        "by": field("by"),
        "characteristic": field("characteristic"),
    })
}

/// Parses a command body and applies the policy (allow-list, pick lists, shelving bound); the error
/// is the reason sent back (bounded).
pub fn parse(body: &Value, policy: &SpcConfig) -> Result<Request, String> {
    let r = parse_body(body, policy).map_err(|e| truncate(&e, 2 * MAX_FIELD))?;
    if let Some((kind, by)) = r.permission() {
        let list = match kind {
            "ack" => &policy.allow.ack,
            "shelve" => &policy.allow.shelve,
            "out-of-service" => &policy.allow.out_of_service,
            _ => &policy.allow.recalculate,
        };
        if list.as_ref().is_some_and(|l| !l.iter().any(|a| a == by)) {
            return Err(format!(
                "\"{}\" may not {kind} (not in [spc.allow] {kind})",
                truncate(by, MAX_FIELD)
            ));
        }
    }
    Ok(r)
}

fn parse_body(body: &Value, policy: &SpcConfig) -> Result<Request, String> {
    let obj = body.as_object().ok_or("a command must be a JSON object")?;
    let cmd = obj
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or("missing \"cmd\"")?;
    let common = ["cmd", "id", "characteristic", "by", "note"];
    let (name, extra): (&'static str, &[&str]) = match cmd {
        "ack" => ("ack", &["episode", "alarm_seq", "cause", "action"]),
        "shelve" => ("shelve", &["for"]),
        "unshelve" => ("unshelve", &[]),
        "out-of-service" => ("out-of-service", &[]),
        "in-service" => ("in-service", &[]),
        "recalculate" => ("recalculate", &[]),
        "capability" => ("capability", &[]),
        other => {
            return Err(format!(
                "unknown command \"{}\" (known: ack, shelve, unshelve, out-of-service, in-service, recalculate, capability, rebirth)",
                truncate(other, 40)
            ));
        }
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !common.contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field \"{}\" for \"{name}\"",
            truncate(k, 40)
        ));
    }
    let text = |key: &str, required: bool, max: usize| -> Result<Option<String>, String> {
        match obj.get(key) {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(format!("\"{key}\" is required")),
            Some(Value::String(s)) if s.trim().is_empty() && required => {
                Err(format!("\"{key}\" must not be empty"))
            }
            Some(Value::String(s)) if s.len() > max => {
                Err(format!("\"{key}\" is longer than {max} bytes"))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let required = |key: &str| -> Result<String, String> {
        text(key, true, MAX_FIELD)?.ok_or_else(|| format!("\"{key}\" is required"))
    };
    let note = text("note", false, MAX_NOTE)?;
    let pick = |key: &str, list: &[String]| -> Result<Option<String>, String> {
        let v = text(key, false, MAX_FIELD)?;
        match &v {
            Some(s) if !list.is_empty() && !list.contains(s) => Err(format!(
                "\"{key}\" must be one of the configured {key}s: {}",
                truncate(&list.join(", "), MAX_FIELD)
            )),
            _ => Ok(v),
        }
    };
    let characteristic = |required: bool| text("characteristic", required, MAX_FIELD);
    match name {
        "ack" => {
            let sel = match (obj.get("episode"), obj.get("alarm_seq")) {
                (Some(_), Some(_)) => {
                    return Err("give \"episode\" or its old name \"alarm_seq\", not both".into());
                }
                (Some(v), None) | (None, Some(v)) => selection(v)?,
                (None, None) => return Err(format!("{SELECTION_HELP} (it is missing)")),
            };
            Ok(Request::Ack {
                characteristic: required("characteristic")?,
                episodes: sel,
                by: required("by")?,
                cause: pick("cause", &policy.causes)?,
                action: pick("action", &policy.actions)?,
                note,
            })
        }
        "shelve" => {
            let text_for = required("for")?;
            let duration = lineside_drivers::config::parse_duration(&text_for)
                .map_err(|e| format!("\"for\": {e}"))?;
            if duration.is_zero() || duration > policy.max_shelve {
                return Err(format!(
                    "\"for\" must be more than 0 and at most {} ([spc] max_shelve)",
                    humantime(policy.max_shelve)
                ));
            }
            Ok(Request::Shelve {
                characteristic: required("characteristic")?,
                duration,
                by: required("by")?,
                note,
            })
        }
        "unshelve" | "out-of-service" | "in-service" => Ok(Request::Suppression {
            cmd: name,
            characteristic: required("characteristic")?,
            by: required("by")?,
            note,
        }),
        "recalculate" => Ok(Request::Recalculate {
            characteristic: required("characteristic")?,
            by: required("by")?,
        }),
        _ => Ok(Request::Capability {
            characteristic: characteristic(false)?,
        }),
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

const SELECTION_HELP: &str = "\"episode\" must be an episode id, a list of up to 100, or \"all\"";

fn selection(v: &Value) -> Result<Selection, String> {
    match v {
        Value::String(s) if s == "all" => Ok(Selection::All),
        Value::Number(n) => n
            .as_u64()
            .map(|id| Selection::Ids(vec![id]))
            .ok_or_else(|| SELECTION_HELP.into()),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_IDS => items
            .iter()
            .map(|i| i.as_u64().ok_or_else(|| SELECTION_HELP.to_string()))
            .collect::<Result<_, _>>()
            .map(Selection::Ids),
        _ => Err(SELECTION_HELP.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SpcConfig {
        SpcConfig::default()
    }

    #[test]
    fn acknowledgements() {
        let r = parse(
            &json!({"cmd": "ack", "characteristic": "c", "episode": 4, "by": "qe",
            "cause": "tool", "action": "replaced", "note": "n", "id": 9}),
            &policy(),
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Ack {
                characteristic: "c".into(),
                episodes: Selection::Ids(vec![4]),
                by: "qe".into(),
                cause: Some("tool".into()),
                action: Some("replaced".into()),
                note: Some("n".into()),
            }
        );
        let all = parse(
            &json!({"cmd": "ack", "characteristic": "c", "alarm_seq": "all", "by": "qe"}),
            &policy(),
        );
        assert!(matches!(
            all,
            Ok(Request::Ack {
                episodes: Selection::All,
                ..
            })
        ));
        let many = parse(
            &json!({"cmd": "ack", "characteristic": "c", "episode": [1, 2], "by": "qe"}),
            &policy(),
        );
        assert!(
            matches!(many, Ok(Request::Ack { episodes: Selection::Ids(v), .. }) if v == [1, 2])
        );
    }

    #[test]
    fn mistakes_get_a_precise_and_bounded_reason() {
        let reason = |v: Value| parse(&v, &policy()).unwrap_err();
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "episode": 1}))
                .contains("\"by\" is required")
        );
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "episode": 1, "by": " "}))
                .contains("empty")
        );
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "episode": -1, "by": "x"}))
                .contains("episode")
        );
        let many: Vec<u64> = (0..101).collect();
        assert!(
            reason(json!({"cmd": "ack", "characteristic": "c", "episode": many, "by": "x"}))
                .contains("up to 100")
        );
        assert!(
            reason(
                json!({"cmd": "ack", "characteristic": "c", "episode": 1, "by": "x", "actoin": "y"})
            )
            .contains("unknown field \"actoin\"")
        );
        assert!(reason(json!({"cmd": "recalc"})).contains("unknown command"));
        assert!(reason(json!({"cmd": "recalculate", "characteristic": "c"})).contains("\"by\""));
        assert!(reason(json!([1])).contains("object"));
        // Nothing a requester sends comes back longer than the bound.
        let huge = "x".repeat(140_000);
        for body in [
            json!({"cmd": huge}),
            json!({"cmd": "ack", huge.clone(): 1}),
            json!({"cmd": "ack", "characteristic": huge, "episode": 1, "by": "x"}),
            json!({"cmd": "ack", "characteristic": "c", "episode": 1, "by": huge}),
        ] {
            let r = reason(body.clone());
            assert!(r.len() <= 2 * MAX_FIELD + 8, "{}", r.len());
            assert!(echo(&body).to_string().len() <= 5 * (MAX_FIELD + 20));
        }
        assert_eq!(
            parse(&json!({"cmd": "capability"}), &policy()),
            Ok(Request::Capability {
                characteristic: None
            })
        );
    }

    #[test]
    fn allow_lists_pick_lists_and_shelving_bounds() {
        let mut p = policy();
        p.allow.ack = Some(vec!["alice".into()]);
        p.causes = vec!["tool-wear".into(), "material".into()];
        let ack = |by: &str, cause: &str| {
            parse(
                &json!({"cmd": "ack", "characteristic": "c", "episode": "all", "by": by, "cause": cause}),
                &p,
            )
        };
        assert!(ack("alice", "tool-wear").is_ok());
        assert!(
            ack("nobody", "tool-wear")
                .unwrap_err()
                .contains("may not ack")
        );
        assert!(
            ack("alice", "gremlins")
                .unwrap_err()
                .contains("configured causes")
        );
        // Recalculation has no list here: anyone who names themselves may.
        assert!(
            parse(
                &json!({"cmd": "recalculate", "characteristic": "c", "by": "bob"}),
                &p
            )
            .is_ok()
        );
        p.allow.recalculate = Some(vec![]);
        assert!(
            parse(
                &json!({"cmd": "recalculate", "characteristic": "c", "by": "bob"}),
                &p
            )
            .is_err()
        );
        let shelve = |f: &str| {
            parse(
                &json!({"cmd": "shelve", "characteristic": "c", "for": f, "by": "bob"}),
                &p,
            )
        };
        assert!(
            matches!(shelve("30m"), Ok(Request::Shelve { duration, .. }) if duration == Duration::from_secs(1800))
        );
        assert!(shelve("9h").unwrap_err().contains("at most 8h"));
        assert!(shelve("soon").is_err());
        p.allow.shelve = Some(vec!["alice".into()]);
        assert!(
            parse(
                &json!({"cmd": "unshelve", "characteristic": "c", "by": "bob"}),
                &p
            )
            .unwrap_err()
            .contains("may not shelve")
        );
    }

    #[test]
    fn the_station_speaks_for_its_user() {
        let c = station_command("alice", json!({"cmd": "ack", "by": "mallory"}));
        assert_eq!(c.body["by"], "alice");
        assert_eq!(c.via.name(), "station");
    }
}
