//! Bounding how often something is reported (rejections, log lines) while still counting all of it.

use std::time::{Duration, Instant};

/// Lets through at most `per_window` occurrences per window and counts the rest, to be reported once
/// when the window ends. Usable by anyone who answers bad requests (SPC's rejections too).
#[derive(Debug)]
pub struct RateLimit {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(per_window: u32, window: Duration) -> Self {
        RateLimit {
            per_window,
            window,
            started: None,
            count: 0,
            suppressed: 0,
        }
    }

    /// One more occurrence: `true` if it may be reported, `false` if it is only counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.started {
            Some(t) if now.duration_since(t) < self.window => {}
            _ => {
                self.started = Some(now);
                self.count = 0;
            }
        }
        if self.count < self.per_window {
            self.count += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// When the window is over: how many occurrences it suppressed (once; `None` if none).
    pub fn summary(&mut self, now: Instant) -> Option<u64> {
        let over = self
            .started
            .is_none_or(|t| now.duration_since(t) >= self.window);
        if over && self.suppressed > 0 {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_reports_the_rest_once_per_window() {
        let mut r = RateLimit::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(r.allow(t0));
        assert!(r.allow(t0));
        assert!(!r.allow(t0));
        assert!(!r.allow(t0 + Duration::from_secs(1)));
        assert_eq!(r.summary(t0 + Duration::from_secs(30)), None, "window open");
        assert_eq!(r.summary(t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(r.summary(t0 + Duration::from_secs(62)), None, "once");
        assert!(r.allow(t0 + Duration::from_secs(61)), "a new window");
    }
}
