//! Watching the primary host application's STATE (specification 5.2 and 6.4.20, Sparkplug 3.0):
//! `spBv1.0/STATE/<host_id>`, retained, JSON `{"online": bool, "timestamp": <ms>}`.
//!
//! A node configured with a primary host publishes its births only while that host says it is online,
//! and ends its session (NDEATH, disconnect) when the host says it went offline. A STATE message whose
//! timestamp is older than the last one accepted is an old session's late will and is ignored.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct StateJson {
    online: bool,
    timestamp: u64,
}

/// What a STATE message meant for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    /// The host came (or is still) online: births may be published.
    Online,
    /// The host went offline: end the session and wait.
    Offline,
    /// Stale (older timestamp), malformed or not a change.
    Ignored,
}

#[derive(Debug, Clone)]
pub struct PrimaryHost {
    id: String,
    online: bool,
    last_ts: Option<u64>,
}

impl PrimaryHost {
    pub fn new(id: &str) -> Self {
        PrimaryHost {
            id: id.to_string(),
            online: false,
            last_ts: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn online(&self) -> bool {
        self.online
    }

    /// Applies a STATE message of this host.
    pub fn on_state(&mut self, payload: &[u8]) -> HostChange {
        let Ok(state) = serde_json::from_slice::<StateJson>(payload) else {
            tracing::warn!(host = %self.id, "ignored a STATE message that is not Sparkplug 3.0 JSON");
            return HostChange::Ignored;
        };
        if self.last_ts.is_some_and(|last| state.timestamp < last) {
            return HostChange::Ignored;
        }
        self.last_ts = Some(state.timestamp);
        let was = std::mem::replace(&mut self.online, state.online);
        match (was, state.online) {
            (false, true) => HostChange::Online,
            (true, false) => HostChange::Offline,
            _ => HostChange::Ignored,
        }
    }

    /// A new MQTT session starts: the retained STATE arrives again after the subscription. The last
    /// timestamp is kept, so an old will delivered late is still recognised.
    pub fn reset_session(&mut self) {
        self.online = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_online_and_offline_and_ignores_older_messages() {
        let mut h = PrimaryHost::new("scada");
        assert_eq!(
            h.on_state(br#"{"online":true,"timestamp":100}"#),
            HostChange::Online
        );
        assert_eq!(
            h.on_state(br#"{"online":true,"timestamp":100}"#),
            HostChange::Ignored
        );
        // A late will of an older host session.
        assert_eq!(
            h.on_state(br#"{"online":false,"timestamp":50}"#),
            HostChange::Ignored
        );
        assert!(h.online());
        assert_eq!(
            h.on_state(br#"{"online":false,"timestamp":100}"#),
            HostChange::Offline,
            "equal timestamp: the will of the current session"
        );
        assert_eq!(h.on_state(b"ONLINE"), HostChange::Ignored);
        h.reset_session();
        assert_eq!(
            h.on_state(br#"{"online":true,"timestamp":200}"#),
            HostChange::Online
        );
    }
}
