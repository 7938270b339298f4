//! Config reload (SIGHUP, `systemctl reload`): asking the running agent, and deciding what of a new
//! config can be applied while running.
//!
//! Devices and characteristics are applied by name (see `devices` and the SPC runtime). Of the
//! sections, what only the store's writer or the agent's identity depend on cannot change under a
//! running process: those keys keep their running values, and the reload says a restart is needed.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::devices::DeviceChanges;
use crate::config::{AgentConfig, ConfigErrors, MqttConfig, StoreConfig};
use crate::spc::Changes;

/// How a running agent is stopped and, optionally, told to re-read its config.
pub struct AgentControl {
    pub shutdown: CancellationToken,
    pub(super) reload: Option<(mpsc::Receiver<Request>, PathBuf)>,
}

impl AgentControl {
    /// Runs until `shutdown`; no reloads (the demo, tests that need none).
    pub fn new(shutdown: CancellationToken) -> AgentControl {
        AgentControl {
            shutdown,
            reload: None,
        }
    }

    /// Runs until `shutdown`; the handle makes the agent re-read `config_path` (and its conf.d).
    pub fn with_reload(
        shutdown: CancellationToken,
        config_path: impl Into<PathBuf>,
    ) -> (AgentControl, ReloadHandle) {
        // One pending request is enough: it reads the files as they are when it runs.
        let (tx, rx) = mpsc::channel(1);
        (
            AgentControl {
                shutdown,
                reload: Some((rx, config_path.into())),
            },
            ReloadHandle(tx),
        )
    }
}

impl From<CancellationToken> for AgentControl {
    fn from(shutdown: CancellationToken) -> AgentControl {
        AgentControl::new(shutdown)
    }
}

pub(super) struct Request {
    pub reply: Option<oneshot::Sender<Result<Outcome, ReloadError>>>,
}

/// Asks a running agent to re-read its config.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<Request>);

impl ReloadHandle {
    /// Reloads and waits for the outcome.
    pub async fn reload(&self) -> Result<Outcome, ReloadError> {
        let (reply, rx) = oneshot::channel();
        self.0
            .send(Request { reply: Some(reply) })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Requests a reload without waiting (a signal handler). False when the agent has stopped; a
    /// request already pending covers this one.
    pub fn request(&self) -> bool {
        match self.0.try_send(Request { reply: None }) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new config has {} error(s); the running config stays", .0.0.len())]
    Invalid(ConfigErrors),
    #[error("the agent has stopped")]
    Stopped,
}

/// What a reload changed.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub devices: DeviceChanges,
    /// None when SPC did not confirm in time (it applies the change when its start-up replay ends).
    pub characteristics: Option<Changes>,
    /// Settings applied while running, e.g. "agent.log_level", "mqtt (forwarder restarted)".
    pub applied: Vec<String>,
    /// Changed keys that need a restart; they keep their running values until then.
    pub needs_restart: Vec<String>,
    /// Parts of the new config that could not be applied (the running value stays), with the reason.
    pub failed: Vec<String>,
}

/// The sections of the config the agent keeps while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub agent: AgentConfig,
    pub store: StoreConfig,
    pub mqtt: MqttConfig,
}

/// A new config's sections, split into what applies now and what waits for a restart.
#[derive(Debug)]
pub struct Plan {
    /// The new settings with every restart-only key at its running value.
    pub effective: Settings,
    pub needs_restart: Vec<String>,
    pub log_level: bool,
    pub metrics_listen: bool,
    pub echo: bool,
    /// Any MQTT setting the forwarder uses: it is restarted.
    pub mqtt: bool,
}

/// Compares the running settings with a new config's.
pub fn plan(running: &Settings, new: &Settings) -> Plan {
    let mut needs_restart = Vec::new();
    let mut effective = new.clone();
    let (a, b) = (&running.agent, &mut effective.agent);
    // The id and the topic prefix name every topic and the subscribers' de-duplication key; the state
    // directory, the ingest queue and the log format are fixed when the process starts.
    keep(&mut needs_restart, "agent.id", &a.id, &mut b.id);
    keep(
        &mut needs_restart,
        "agent.state_dir",
        &a.state_dir,
        &mut b.state_dir,
    );
    keep(
        &mut needs_restart,
        "agent.log_format",
        &a.log_format,
        &mut b.log_format,
    );
    keep(
        &mut needs_restart,
        "agent.ingest_queue",
        &a.ingest_queue,
        &mut b.ingest_queue,
    );
    let (m, n) = (&running.mqtt, &mut effective.mqtt);
    keep(
        &mut needs_restart,
        "mqtt.topic_prefix",
        &m.topic_prefix,
        &mut n.topic_prefix,
    );
    keep(
        &mut needs_restart,
        "mqtt.embedded_broker",
        &m.embedded_broker,
        &mut n.embedded_broker,
    );
    // The store's writer thread owns its settings from the start.
    let (s, t) = (&running.store, &new.store);
    let before = needs_restart.len();
    let mut note = |key: &str, differs: bool| {
        if differs {
            needs_restart.push(format!("store.{key}"));
        }
    };
    note("path", s.path != t.path);
    note("synchronous", s.synchronous != t.synchronous);
    note("batch_size", s.batch_size != t.batch_size);
    note("flush_interval", s.flush_interval != t.flush_interval);
    note("commit_delay", s.commit_delay != t.commit_delay);
    note("max_size", s.max_size != t.max_size);
    note("max_age", s.max_age != t.max_age);
    note(
        "maintenance_interval",
        s.maintenance_interval != t.maintenance_interval,
    );
    if s != t && needs_restart.len() == before {
        needs_restart.push("store".into());
    }
    effective.store = running.store.clone();

    let e = &effective;
    Plan {
        log_level: e.agent.log_level != running.agent.log_level,
        metrics_listen: e.agent.metrics_listen != running.agent.metrics_listen,
        echo: e.agent.echo != running.agent.echo,
        mqtt: e.mqtt != running.mqtt,
        needs_restart,
        effective,
    }
}

/// Keeps the running value of a restart-only key, noting it if the new config changes it.
fn keep<T: PartialEq + Clone>(notes: &mut Vec<String>, key: &str, running: &T, new: &mut T) {
    if running != new {
        notes.push(key.to_string());
        *new = running.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra_agent: &str, extra_store: &str, extra_mqtt: &str) -> Settings {
        let text = format!(
            "[agent]\nid = \"gw\"\nstate_dir = \"/tmp/s\"\n{extra_agent}\n[store]\n{extra_store}\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{extra_mqtt}\n"
        );
        let c = crate::config::load_str(std::path::Path::new("/etc/l.toml"), &text).unwrap();
        Settings {
            agent: c.agent,
            store: c.store,
            mqtt: c.mqtt,
        }
    }

    #[test]
    fn nothing_changed() {
        let a = settings("", "", "");
        let p = plan(&a, &a.clone());
        assert!(p.needs_restart.is_empty());
        assert!(!(p.log_level || p.metrics_listen || p.echo || p.mqtt));
        assert_eq!(p.effective, a);
    }

    #[test]
    fn applicable_settings_apply() {
        let a = settings("", "", "");
        let b = settings(
            "log_level = \"debug\"\nmetrics_listen = \"127.0.0.1:9464\"\necho = \"alarms\"",
            "",
            "keep_alive = \"10s\"",
        );
        let p = plan(&a, &b);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
        assert!(p.log_level && p.metrics_listen && p.echo && p.mqtt);
        assert_eq!(p.effective, b);
    }

    #[test]
    fn restart_only_keys_keep_their_running_values() {
        let a = settings("", "", "");
        let b = settings(
            "ingest_queue = 8\nlog_format = \"json\"",
            "batch_size = 10\npath = \"other.db\"",
            "topic_prefix = \"plant\"",
        );
        let p = plan(&a, &b);
        assert_eq!(
            p.needs_restart,
            [
                "agent.log_format",
                "agent.ingest_queue",
                "mqtt.topic_prefix",
                "store.path",
                "store.batch_size"
            ]
        );
        assert_eq!(p.effective, a);
        assert!(!p.mqtt);
    }
}
