//! The command intake: what arrives on the command topic, checked before anything acts on it.
//!
//! - retained copies (delivered because we subscribed, not because someone just asked) are ignored,
//!   counted, and logged once per burst: a command must never run again after a reconnect or restart;
//! - a message over `mqtt.max_command_size` is rejected without parsing or echoing it;
//! - anything that is not a JSON object with a string `cmd` is rejected;
//! - `rebirth` is answered here (the status message), at most once per [`REBIRTH_EVERY`];
//! - everything else goes to SPC through a bounded queue; when it is full the command is dropped and
//!   counted.
//!
//! Rejections become `agent.command_rejected` events and WARN lines, at most [`REJECTS_PER_MINUTE`] per
//! minute; the rest of the minute is summed up in one `agent.commands_rejected` event. An event echoes
//! only `cmd` and `id`, each cut to [`crate::bus::ECHO_MAX_CHARS`] characters.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;

use super::stats::ForwarderStats;
use crate::bus::{Command, CommandSender, RateLimit, truncate_echo};
use crate::store::Store;

/// At most one status message per this interval in answer to `rebirth`.
pub const REBIRTH_EVERY: Duration = Duration::from_secs(1);
/// Rejection events (and WARN lines) per minute at most.
pub const REJECTS_PER_MINUTE: u32 = 10;
/// Event kind of a rejection (the same SPC uses for the requests it cannot carry out).
pub const REJECTED: &str = "agent.command_rejected";
/// Event kind of the per-minute summary of rejections beyond the limit.
pub const REJECTED_SUMMARY: &str = "agent.commands_rejected";

/// What the forwarder must do for a message on the command topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Publish the status message now.
    Rebirth,
}

pub struct Intake {
    commands: CommandSender,
    max_size: usize,
    stats: Arc<ForwarderStats>,
    store: Arc<Store>,
    rejects: RateLimit,
    /// Log lines about ignored retained commands and dropped ones, once per burst.
    retained_log: RateLimit,
    dropped_log: RateLimit,
    last_rebirth: Option<Instant>,
    rebirth_pending: bool,
}

impl Intake {
    pub fn new(
        commands: CommandSender,
        max_size: usize,
        stats: Arc<ForwarderStats>,
        store: Arc<Store>,
    ) -> Self {
        Intake {
            commands,
            max_size,
            stats,
            store,
            rejects: RateLimit::new(REJECTS_PER_MINUTE, Duration::from_secs(60)),
            retained_log: RateLimit::new(1, Duration::from_secs(60)),
            dropped_log: RateLimit::new(1, Duration::from_secs(60)),
            last_rebirth: None,
            rebirth_pending: false,
        }
    }

    /// Handles one message from the command topic.
    pub fn handle(&mut self, retained: bool, payload: &[u8], now: Instant) -> Action {
        let c = &self.stats.commands;
        c.received.fetch_add(1, Relaxed);
        if retained {
            c.retained_ignored.fetch_add(1, Relaxed);
            if self.retained_log.allow(now) {
                tracing::warn!(
                    bytes = payload.len(),
                    ignored_so_far = c.retained_ignored.load(Relaxed),
                    "ignored a retained message on the command topic (commands must not be retained; \
                     clear it with an empty retained message)"
                );
            }
            return Action::None;
        }
        if payload.len() > self.max_size {
            c.oversized.fetch_add(1, Relaxed);
            let reason = format!(
                "command of {} bytes is larger than mqtt.max_command_size ({} bytes)",
                payload.len(),
                self.max_size
            );
            self.reject(None, None, reason, now);
            return Action::None;
        }
        let body: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                c.invalid.fetch_add(1, Relaxed);
                self.reject(None, None, format!("not JSON: {e}"), now);
                return Action::None;
            }
        };
        let cmd = match body.get("cmd").and_then(|c| c.as_str()) {
            Some(cmd) => cmd.to_string(),
            None => {
                c.invalid.fetch_add(1, Relaxed);
                let id = body.get("id").and_then(crate::bus::echo_value);
                self.reject(
                    None,
                    id,
                    "a command must be a JSON object with a string \"cmd\"".into(),
                    now,
                );
                return Action::None;
            }
        };
        if cmd == "rebirth" {
            c.rebirths.fetch_add(1, Relaxed);
            c.accepted.fetch_add(1, Relaxed);
            return self.rebirth(now);
        }
        let command = Command::mqtt(body);
        match self.commands.try_send(command) {
            Ok(()) => {
                c.accepted.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(command)) => {
                c.dropped.fetch_add(1, Relaxed);
                if self.dropped_log.allow(now) {
                    tracing::warn!(
                        dropped_so_far = c.dropped.load(Relaxed),
                        queue = crate::bus::COMMAND_QUEUE,
                        "the command queue is full; commands are dropped until SPC catches up"
                    );
                }
                let (name, id) = (command.name(), command.echo_id());
                self.reject(
                    Some(name),
                    id,
                    "the command queue is full; try again later".into(),
                    now,
                );
            }
            Err(TrySendError::Closed(_)) => {
                c.dropped.fetch_add(1, Relaxed);
            }
        }
        Action::None
    }

    fn rebirth(&mut self, now: Instant) -> Action {
        match self.last_rebirth {
            Some(t) if now.duration_since(t) < REBIRTH_EVERY => {
                if self.rebirth_pending {
                    self.stats.commands.rebirths_coalesced.fetch_add(1, Relaxed);
                }
                self.rebirth_pending = true;
                Action::None
            }
            _ => {
                self.last_rebirth = Some(now);
                self.rebirth_pending = false;
                Action::Rebirth
            }
        }
    }

    /// Called on the forwarder's tick: a coalesced rebirth that is now due, and the summary of
    /// suppressed rejections.
    pub fn tick(&mut self, now: Instant) -> Action {
        if let Some(n) = self.rejects.summary(now) {
            self.stats
                .commands
                .rejections_suppressed
                .fetch_add(n, Relaxed);
            tracing::warn!(
                suppressed = n,
                "more commands were rejected than reported in the last minute"
            );
            self.store_event(
                REJECTED_SUMMARY,
                json!({"count": n, "window_s": 60, "via": "mqtt"}),
            );
        }
        if self.rebirth_pending
            && self
                .last_rebirth
                .is_none_or(|t| now.duration_since(t) >= REBIRTH_EVERY)
        {
            self.last_rebirth = Some(now);
            self.rebirth_pending = false;
            return Action::Rebirth;
        }
        Action::None
    }

    fn reject(
        &mut self,
        cmd: Option<String>,
        id: Option<serde_json::Value>,
        reason: String,
        now: Instant,
    ) {
        if !self.rejects.allow(now) {
            return;
        }
        let reason = truncate_echo(&reason);
        tracing::warn!(
            cmd = cmd.as_deref().unwrap_or(""),
            reason,
            "command rejected"
        );
        self.store_event(
            REJECTED,
            json!({"cmd": cmd, "id": id, "reason": reason, "via": "mqtt"}),
        );
    }

    /// Stores an event without waiting for the commit (the rate limit bounds how many).
    fn store_event(&self, kind: &'static str, body: serde_json::Value) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.append_event(kind, Utc::now(), body).await {
                tracing::error!(error = %e, kind, "cannot store an event");
            }
        });
    }
}
