//! systemd integration: READY once the agent runs (and again after a reload), watchdog pings while it is
//! healthy.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

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

/// Pings the watchdog at half its interval while `healthy()` holds, so a wedged agent is restarted.
pub async fn watchdog(healthy: impl Fn() -> bool, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if healthy() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!("store writer is not responding; withholding the watchdog ping");
                }
            }
        }
    }
}
