//! A request for the agent that passed the command intake: bounded in size, never retained, with where
//! it came from.

use chrono::{DateTime, Utc};

/// Longest text echoed back from a request (in rejection events and logs), in characters.
pub const ECHO_MAX_CHARS: usize = 200;

/// Where a command came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The MQTT command topic. Who sent it is what the broker's ACL allowed to write there; the `by`
    /// field in the body is the requester's claim.
    Mqtt,
    /// The local operator station, with the user it authenticated.
    Station { user: String },
}

impl Via {
    pub fn name(&self) -> &'static str {
        match self {
            Via::Mqtt => "mqtt",
            Via::Station { .. } => "station",
        }
    }
}

/// A request for SPC (acknowledge, recalculate, capability). The intake guarantees the body is a JSON
/// object with a string `cmd` and that its encoded size is within the configured command limit.
#[derive(Debug, Clone)]
pub struct Command {
    pub body: serde_json::Value,
    pub via: Via,
    /// When the agent received it.
    pub received: DateTime<Utc>,
}

impl Command {
    /// A command that arrived on the MQTT command topic now.
    pub fn mqtt(body: serde_json::Value) -> Command {
        Command {
            body,
            via: Via::Mqtt,
            received: Utc::now(),
        }
    }

    /// The `cmd` field, truncated for echoing.
    pub fn name(&self) -> String {
        truncate_echo(self.body.get("cmd").and_then(|c| c.as_str()).unwrap_or(""))
    }

    /// The optional correlation `id` as it may be echoed: a string or number, truncated.
    pub fn echo_id(&self) -> Option<serde_json::Value> {
        echo_value(self.body.get("id")?)
    }
}

/// A JSON value as it may be echoed: strings truncated, numbers and booleans as they are, anything
/// else (arrays, objects) summarised as its type.
pub fn echo_value(v: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::String(s) => Some(Value::String(truncate_echo(s))),
        Value::Number(_) | Value::Bool(_) => Some(v.clone()),
        Value::Array(a) => Some(Value::String(format!("<array of {}>", a.len()))),
        Value::Object(_) => Some(Value::String("<object>".into())),
    }
}

/// `s` cut to at most [`ECHO_MAX_CHARS`] characters, with a marker saying how long it was.
pub fn truncate_echo(s: &str) -> String {
    let mut chars = s.char_indices();
    match chars.nth(ECHO_MAX_CHARS) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_bounded() {
        assert_eq!(truncate_echo("abc"), "abc");
        let long = "é".repeat(100_000);
        let t = truncate_echo(&long);
        assert!(t.chars().count() < ECHO_MAX_CHARS + 20, "{}", t.len());
        assert!(t.ends_with("(200000 bytes)"));
        let c = Command::mqtt(serde_json::json!({"cmd": "x".repeat(5000), "id": [1, 2, 3]}));
        assert!(c.name().len() < 300);
        assert_eq!(c.echo_id().unwrap(), "<array of 3>");
    }
}
