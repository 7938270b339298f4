//! The operator station: live control charts, alarms and device health in the browser, served by the
//! agent itself (`[station] listen`).
//!
//! - `hub`: the in-memory view, fed by the same side messages the forwarder publishes (a broadcast
//!   tap on the uplink's relay) and by the store's committed batches; history comes from the store
//!   once at start (`history`).
//! - `http`, `sse`, `serve`: the routes, the live feed (server-sent events), plain or TLS listener.
//! - `auth`, `users`: sessions, CSRF, login rate limit; the users file with argon2 hashes.
//! - `payloads`: every assumption about SPC's message schemas, in one place.
//! - `assets`: the pages, script, styles, embedded in the binary.
//!
//! Writes (acknowledge, shelve, recalculate) become the same `Command`s the MQTT command topic
//! produces, with the logged-in user as `by`, so SPC stores the same events for both.

mod assets;
pub mod auth;
mod history;
mod http;
mod hub;
pub mod payloads;
mod serve;
mod sse;
pub mod users;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{CharacteristicConfig, StationConfig};
use crate::forward::{Command, SidePublish};
use crate::metrics::Metrics;
use crate::store::Store;

pub use hub::Hub;

/// How often the device summary is pushed to open pages.
const DEVICES_EVERY: Duration = Duration::from_secs(2);

/// What the request handlers share.
pub struct Shared {
    pub(crate) cfg: StationConfig,
    pub(crate) agent_id: String,
    pub(crate) hub: Arc<Hub>,
    pub(crate) auth: auth::Auth,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) metrics: Metrics,
    pub(crate) tls: bool,
    pub(crate) streams: http::StreamCount,
    pub(crate) login_slots: Arc<Semaphore>,
    pub(crate) next_command: AtomicU64,
}

/// What the agent hands the station.
pub struct StationParts {
    pub agent_id: String,
    /// `<prefix>/<agent id>`: the topics SPC publishes under.
    pub topic_base: String,
    pub characteristics: Vec<CharacteristicConfig>,
    pub store: Arc<Store>,
    /// SPC's state file (computed limits for the history).
    pub spc_state: PathBuf,
    /// The uplink relay's tap: every side message SPC publishes.
    pub side: broadcast::Receiver<SidePublish>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub metrics: Metrics,
}

/// A running station.
pub struct Station {
    pub addr: std::net::SocketAddr,
    pub tls: bool,
    stop: CancellationToken,
}

impl Station {
    /// `http(s)://addr/`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}/",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Hands a command of the logged-in `user` to SPC on the channel the MQTT command topic feeds. (One
/// function, so a change of the command path or its envelope is a change here: SPC-SCHEMA.md's
/// `crate::spc::station_command(user, body)`, which also marks it `via = "station"`, replaces the
/// body below once it exists; until then `by` is set by the payload builders.)
pub fn submit_command(
    commands: &mpsc::UnboundedSender<Command>,
    user: &str,
    mut body: Value,
) -> Result<(), String> {
    body["by"] = user.into();
    commands
        .send(Command { body })
        .map_err(|_| "SPC is not running".to_string())
}

/// The device health page's document: the agent's device counters plus what the station saw
/// committed (last reading, bad-quality share).
pub(crate) fn devices_doc(shared: &Shared) -> Value {
    let m = shared.metrics.json();
    let seen = shared.hub.devices_seen();
    let devices: Vec<Value> = m
        .get("devices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut d| {
            let name = d
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let (Some(s), Value::Object(o)) = (seen.get(&name), &mut d) {
                o.insert("seen".into(), s.clone());
            }
            d
        })
        .collect();
    json!({"devices": devices, "forwarder": m.get("forwarder"), "store": m.get("store")})
}

/// Starts the station when `[station] listen` is set: loads the history, starts the feed and the
/// listener. Returns None when the station is off.
pub async fn start(cfg: &StationConfig, parts: StationParts) -> Result<Option<Station>> {
    let Some(listen) = cfg.listen else {
        return Ok(None);
    };
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(serve::tls_acceptor(c, k).context("station TLS")?),
        _ => None,
    };
    let hub = Arc::new(Hub::new(
        &parts.topic_base,
        cfg.history,
        &parts.characteristics,
    ));
    // Batches first, so no committed reading slips between the history and the live feed.
    let mut batches = parts.store.subscribe();
    {
        let db = parts.store.path().to_path_buf();
        let state = parts.spc_state.clone();
        let chars = parts.characteristics.clone();
        let history = cfg.history;
        let hub = hub.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            for c in &chars {
                match history::load(&db, &state, c, history) {
                    Ok(h) => hub.seed(&c.spec.name, h.points, h.values),
                    Err(e) => {
                        tracing::warn!(characteristic = %c.spec.name, error = %e, "station: no history")
                    }
                }
            }
        });
        if loaded.await.is_err() {
            tracing::warn!("station: loading the history failed");
        }
    }
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        agent_id: parts.agent_id,
        hub: hub.clone(),
        auth: auth::Auth::new(cfg.users_file.clone(), cfg.session_idle, cfg.login_attempts),
        commands: parts.commands,
        metrics: parts.metrics,
        tls: tls.is_some(),
        streams: Default::default(),
        login_slots: Arc::new(Semaphore::new(2)),
        next_command: AtomicU64::new(1),
    });
    // The feed: side messages and committed batches into the hub; the device summary every 2 s.
    {
        let hub = hub.clone();
        let stop = stop.clone();
        let mut side = parts.side;
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DEVICES_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut side_open, mut batches_open) = (true, true);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    m = side.recv(), if side_open => match m {
                        Ok(m) => hub.on_side(&m),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "station feed fell behind SPC's messages");
                        }
                        Err(broadcast::error::RecvError::Closed) => side_open = false,
                    },
                    b = batches.recv(), if batches_open => match b {
                        Ok(b) => hub.on_batch(&b),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => batches_open = false,
                    },
                    _ = tick.tick() => {
                        if shared.streams.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                            hub.broadcast_ephemeral("devices", devices_doc(&shared));
                        }
                    }
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("station: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let is_tls = tls.is_some();
    tokio::spawn(serve::run(
        listener,
        tls,
        http::router(shared),
        stop.clone(),
    ));
    let station = Station {
        addr,
        tls: is_tls,
        stop,
    };
    tracing::info!(url = %station.url(), "operator station serving");
    Ok(Some(station))
}
