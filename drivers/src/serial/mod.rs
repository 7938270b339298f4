//! Serial gauges: calipers, micrometers, indicators, height gauges and column amplifiers that send ASCII
//! readings over RS-232 or a USB virtual COM port.
//!
//! Layout: [`config`] (the `[[device]]` table), [`port`] (open with settings, DTR/RTS), [`framing`] (line
//! assembly with a length cap and resync), [`protocols`] (one pure parser per gauge family), [`units`]
//! (normalization per tag), `trigger` (stream / poll / dtr-pulse loops), [`commission`] (port listing
//! and `listen` for `lineside serial ...`). This file ties them into a [`Device`] that reopens a lost port
//! with backoff and never stops on a device fault.

pub mod commission;
pub mod config;
pub mod framing;
pub mod port;
pub mod protocols;
mod tags;
mod trigger;
pub mod units;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use crate::config::ConfigIssue;
use crate::device::{
    Backoff, Device, DeviceContext, DeviceFuture, DeviceState, ErrorBurst, TagInfo,
};
use config::{DeviceConfig, TagField, Trigger};
use framing::escape;
use tags::TagSet;
use trigger::{Session, SessionEnd};

pub use config::{FlowControl, Parity, PortSettings};

/// Builds a serial device from its `[[device]]` table (without `name` and `driver`).
pub fn parse(name: &str, table: toml::Table) -> Result<Box<dyn Device>, Vec<ConfigIssue>> {
    let cfg = config::parse(table)?;
    Ok(Box::new(SerialDevice {
        name: name.to_string(),
        cfg,
    }))
}

/// A configured serial gauge.
pub struct SerialDevice {
    name: String,
    cfg: DeviceConfig,
}

impl SerialDevice {
    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }
}

impl Device for SerialDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "serial"
    }

    fn tags(&self) -> Vec<TagInfo> {
        self.cfg
            .tags
            .iter()
            .map(|t| TagInfo {
                name: t.name.clone(),
                unit: t.unit.as_ref().map(|u| u.name().to_string()),
                numeric: t.field != TagField::Status,
                writable: false,
            })
            .collect()
    }

    fn plan(&self) -> Option<String> {
        Some(plan(&self.cfg))
    }

    fn run(self: Box<Self>, ctx: DeviceContext) -> DeviceFuture {
        Box::pin(run(*self, ctx))
    }
}

fn plan(cfg: &DeviceConfig) -> String {
    let mut s = String::new();
    let p = &cfg.port;
    let _ = write!(
        s,
        "port {} at {}, protocol {}, ",
        p.path,
        p.describe(),
        cfg.protocol.name()
    );
    for (line, level) in [("DTR", p.dtr), ("RTS", p.rts)] {
        if let Some(l) = level {
            let _ = write!(s, "{line} held {}, ", port::level_name(l));
        }
    }
    if !p.exclusive {
        s.push_str("shared (not locked), ");
    }
    if let protocols::Protocol::Line(l) = &cfg.protocol {
        let _ = write!(s, "pattern {:?}, ", l.pattern());
    }
    let timeout = humantime::format_duration(cfg.timeout);
    match &cfg.trigger {
        Trigger::Stream => {
            let _ = write!(
                s,
                "stream (the instrument sends; an incomplete line is dropped after {timeout})"
            );
        }
        Trigger::Poll { interval, requests } => {
            let _ = write!(s, "poll every {}: ", humantime::format_duration(*interval));
            for (i, r) in requests.iter().enumerate() {
                let names: Vec<&str> = r
                    .tags
                    .iter()
                    .filter_map(|&t| cfg.tags.get(t).map(|t| t.name.as_str()))
                    .collect();
                let _ = write!(
                    s,
                    "{}send \"{}\" → {}",
                    if i > 0 { "; " } else { "" },
                    escape(&r.bytes),
                    names.join(", ")
                );
            }
            let _ = write!(s, " (reply timeout {timeout})");
        }
        Trigger::DtrPulse { interval, pulse } => {
            let _ = write!(
                s,
                "dtr-pulse every {}: DTR low for {}, reply timeout {timeout}",
                humantime::format_duration(*interval),
                humantime::format_duration(*pulse)
            );
        }
    }
    let _ = write!(
        s,
        "; lines end with {}, at most {} bytes",
        cfg.terminator.describe(),
        cfg.max_line
    );
    if let Some(u) = &cfg.instrument_unit {
        let _ = write!(s, "; instrument unit {u}");
    }
    for t in &cfg.tags {
        let _ = write!(s, "\n  {} ← {}", t.name, t.field.name());
        if let Some(c) = &t.channel {
            let _ = write!(s, " of channel {c}");
        }
        if let Some(u) = &t.unit {
            let _ = write!(s, " [{u}]");
        }
    }
    s
}

/// Runs until shutdown: open (with backoff), run a trigger session, and on a lost port report it as bad
/// readings, show the device as disconnected and reopen.
async fn run(dev: SerialDevice, ctx: DeviceContext) {
    let SerialDevice { name, cfg } = dev;
    let tags = TagSet::new(&name, &cfg);
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
    let mut burst = ErrorBurst::new(Duration::from_secs(300));
    let mut open_burst = ErrorBurst::new(Duration::from_secs(300));
    let mut ever_open = false;
    // True while the current outage has been reported as bad readings (once per outage, not per retry).
    let mut outage_reported = false;
    while !ctx.shutdown.is_cancelled() {
        let opened = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = port::open(&cfg.port) => r,
        };
        match opened {
            Ok((mut port, warnings)) => {
                ctx.metrics.set_state(DeviceState::Connected);
                if ever_open {
                    ctx.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                ever_open = true;
                if let Some(suppressed) = open_burst.ok() {
                    tracing::info!(device = %name, port = %cfg.port.path, suppressed, "port open again");
                } else {
                    tracing::info!(device = %name, port = %cfg.port.path, "port open ({})", cfg.port.describe());
                }
                for w in warnings {
                    tracing::warn!(device = %name, "{w}");
                }
                let session = Session::new(&mut port, &cfg, &tags, &ctx, &mut burst, &name);
                match session.run().await {
                    SessionEnd::Shutdown => break,
                    SessionEnd::PortLost { reason, got_data } => {
                        drop(port);
                        ctx.metrics.set_state(DeviceState::Disconnected);
                        ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        let reason = format!("port lost: {reason}");
                        ctx.metrics.set_last_error(reason.clone());
                        tracing::warn!(device = %name, port = %cfg.port.path, "{reason}; reopening");
                        // A port that worked for a while starts the retries from the shortest delay; one
                        // that fails right after opening backs off further each time.
                        if got_data {
                            backoff.reset();
                        }
                        let batch = tags.fault(tags.all(), &Arc::from(reason), Utc::now());
                        if ctx.publish(batch).await.is_err() {
                            break;
                        }
                        outage_reported = true;
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                ctx.metrics.set_state(DeviceState::Disconnected);
                ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
                ctx.metrics.set_last_error(reason.clone());
                if open_burst.error() {
                    tracing::warn!(device = %name, "{reason}; retrying with backoff");
                }
                if !outage_reported {
                    let batch = tags.fault(tags.all(), &Arc::from(reason), Utc::now());
                    if ctx.publish(batch).await.is_err() {
                        break;
                    }
                    outage_reported = true;
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    ctx.metrics.set_state(DeviceState::Stopped);
}

#[cfg(test)]
mod tests;
