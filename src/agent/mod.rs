//! The running agent: wires drivers → store → (forwarder, SPC), handles start-up, config reloads and
//! shutdown.

mod devices;
mod echo;
mod preflight;
mod reload;
mod shutdown;
pub mod supervise;
pub mod systemd;
mod uplink;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use devices::DeviceChanges;
pub use preflight::validate_for_run;
pub use reload::{AgentControl, Outcome, ReloadError, ReloadHandle};
pub use supervise::{Health, Supervisor, TaskDied};

use crate::bus::Topics;
use crate::config::{BrokerUrl, Config, MqttConfig};
use crate::forward::ForwarderStats;
use crate::metrics::Metrics;
use crate::spc::SpcControl;
use crate::store::Store;
use devices::Devices;
use reload::Settings;
use uplink::{Uplink, UplinkParts};

/// How long a reload waits for SPC to take the new characteristics (it may still be replaying the
/// store at start-up; it applies them when done either way).
const SPC_RECONFIGURE: Duration = Duration::from_secs(30);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the status message reports about the config; replaced by a reload.
#[derive(Debug, Default)]
struct ConfigState {
    hash: String,
    /// Changed keys that wait for a restart.
    pending_restart: Vec<String>,
}

/// Runs until `control.shutdown` is cancelled, then stops in order: devices, store flush, SPC,
/// forwarder, store. With a reload handle (see [`AgentControl::with_reload`]) the config can be re-read
/// meanwhile. A plain `CancellationToken` converts into a control without reloads.
pub async fn run(config: Config, control: impl Into<AgentControl>) -> Result<()> {
    let AgentControl {
        shutdown,
        mut reload,
    } = control.into();
    let started = Utc::now();
    if let Err(problems) = validate_for_run(&config) {
        anyhow::bail!("the config cannot run: {}", problems.join("; "));
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let health = Health::default();
    let (supervisor, mut deaths) = Supervisor::new(&health);
    // Devices are Send but not Sync: take them out so no borrow of them lives across an await.
    let Config {
        devices,
        characteristics,
        device_fingerprints,
        agent,
        store,
        mqtt,
        hash,
        spc: spc_policy,
        station,
        ..
    } = config;
    let settings = Settings { agent, store, mqtt };
    if settings.mqtt.embedded_broker {
        start_embedded_broker(&settings.mqtt).await?;
    }
    let state_dir = settings.agent.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    // Shared with the SPC task, which stores its alarm events; closed once that task has ended.
    // The high-water marks retained on the broker: a second source beside the marks file, for a
    // database lost together with it (bounded wait; a broker that is down does not stop the start).
    // Sparkplug publishes no such message (its namespace has no place for it): skipped there.
    let broker_marks = if settings.mqtt.encoding == crate::config::Encoding::Sparkplug {
        None
    } else {
        let topics = crate::bus::Topics::new(&settings.mqtt.topic_prefix, &settings.agent.id);
        crate::forward::high_water::fetch(&settings.mqtt, &settings.agent.id, &topics).await
    };
    let store = Arc::new(
        Store::open_with_broker_marks(&settings.store, settings.agent.ingest_queue, broker_marks)
            .context("opening the store")?,
    );
    tracing::info!(path = %store.path().display(), last_seq = store.watch_committed().borrow().readings, "store open");

    // SPC is created before the devices start: what the store holds now is history to it. It answers
    // every command the forwarder does not handle itself, and publishes through the forwarder.
    let (commands_tx, commands_rx) = crate::bus::command_channel();
    let (side_tx, side_rx) = mpsc::channel(1024);
    // The operator station's view of the side messages the forwarder publishes. A broadcast channel
    // writes all its slots when made (80 B each: 320 KiB resident for 4,096), so without a station, which
    // is the only receiver, it is made as small as it can be.
    let tap_capacity = if station.listen.is_some() { 4096 } else { 1 };
    let (tap, _) = tokio::sync::broadcast::channel(tap_capacity);
    let station_chars = characteristics.clone();
    let spc = crate::spc::Spc::new(
        characteristics,
        store.clone(),
        side_tx,
        commands_rx,
        crate::spc::SpcTopics::new(&settings.mqtt.topic_prefix, &settings.agent.id),
        &state_dir,
    )
    .with_policy(spc_policy.clone());
    // The station offers the pick lists SPC checks acknowledgements against: one list, one place.
    let mut station = station;
    if !spc_policy.causes.is_empty() {
        station.causes = spc_policy.causes.clone();
    }
    if !spc_policy.actions.is_empty() {
        station.actions = spc_policy.actions.clone();
    }
    let spc_control = spc.control();

    let metrics = Metrics {
        store: store.stats(),
        forwarder: Arc::new(ForwarderStats::default()),
        devices: Arc::new(RwLock::new(Vec::new())),
        alarms: crate::metrics::OpenAlarms::default(),
        spc: spc.kpis(),
    };
    let mut running = Devices::new(
        store.sink(),
        state_dir.clone(),
        metrics.devices.clone(),
        supervisor.clone(),
    );
    running.start_all(devices, &device_fingerprints);

    let config_state = Arc::new(RwLock::new(ConfigState {
        hash,
        pending_restart: Vec::new(),
    }));
    let status = status_fn(&settings.agent.id, started, &metrics, &config_state);
    let uplink = Uplink::start(
        UplinkParts {
            agent_id: settings.agent.id.clone(),
            topics: Topics::new(&settings.mqtt.topic_prefix, &settings.agent.id),
            store: store.clone(),
            stats: metrics.forwarder.clone(),
            status,
            commands: commands_tx.clone(),
            side: side_rx,
            open_alarms: metrics.alarms.clone(),
            supervisor: supervisor.clone(),
            tap: tap.clone(),
        },
        &settings.mqtt,
        settings.agent.echo,
    )?;
    let station = crate::station::start(
        &station,
        crate::station::StationParts {
            agent_id: settings.agent.id.clone(),
            topic_base: format!("{}/{}", settings.mqtt.topic_prefix, settings.agent.id),
            characteristics: station_chars,
            store: store.clone(),
            spc_state: crate::spc::state_path(&state_dir),
            side: tap.subscribe(),
            commands: commands_tx,
            metrics: metrics.clone(),
        },
    )
    .await?;

    let aux_stop = CancellationToken::new();
    let metrics_server = match settings.agent.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, &metrics, &supervisor).await?),
        None => None,
    };
    {
        // The writer is a thread: its end shows as the committed watch closing.
        let mut committed = store.watch_committed();
        supervisor.spawn("store writer", async move {
            while committed.changed().await.is_ok() {}
        });
        let committed = store.watch_committed();
        health.add("store writer", move || {
            if committed.has_changed().is_ok() {
                Ok(())
            } else {
                Err("not responding".to_string())
            }
        });
        // Forwarder progress: its event-loop task beats, and acknowledgements keep coming while there
        // is a backlog and the link claims to be up (see `ForwarderStats::healthy`).
        let forwarder = metrics.forwarder.clone();
        health.add("forwarder", move || {
            forwarder.healthy(std::time::Instant::now())
        });
        tokio::spawn(systemd::watchdog(health.clone(), aux_stop.clone()));
    }
    let spc_stop = CancellationToken::new();
    let spc_task = supervisor.spawn_until("spc", &spc_stop, spc.run(spc_stop.clone()));
    systemd::notify_ready();
    tracing::info!(agent = %settings.agent.id, version = VERSION, "lineside running");

    let mut agent = Agent {
        settings,
        config_state,
        devices: running,
        spc: spc_control,
        uplink,
        metrics,
        metrics_server,
        supervisor: supervisor.clone(),
    };
    let mut died = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            d = deaths.next() => {
                died = Some(d);
                break;
            }
            req = async {
                match reload.as_mut() {
                    Some((rx, _)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(req) = req else {
                    reload = None; // every handle is gone
                    continue;
                };
                let Some((_, path)) = &reload else { continue };
                systemd::notify_reloading();
                let outcome = agent.reload(path).await;
                systemd::notify_ready();
                if let Some(reply) = req.reply {
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    supervisor.stopping();
    if let Some(station) = &station {
        station.stop();
    }
    shutdown::stop(shutdown::Parts {
        agent,
        store,
        spc_stop,
        spc_task,
        aux_stop,
    })
    .await;
    match died {
        Some(d) => Err(anyhow::anyhow!(
            "{d}; stopped so that the service manager restarts lineside"
        )),
        None => Ok(()),
    }
}

/// The parts of the running agent a reload changes.
struct Agent {
    /// The settings in effect (restart-only keys keep their start-up values).
    settings: Settings,
    config_state: Arc<RwLock<ConfigState>>,
    devices: Devices,
    spc: SpcControl,
    uplink: Uplink,
    metrics: Metrics,
    metrics_server: Option<MetricsServer>,
    supervisor: Supervisor,
}

struct MetricsServer {
    stop: CancellationToken,
}

impl Agent {
    /// Re-reads the config and applies it; an invalid one changes nothing. Every outcome is logged.
    async fn reload(&mut self, path: &Path) -> Result<Outcome, ReloadError> {
        tracing::info!(config = %path.display(), "reloading the config");
        let loaded = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || crate::config::load(&path)).await
        };
        let cfg = match loaded {
            Ok(Ok(cfg)) => match validate_for_run(&cfg) {
                Ok(()) => cfg,
                Err(problems) => {
                    let errors = crate::config::ConfigErrors(
                        problems
                            .into_iter()
                            .map(|message| crate::config::ConfigError {
                                file: path.to_path_buf(),
                                line: 0,
                                column: 0,
                                key: String::new(),
                                message,
                            })
                            .collect(),
                    );
                    tracing::error!(%errors, "config reload rejected: the running config stays");
                    return Err(ReloadError::Invalid(errors));
                }
            },
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    errors = errors.0.len(),
                    config = %path.display(),
                    "config reload rejected: the running config stays (check with `lineside check`)"
                );
                return Err(ReloadError::Invalid(errors));
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed");
                return Err(ReloadError::Stopped);
            }
        };
        for w in &cfg.warnings {
            tracing::warn!("{w}");
        }
        let Config {
            devices,
            characteristics,
            device_fingerprints,
            agent,
            store,
            mqtt,
            hash,
            files,
            ..
        } = cfg;
        let plan = reload::plan(&self.settings, &Settings { agent, store, mqtt });
        let mut outcome = Outcome {
            needs_restart: plan.needs_restart.clone(),
            ..Outcome::default()
        };

        // SPC first: the first readings of an added device are then live to the characteristics
        // that chart them.
        match tokio::time::timeout(SPC_RECONFIGURE, self.spc.reconfigure(characteristics)).await {
            Ok(Ok(changes)) => outcome.characteristics = Some(changes),
            Ok(Err(e)) => outcome.failed.push(format!("characteristics: {e:#}")),
            Err(_) => tracing::warn!(
                "SPC is still replaying the store; it applies the new characteristics when done"
            ),
        }
        outcome.devices = self.devices.apply(devices, &device_fingerprints).await;
        self.apply_settings(plan, &mut outcome).await;

        if let Ok(mut state) = self.config_state.write() {
            state.hash = hash;
            state.pending_restart = outcome.needs_restart.clone();
        }
        log_outcome(&outcome, &files);
        Ok(outcome)
    }

    /// Applies the section changes that can be applied while running; what fails keeps its running
    /// value.
    async fn apply_settings(&mut self, plan: reload::Plan, outcome: &mut Outcome) {
        let mut next = plan.effective;
        if plan.log_level {
            match crate::logging::set_level(&next.agent.log_level) {
                Ok(true) => outcome.applied.push("agent.log_level".into()),
                Ok(false) => outcome.failed.push(
                    "agent.log_level: RUST_LOG is set and overrides it (or logging was set up elsewhere)"
                        .into(),
                ),
                Err(e) => {
                    outcome.failed.push(format!("agent.log_level: {e}"));
                    next.agent.log_level = self.settings.agent.log_level.clone();
                }
            }
        }
        if plan.metrics_listen {
            match next.agent.metrics_listen {
                Some(addr) => match serve_metrics(addr, &self.metrics, &self.supervisor).await {
                    Ok(server) => {
                        if let Some(old) = self.metrics_server.replace(server) {
                            old.stop.cancel();
                        }
                        outcome.applied.push("agent.metrics_listen".into());
                    }
                    Err(e) => {
                        outcome.failed.push(format!("agent.metrics_listen: {e:#}"));
                        next.agent.metrics_listen = self.settings.agent.metrics_listen;
                    }
                },
                None => {
                    if let Some(old) = self.metrics_server.take() {
                        old.stop.cancel();
                    }
                    outcome.applied.push("agent.metrics_listen".into());
                }
            }
        }
        if plan.mqtt {
            match self.uplink.restart(&next.mqtt, next.agent.echo).await {
                Ok(()) => outcome.applied.push("mqtt (forwarder restarted)".into()),
                Err(e) => {
                    outcome.failed.push(format!("mqtt: {e:#}"));
                    next.mqtt = self.settings.mqtt.clone();
                }
            }
        }
        if plan.echo && !plan.mqtt {
            match self.uplink.restart_echo(&next.mqtt, next.agent.echo) {
                Ok(()) => outcome.applied.push("agent.echo".into()),
                Err(e) => {
                    outcome.failed.push(format!("agent.echo: {e:#}"));
                    next.agent.echo = self.settings.agent.echo;
                }
            }
        } else if plan.echo {
            outcome.applied.push("agent.echo".into());
        }
        self.settings = next;
    }
}

fn log_outcome(outcome: &Outcome, files: &[std::path::PathBuf]) {
    let d = &outcome.devices;
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    match &outcome.characteristics {
        Some(c) => tracing::info!(
            files = ?files,
            devices_added = ?d.added,
            devices_removed = ?d.removed,
            devices_restarted = ?d.restarted,
            devices_unchanged = d.unchanged,
            characteristics_added = ?c.added,
            characteristics_removed = ?c.removed,
            characteristics_rebuilt = ?c.rebuilt,
            characteristics_updated = ?c.updated,
            applied = ?outcome.applied,
            "config reloaded"
        ),
        None => tracing::info!(
            files = ?files,
            devices_added = ?d.added,
            devices_removed = ?d.removed,
            devices_restarted = ?d.restarted,
            devices_unchanged = d.unchanged,
            applied = ?outcome.applied,
            "config reloaded (characteristics pending)"
        ),
    }
    for f in &outcome.failed {
        tracing::error!(problem = %f, "part of the new config was not applied; its running value stays");
    }
    if !outcome.needs_restart.is_empty() {
        tracing::warn!(
            keys = ?outcome.needs_restart,
            "these settings changed but only take effect after a restart (`systemctl restart lineside`); \
             their running values stay until then"
        );
    }
}

/// The body of the status message: identity, config, counters (devices as they run now).
fn status_fn(
    agent_id: &str,
    started: chrono::DateTime<Utc>,
    metrics: &Metrics,
    config: &Arc<RwLock<ConfigState>>,
) -> uplink::StatusFn {
    let metrics = metrics.clone();
    let agent = agent_id.to_string();
    let config = config.clone();
    Arc::new(move |state: &str| {
        let (hash, pending) = match config.read() {
            Ok(c) => (c.hash.clone(), c.pending_restart.clone()),
            Err(_) => (String::new(), Vec::new()),
        };
        let mut body = serde_json::json!({
            "agent": agent,
            "epoch": metrics.store.epoch_str(),
            "state": state,
            "version": VERSION,
            "config_hash": format!("sha256:{hash}"),
            "started": crate::timefmt::rfc3339(started),
            "ts": crate::timefmt::rfc3339(Utc::now()),
            "metrics": metrics.json(),
        });
        if !pending.is_empty() {
            body["config_pending_restart"] = serde_json::json!(pending);
        }
        body
    })
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: &Metrics,
    supervisor: &Supervisor,
) -> Result<MetricsServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    tracing::info!(%addr, "serving metrics at /metrics and /status");
    let stop = CancellationToken::new();
    supervisor.spawn_until(
        "metrics server",
        &stop,
        crate::metrics::serve(listener, metrics.clone(), stop.clone()),
    );
    Ok(MetricsServer { stop })
}

#[cfg(feature = "embedded-broker")]
async fn start_embedded_broker(mqtt: &MqttConfig) -> Result<()> {
    let url = BrokerUrl::parse(&mqtt.url).map_err(anyhow::Error::msg)?;
    let addr: SocketAddr = format!(
        "{}:{}",
        if url.host == "localhost" {
            "127.0.0.1"
        } else {
            &url.host
        },
        url.port
    )
    .parse()
    .context("embedded broker address")?;
    crate::broker::start(addr)?;
    crate::broker::wait_ready(addr).await?;
    tracing::info!(%addr, "embedded broker listening");
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
async fn start_embedded_broker(_mqtt: &MqttConfig) -> Result<()> {
    anyhow::bail!("this build has no embedded broker (cargo feature `embedded-broker`)")
}
