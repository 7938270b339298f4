//! Side and status messages are derived (the retained alarm set, limits, capability, the status
//! message): one that is too large is cut down to fit rather than refused. Their lists are truncated,
//! largest first, keeping the first entries (the alarm set lists the newest episodes first). Beside
//! each list cut, `"<name>_truncated": true` and `"<name>_total"` (its full length) say so, and a
//! boolean `"truncated"` already there (the alarm set's) is set.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Smallest size a message is cut down to; a limit below this drops the message instead.
pub const MIN_CAP: usize = 512;
/// Room left for the markers added beside a list that is cut.
const MARKER_BYTES: usize = 64;
/// Lists cut at most per message (each cut empties a list or makes the message fit).
const MAX_CUTS: usize = 32;

/// Topics remembered at most (sizes, logged drops): far more than an agent publishes on.
const MAX_TOPICS: usize = 4096;

/// What the forwarder knows about how large side and status messages may be.
#[derive(Debug, Default)]
pub struct SideSizes {
    /// Learned from the broker: each side or status message it refuses again and again halves it.
    ceiling: Option<usize>,
    /// Size of the last message published on each side topic (and the status topic).
    last: HashMap<String, usize>,
    /// Topics whose dropped message was logged (once per topic).
    logged: HashSet<String>,
}

impl SideSizes {
    /// How large a side or status message may be: the configured message size, or less once the
    /// broker refused one.
    pub fn cap(&self, configured: usize) -> usize {
        self.ceiling.map_or(configured, |c| c.min(configured))
    }

    pub fn published(&mut self, topic: &str, bytes: usize) {
        if self.last.len() >= MAX_TOPICS && !self.last.contains_key(topic) {
            self.last.clear();
        }
        self.last.insert(topic.to_string(), bytes);
    }

    /// The broker refused the last message on `topic` again and again: halve the cap below its size.
    /// Returns (its size, the new cap) when known.
    pub fn refused(&mut self, topic: &str) -> Option<(usize, usize)> {
        let bytes = *self.last.get(topic)?;
        let cap = self.ceiling.map_or(bytes / 2, |c| c.min(bytes / 2));
        self.ceiling = Some(cap);
        Some((bytes, cap))
    }

    /// Whether a dropped message on `topic` is to be logged (the first time only).
    pub fn first_drop(&mut self, topic: &str) -> bool {
        if self.logged.len() >= MAX_TOPICS {
            return false;
        }
        self.logged.insert(topic.to_string())
    }
}

/// `payload` cut down to at most `cap` bytes, or None when it cannot be (not a JSON object, or too
/// large even with every list emptied).
pub fn fit(payload: &[u8], cap: usize) -> Option<Vec<u8>> {
    if payload.len() <= cap {
        return Some(payload.to_vec());
    }
    if cap < MIN_CAP {
        return None;
    }
    let mut body: Value = serde_json::from_slice(payload).ok()?;
    if !body.is_object() {
        return None;
    }
    for _ in 0..MAX_CUTS {
        let bytes = serde_json::to_vec(&body).ok()?;
        if bytes.len() <= cap {
            return Some(bytes);
        }
        let mut path = Vec::new();
        let (path, _) = largest_list(&body, &mut path)?;
        let excess = bytes.len() - cap + MARKER_BYTES;
        cut(&mut body, &path, excess)?;
    }
    let bytes = serde_json::to_vec(&body).ok()?;
    (bytes.len() <= cap).then_some(bytes)
}

/// The path (object keys) of the non-empty list with the most bytes, among lists reached through
/// objects only, and its size.
fn largest_list(v: &Value, path: &mut Vec<String>) -> Option<(Vec<String>, usize)> {
    let Value::Object(map) = v else {
        return None;
    };
    let mut best: Option<(Vec<String>, usize)> = None;
    for (k, child) in map {
        path.push(k.clone());
        let found = match child {
            Value::Array(items) if !items.is_empty() => Some((
                path.clone(),
                serde_json::to_vec(child).map_or(0, |b| b.len()),
            )),
            Value::Object(_) => largest_list(child, path),
            _ => None,
        };
        path.pop();
        if let Some(f) = found
            && best.as_ref().is_none_or(|b| f.1 > b.1)
        {
            best = Some(f);
        }
    }
    best
}

/// Removes entries from the end of the list at `path` until about `excess` bytes are gone (or the list
/// is empty) and marks it.
fn cut(body: &mut Value, path: &[String], excess: usize) -> Option<()> {
    let (name, parents) = path.split_last()?;
    let mut parent: &mut Map<String, Value> = body.as_object_mut()?;
    for key in parents {
        parent = parent.get_mut(key)?.as_object_mut()?;
    }
    let items = parent.get_mut(name)?.as_array_mut()?;
    let total = items.len();
    let mut removed = 0;
    while removed < excess {
        let Some(last) = items.pop() else { break };
        removed += serde_json::to_vec(&last).map_or(0, |b| b.len()) + 1;
    }
    let total_key = format!("{name}_total");
    if !parent.contains_key(&total_key) {
        parent.insert(total_key, Value::from(total));
    }
    parent.insert(format!("{name}_truncated"), Value::Bool(true));
    if let Some(flag @ Value::Bool(_)) = parent.get_mut("truncated") {
        *flag = Value::Bool(true);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alarm_set(n: usize) -> Vec<u8> {
        let episodes: Vec<Value> = (0..n)
            .map(|i| json!({"episode": i, "rules": ["nelson-1"], "note": "x".repeat(100)}))
            .collect();
        serde_json::to_vec(&json!({
            "characteristic": "bore",
            "count": n,
            "truncated": false,
            "episodes": episodes,
        }))
        .unwrap()
    }

    #[test]
    fn each_refusal_halves_the_cap_and_drops_are_logged_once() {
        let mut s = SideSizes::default();
        assert_eq!(s.cap(65536), 65536);
        assert_eq!(s.refused("status"), None, "nothing published there yet");
        s.published("status", 9000);
        assert_eq!(s.refused("status"), Some((9000, 4500)));
        assert_eq!(s.cap(65536), 4500);
        assert_eq!(s.cap(4096), 4096);
        s.published("alarms", 20000);
        assert_eq!(s.refused("alarms"), Some((20000, 4500)), "never raised");
        s.published("status", 4400);
        assert_eq!(s.refused("status"), Some((4400, 2200)));
        assert!(s.first_drop("a"));
        assert!(!s.first_drop("a"));
    }

    #[test]
    fn a_message_that_fits_is_left_alone() {
        let p = alarm_set(3);
        assert_eq!(fit(&p, p.len()).unwrap(), p);
    }

    #[test]
    fn the_largest_list_is_cut_keeping_its_first_entries_and_marked() {
        let p = alarm_set(200);
        assert!(p.len() > 20_000);
        let cut = fit(&p, 4096).unwrap();
        assert!(cut.len() <= 4096, "{}", cut.len());
        let v: Value = serde_json::from_slice(&cut).unwrap();
        let kept = v["episodes"].as_array().unwrap();
        assert!(!kept.is_empty());
        assert_eq!(kept[0]["episode"], 0, "the first (newest) entries are kept");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["episodes_truncated"], true);
        assert_eq!(v["episodes_total"], 200);
        assert_eq!(v["count"], 200);
    }

    #[test]
    fn nested_lists_are_found_and_hopeless_messages_refused() {
        let devices: Vec<Value> = (0..100)
            .map(|i| json!({"name": format!("dev{i}"), "state": "connected", "readings": i}))
            .collect();
        let status = serde_json::to_vec(&json!({
            "agent": "gw", "state": "online",
            "metrics": {"store": {"committed": 1}, "devices": devices},
        }))
        .unwrap();
        let cut = fit(&status, 1024).unwrap();
        assert!(cut.len() <= 1024);
        let v: Value = serde_json::from_slice(&cut).unwrap();
        assert_eq!(v["state"], "online");
        assert_eq!(v["metrics"]["devices_total"], 100);
        assert_eq!(v["metrics"]["devices_truncated"], true);

        let flat = serde_json::to_vec(&json!({"text": "y".repeat(5000)})).unwrap();
        assert_eq!(fit(&flat, 1024), None, "nothing to cut");
        assert_eq!(
            fit(b"not json at all, and long enough", 600),
            Some(b"not json at all, and long enough".to_vec()),
            "fits as is"
        );
        assert_eq!(fit(&alarm_set(50), 100), None, "below the smallest cap");
    }
}
