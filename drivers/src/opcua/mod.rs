//! OPC UA client driver (async-opcua): monitored items on one subscription, or polled reads.
//!
//! The connection loop lives here; [`session`] opens sessions, [`subscription`] and [`poll`] serve one
//! session until it is lost, and the loop then rebuilds everything with backoff. Faults are data: a tag
//! whose node is missing, a lost link or a refused certificate become bad-quality readings with the reason,
//! and counters in [`crate::DeviceMetrics`].
//!
//! Commissioning helpers (browse, endpoints, certificate trust) are in [`commission`] and [`pki`].

pub mod commission;
pub mod config;
pub mod nodeid;
pub mod pki;
mod poll;
pub mod security;
pub mod session;
mod subscription;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use crate::config::ConfigIssue;
use crate::device::{
    Backoff, Device, DeviceContext, DeviceFuture, DeviceState, ErrorBurst, TagInfo,
};
use crate::reading::Reading;
use config::{Acquisition, DeviceConfig, Tag};
use session::{ClientSettings, Connected};
use values::TagShape;

pub use config::Deadband;

/// Parses one `[[device]]` table (without `name` and `driver`).
pub(crate) fn parse(name: &str, table: toml::Table) -> Result<Box<dyn Device>, Vec<ConfigIssue>> {
    Ok(Box::new(parse_device(name, table)?))
}

/// Parses a device table into the concrete device (tests and tools use this to reach the OPC UA specifics).
pub fn parse_device(name: &str, table: toml::Table) -> Result<OpcuaDevice, Vec<ConfigIssue>> {
    let (cfg, tags) = config::parse(table)?;
    Ok(OpcuaDevice {
        name: name.to_string(),
        cfg,
        tags,
    })
}

/// A configured OPC UA device.
#[derive(Debug, Clone)]
pub struct OpcuaDevice {
    name: String,
    cfg: DeviceConfig,
    tags: Vec<Tag>,
}

impl OpcuaDevice {
    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    /// Client settings for this device, with paths resolved against the agent's state dir.
    pub fn client_settings(&self, state_dir: &std::path::Path) -> ClientSettings {
        ClientSettings {
            endpoint: self.cfg.endpoint.clone(),
            policy: self.cfg.security_policy,
            mode: self.cfg.security_mode,
            identity: self.cfg.identity.clone(),
            base_dir: state_dir.to_path_buf(),
            pki_dir: self.cfg.pki_dir(state_dir),
            auto_trust: self.cfg.auto_trust,
            application_name: "lineside".to_string(),
            application_uri: self
                .cfg
                .application_uri
                .clone()
                .unwrap_or_else(ClientSettings::default_application_uri),
            request_timeout: self.cfg.request_timeout,
            keep_alive_interval: self.cfg.keep_alive_interval,
            session_timeout: self.cfg.session_timeout,
        }
    }
}

impl Device for OpcuaDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "opcua"
    }

    fn tags(&self) -> Vec<TagInfo> {
        let mut out = Vec::new();
        for t in &self.tags {
            let names: Vec<String> = match t.array_elements {
                Some(n) => (0..n).map(|i| format!("{}[{i}]", t.name)).collect(),
                None => vec![t.name.clone()],
            };
            for name in names {
                out.push(TagInfo {
                    name,
                    unit: t.unit.clone(),
                    numeric: t.kind.numeric(),
                    writable: false,
                });
            }
        }
        out
    }

    fn plan(&self) -> Option<String> {
        Some(plan(&self.cfg, &self.tags))
    }

    fn run(self: Box<Self>, ctx: DeviceContext) -> DeviceFuture {
        Box::pin(run(*self, ctx))
    }
}

fn plan(cfg: &DeviceConfig, tags: &[Tag]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "opcua {} security {}/{} identity {}{}",
        cfg.endpoint,
        cfg.security_policy.name(),
        cfg.security_mode.name(),
        cfg.identity.describe(),
        if cfg.auto_trust {
            " (auto-trust server certificates: commissioning only)"
        } else {
            ""
        }
    );
    match cfg.mode {
        Acquisition::Subscription => {
            let _ = writeln!(
                s,
                "  1 subscription, publishing every {}, {} monitored items ({} per CreateMonitoredItems)",
                humantime::format_duration(cfg.publishing_interval),
                tags.len(),
                cfg.max_nodes_per_request
            );
        }
        Acquisition::Poll => {
            let requests = tags
                .len()
                .div_ceil(cfg.max_nodes_per_request.max(1) as usize);
            let _ = writeln!(
                s,
                "  poll every {}: {} Read request(s) for {} nodes",
                humantime::format_duration(cfg.poll_interval),
                requests,
                tags.len()
            );
        }
    }
    for t in tags {
        let mut extra = String::new();
        if cfg.mode == Acquisition::Subscription {
            let _ = write!(
                extra,
                " sampling {} queue {}",
                humantime::format_duration(t.sampling_interval),
                t.queue_size
            );
            match t.deadband {
                Some(Deadband::Absolute(v)) => {
                    let _ = write!(extra, " deadband {v} (absolute)");
                }
                Some(Deadband::Percent(v)) => {
                    let _ = write!(extra, " deadband {v}% of EURange");
                }
                None => {}
            }
        }
        if let Some(n) = t.array_elements {
            let _ = write!(
                extra,
                " array of {n} -> {}[0..{}]",
                t.name,
                n.saturating_sub(1)
            );
        }
        let _ = writeln!(s, "  {} <- {}{}", t.name, t.node, extra);
    }
    s
}

/// What the run loop shares with the session servers.
pub(crate) struct Runtime {
    pub cfg: DeviceConfig,
    pub tags: Vec<Tag>,
    pub shapes: Vec<TagShape>,
    pub ctx: DeviceContext,
}

impl Runtime {
    /// Bad readings for every tag (link down, session lost).
    pub fn all_bad(&self, reason: &str) -> Vec<Reading> {
        let now = Utc::now();
        let reason: Arc<str> = Arc::from(reason);
        let mut out = Vec::with_capacity(self.shapes.len());
        for shape in &self.shapes {
            shape.bad(now, &reason, &mut out);
        }
        out
    }
}

/// How serving one session ended.
pub(crate) enum End {
    Shutdown,
    /// The store is closed: the agent is stopping.
    SinkClosed,
    /// The session is unusable; rebuild it.
    Lost(String),
}

async fn run(dev: OpcuaDevice, ctx: DeviceContext) {
    let device: Arc<str> = Arc::from(dev.name.as_str());
    let settings = dev.client_settings(&ctx.state_dir);
    let shapes = dev
        .tags
        .iter()
        .map(|t| {
            TagShape::new(
                &device,
                &t.name,
                t.unit.as_deref(),
                t.kind,
                t.array_elements,
            )
        })
        .collect();
    let rt = Runtime {
        cfg: dev.cfg,
        tags: dev.tags,
        shapes,
        ctx,
    };
    run_loop(&rt, &settings).await;
    rt.ctx.metrics.set_state(DeviceState::Stopped);
}

async fn run_loop(rt: &Runtime, settings: &ClientSettings) {
    let ctx = &rt.ctx;
    let metrics = &ctx.metrics;
    let mut backoff = Backoff::new(rt.cfg.reconnect_initial, rt.cfg.reconnect_max);
    let mut burst = ErrorBurst::new(Duration::from_secs(300));
    let mut client = None;
    let mut ever_connected = false;
    // The cause of the current outage, so that a new cause is logged at once (an untrusted certificate,
    // then a refused password, ...). Readings follow the cause by themselves: every failed attempt
    // publishes bad readings, and report by exception (`DeviceContext::publish`) passes on only the new
    // reasons and a heartbeat.
    let mut last_failure: Option<String> = None;
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let failure = match client.as_mut() {
            None => match session::build_client_async(settings).await {
                Ok(c) => {
                    client = Some(c);
                    continue;
                }
                Err(e) => format!("client set-up: {e}"),
            },
            Some(c) => match session::connect(c, settings).await {
                Ok(conn) => {
                    metrics.set_state(DeviceState::Connected);
                    if ever_connected {
                        metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    backoff.reset();
                    if let Some(suppressed) = burst.ok() {
                        tracing::info!(
                            device = %rt.ctx.metrics.device,
                            endpoint = %settings.endpoint,
                            suppressed,
                            "opcua: connected again"
                        );
                    } else {
                        tracing::info!(device = %rt.ctx.metrics.device, endpoint = %settings.endpoint, "opcua: connected");
                    }
                    match serve(rt, conn).await {
                        End::Shutdown | End::SinkClosed => return,
                        End::Lost(reason) => {
                            metrics.set_state(DeviceState::Disconnected);
                            metrics.errors.fetch_add(1, Ordering::Relaxed);
                            metrics.set_last_error(reason.clone());
                            tracing::warn!(device = %rt.ctx.metrics.device, %reason, "opcua: session lost; reconnecting");
                            if ctx.publish(rt.all_bad(&reason)).await.is_err() {
                                return;
                            }
                            last_failure = Some(reason);
                            // A quick first retry: a server restart is usually over in seconds.
                            continue_after(rt, backoff.next_delay()).await;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    if e.timeout {
                        metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        metrics.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    e.message
                }
            },
        };
        metrics.set_state(DeviceState::Disconnected);
        metrics.set_last_error(failure.clone());
        let new_cause = last_failure.as_deref() != Some(failure.as_str());
        if burst.error() || new_cause {
            tracing::warn!(
                device = %rt.ctx.metrics.device,
                endpoint = %settings.endpoint,
                error = %failure,
                suppressed = burst.take_suppressed(),
                "opcua: cannot connect; retrying with backoff"
            );
        }
        if ctx
            .publish(rt.all_bad(&format!("not connected: {failure}")))
            .await
            .is_err()
        {
            return;
        }
        last_failure = Some(failure);
        continue_after(rt, backoff.next_delay()).await;
    }
}

/// Sleeps unless shutdown comes first.
async fn continue_after(rt: &Runtime, delay: Duration) {
    tokio::select! {
        _ = rt.ctx.shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

async fn serve(rt: &Runtime, conn: Connected) -> End {
    let mut conn = conn;
    let end = match rt.cfg.mode {
        Acquisition::Subscription => subscription::serve(rt, &mut conn).await,
        Acquisition::Poll => poll::serve(rt, &mut conn).await,
    };
    if matches!(end, End::Shutdown | End::SinkClosed) {
        conn.close(Duration::from_secs(2)).await;
    }
    end
}

/// The default PKI directory for tools that have no device config at hand.
pub fn default_pki_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("opcua-pki")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !(name.starts_with("opcua-") && name.ends_with(".toml")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: toml::Table = toml::from_str(&text).unwrap();
            let devices = doc["device"].as_array().unwrap();
            for d in devices {
                let mut table = d.as_table().unwrap().clone();
                let dev_name = table.remove("name").unwrap().as_str().unwrap().to_string();
                let driver = table.remove("driver").unwrap();
                if driver.as_str() != Some("opcua") {
                    continue;
                }
                let dev =
                    parse_device(&dev_name, table).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
                assert!(!dev.tags().is_empty());
                assert!(dev.plan().unwrap().contains("opc.tcp://"));
                seen += 1;
            }
        }
        assert!(
            seen >= 2,
            "expected the OPC UA example devices, found {seen}"
        );
    }

    #[test]
    fn tags_and_plan_show_arrays_and_deadbands() {
        let table: toml::Table = toml::from_str(
            "endpoint = \"opc.tcp://cnc1:4840\"\nsecurity_policy = \"Basic256Sha256\"\n\
             security_mode = \"SignAndEncrypt\"\n\
             [[tag]]\nname = \"bore\"\nnode = \"nsu=urn:cnc;s=Bore\"\nunit = \"mm\"\ndeadband_absolute = 0.001\n\
             [[tag]]\nname = \"temps\"\nnode = \"ns=2;i=7\"\narray_elements = 3\n\
             [[tag]]\nname = \"program\"\nnode = \"ns=2;s=Prog\"\nkind = \"string\"\n",
        )
        .unwrap();
        let dev = parse_device("cnc1", table).unwrap();
        let names: Vec<_> = dev
            .tags()
            .into_iter()
            .map(|t| (t.name, t.numeric))
            .collect();
        assert_eq!(
            names,
            [
                ("bore".to_string(), true),
                ("temps[0]".to_string(), true),
                ("temps[1]".to_string(), true),
                ("temps[2]".to_string(), true),
                ("program".to_string(), false)
            ]
        );
        let plan = dev.plan().unwrap();
        assert!(plan.contains("Basic256Sha256/SignAndEncrypt"), "{plan}");
        assert!(
            plan.contains(
                "bore <- nsu=urn:cnc;s=Bore sampling 1s queue 10 deadband 0.001 (absolute)"
            ),
            "{plan}"
        );
        assert!(plan.contains("temps[0..2]"), "{plan}");
    }
}
