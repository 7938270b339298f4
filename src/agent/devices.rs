//! The running devices: one task each, started, stopped and replaced by name.
//!
//! A reload compares each device's whole `[[device]]` table: an unchanged device keeps running
//! untouched; a removed one is stopped and waited for; a changed one is stopped and waited for before
//! its new version starts (it may own a serial port or a bus that the new one needs). Readings a
//! stopped device handed to the store are committed as usual, so nothing is lost or sent twice.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lineside_drivers::{Device, DeviceContext, DeviceMetrics, DeviceState, ReadingSink};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::supervise::Supervisor;
use crate::config::DeviceFingerprint;
use crate::metrics::DeviceList;

/// How long a device gets to stop before its task is aborted.
const DEVICE_STOP: Duration = Duration::from_secs(1);

struct Running {
    fingerprint: Option<DeviceFingerprint>,
    metrics: Arc<DeviceMetrics>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What a reload did to the devices, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: usize,
}

pub struct Devices {
    running: HashMap<String, Running>,
    /// Names in config order (for metrics and the status message).
    order: Vec<String>,
    list: DeviceList,
    sink: ReadingSink,
    state_dir: PathBuf,
    supervisor: Supervisor,
}

impl Devices {
    pub fn new(
        sink: ReadingSink,
        state_dir: PathBuf,
        list: DeviceList,
        supervisor: Supervisor,
    ) -> Devices {
        Devices {
            running: HashMap::new(),
            order: Vec::new(),
            list,
            sink,
            state_dir,
            supervisor,
        }
    }

    /// Starts the devices of a config (at start-up).
    pub fn start_all(
        &mut self,
        devices: Vec<Box<dyn Device>>,
        fingerprints: &BTreeMap<String, DeviceFingerprint>,
    ) {
        for device in devices {
            let fingerprint = fingerprints.get(device.name()).copied();
            self.order.push(device.name().to_string());
            self.start(device, fingerprint);
        }
        self.publish_list();
    }

    fn start(&mut self, device: Box<dyn Device>, fingerprint: Option<DeviceFingerprint>) {
        let name = device.name().to_string();
        let metrics = Arc::new(DeviceMetrics::new(&name, device.kind()));
        let stop = CancellationToken::new();
        let ctx = DeviceContext {
            sink: self.sink.clone(),
            metrics: metrics.clone(),
            shutdown: stop.clone(),
            state_dir: self.state_dir.clone(),
        };
        tracing::info!(device = %name, driver = device.kind(), "starting device");
        let task = self
            .supervisor
            .spawn_until(format!("device {name}"), &stop, device.run(ctx));
        self.running.insert(
            name,
            Running {
                fingerprint,
                metrics,
                stop,
                task,
            },
        );
    }

    /// Applies a new device set: stops the removed and changed devices (and waits for them), then starts
    /// the added and changed ones. Unchanged devices are not touched.
    pub async fn apply(
        &mut self,
        devices: Vec<Box<dyn Device>>,
        fingerprints: &BTreeMap<String, DeviceFingerprint>,
    ) -> DeviceChanges {
        let mut changes = DeviceChanges::default();
        let mut to_stop = Vec::new();
        for (name, running) in &self.running {
            match fingerprints.get(name) {
                None => {
                    changes.removed.push(name.clone());
                    to_stop.push(name.clone());
                }
                Some(f) if Some(*f) != running.fingerprint => {
                    changes.restarted.push(name.clone());
                    to_stop.push(name.clone());
                }
                Some(_) => changes.unchanged += 1,
            }
        }
        changes.removed.sort();
        changes.restarted.sort();
        self.stop_many(&to_stop).await;
        self.order.clear();
        for device in devices {
            let name = device.name().to_string();
            self.order.push(name.clone());
            if self.running.contains_key(&name) {
                continue; // unchanged; its new (identical) definition is dropped
            }
            if !changes.restarted.contains(&name) {
                changes.added.push(name.clone());
            }
            let fingerprint = fingerprints.get(&name).copied();
            self.start(device, fingerprint);
        }
        self.publish_list();
        changes
    }

    /// Stops every device (at shutdown).
    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.stop_many(&names).await;
        self.order.clear();
        self.publish_list();
    }

    /// Cancels the devices together, then waits for each; one that does not end in time is aborted, so
    /// it is gone for sure before anything replaces it.
    async fn stop_many(&mut self, names: &[String]) {
        let stopping: Vec<(String, Running)> = names
            .iter()
            .filter_map(|n| self.running.remove(n).map(|r| (n.clone(), r)))
            .collect();
        for (_, r) in &stopping {
            r.stop.cancel();
        }
        for (name, mut r) in stopping {
            if tokio::time::timeout(DEVICE_STOP, &mut r.task)
                .await
                .is_err()
            {
                tracing::warn!(device = %name, "device did not stop in time; aborting it");
                r.task.abort();
                let _ = r.task.await;
            }
            r.metrics.set_state(DeviceState::Stopped);
            tracing::info!(device = %name, "device stopped");
        }
    }

    /// Publishes the running devices' counters, in config order, to the metrics and status.
    fn publish_list(&self) {
        let list: Vec<Arc<DeviceMetrics>> = self
            .order
            .iter()
            .filter_map(|n| self.running.get(n).map(|r| r.metrics.clone()))
            .collect();
        match self.list.write() {
            Ok(mut l) => *l = list,
            Err(p) => *p.into_inner() = list,
        }
    }
}
