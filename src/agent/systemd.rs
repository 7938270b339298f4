//! systemd integration: READY once the agent runs (and again after a reload), watchdog pings while it is
//! healthy.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::supervise::Health;

pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY failed (not under systemd?)");
    }
}

/// A reload has started; `notify_ready` says it is over.
pub fn notify_reloading() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval while every health check holds, so a wedged or half-dead
/// agent is restarted. A failing check is logged when it starts failing, not at every tick.
pub async fn watchdog(health: Health, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    let mut reported: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let failing = health.failing();
                if failing.is_empty() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else if failing != reported {
                    tracing::error!(failing = ?failing, "unhealthy; withholding the watchdog ping");
                }
                reported = failing;
            }
        }
    }
}
