//! The MQTT client settings of every connection, and the limits derived from the config.

use anyhow::{Context, Result};
use rumqttc::{LastWill, MqttOptions, QoS, Transport};

use super::tls;
use crate::bus::Topics;
use crate::config::{BrokerUrl, MqttConfig};

/// Request slots for side messages (SPC points, retained alarm state), beyond the data window.
pub const SIDE_SLOTS: usize = 32;
/// Request slots for status messages and the subscription, beyond the side slots.
pub const STATUS_SLOTS: usize = 8;
/// Largest message read from the broker. Only commands arrive (bounded far lower by
/// `mqtt.max_command_size`), but a larger one must be read and rejected rather than drop the connection
/// (a retained one would otherwise do that again after every reconnect).
pub const INCOMING_MAX: usize = 4 * 1024 * 1024;

/// How much may be in flight, and how large a message may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Data messages (readings and events) published and unacknowledged at most.
    pub window: usize,
    /// Everything published and unacknowledged at most (data, side, status).
    pub total: usize,
    /// Largest packet the client writes.
    pub packet_max: usize,
    /// Side messages (beyond the data window) in flight at most.
    side_slots: usize,
}

impl Limits {
    pub fn new(cfg: &MqttConfig) -> Limits {
        let window = cfg.inflight.max(1) as usize;
        Limits {
            window,
            total: window + SIDE_SLOTS + STATUS_SLOTS,
            packet_max: (cfg.max_message_size as usize + 4096).max(64 * 1024),
            side_slots: SIDE_SLOTS,
        }
    }

    /// While isolating a refused message (`super::isolation`): one message in flight at a time,
    /// whatever it is.
    pub fn isolating(&self) -> Limits {
        Limits {
            window: 1,
            total: 1,
            side_slots: 0,
            ..*self
        }
    }

    /// Side messages are published while fewer than this many messages are in flight.
    pub fn side_limit(&self) -> usize {
        self.window + self.side_slots
    }

    /// Whether a publish of `payload` on `topic` fits in one packet (fixed header, topic length,
    /// packet id).
    pub fn fits(&self, topic: &str, payload: usize) -> bool {
        payload + topic.len() + 16 <= self.packet_max
    }
}

pub fn mqtt_options(cfg: &MqttConfig, agent_id: &str, topics: &Topics) -> Result<MqttOptions> {
    let mut opts = base_options(cfg, &client_id(cfg, agent_id))?;
    let will = serde_json::to_vec(
        &serde_json::json!({"agent": agent_id, "state": "offline", "reason": "connection lost"}),
    )?;
    opts.set_last_will(LastWill::new(topics.status(), will, QoS::AtLeastOnce, true));
    Ok(opts)
}

/// The forwarder's client id: configured, or `lineside-<agent id>`.
pub fn client_id(cfg: &MqttConfig, agent_id: &str) -> String {
    cfg.client_id
        .clone()
        .unwrap_or_else(|| format!("lineside-{agent_id}"))
}

/// Everything but the last will: broker, limits, credentials, TLS. Also the short-lived client that
/// reads the retained high-water message at start (`super::high_water`).
pub fn base_options(cfg: &MqttConfig, client_id: &str) -> Result<MqttOptions> {
    let url = BrokerUrl::parse(&cfg.url).map_err(anyhow::Error::msg)?;
    let limits = Limits::new(cfg);
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(true);
    // rumqttc hands out packet ids 1..=inflight in turn. More ids than we ever have in flight means an
    // id is reused only long after the broker acknowledged it (acknowledgements come in order): no
    // collision, the state rumqttc cannot recover from.
    let ids = (limits.total + STATUS_SLOTS).min(u16::MAX as usize - 1) as u16;
    opts.set_inflight(ids);
    opts.set_request_channel_capacity(limits.total + 64);
    opts.set_max_packet_size(INCOMING_MAX.max(limits.packet_max), limits.packet_max);
    if let Some(user) = &cfg.username {
        opts.set_credentials(user.clone(), tls::password(cfg)?.unwrap_or_default());
    }
    if url.tls {
        let tls = tls::client_config(cfg).context("MQTT TLS setup")?;
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    Ok(opts)
}
