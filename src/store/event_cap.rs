//! Every event the store accepts is bounded, so nothing it holds can exceed the MQTT packet size and block
//! the stream: long strings are cut with a marker, long arrays and objects are shortened, and a body that
//! is still too large is replaced by a bounded summary of its small top-level fields.

use serde_json::{Map, Value};

/// Largest serialized event body the store keeps (the forwarder adds well under 1 KiB of envelope).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// Longest event kind.
pub const MAX_KIND_BYTES: usize = 128;
/// Longest string kept in a shortened body.
const MAX_STRING_BYTES: usize = 1024;
/// Most array items or object members kept in a shortened body.
const MAX_ITEMS: usize = 64;

/// The kind and the serialized body to store, both within their bounds.
pub fn bound(kind: &str, body: &Value) -> (String, String, bool) {
    let kind = cut(kind, MAX_KIND_BYTES);
    let text = body.to_string();
    if text.len() <= MAX_EVENT_BYTES {
        return (kind, text, false);
    }
    let original = text.len();
    let mut short = shorten(body, 0);
    if let Value::Object(m) = &mut short {
        m.insert("truncated".into(), true.into());
        m.insert("original_bytes".into(), original.into());
    }
    let text = short.to_string();
    if text.len() <= MAX_EVENT_BYTES {
        return (kind, text, true);
    }
    (kind, summary(body, original).to_string(), true)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn shorten(v: &Value, depth: usize) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_STRING_BYTES => Value::String(format!(
            "{}…[truncated, {} bytes]",
            cut(s, MAX_STRING_BYTES),
            s.len()
        )),
        Value::Array(a) if depth > 8 => Value::String(format!("[{} items]", a.len())),
        Value::Object(m) if depth > 8 => Value::String(format!("{{{} members}}", m.len())),
        Value::Array(a) => {
            let mut out: Vec<Value> = a
                .iter()
                .take(MAX_ITEMS)
                .map(|x| shorten(x, depth + 1))
                .collect();
            if a.len() > MAX_ITEMS {
                out.push(Value::String(format!(
                    "…[{} more items]",
                    a.len() - MAX_ITEMS
                )));
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m.iter().take(MAX_ITEMS) {
                out.insert(cut(k, MAX_KIND_BYTES), shorten(x, depth + 1));
            }
            if m.len() > MAX_ITEMS {
                out.insert("_more_members".into(), (m.len() - MAX_ITEMS).into());
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The small top-level scalars of `body` (kind, severity, ids...) that fit, and the size it had.
fn summary(body: &Value, original: usize) -> Value {
    let mut out = Map::new();
    out.insert("truncated".into(), true.into());
    out.insert("original_bytes".into(), original.into());
    let mut size = 64;
    if let Value::Object(m) = body {
        for (k, v) in m {
            let small = match v {
                Value::String(s) => s.len() <= 256,
                Value::Number(_) | Value::Bool(_) | Value::Null => true,
                _ => false,
            };
            if !small || k.len() > 64 {
                continue;
            }
            let add = k.len() + v.to_string().len() + 4;
            if size + add > MAX_EVENT_BYTES / 2 {
                break;
            }
            size += add;
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn small_events_are_kept_as_they_are() {
        let body = json!({"kind": "spc.rule", "value": 1.5, "note": "x".repeat(5000)});
        let (kind, text, cut) = bound("spc.rule", &body);
        assert_eq!(kind, "spc.rule");
        assert!(!cut);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), body);
    }

    #[test]
    fn a_huge_string_is_cut_with_a_marker() {
        let body = json!({"kind": "agent.command_rejected", "id": "x".repeat(140_000), "request": "y".repeat(140_000)});
        let (_, text, cut) = bound("agent.command_rejected", &body);
        assert!(cut);
        assert!(text.len() <= MAX_EVENT_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "agent.command_rejected");
        assert_eq!(v["truncated"], true);
        assert!(
            v["id"]
                .as_str()
                .unwrap()
                .contains("truncated, 140000 bytes")
        );
    }

    #[test]
    fn many_members_or_items_still_fit() {
        let seqs: Vec<u64> = (0..20_000).collect();
        let body = json!({"kind": "spc.ack", "unknown": seqs});
        let (_, text, _) = bound("spc.ack", &body);
        assert!(text.len() <= MAX_EVENT_BYTES);
        let mut m = Map::new();
        for i in 0..5000 {
            m.insert(
                format!("key-{i}-{}", "k".repeat(200)),
                json!("v".repeat(900)),
            );
        }
        m.insert("kind".into(), json!("x"));
        let (kind, text, cut) = bound(&"k".repeat(1000), &Value::Object(m));
        assert!(cut);
        assert!(kind.len() <= MAX_KIND_BYTES);
        assert!(text.len() <= MAX_EVENT_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
    }
}
