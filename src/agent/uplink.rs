//! The connection upstream: the forwarder (and the console echo), restartable with new MQTT settings.
//!
//! SPC publishes its derived messages into a channel that outlives any one forwarder; a relay hands them
//! to the forwarder running now and remembers the latest payload of every retained topic, so a forwarder
//! started by a reload announces the current alarm and limits state again. A restart stops the old
//! forwarder cleanly (it waits briefly for outstanding acknowledgements, so its cursor is current) and the
//! new one resumes from the store's cursor: delivery stays at-least-once, with no gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::echo;
use crate::bus::{CommandSender, SidePublish, Topics};
use crate::config::{Echo, MqttConfig};
use crate::forward::{Forwarder, ForwarderStats};
use crate::store::Store;

/// How long the forwarder gets to hand over its last acknowledgements when it stops.
const FORWARDER_STOP: Duration = Duration::from_millis(2500);
/// Side messages buffered per forwarder (as before the relay existed).
const SIDE_QUEUE: usize = 1024;

pub use crate::forward::StatusFn;

/// What every forwarder of this agent shares.
pub struct UplinkParts {
    pub agent_id: String,
    pub topics: Topics,
    pub store: Arc<Store>,
    pub stats: Arc<ForwarderStats>,
    pub status: StatusFn,
    pub commands: CommandSender,
    /// SPC's side messages.
    pub side: mpsc::Receiver<SidePublish>,
    /// Where the relay records the open alarms it passes on, for `/status`.
    pub open_alarms: crate::metrics::OpenAlarms,
    /// Watches the forwarder and the relay: one that dies stops the agent.
    pub supervisor: super::supervise::Supervisor,
    /// Every side message the relay passes on is also sent here (the operator station's feed).
    pub tap: tokio::sync::broadcast::Sender<SidePublish>,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<()>>,
    echo_stop: CancellationToken,
}

pub struct Uplink {
    agent_id: String,
    topics: Topics,
    /// `<prefix>/<agent id>`, what the echo subscribes under.
    base: String,
    store: Arc<Store>,
    stats: Arc<ForwarderStats>,
    status: StatusFn,
    commands: CommandSender,
    targets: mpsc::UnboundedSender<mpsc::Sender<SidePublish>>,
    relay: JoinHandle<()>,
    current: Option<Running>,
    supervisor: super::supervise::Supervisor,
}

/// A forwarder ready to run, its client options (for the echo) and the sender of its side channel.
struct Built {
    forwarder: Forwarder,
    opts: rumqttc::MqttOptions,
    side: mpsc::Sender<SidePublish>,
}

impl Uplink {
    /// Starts the relay and the first forwarder.
    pub fn start(parts: UplinkParts, mqtt: &MqttConfig, echo: Echo) -> Result<Uplink> {
        let (targets, targets_rx) = mpsc::unbounded_channel();
        let relay = parts.supervisor.spawn(
            "relay",
            relay(parts.side, targets_rx, parts.open_alarms.clone(), parts.tap),
        );
        let mut uplink = Uplink {
            base: format!("{}/{}", mqtt.topic_prefix, parts.agent_id),
            agent_id: parts.agent_id,
            topics: parts.topics,
            store: parts.store,
            stats: parts.stats,
            status: parts.status,
            commands: parts.commands,
            targets,
            relay,
            current: None,
            supervisor: parts.supervisor,
        };
        let built = uplink.build(mqtt)?;
        uplink.launch(built, echo);
        Ok(uplink)
    }

    /// Replaces the forwarder with one using `mqtt`. The new one is built first: if it cannot be (a
    /// missing password file, bad TLS files) the old one keeps running and the error is returned.
    pub async fn restart(&mut self, mqtt: &MqttConfig, echo: Echo) -> Result<()> {
        let built = self.build(mqtt)?;
        self.stop().await;
        self.launch(built, echo);
        Ok(())
    }

    /// Restarts only the echo (its mode changed).
    pub fn restart_echo(&mut self, mqtt: &MqttConfig, echo: Echo) -> Result<()> {
        let built = self.build(mqtt)?;
        let stop = self.spawn_echo(built.opts, echo);
        if let Some(r) = &mut self.current {
            r.echo_stop.cancel();
            r.echo_stop = stop;
        }
        Ok(())
    }

    fn build(&self, mqtt: &MqttConfig) -> Result<Built> {
        let (side, side_rx) = mpsc::channel(SIDE_QUEUE);
        let forwarder = Forwarder {
            cfg: mqtt.clone(),
            agent_id: self.agent_id.clone(),
            topics: self.topics.clone(),
            // Bounded by the durable high-water marks: nothing is published that a store losing its
            // tail could hand out again.
            reader: self
                .store
                .forwarding_reader()
                .context("opening a store reader")?,
            acker: self.store.acker(),
            committed: self.store.watch_durable(),
            stats: self.stats.clone(),
            status: self.status.clone(),
            commands: self.commands.clone(),
            side: side_rx,
            store: self.store.clone(),
        };
        let opts = forwarder.mqtt_options()?;
        Ok(Built {
            forwarder,
            opts,
            side,
        })
    }

    fn launch(&mut self, built: Built, echo: Echo) {
        let _ = self.targets.send(built.side);
        let stop = CancellationToken::new();
        let task =
            self.supervisor
                .spawn_until("forwarder", &stop, built.forwarder.run(stop.clone()));
        let echo_stop = self.spawn_echo(built.opts, echo);
        self.current = Some(Running {
            stop,
            task,
            echo_stop,
        });
    }

    fn spawn_echo(&self, opts: rumqttc::MqttOptions, mode: Echo) -> CancellationToken {
        let stop = CancellationToken::new();
        if mode != Echo::Off {
            tokio::spawn(echo::run(opts, self.base.clone(), mode, stop.clone()));
        }
        stop
    }

    /// Stops the running forwarder: it says offline and waits briefly for outstanding acknowledgements.
    pub async fn stop(&mut self) {
        let Some(r) = self.current.take() else {
            return;
        };
        r.echo_stop.cancel();
        r.stop.cancel();
        match tokio::time::timeout(FORWARDER_STOP, r.task).await {
            Ok(Ok(Err(e))) => tracing::error!(error = format!("{e:#}"), "forwarder failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "forwarder task panicked"),
            Err(_) => tracing::warn!("forwarder did not stop in time"),
            Ok(Ok(Ok(()))) => {}
        }
    }

    /// Stops the forwarder and the relay (at shutdown, after SPC has ended).
    pub async fn close(mut self) {
        self.stop().await;
        self.relay.abort();
        let _ = self.relay.await;
    }
}

/// Keeps `/status`'s view of the open alarms in step with the retained `alarms/active/<name>` messages.
fn record_open_alarms(open: &crate::metrics::OpenAlarms, m: &SidePublish) {
    let Some((_, name)) = m.topic.rsplit_once("/alarms/active/") else {
        return;
    };
    let Ok(mut open) = open.write() else { return };
    match serde_json::from_slice::<serde_json::Value>(&m.payload) {
        Ok(doc) if !m.payload.is_empty() => {
            open.insert(name.to_string(), doc);
        }
        _ => {
            open.remove(name);
        }
    }
}

/// Passes side messages to the current forwarder. A new forwarder first gets the latest payload of
/// every retained topic: the old one's memory of them ended with it.
async fn relay(
    mut from: mpsc::Receiver<SidePublish>,
    mut targets: mpsc::UnboundedReceiver<mpsc::Sender<SidePublish>>,
    open_alarms: crate::metrics::OpenAlarms,
    tap: tokio::sync::broadcast::Sender<SidePublish>,
) {
    let mut target: Option<mpsc::Sender<SidePublish>> = None;
    let mut retained: HashMap<String, Vec<u8>> = HashMap::new();
    let mut targets_open = true;
    loop {
        tokio::select! {
            biased;
            t = targets.recv(), if targets_open => match t {
                Some(t) => {
                    for (topic, payload) in &retained {
                        let _ = t.try_send(SidePublish { topic: topic.clone(), payload: payload.clone(), retain: true });
                    }
                    target = Some(t);
                }
                None => targets_open = false,
            },
            m = from.recv() => {
                let Some(m) = m else { return };
                if m.retain {
                    if m.payload.is_empty() {
                        retained.remove(&m.topic);
                    } else {
                        retained.insert(m.topic.clone(), m.payload.clone());
                    }
                    record_open_alarms(&open_alarms, &m);
                }
                if tap.receiver_count() > 0 {
                    let _ = tap.send(m.clone());
                }
                if let Some(t) = &target {
                    let _ = t.send(m).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod open_alarm_tests {
    use super::*;

    #[test]
    fn retained_open_alarm_messages_are_recorded_and_cleared() {
        let open = crate::metrics::OpenAlarms::default();
        let side = |topic: &str, payload: &[u8]| SidePublish {
            topic: topic.into(),
            payload: payload.to_vec(),
            retain: true,
        };
        record_open_alarms(
            &open,
            &side(
                "lineside/gw/alarms/active/bore",
                br#"{"characteristic":"bore","open":2}"#,
            ),
        );
        record_open_alarms(&open, &side("lineside/gw/spc/bore/limits", br#"{"x":1}"#));
        assert_eq!(open.read().unwrap().len(), 1);
        assert_eq!(open.read().unwrap()["bore"]["open"], 2);
        record_open_alarms(&open, &side("lineside/gw/alarms/active/bore", b""));
        assert!(
            open.read().unwrap().is_empty(),
            "an empty retained message clears the characteristic"
        );
    }
}
