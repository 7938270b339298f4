//! Messages that must not hold up the stream: too large to publish, or refused by the broker again and
//! again (the connection drops while the same message is the only one in flight, [`STRIKES`] times in
//! a row; see [`super::isolation`] for how it comes to be alone). A quarantined stored message stays in the store; the cursor passes over it and an
//! `agent.message_quarantined` event says which seqs were skipped. The list is kept in memory: after a
//! restart a refused message needs its strikes again (a too-large one is recognised at once).

use std::collections::HashMap;

use super::tracker::MessageKey;
use crate::store::Stream;

/// Connection drops with the same message alone in flight before it is quarantined.
pub const STRIKES: u32 = 3;
/// Messages with strikes remembered at most (a broker restart gives an innocent one a strike).
const MAX_SUSPECTS: usize = 64;

#[derive(Debug, Default)]
pub struct Quarantine {
    strikes: HashMap<MessageKey, u32>,
    /// Quarantined stored messages (`MessageKey::Data`), dropped once the cursor is past them.
    held: Vec<MessageKey>,
}

impl Quarantine {
    /// The connection dropped while `suspect` was the only message in flight. Returns true when this
    /// was its last strike (the caller quarantines it; a side or status message is cut down instead).
    pub fn strike(&mut self, suspect: &MessageKey) -> bool {
        if self.strikes.len() >= MAX_SUSPECTS && !self.strikes.contains_key(suspect) {
            self.strikes.clear();
        }
        let n = self.strikes.entry(suspect.clone()).or_insert(0);
        *n += 1;
        if *n >= STRIKES {
            self.strikes.remove(suspect);
            true
        } else {
            false
        }
    }

    /// The broker acknowledged this message: whatever caused the earlier drops, it was not this one.
    pub fn acked(&mut self, key: &MessageKey) {
        if !self.strikes.is_empty() {
            self.strikes.remove(key);
        }
    }

    /// Skips this stored message from now on.
    pub fn hold(&mut self, key: MessageKey) {
        if matches!(key, MessageKey::Data { .. }) && !self.contains(&key) {
            self.held.push(key);
        }
    }

    /// Whether a message about to be published falls inside a quarantined one (same stream and device,
    /// seqs within its range: a re-packed message may be smaller than the refused one).
    pub fn contains(&self, key: &MessageKey) -> bool {
        let MessageKey::Data {
            stream,
            device,
            lo,
            hi,
        } = key
        else {
            return false;
        };
        self.held.iter().any(|q| match q {
            MessageKey::Data {
                stream: s,
                device: d,
                lo: l,
                hi: h,
            } => s == stream && d == device && l <= lo && hi <= h,
            _ => false,
        })
    }

    /// The cursor of `stream` reached `cursor`: quarantined messages below it can be forgotten.
    pub fn passed(&mut self, stream: Stream, cursor: u64) {
        self.held.retain(|q| match q {
            MessageKey::Data { stream: s, hi, .. } => !(*s == stream && *hi <= cursor),
            _ => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> MessageKey {
        MessageKey::Data {
            stream: Stream::Events,
            device: None,
            lo: seq,
            hi: seq,
        }
    }

    #[test]
    fn three_strikes_in_a_row_quarantine_and_an_ack_forgives() {
        let mut q = Quarantine::default();
        assert!(!q.strike(&event(5)));
        assert!(!q.strike(&event(5)));
        q.acked(&event(5));
        assert!(!q.strike(&event(5)));
        assert!(!q.strike(&event(5)));
        assert!(q.strike(&event(5)));
        assert!(!q.strike(&MessageKey::Status));
        assert!(!q.strike(&MessageKey::Status));
        assert!(
            q.strike(&MessageKey::Status),
            "a status message can be too large for the broker too"
        );
    }

    #[test]
    fn held_messages_are_skipped_until_the_cursor_passes() {
        let mut q = Quarantine::default();
        let big = MessageKey::Data {
            stream: Stream::Readings,
            device: Some("a".into()),
            lo: 10,
            hi: 20,
        };
        q.hold(big);
        let part = MessageKey::Data {
            stream: Stream::Readings,
            device: Some("a".into()),
            lo: 12,
            hi: 15,
        };
        assert!(q.contains(&part));
        let other = MessageKey::Data {
            stream: Stream::Readings,
            device: Some("b".into()),
            lo: 12,
            hi: 15,
        };
        assert!(!q.contains(&other));
        q.passed(Stream::Readings, 19);
        assert!(q.contains(&part));
        q.passed(Stream::Readings, 20);
        assert!(!q.contains(&part));
    }
}
