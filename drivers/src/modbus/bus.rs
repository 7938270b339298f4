//! The owner of a shared RTU bus: one task per serial port (or RTU-over-TCP gateway) that runs the
//! transactions of every device on it, strictly one at a time, in arrival order.
//!
//! How devices find their bus: a process-wide registry, keyed by the serial port's canonical path (so
//! `/dev/serial/by-id/...` and `/dev/ttyUSB0` meet) or by `rtu-over-tcp host:port`, maps to a weak handle.
//! The first device that starts on a key opens the bus; later devices on the same key join it; the bus task
//! ends and closes the port when the last device's handle is dropped. Devices on one bus must name the same
//! line settings (baud, data bits, parity, stop bits): a device that names others is refused at start (its
//! tags turn bad with the reason) rather than silently reconfiguring the line under the others. The link's
//! connect timeout and backoff come from the device that opened the bus; each request carries its own
//! device's timeout and inter-frame delay, so a dead unit costs its own timeout and nothing more.
//!
//! Several unit ids behind one device (per-tag `unit_id`) and several `[[device]]` tables on one port both
//! work, and mix: every request names its unit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::config::{Endpoint, Timing};
use super::transport::{Link, LinkDown, ReadRequest, TxError, TxOutcome};

struct Job {
    req: ReadRequest,
    timeout: Duration,
    inter_frame_delay: Duration,
    reply: oneshot::Sender<TxOutcome>,
}

/// A device's handle on a shared bus. Cloning is cheap; the bus lives while a handle does.
pub struct BusHandle {
    tx: mpsc::Sender<Job>,
    endpoint: Endpoint,
    opened_by: String,
}

impl BusHandle {
    /// Queues a read behind the bus's other transactions and waits for its outcome.
    pub async fn read(
        &self,
        req: ReadRequest,
        timeout: Duration,
        inter_frame_delay: Duration,
    ) -> TxOutcome {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            req,
            timeout,
            inter_frame_delay,
            reply,
        };
        let gone = || TxOutcome {
            result: Err(TxError::NotConnected(LinkDown::BusStopped)),
            requests: 0,
            reconnected: false,
        };
        if self.tx.send(job).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    pub fn opened_by(&self) -> &str {
        &self.opened_by
    }
}

type Registry = Mutex<HashMap<String, Weak<BusHandle>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The registry key of a bus endpoint.
pub fn bus_key(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Rtu(s) => {
            let path = std::fs::canonicalize(&s.path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| s.path.clone());
            format!("rtu {path}")
        }
        Endpoint::RtuOverTcp { host, port } => {
            format!("rtu-over-tcp {}:{port}", host.to_ascii_lowercase())
        }
        Endpoint::Tcp { host, port } => format!("tcp {}:{port}", host.to_ascii_lowercase()),
    }
}

/// A device that names other line settings than the device that opened its bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key} is already in use by device `{opened_by}` as {existing}; this device names {requested} \
     (devices on one bus must use the same line settings)"
)]
pub struct BusConflict {
    pub key: String,
    pub opened_by: String,
    pub existing: Box<Endpoint>,
    pub requested: Box<Endpoint>,
}

/// Joins the bus of `endpoint`, opening it if no running device uses it. Must be called inside a tokio
/// runtime (it may spawn the bus task). Errs when the bus is open with other line settings.
pub fn attach(
    endpoint: &Endpoint,
    timing: &Timing,
    device: &str,
) -> Result<Arc<BusHandle>, BusConflict> {
    let key = bus_key(endpoint);
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
        if &existing.endpoint != endpoint && !same_line(&existing.endpoint, endpoint) {
            return Err(BusConflict {
                key,
                opened_by: existing.opened_by.clone(),
                existing: Box::new(existing.endpoint.clone()),
                requested: Box::new(endpoint.clone()),
            });
        }
        return Ok(existing);
    }
    // Queue depth: a device has at most one request in flight, so this only bounds a burst of devices.
    let (tx, rx) = mpsc::channel(64);
    let handle = Arc::new(BusHandle {
        tx,
        endpoint: endpoint.clone(),
        opened_by: device.to_string(),
    });
    map.insert(key.clone(), Arc::downgrade(&handle));
    drop(map);
    let link = Link::new(endpoint.clone(), timing);
    tokio::spawn(serve(key, link, rx));
    Ok(handle)
}

/// Two RTU endpoints are the same line when their settings match apart from how the path is spelled.
fn same_line(a: &Endpoint, b: &Endpoint) -> bool {
    match (a, b) {
        (Endpoint::Rtu(x), Endpoint::Rtu(y)) => {
            x.baud == y.baud
                && x.data_bits == y.data_bits
                && x.parity == y.parity
                && x.stop_bits == y.stop_bits
        }
        (Endpoint::RtuOverTcp { .. }, Endpoint::RtuOverTcp { .. }) => true, // same key: same host:port
        _ => false,
    }
}

async fn serve(key: String, mut link: Link, mut rx: mpsc::Receiver<Job>) {
    tracing::debug!(bus = %key, "modbus: bus opened");
    while let Some(job) = rx.recv().await {
        if job.reply.is_closed() {
            continue; // the device stopped waiting (shutdown): do not spend bus time on it
        }
        let outcome = link.read(job.req, job.timeout, job.inter_frame_delay).await;
        let _ = job.reply.send(outcome);
    }
    tracing::debug!(bus = %key, "modbus: bus closed (no device left)");
}
