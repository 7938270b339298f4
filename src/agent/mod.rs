//! The running agent: wires drivers → store → (forwarder, SPC) and handles start-up and shutdown.

mod echo;
pub mod systemd;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use lineside_drivers::{DeviceContext, DeviceMetrics};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, BrokerUrl, Config, Echo, MqttConfig, StoreConfig};
use crate::forward::{Forwarder, ForwarderStats, Topics};
use crate::metrics::Metrics;
use crate::store::Store;

/// How long devices get to stop, and the forwarder to hand over its last acknowledgements, at shutdown.
const DEVICE_STOP: Duration = Duration::from_secs(1);
const FORWARDER_STOP: Duration = Duration::from_millis(2500);
/// How long SPC gets to process the last readings and persist its state at shutdown.
const SPC_STOP: Duration = Duration::from_secs(10);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs until `shutdown` is cancelled, then stops in order: devices, store flush, SPC, forwarder, store.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let started = Utc::now();
    // Devices are Send but not Sync: take them out so no borrow of them lives across an await.
    let Config {
        devices,
        characteristics,
        ..
    } = config;
    let config = Settings {
        agent: config.agent,
        store: config.store,
        mqtt: config.mqtt,
        hash: config.hash,
    };
    if config.mqtt.embedded_broker {
        start_embedded_broker(&config.mqtt).await?;
    }
    std::fs::create_dir_all(&config.agent.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            config.agent.state_dir.display()
        )
    })?;
    // Shared with the SPC task, which stores its alarm events; closed once that task has ended.
    let store = Arc::new(
        Store::open(&config.store, config.agent.ingest_queue).context("opening the store")?,
    );
    tracing::info!(path = %store.path().display(), last_seq = store.watch_committed().borrow().readings, "store open");

    // SPC is created before the devices start: what the store holds now is history to it. It answers
    // every command the forwarder does not handle itself, and publishes through the forwarder.
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (side_tx, side_rx) = mpsc::channel(1024);
    let spc = crate::spc::Spc::new(
        characteristics,
        store.clone(),
        side_tx,
        commands_rx,
        crate::spc::SpcTopics::new(&config.mqtt.topic_prefix, &config.agent.id),
        &config.agent.state_dir,
    );

    let devices_stop = CancellationToken::new();
    let mut device_metrics = Vec::new();
    let mut device_tasks = Vec::new();
    for device in devices {
        let metrics = Arc::new(DeviceMetrics::new(device.name(), device.kind()));
        device_metrics.push(metrics.clone());
        let ctx = DeviceContext {
            sink: store.sink(),
            metrics,
            shutdown: devices_stop.clone(),
            state_dir: config.agent.state_dir.clone(),
        };
        tracing::info!(
            device = device.name(),
            driver = device.kind(),
            "starting device"
        );
        device_tasks.push(tokio::spawn(device.run(ctx)));
    }

    let forwarder_stats = Arc::new(ForwarderStats::default());
    let metrics = Metrics {
        store: store.stats(),
        forwarder: forwarder_stats.clone(),
        devices: device_metrics,
    };
    let status = {
        let metrics = metrics.clone();
        let agent = config.agent.id.clone();
        let hash = config.hash.clone();
        Arc::new(move |state: &str| {
            serde_json::json!({
                "agent": agent,
                "state": state,
                "version": VERSION,
                "config_hash": format!("sha256:{hash}"),
                "started": crate::forward::rfc3339(started),
                "ts": crate::forward::rfc3339(Utc::now()),
                "metrics": metrics.json(),
            })
        })
    };
    let topics = Topics::new(&config.mqtt.topic_prefix, &config.agent.id);
    let forwarder = Forwarder {
        cfg: config.mqtt.clone(),
        agent_id: config.agent.id.clone(),
        topics: topics.clone(),
        reader: store.reader().context("opening a store reader")?,
        acker: store.acker(),
        committed: store.watch_committed(),
        stats: forwarder_stats,
        status,
        commands: commands_tx,
        side: side_rx,
    };
    let mqtt_options = forwarder.mqtt_options()?;
    let forwarder_stop = CancellationToken::new();
    let forwarder_task = tokio::spawn(forwarder.run(forwarder_stop.clone()));

    let aux_stop = CancellationToken::new();
    if config.agent.echo != Echo::Off {
        let base = format!("{}/{}", config.mqtt.topic_prefix, config.agent.id);
        tokio::spawn(echo::run(
            mqtt_options,
            base,
            config.agent.echo,
            aux_stop.clone(),
        ));
    }
    if let Some(addr) = config.agent.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(%addr, "serving metrics at /metrics and /status");
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            aux_stop.clone(),
        ));
    }
    {
        let committed = store.watch_committed();
        tokio::spawn(systemd::watchdog(
            move || committed.has_changed().is_ok(),
            aux_stop.clone(),
        ));
    }
    let spc_stop = CancellationToken::new();
    let spc_task = tokio::spawn(spc.run(spc_stop.clone()));
    systemd::notify_ready();
    tracing::info!(agent = %config.agent.id, version = VERSION, "lineside running");

    shutdown.cancelled().await;
    systemd::notify_stopping();
    tracing::info!("stopping");
    devices_stop.cancel();
    for task in device_tasks {
        if tokio::time::timeout(DEVICE_STOP, task).await.is_err() {
            tracing::warn!("a device did not stop in time");
        }
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
    // SPC takes the last readings, stores its alarms and hands its messages to the forwarder first.
    spc_stop.cancel();
    match tokio::time::timeout(SPC_STOP, spc_task).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "SPC failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "SPC task panicked"),
        Err(_) => tracing::warn!("SPC did not stop in time"),
        _ => {}
    }
    forwarder_stop.cancel();
    match tokio::time::timeout(FORWARDER_STOP, forwarder_task).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "forwarder failed"),
        Err(_) => tracing::warn!("forwarder did not stop in time"),
        _ => {}
    }
    aux_stop.cancel();
    match Arc::try_unwrap(store) {
        Ok(store) => tokio::task::spawn_blocking(move || store.close())
            .await
            .context("closing the store")?,
        // A task that did not stop in time still holds it; the last holder closes it on drop.
        Err(_) => tracing::warn!("the store is still in use; it closes when its last user ends"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The parts of the config the runtime keeps after the devices have been started.
struct Settings {
    agent: AgentConfig,
    store: StoreConfig,
    mqtt: MqttConfig,
    hash: String,
}

#[cfg(feature = "embedded-broker")]
async fn start_embedded_broker(mqtt: &MqttConfig) -> Result<()> {
    let url = BrokerUrl::parse(&mqtt.url).map_err(anyhow::Error::msg)?;
    let addr: std::net::SocketAddr = format!(
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
