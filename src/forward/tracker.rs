//! Which published messages the broker has acknowledged, and how far each stream's cursor may move.
//!
//! rumqttc has no per-publish acknowledgement handle. It reports `Outgoing::Publish(pkid)` in the order
//! requests were sent, and `PubAck(pkid)` when the broker acknowledges. We record every request in send
//! order, bind each to its packet id when the outgoing event arrives, and count acknowledgements per
//! window (the readings of one fetch, possibly spread over several per-device messages). A cursor moves
//! only over the contiguous prefix of fully acknowledged windows.

use std::collections::{HashMap, VecDeque};

use crate::store::Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowId {
    stream: Stream,
    id: u64,
}

#[derive(Debug)]
struct Window {
    id: u64,
    /// Highest sequence number the window covers.
    hi: u64,
    outstanding: u32,
}

#[derive(Debug, Default)]
pub struct Tracker {
    readings: VecDeque<Window>,
    events: VecDeque<Window>,
    next_id: u64,
    /// Requests sent, not yet seen as `Outgoing::Publish`; `None` for untracked publishes (status).
    awaiting_pkid: VecDeque<Option<WindowId>>,
    by_pkid: HashMap<u16, Option<WindowId>>,
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
    pub fn sent(&mut self, window: Option<WindowId>) {
        self.awaiting_pkid.push_back(window);
    }

    /// The client wrote a publish with this packet id (events arrive in send order).
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(w) = self.awaiting_pkid.pop_front() {
            self.by_pkid.insert(pkid, w);
        }
    }

    /// The broker acknowledged `pkid`. Returns the stream's new cursor if it moved.
    pub fn acked(&mut self, pkid: u16) -> Option<(Stream, u64)> {
        let w = self.by_pkid.remove(&pkid)??;
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

    #[test]
    fn the_cursor_moves_only_over_the_acknowledged_prefix() {
        let mut t = Tracker::default();
        let w1 = t.open_window(Stream::Readings, 100, 2);
        t.sent(Some(w1));
        t.sent(Some(w1));
        let w2 = t.open_window(Stream::Readings, 200, 1);
        t.sent(Some(w2));
        t.sent(None); // a status message
        for pkid in [1, 2, 3, 4] {
            t.outgoing(pkid);
        }
        assert_eq!(t.acked(3), None, "window 2 done but window 1 is not");
        assert_eq!(t.acked(4), None, "untracked");
        assert_eq!(t.acked(1), None, "window 1 half done");
        assert_eq!(
            t.acked(2),
            Some((Stream::Readings, 200)),
            "both windows done: jump to 200"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn streams_are_independent_and_reset_forgets() {
        let mut t = Tracker::default();
        let r = t.open_window(Stream::Readings, 10, 1);
        t.sent(Some(r));
        let e = t.open_window(Stream::Events, 3, 1);
        t.sent(Some(e));
        t.outgoing(7);
        t.outgoing(8);
        assert_eq!(t.acked(8), Some((Stream::Events, 3)));
        t.reset();
        assert_eq!(t.acked(7), None, "after a reset a late ack moves nothing");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn duplicate_or_unknown_acks_are_ignored() {
        let mut t = Tracker::default();
        let w = t.open_window(Stream::Readings, 5, 1);
        t.sent(Some(w));
        t.outgoing(1);
        assert_eq!(t.acked(1), Some((Stream::Readings, 5)));
        assert_eq!(t.acked(1), None);
        assert_eq!(t.acked(99), None);
    }
}
