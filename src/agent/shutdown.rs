//! The shutdown sequence, bounded: devices stop, the store commits what it holds, SPC takes the last
//! readings and stores its alarms, the forwarder hands over its last acknowledgements, the store closes.
//! The whole sequence ends within [`SHUTDOWN_BUDGET`] (systemd's stop timeout and an operator's patience
//! are both finite): each phase gets a bounded share, and a phase that overruns is logged and left
//! behind. What the store committed stays committed whatever is left behind (SQLite's WAL), so the
//! worst an overrun costs is readings that were never acknowledged anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Agent, systemd};
use crate::store::Store;

/// The whole sequence, from the signal to `run` returning; the runtime's own shutdown after it is
/// bounded separately (see `cli::run_agent`), so the process is gone within 5 s.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4500);

const DEVICES: Duration = Duration::from_millis(1000);
const FLUSH: Duration = Duration::from_millis(1000);
const SPC: Duration = Duration::from_millis(1000);
const UPLINK: Duration = Duration::from_millis(1500);

pub(super) struct Parts {
    pub agent: Agent,
    pub store: Arc<Store>,
    pub spc_stop: CancellationToken,
    pub spc_task: JoinHandle<anyhow::Result<()>>,
    pub aux_stop: CancellationToken,
}

/// Runs `fut` for at most `cap` and what is left of the budget; says so when it overruns.
async fn phase<T>(
    name: &str,
    cap: Duration,
    deadline: Instant,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let allowed = cap.min(deadline.saturating_duration_since(Instant::now()));
    match tokio::time::timeout(allowed, fut).await {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(
                phase = name,
                allowed_ms = allowed.as_millis() as u64,
                "shutdown phase overran its time; moving on"
            );
            None
        }
    }
}

pub(super) async fn stop(parts: Parts) {
    let Parts {
        mut agent,
        store,
        spc_stop,
        spc_task,
        aux_stop,
    } = parts;
    let deadline = Instant::now() + SHUTDOWN_BUDGET;
    systemd::notify_stopping();
    tracing::info!("stopping");
    phase("devices", DEVICES, deadline, agent.devices.stop_all()).await;
    if let Some(Err(e)) = phase("store flush", FLUSH, deadline, store.flush()).await {
        tracing::error!(error = %e, "final flush failed");
    }
    // SPC takes the last readings, stores its alarms and hands its messages to the forwarder first.
    spc_stop.cancel();
    match phase("spc", SPC, deadline, spc_task).await {
        Some(Ok(Err(e))) => tracing::error!(error = format!("{e:#}"), "SPC failed"),
        Some(Err(e)) => tracing::error!(error = %e, "SPC task panicked"),
        _ => {}
    }
    if let Some(server) = agent.metrics_server.take() {
        server.stop.cancel();
    }
    phase("forwarder", UPLINK, deadline, agent.uplink.close()).await;
    aux_stop.cancel();
    match Arc::try_unwrap(store) {
        Ok(store) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let close = tokio::task::spawn_blocking(move || store.close());
            match phase("store close", left, deadline, close).await {
                Some(Err(e)) => tracing::error!(error = %e, "closing the store failed"),
                Some(Ok(())) => {}
                None => {}
            }
        }
        // A task that did not stop in time still holds it; the last holder closes it on drop.
        Err(_) => tracing::warn!("the store is still in use; it closes when its last user ends"),
    }
    tracing::info!("stopped");
}
