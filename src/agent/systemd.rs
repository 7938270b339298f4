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
    let ping = || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    };
    watch(interval / 2, &health, ping, shutdown).await
}

async fn watch(period: Duration, health: &Health, ping: impl Fn(), shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    let mut reported: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let failing = health.failing();
                if failing.is_empty() {
                    ping();
                } else if failing != reported {
                    tracing::error!(failing = ?failing, "unhealthy; withholding the watchdog ping");
                }
                reported = failing;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    use super::*;

    #[tokio::test]
    async fn no_ping_while_any_check_fails() {
        let health = Health::default();
        let ok = Arc::new(AtomicBool::new(true));
        let o = ok.clone();
        health.add("forwarder", move || {
            if o.load(SeqCst) {
                Ok(())
            } else {
                Err("stalled".into())
            }
        });
        let pings = Arc::new(AtomicUsize::new(0));
        let p = pings.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (health, stop) = (health.clone(), stop.clone());
            async move {
                watch(
                    Duration::from_millis(100),
                    &health,
                    move || {
                        p.fetch_add(1, SeqCst);
                    },
                    stop,
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert!(pings.load(SeqCst) >= 3, "{}", pings.load(SeqCst));
        ok.store(false, SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = pings.load(SeqCst);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(pings.load(SeqCst), before, "pinged while a check failed");
        ok.store(true, SeqCst);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            pings.load(SeqCst) > before,
            "pings resume when the check holds again"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
