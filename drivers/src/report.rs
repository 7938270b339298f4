//! Report by exception for faults: a device that is down must not flood the store and the broker with one
//! bad reading per tag per poll. A tag's bad reading is passed on when the tag turns bad, when the reason
//! changes, and then once per `bad_heartbeat` while the same fault lasts; a good (or uncertain) reading
//! ends the episode. Every driver gets this through [`crate::DeviceContext::publish`]; the heartbeat is the
//! device key `bad_heartbeat` (default [`DEFAULT_BAD_HEARTBEAT`], `"0s"` passes every bad reading on).
//!
//! This only works if a reason is stable for one cause: retry timings and counters belong in the log, never
//! in a reading's reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::reading::{Quality, Reading};

/// How often a tag that stays bad for the same reason is reported again.
pub const DEFAULT_BAD_HEARTBEAT: Duration = Duration::from_secs(60);

/// The longest `bad_heartbeat` a config may set: a fault must show up upstream at least once a day, or a
/// subscriber cannot tell a device that is still down from an agent that stopped reporting.
pub const MAX_BAD_HEARTBEAT: Duration = Duration::from_secs(86_400);

/// Per-tag memory of the bad reading last passed on.
#[derive(Debug)]
pub struct BadReports {
    heartbeat: Duration,
    last: HashMap<Arc<str>, (Arc<str>, Instant)>,
}

impl Default for BadReports {
    fn default() -> Self {
        BadReports::new(DEFAULT_BAD_HEARTBEAT)
    }
}

impl BadReports {
    pub fn new(heartbeat: Duration) -> Self {
        BadReports {
            heartbeat,
            last: HashMap::new(),
        }
    }

    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    pub fn set_heartbeat(&mut self, heartbeat: Duration) {
        self.heartbeat = heartbeat;
    }

    /// Drops the repeats from `batch` (see the module docs); returns how many were dropped.
    pub fn filter(&mut self, batch: &mut Vec<Reading>, now: Instant) -> usize {
        if self.heartbeat.is_zero() {
            return 0;
        }
        let before = batch.len();
        batch.retain(|r| self.keep(r, now));
        before - batch.len()
    }

    fn keep(&mut self, r: &Reading, now: Instant) -> bool {
        let Quality::Bad(reason) = &r.quality else {
            self.last.remove(&r.tag);
            return true;
        };
        match self.last.get_mut(&r.tag) {
            Some((last_reason, at))
                if last_reason == reason && now.saturating_duration_since(*at) < self.heartbeat =>
            {
                false
            }
            Some(entry) => {
                *entry = (reason.clone(), now);
                true
            }
            None => {
                self.last.insert(r.tag.clone(), (reason.clone(), now));
                true
            }
        }
    }
}

/// An I/O error as a stable, readable reason: `connection refused`, `connection closed by peer`,
/// `timeout`, ... instead of the OS's wording with its error number (`Operation now in progress (os error
/// 115)` is what a non-blocking connect that failed in the background reports on some paths).
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let known = match e.kind() {
        K::ConnectionRefused => Some("connection refused"),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Some("connection closed by peer")
        }
        K::TimedOut => Some("timeout"),
        K::NotConnected => Some("not connected"),
        K::HostUnreachable => Some("host unreachable"),
        K::NetworkUnreachable | K::NetworkDown => Some("network unreachable"),
        K::AddrNotAvailable => Some("address not available"),
        K::NotFound => Some("not found"),
        K::PermissionDenied => Some("permission denied"),
        _ => None,
    };
    if let Some(text) = known {
        return text.to_string();
    }
    // EINPROGRESS (115) and EALREADY (114) on Linux: a connect that did not complete.
    if matches!(e.raw_os_error(), Some(114 | 115)) {
        return "connection not established (no answer to the connect)".to_string();
    }
    // The OS wording without its error number, so the reason reads the same everywhere.
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text.get(..at).unwrap_or(&text).to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn bad(tag: &str, why: &str) -> Reading {
        let d: Arc<str> = Arc::from("d");
        Reading::bad(&d, &Arc::from(tag), Utc::now(), Arc::from(why), None)
    }

    fn good(tag: &str) -> Reading {
        let d: Arc<str> = Arc::from("d");
        Reading::good(&d, &Arc::from(tag), Utc::now(), crate::Value::I64(1), None)
    }

    fn tags(batch: &[Reading]) -> Vec<&str> {
        batch.iter().map(|r| &*r.tag).collect()
    }

    #[test]
    fn one_bad_reading_per_episode_then_a_heartbeat() {
        let mut f = BadReports::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut b = vec![bad("a", "refused"), bad("b", "refused")];
        assert_eq!(f.filter(&mut b, t0), 0);
        assert_eq!(tags(&b), ["a", "b"]);
        let mut b = vec![bad("a", "refused"), bad("b", "refused")];
        assert_eq!(f.filter(&mut b, t0 + s), 2, "same cause: suppressed");
        let mut b = vec![bad("a", "timeout"), bad("b", "refused")];
        f.filter(&mut b, t0 + 2 * s);
        assert_eq!(tags(&b), ["a"], "a new reason is reported");
        let mut b = vec![bad("a", "timeout"), bad("b", "refused")];
        f.filter(&mut b, t0 + 61 * s);
        assert_eq!(
            tags(&b),
            ["b"],
            "b's heartbeat is due, a's is not (reported at 2 s)"
        );
        let mut b = vec![good("a"), bad("b", "refused")];
        f.filter(&mut b, t0 + 62 * s);
        assert_eq!(tags(&b), ["a"], "good readings always pass");
        let mut b = vec![bad("a", "timeout")];
        f.filter(&mut b, t0 + 63 * s);
        assert_eq!(tags(&b), ["a"], "a new episode after a good reading");
    }

    #[test]
    fn io_errors_read_as_what_they_are() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            io_reason(&Error::from(ErrorKind::ConnectionRefused)),
            "connection refused"
        );
        assert_eq!(
            io_reason(&Error::from(ErrorKind::UnexpectedEof)),
            "connection closed by peer"
        );
        assert_eq!(
            io_reason(&Error::from_raw_os_error(104)),
            "connection closed by peer"
        );
        assert_eq!(
            io_reason(&Error::from_raw_os_error(111)),
            "connection refused"
        );
        assert!(!io_reason(&Error::from_raw_os_error(115)).contains("os error"));
        assert!(!io_reason(&Error::from_raw_os_error(5)).contains("os error"));
    }

    #[test]
    fn a_zero_heartbeat_passes_everything() {
        let mut f = BadReports::new(Duration::ZERO);
        let t0 = Instant::now();
        for _ in 0..3 {
            let mut b = vec![bad("a", "refused")];
            assert_eq!(f.filter(&mut b, t0), 0);
            assert_eq!(b.len(), 1);
        }
    }
}
