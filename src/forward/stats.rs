//! What the forwarder tells the rest of the agent: counters, whether the link is up, whether it makes
//! progress, and a cheap health check for the systemd watchdog.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::json;

/// How long the forwarder's loop may go without a beat before [`ForwarderStats::healthy`] fails. The
/// loop beats at least every 500 ms (its retry tick).
pub const LOOP_BEAT_BOUND: Duration = Duration::from_secs(15);
/// Stalled for this many watchdog bounds means rebuilding the connection did not help: unhealthy.
pub const UNHEALTHY_STALLS: u32 = 3;

#[derive(Debug)]
pub struct ForwarderStats {
    /// Monotonic origin of the `*_ms` fields below.
    base: Instant,
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub messages_published: AtomicU64,
    /// Readings the broker acknowledged (counted when the cursor moves).
    pub readings_forwarded: AtomicU64,
    /// Readings packed from the committed batch in memory (caught up: the fast path).
    pub readings_from_memory: AtomicU64,
    /// Readings packed after reading them back from the store (behind, reconnected, restarted).
    pub readings_from_store: AtomicU64,
    pub events_forwarded: AtomicU64,
    /// Connections torn down by the progress watchdog.
    pub stall_recoveries: AtomicU64,
    /// Messages (data or events) skipped by the cursor because they were too large or the broker
    /// refused them repeatedly; they stay in the store.
    pub quarantined: AtomicU64,
    /// Side and status messages not published because they were too large (even cut down).
    pub oversized_dropped: AtomicU64,
    /// Side and status messages cut down (lists truncated) to fit the size limit.
    pub side_degraded: AtomicU64,
    /// Side and status messages the broker refused repeatedly (each lowers the size they are cut to).
    pub side_refused: AtomicU64,
    /// Drops with several messages in flight, after which messages went one at a time until those
    /// were through (to find one the broker refuses).
    pub isolations: AtomicU64,
    pub commands: CommandStats,
    pub last_error: Mutex<Option<String>>,
    /// Work is waiting (published and unacknowledged, or committed and unpublished).
    busy: AtomicBool,
    /// Last acknowledgement, connection, or idle moment (monotonic ms since `base`).
    progress_ms: AtomicU64,
    /// Last acknowledgement (Unix ms; 0 = none yet).
    last_ack_unix_ms: AtomicU64,
    /// Last turn of the forwarder's loop (monotonic ms since `base`; 0 = not running).
    beat_ms: AtomicU64,
    /// The watchdog bound in effect (ms).
    stall_timeout_ms: AtomicU64,
}

/// What the command intake counted.
#[derive(Debug, Default)]
pub struct CommandStats {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    /// Retained copies delivered on subscription: ignored.
    pub retained_ignored: AtomicU64,
    pub oversized: AtomicU64,
    /// Not JSON, not an object, no `cmd`.
    pub invalid: AtomicU64,
    /// Dropped because SPC's queue was full.
    pub dropped: AtomicU64,
    pub rebirths: AtomicU64,
    /// Rebirth requests folded into a status message already due.
    pub rebirths_coalesced: AtomicU64,
    /// Rejection events not stored because of the rate limit (counted in the summary event).
    pub rejections_suppressed: AtomicU64,
}

impl Default for ForwarderStats {
    fn default() -> Self {
        ForwarderStats {
            base: Instant::now(),
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            messages_published: AtomicU64::new(0),
            readings_forwarded: AtomicU64::new(0),
            readings_from_memory: AtomicU64::new(0),
            readings_from_store: AtomicU64::new(0),
            events_forwarded: AtomicU64::new(0),
            stall_recoveries: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            oversized_dropped: AtomicU64::new(0),
            side_degraded: AtomicU64::new(0),
            side_refused: AtomicU64::new(0),
            isolations: AtomicU64::new(0),
            commands: CommandStats::default(),
            last_error: Mutex::new(None),
            busy: AtomicBool::new(false),
            progress_ms: AtomicU64::new(0),
            last_ack_unix_ms: AtomicU64::new(0),
            beat_ms: AtomicU64::new(0),
            stall_timeout_ms: AtomicU64::new(30_000),
        }
    }
}

/// The forwarder's state at one moment, as `/status` and the status message show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub connected: bool,
    /// Connected, with work waiting, and nothing acknowledged for longer than the watchdog bound.
    pub stalled: bool,
    /// Seconds since the broker last acknowledged anything (`None` before the first acknowledgement).
    pub since_ack: Option<f64>,
    /// Seconds the forwarder has had work waiting without progress (0 when idle or moving).
    pub since_progress: f64,
}

impl ForwarderStats {
    fn mono_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Called by the forwarder at start with its watchdog bound.
    pub(crate) fn set_stall_timeout(&self, d: Duration) {
        self.stall_timeout_ms.store(d.as_millis() as u64, Relaxed);
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms.load(Relaxed))
    }

    /// The forwarder's loop turned (it is alive and not blocked).
    pub(crate) fn beat(&self, now: Instant) {
        self.beat_ms.store(self.mono_ms(now).max(1), Relaxed);
    }

    /// The forwarder stopped on purpose (shutdown or a restart with new settings).
    pub(crate) fn stopped(&self) {
        self.beat_ms.store(0, Relaxed);
        self.connected.store(false, Relaxed);
        self.busy.store(false, Relaxed);
    }

    /// The broker acknowledged something.
    pub(crate) fn acked(&self, now: Instant) {
        self.progress_ms.store(self.mono_ms(now), Relaxed);
        let unix = chrono::Utc::now().timestamp_millis().max(1) as u64;
        self.last_ack_unix_ms.store(unix, Relaxed);
    }

    /// Restarts the stall clock (a new connection, or nothing to do).
    pub(crate) fn progress(&self, now: Instant) {
        self.progress_ms.store(self.mono_ms(now), Relaxed);
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Relaxed);
    }

    /// How long the forwarder has had work waiting on an open link without any acknowledgement.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        if !self.connected.load(Relaxed) || !self.busy.load(Relaxed) {
            return Duration::ZERO;
        }
        let since = self
            .mono_ms(now)
            .saturating_sub(self.progress_ms.load(Relaxed));
        Duration::from_millis(since)
    }

    pub fn progress_at(&self, now: Instant) -> Progress {
        let stalled_for = self.stalled_for(now);
        let last_ack = self.last_ack_unix_ms.load(Relaxed);
        let since_ack = (last_ack > 0).then(|| {
            let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
            now_ms.saturating_sub(last_ack) as f64 / 1000.0
        });
        Progress {
            connected: self.connected.load(Relaxed),
            stalled: stalled_for > self.stall_timeout(),
            since_ack,
            since_progress: stalled_for.as_secs_f64(),
        }
    }

    /// For the systemd watchdog: `Err` with a reason when the forwarder is dead or stuck in a way that
    /// a process restart may cure. Cheap (a few atomic loads).
    ///
    /// - the forwarder's loop has not turned for [`LOOP_BEAT_BOUND`] (task dead, panicked or blocked);
    /// - the link claims to be up, work is waiting, and nothing was acknowledged for
    ///   [`UNHEALTHY_STALLS`] × the stall timeout (the progress watchdog rebuilt the connection and that
    ///   did not help).
    ///
    /// A broker that is down is not unhealthy: the store keeps the readings, and a restart would not
    /// bring the broker back. A forwarder that is stopped on purpose (between a reload's old and new
    /// forwarder) is not checked.
    pub fn healthy(&self, now: Instant) -> Result<(), String> {
        let beat = self.beat_ms.load(Relaxed);
        if beat > 0 {
            let since = Duration::from_millis(self.mono_ms(now).saturating_sub(beat));
            if since > LOOP_BEAT_BOUND {
                return Err(format!(
                    "the forwarder's loop has not run for {:.0} s",
                    since.as_secs_f64()
                ));
            }
        }
        let stalled = self.stalled_for(now);
        let bound = self.stall_timeout() * UNHEALTHY_STALLS;
        if stalled > bound {
            return Err(format!(
                "the broker has acknowledged nothing for {:.0} s while connected with data waiting",
                stalled.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Prometheus lines (name, help, type, value), for `crate::metrics`.
    pub fn prometheus_values(&self) -> Vec<(&'static str, &'static str, &'static str, f64)> {
        let p = self.progress_at(Instant::now());
        let c = &self.commands;
        let n = |a: &AtomicU64| a.load(Relaxed) as f64;
        vec![
            (
                "forwarder_connected",
                "1 when connected to the broker.",
                "gauge",
                p.connected as u8 as f64,
            ),
            (
                "forwarder_stalled",
                "1 when connected with data waiting and nothing acknowledged for longer than mqtt.stall_timeout.",
                "gauge",
                p.stalled as u8 as f64,
            ),
            (
                "forwarder_seconds_since_ack",
                "Seconds since the broker last acknowledged a message (-1 before the first).",
                "gauge",
                p.since_ack.unwrap_or(-1.0),
            ),
            (
                "forwarder_reconnects_total",
                "Reconnects to the broker.",
                "counter",
                n(&self.reconnects),
            ),
            (
                "forwarder_connect_errors_total",
                "Connection errors.",
                "counter",
                n(&self.connect_errors),
            ),
            (
                "forwarder_stall_recoveries_total",
                "Connections torn down and rebuilt by the progress watchdog.",
                "counter",
                n(&self.stall_recoveries),
            ),
            (
                "forwarder_messages_total",
                "Messages published.",
                "counter",
                n(&self.messages_published),
            ),
            (
                "forwarder_readings_total",
                "Readings acknowledged by the broker.",
                "counter",
                n(&self.readings_forwarded),
            ),
            (
                "forwarder_events_total",
                "Events acknowledged by the broker.",
                "counter",
                n(&self.events_forwarded),
            ),
            (
                "forwarder_quarantined_total",
                "Messages skipped because too large or refused by the broker (kept in the store).",
                "counter",
                n(&self.quarantined),
            ),
            (
                "forwarder_oversized_dropped_total",
                "Side or status messages not published because too large.",
                "counter",
                n(&self.oversized_dropped),
            ),
            (
                "forwarder_side_degraded_total",
                "Side or status messages cut down (lists truncated) to fit the size limit.",
                "counter",
                n(&self.side_degraded),
            ),
            (
                "forwarder_side_refused_total",
                "Side or status messages the broker refused repeatedly.",
                "counter",
                n(&self.side_refused),
            ),
            (
                "forwarder_isolations_total",
                "Connection drops with several messages in flight, followed by one-at-a-time sending.",
                "counter",
                n(&self.isolations),
            ),
            (
                "commands_received_total",
                "Messages received on the command topic.",
                "counter",
                n(&c.received),
            ),
            (
                "commands_accepted_total",
                "Commands passed to SPC or carried out (rebirth).",
                "counter",
                n(&c.accepted),
            ),
            (
                "commands_retained_ignored_total",
                "Retained commands ignored.",
                "counter",
                n(&c.retained_ignored),
            ),
            (
                "commands_oversized_total",
                "Commands rejected as too large.",
                "counter",
                n(&c.oversized),
            ),
            (
                "commands_invalid_total",
                "Commands rejected as not a JSON object with \"cmd\".",
                "counter",
                n(&c.invalid),
            ),
            (
                "commands_dropped_total",
                "Commands dropped because the queue to SPC was full.",
                "counter",
                n(&c.dropped),
            ),
            (
                "commands_rebirths_coalesced_total",
                "Rebirth requests folded into a status message already due.",
                "counter",
                n(&c.rebirths_coalesced),
            ),
        ]
    }

    /// The `forwarder` object of `/status` and the status message.
    pub fn json(&self) -> serde_json::Value {
        let p = self.progress_at(Instant::now());
        let c = &self.commands;
        json!({
            "connected": p.connected,
            "stalled": p.stalled,
            "seconds_since_ack": p.since_ack.map(|s| (s * 10.0).round() / 10.0),
            "stalled_s": (p.since_progress * 10.0).round() / 10.0,
            "stall_timeout_s": self.stall_timeout().as_secs_f64(),
            "stall_recoveries": self.stall_recoveries.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "messages": self.messages_published.load(Relaxed),
            "forwarded": self.readings_forwarded.load(Relaxed),
            "packed_from_memory": self.readings_from_memory.load(Relaxed),
            "packed_from_store": self.readings_from_store.load(Relaxed),
            "events_forwarded": self.events_forwarded.load(Relaxed),
            "quarantined": self.quarantined.load(Relaxed),
            "oversized_dropped": self.oversized_dropped.load(Relaxed),
            "side_degraded": self.side_degraded.load(Relaxed),
            "side_refused": self.side_refused.load(Relaxed),
            "isolations": self.isolations.load(Relaxed),
            "commands": {
                "received": c.received.load(Relaxed),
                "accepted": c.accepted.load(Relaxed),
                "retained_ignored": c.retained_ignored.load(Relaxed),
                "oversized": c.oversized.load(Relaxed),
                "invalid": c.invalid.load(Relaxed),
                "dropped": c.dropped.load(Relaxed),
                "rebirths_coalesced": c.rebirths_coalesced.load(Relaxed),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_when_connected_busy_and_quiet_for_the_bound() {
        let s = ForwarderStats::default();
        s.set_stall_timeout(Duration::from_secs(10));
        let t0 = Instant::now();
        s.beat(t0);
        s.progress(t0);
        let later = t0 + Duration::from_secs(11);
        assert!(!s.progress_at(later).stalled, "not connected");
        s.connected.store(true, Relaxed);
        assert!(!s.progress_at(later).stalled, "idle");
        s.set_busy(true);
        assert!(s.progress_at(later).stalled);
        s.beat(later);
        assert!(s.healthy(later).is_ok(), "one bound: the watchdog's job");
        let much_later = t0 + Duration::from_secs(31);
        s.beat(much_later);
        assert!(s.healthy(much_later).is_err());
        s.acked(much_later);
        assert!(!s.progress_at(much_later).stalled);
        assert!(s.healthy(much_later).is_ok());
    }

    #[test]
    fn a_dead_loop_is_unhealthy_and_a_stopped_one_is_not() {
        let s = ForwarderStats::default();
        let t0 = Instant::now();
        s.beat(t0);
        assert!(s.healthy(t0 + Duration::from_secs(20)).is_err());
        s.stopped();
        assert!(s.healthy(t0 + Duration::from_secs(20)).is_ok());
    }
}
