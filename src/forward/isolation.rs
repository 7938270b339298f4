//! Finding the message the broker refuses, without striking its neighbours.
//!
//! A broker that refuses a message (mosquitto over its `max_packet_size`, say) drops the connection;
//! it does not say which message it refused. With several messages in flight the forwarder cannot
//! tell, so such a drop strikes nobody. Instead the forwarder *isolates*: on the following connections
//! it publishes one message at a time (window 1, side and status messages included) and waits for its
//! acknowledgement, until every message that was in flight at the drop has been acknowledged or
//! quarantined. A drop while exactly one message is in flight names that message: only that is a
//! strike ([`super::quarantine`]). Each suspect costs at most [`super::quarantine::STRIKES`]
//! reconnects, so the refused one is found within a bounded number of reconnects, and every innocent
//! one is acknowledged on the way. Then the full window opens again.

use std::collections::HashSet;

use super::tracker::MessageKey;
use crate::store::{Committed, Stream};

/// What was in flight at drops with several messages in flight, and is not yet through.
#[derive(Debug, Default)]
pub struct Isolation {
    /// Highest seq of each stream that was in flight (0: none). Settled when the cursor reaches it.
    readings: u64,
    events: u64,
    /// Retained side topics that were in flight (they are re-published after the reconnect).
    side: HashSet<String>,
    /// The status message was in flight.
    status: bool,
}

impl Isolation {
    /// Adds a message that was in flight at the drop. `retained` says whether a side topic is
    /// re-published after reconnecting (a non-retained side message is not sent again: not a suspect).
    pub fn suspect(&mut self, key: &MessageKey, retained: impl Fn(&str) -> bool) {
        match key {
            MessageKey::Data {
                stream: Stream::Readings,
                hi,
                ..
            } => self.readings = self.readings.max(*hi),
            MessageKey::Data {
                stream: Stream::Events,
                hi,
                ..
            } => self.events = self.events.max(*hi),
            MessageKey::Side(topic) => {
                if retained(topic) {
                    self.side.insert(topic.clone());
                }
            }
            MessageKey::Status => self.status = true,
        }
    }

    /// The broker acknowledged (or the forwarder gave up on) a side or status message.
    pub fn through(&mut self, key: &MessageKey) {
        match key {
            MessageKey::Side(topic) => {
                self.side.remove(topic);
            }
            MessageKey::Status => self.status = false,
            MessageKey::Data { .. } => {} // settled by the cursor
        }
    }

    /// Whether everything that was in flight at the drops is through (acknowledged or quarantined).
    /// `retained` says whether a side topic is still to be sent (a cleared or dropped one never will).
    pub fn settled(&mut self, acked: &Committed, retained: impl Fn(&str) -> bool) -> bool {
        self.side.retain(|t| retained(t));
        acked.readings >= self.readings
            && acked.events >= self.events
            && self.side.is_empty()
            && !self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(stream: Stream, lo: u64, hi: u64) -> MessageKey {
        MessageKey::Data {
            stream,
            device: None,
            lo,
            hi,
        }
    }

    #[test]
    fn settled_once_cursors_pass_and_side_and_status_are_through() {
        let mut iso = Isolation::default();
        iso.suspect(&data(Stream::Readings, 10, 20), |_| false);
        iso.suspect(&data(Stream::Readings, 21, 25), |_| false);
        iso.suspect(&data(Stream::Events, 3, 3), |_| false);
        iso.suspect(&MessageKey::Side("retained".into()), |t| t == "retained");
        iso.suspect(&MessageKey::Side("points".into()), |t| t == "retained");
        iso.suspect(&MessageKey::Status, |_| false);
        let mut acked = Committed {
            readings: 24,
            events: 3,
        };
        let still = |t: &str| t == "retained";
        assert!(!iso.settled(&acked, still));
        acked.readings = 25;
        assert!(!iso.settled(&acked, still), "side and status still out");
        iso.through(&MessageKey::Status);
        assert!(!iso.settled(&acked, still));
        iso.through(&MessageKey::Side("retained".into()));
        assert!(
            iso.settled(&acked, still),
            "a non-retained side message is not sent again: not waited for"
        );
    }

    #[test]
    fn a_side_topic_no_longer_retained_is_not_waited_for() {
        let mut iso = Isolation::default();
        iso.suspect(&MessageKey::Side("gone".into()), |_| true);
        let acked = Committed::default();
        assert!(!iso.settled(&acked, |_| true));
        assert!(
            iso.settled(&acked, |_| false),
            "cleared since: never sent again"
        );
    }
}
