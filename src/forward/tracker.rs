//! Which published messages the broker has acknowledged, and how far each stream's cursor may move.
//!
//! rumqttc has no per-publish acknowledgement handle. It reports `Outgoing::Publish(pkid)` in the order
//! requests were sent, and `PubAck(pkid)` when the broker acknowledges. We record every request in send
//! order, bind each to its packet id when the outgoing event arrives, and count acknowledgements per
//! window (the readings of one fetch, possibly spread over several per-device messages). A cursor moves
//! only over the contiguous prefix of fully acknowledged windows.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::store::Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowId {
    stream: Stream,
    id: u64,
}

/// What a published message was, to recognise it when it is sent again (quarantine strikes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageKey {
    /// Stored data: the readings of one device (or one event) with seqs in `lo..=hi`.
    Data {
        stream: Stream,
        device: Option<Arc<str>>,
        lo: u64,
        hi: u64,
    },
    /// A side message (SPC points, retained alarm state) on this topic.
    Side(String),
    Status,
}

#[derive(Debug)]
struct Window {
    id: u64,
    /// Highest sequence number the window covers.
    hi: u64,
    outstanding: u32,
}

#[derive(Debug)]
struct Entry {
    window: Option<WindowId>,
    key: MessageKey,
}

/// An acknowledgement matched to what it acknowledged.
#[derive(Debug, PartialEq)]
pub struct Acked {
    /// The stream's new cursor, if it moved.
    pub cursor: Option<(Stream, u64)>,
    pub key: MessageKey,
}

#[derive(Debug, Default)]
pub struct Tracker {
    readings: VecDeque<Window>,
    events: VecDeque<Window>,
    next_id: u64,
    /// Requests sent, not yet seen as `Outgoing::Publish`, in send order.
    awaiting_pkid: VecDeque<Entry>,
    /// Written with a packet id, not yet acknowledged, in write order (at most a few hundred).
    by_pkid: VecDeque<(u16, Entry)>,
}

impl Tracker {
    fn windows(&mut self, stream: Stream) -> &mut VecDeque<Window> {
        match stream {
            Stream::Readings => &mut self.readings,
            Stream::Events => &mut self.events,
        }
    }

    /// Starts a window of `messages` messages covering sequence numbers up to `hi`.
    pub fn open_window(&mut self, stream: Stream, hi: u64, messages: u32) -> WindowId {
        self.next_id += 1;
        let id = self.next_id;
        self.windows(stream).push_back(Window {
            id,
            hi,
            outstanding: messages,
        });
        WindowId { stream, id }
    }

    /// Records a publish request handed to the client, in send order.
    pub fn sent(&mut self, window: Option<WindowId>, key: MessageKey) {
        self.awaiting_pkid.push_back(Entry { window, key });
    }

    /// The client wrote a publish with this packet id (events arrive in send order).
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(e) = self.awaiting_pkid.pop_front() {
            self.by_pkid.push_back((pkid, e));
        }
    }

    /// The broker acknowledged `pkid`. `None` for an id nothing is waiting on.
    pub fn acked(&mut self, pkid: u16) -> Option<Acked> {
        let pos = self.by_pkid.iter().position(|(p, _)| *p == pkid)?;
        let (_, entry) = self.by_pkid.remove(pos)?;
        let cursor = entry.window.and_then(|w| self.done(w));
        Some(Acked {
            cursor,
            key: entry.key,
        })
    }

    /// A message of `window` that will not be published (quarantined) counts as delivered.
    pub fn skip(&mut self, window: WindowId) -> Option<(Stream, u64)> {
        self.done(window)
    }

    fn done(&mut self, w: WindowId) -> Option<(Stream, u64)> {
        let windows = self.windows(w.stream);
        if let Some(win) = windows.iter_mut().find(|x| x.id == w.id) {
            win.outstanding = win.outstanding.saturating_sub(1);
        }
        let mut cursor = None;
        while windows.front().is_some_and(|x| x.outstanding == 0) {
            cursor = windows.pop_front().map(|x| x.hi);
        }
        cursor.map(|c| (w.stream, c))
    }

    /// The oldest message sent and not acknowledged (written or still queued in the client).
    pub fn oldest_unacked(&self) -> Option<&MessageKey> {
        self.by_pkid
            .front()
            .map(|(_, e)| &e.key)
            .or_else(|| self.awaiting_pkid.front().map(|e| &e.key))
    }

    /// Every message sent and not acknowledged, in send order.
    pub fn in_flight_keys(&self) -> impl Iterator<Item = &MessageKey> {
        self.by_pkid
            .iter()
            .map(|(_, e)| &e.key)
            .chain(self.awaiting_pkid.iter().map(|e| &e.key))
    }

    /// Messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.awaiting_pkid.len() + self.by_pkid.len()
    }

    /// Forgets everything: after a reconnect with a clean session nothing in flight will be acknowledged.
    pub fn reset(&mut self) {
        self.readings.clear();
        self.events.clear();
        self.awaiting_pkid.clear();
        self.by_pkid.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(seq: u64) -> MessageKey {
        MessageKey::Data {
            stream: Stream::Readings,
            device: None,
            lo: seq,
            hi: seq,
        }
    }

    fn cur(a: Option<Acked>) -> Option<(Stream, u64)> {
        a.and_then(|a| a.cursor)
    }

    #[test]
    fn the_cursor_moves_only_over_the_acknowledged_prefix() {
        let mut t = Tracker::default();
        let w1 = t.open_window(Stream::Readings, 100, 2);
        t.sent(Some(w1), k(1));
        t.sent(Some(w1), k(1));
        let w2 = t.open_window(Stream::Readings, 200, 1);
        t.sent(Some(w2), k(2));
        t.sent(None, MessageKey::Status);
        for pkid in [1, 2, 3, 4] {
            t.outgoing(pkid);
        }
        assert_eq!(cur(t.acked(3)), None, "window 2 done but window 1 is not");
        assert_eq!(cur(t.acked(4)), None, "untracked");
        assert_eq!(cur(t.acked(1)), None, "window 1 half done");
        assert_eq!(
            cur(t.acked(2)),
            Some((Stream::Readings, 200)),
            "both windows done: jump to 200"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn streams_are_independent_and_reset_forgets() {
        let mut t = Tracker::default();
        let r = t.open_window(Stream::Readings, 10, 1);
        t.sent(Some(r), k(10));
        let e = t.open_window(Stream::Events, 3, 1);
        t.sent(Some(e), k(3));
        t.outgoing(7);
        t.outgoing(8);
        assert_eq!(cur(t.acked(8)), Some((Stream::Events, 3)));
        t.reset();
        assert_eq!(
            cur(t.acked(7)),
            None,
            "after a reset a late ack moves nothing"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn duplicate_or_unknown_acks_are_ignored() {
        let mut t = Tracker::default();
        let w = t.open_window(Stream::Readings, 5, 1);
        t.sent(Some(w), k(5));
        t.outgoing(1);
        assert_eq!(cur(t.acked(1)), Some((Stream::Readings, 5)));
        assert_eq!(cur(t.acked(1)), None);
        assert_eq!(cur(t.acked(99)), None);
    }

    #[test]
    fn a_skipped_message_counts_as_delivered_and_the_oldest_unacked_is_known() {
        let mut t = Tracker::default();
        let w = t.open_window(Stream::Events, 3, 3);
        t.sent(Some(w), k(1));
        assert_eq!(t.skip(w), None, "seq 2 skipped, 1 and 3 outstanding");
        t.sent(Some(w), k(3));
        assert_eq!(t.oldest_unacked(), Some(&k(1)), "not yet written");
        t.outgoing(10);
        t.outgoing(11);
        assert_eq!(t.oldest_unacked(), Some(&k(1)));
        assert_eq!(cur(t.acked(10)), None);
        assert_eq!(t.oldest_unacked(), Some(&k(3)));
        let a = t.acked(11).unwrap();
        assert_eq!(a.cursor, Some((Stream::Events, 3)));
        assert_eq!(a.key, k(3));
        assert_eq!(t.oldest_unacked(), None);
    }
}
