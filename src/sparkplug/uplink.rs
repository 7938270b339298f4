//! What the forwarder needs to speak Sparkplug on its connections (`mqtt.encoding = "sparkplug"`).
//!
//! The forwarder keeps its design (one fresh client per connection, cursor moved on PUBACK, window,
//! size checks, quarantine, watchdog); this type supplies the Sparkplug parts at its seams:
//! the will and bdSeq of each connection, the subscriptions, the births once connected (and once the
//! primary host is online), DDATA from the store's readings, NCMD/STATE handling, node metrics from the
//! status body, DDEATH/DBIRTH from the devices' connection state, SPC metrics from the side messages,
//! and the NDEATH before a deliberate disconnect.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lineside_drivers::{Quality, Reading, Value};
use rumqttc::{LastWill, MqttOptions, QoS};
use serde_json::Value as Json;

use super::bdseq::{BdSeqError, BdSeqFile};
use super::catalog::{Catalog, TagSpec};
use super::datatype::DataType;
use super::host::{HostChange, PrimaryHost};
use super::node::{EdgeNode, Message, NodeCommand, PackLimits, Packed};
use super::spc;
use super::topic::{Incoming, MessageType, NodeTopics};
use crate::config::SparkplugConfig;
use crate::store::{StoreReader, StoredReading};

/// Readings scanned (back from the head of the store) for the current values a birth announces.
const BIRTH_SCAN: u64 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("sparkplug: {0}")]
    Id(#[from] super::topic::IdError),
}

/// What an incoming message on a Sparkplug topic asks the forwarder to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Publish the birth sequence now (rebirth request, or the primary host came online).
    Birth,
    /// The primary host went offline: publish the NDEATH, disconnect, and start over.
    EndSession,
}

pub struct Uplink {
    node: EdgeNode,
    bdseq: BdSeqFile,
    host: Option<PrimaryHost>,
    /// `<prefix>/<agent>`: where SPC's side messages are published.
    side_base: String,
    spc_device: Arc<str>,
    /// Device connection states last seen in the status body.
    device_states: BTreeMap<String, bool>,
}

impl Uplink {
    pub fn new(
        cfg: &SparkplugConfig,
        agent_id: &str,
        side_base: &str,
    ) -> Result<Self, UplinkError> {
        let node_id = cfg.edge_node_id.as_deref().unwrap_or(agent_id);
        let topics = NodeTopics::new(&cfg.group_id, node_id)?;
        let tags: Vec<TagSpec> = cfg
            .tags
            .iter()
            .map(|t| TagSpec {
                device: t.device.clone(),
                tag: t.tag.clone(),
                unit: t.unit.clone(),
                datatype: if t.numeric {
                    DataType::Double
                } else {
                    DataType::String
                },
            })
            .collect();
        Ok(Uplink {
            node: EdgeNode::new(topics, Catalog::new(&tags), cfg.rebirth_min_interval),
            bdseq: BdSeqFile::in_dir(&cfg.state_dir),
            host: cfg.primary_host_id.as_deref().map(PrimaryHost::new),
            side_base: side_base.to_string(),
            spc_device: Arc::from(cfg.spc_device.as_str()),
            device_states: BTreeMap::new(),
        })
    }

    pub fn node(&self) -> &EdgeNode {
        &self.node
    }

    /// A new connection: the next bdSeq (persisted first) and its NDEATH as the will (QoS 1, not
    /// retained), replacing the JSON status will. If the file cannot be written the number still
    /// increments in memory (a restart may then repeat one; logged).
    pub fn prepare_connect(&mut self, opts: &mut MqttOptions) -> u8 {
        let bd = match self.bdseq.next() {
            Ok(bd) => bd,
            Err(e) => {
                log_bdseq_error(&e);
                self.node.bd_seq().wrapping_add(1)
            }
        };
        let will = self.node.connect(bd, Utc::now());
        opts.set_last_will(LastWill::new(
            will.topic,
            will.payload,
            QoS::AtLeastOnce,
            false,
        ));
        if let Some(h) = &mut self.host {
            h.reset_session();
        }
        bd
    }

    /// Topics to subscribe after the ConnAck (QoS 1): the node's NCMD, and the primary host's STATE.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut subs = vec![self.node.topics().node_topic(MessageType::NCmd)];
        if let Some(h) = &self.host {
            subs.push(NodeTopics::state(h.id()));
        }
        subs
    }

    /// Births may go out: no primary host is configured, or it says it is online.
    pub fn may_birth(&self) -> bool {
        self.host.as_ref().is_none_or(|h| h.online())
    }

    pub fn born(&self) -> bool {
        self.node.born()
    }

    /// The birth sequence. `committed` is the store's head: everything up to it is backlog and goes
    /// out as historical; the births announce the newest value of each tag up to it.
    pub fn birth(
        &mut self,
        reader: &mut StoreReader,
        committed: u64,
        status: &Json,
    ) -> rusqlite::Result<Vec<Message>> {
        let latest = reader.latest_per_tag(committed, BIRTH_SCAN)?;
        self.node.remember_latest(&latest);
        // Devices the status says are down are born only when they are back.
        self.apply_device_states(status);
        let metrics = node_metrics(status);
        Ok(self
            .node
            .birth(Utc::now(), &metrics, committed, Instant::now()))
    }

    /// Handles a message on a Sparkplug topic (NCMD, STATE).
    pub fn incoming(&mut self, topic: &str, payload: &[u8]) -> Action {
        match self.node.topics().parse_incoming(topic) {
            Some(Incoming::NCmd) => match self.node.command(payload, Instant::now()) {
                NodeCommand::Rebirth if self.node.born() => Action::Birth,
                NodeCommand::RebirthDeferred => {
                    tracing::info!(
                        "rebirth requested again within sparkplug.rebirth_min_interval; deferred"
                    );
                    Action::None
                }
                _ => Action::None,
            },
            Some(Incoming::State { host }) => {
                let Some(h) = self.host.as_mut().filter(|h| h.id() == host) else {
                    return Action::None;
                };
                match h.on_state(payload) {
                    HostChange::Online if !self.node.born() => {
                        tracing::info!(host, "the primary host is online: publishing births");
                        Action::Birth
                    }
                    HostChange::Offline if self.node.born() => {
                        tracing::warn!(
                            host,
                            "the primary host went offline: ending the Sparkplug session; data is held in the store"
                        );
                        Action::EndSession
                    }
                    _ => Action::None,
                }
            }
            _ => Action::None,
        }
    }

    /// A rebirth deferred by the rate limit is due.
    pub fn rebirth_due(&self, now: Instant) -> bool {
        self.node.rebirth_due().is_some_and(|t| now >= t)
    }

    /// DDATA (and DBIRTHs where needed) for readings in store order.
    pub fn pack(&mut self, rows: &[StoredReading], limits: PackLimits) -> Packed {
        self.node.pack(rows, Utc::now(), limits)
    }

    /// Changed node metrics (NDATA), and DDEATH/DBIRTH for devices whose connection changed.
    pub fn status(&mut self, status: &Json) -> Vec<Message> {
        let mut out = Vec::new();
        if !self.node.born() {
            return out;
        }
        out.extend(self.node.node_data(Utc::now(), &node_metrics(status)));
        out.extend(self.apply_device_states(status));
        out
    }

    /// DDEATH/DBIRTH for devices whose connection changed since the last look.
    pub fn devices(&mut self, status: &Json) -> Vec<Message> {
        if !self.node.born() {
            return Vec::new();
        }
        self.apply_device_states(status)
    }

    fn apply_device_states(&mut self, status: &Json) -> Vec<Message> {
        let mut out = Vec::new();
        let Some(devices) = status.pointer("/metrics/devices").and_then(Json::as_array) else {
            return out;
        };
        for d in devices {
            let (Some(name), Some(state)) = (
                d.get("name").and_then(Json::as_str),
                d.get("state").and_then(Json::as_str),
            ) else {
                continue;
            };
            // "starting" counts as up: a device is born with the node and dies on its first failure.
            let up = state != "disconnected" && state != "stopped";
            let was = self.device_states.insert(name.to_string(), up);
            if was == Some(up) && self.node.born() {
                continue;
            }
            let dev: Arc<str> = Arc::from(name);
            let now = Utc::now();
            let msg = if up {
                self.node.device_up(&dev, now)
            } else {
                self.node.device_down(&dev, now)
            };
            out.extend(msg);
        }
        out
    }

    /// SPC's side messages as metrics of the SPC device (empty for other topics, or before a birth).
    pub fn side(&mut self, topic: &str, payload: &[u8], limits: PackLimits) -> Vec<Message> {
        let Some((ch, kind)) = spc::parse_topic(&self.side_base, topic) else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_slice::<Json>(payload) else {
            return Vec::new();
        };
        let now = Utc::now();
        let rows: Vec<StoredReading> = spc::metrics(ch, kind, &body, now)
            .into_iter()
            .map(|m| StoredReading {
                // Never historical: SPC state is current when it is published.
                seq: u64::MAX,
                reading: Reading {
                    device: self.spc_device.clone(),
                    tag: Arc::from(m.name.as_str()),
                    ts: m.ts,
                    value: Some(m.value),
                    quality: Quality::Good,
                    unit: None,
                },
            })
            .collect();
        if !self.node.born() {
            // Remembered for the next birth.
            self.node.remember_latest(&rows);
            return Vec::new();
        }
        self.node.pack(&rows, now, limits).messages
    }

    /// The NDEATH to publish before a deliberate disconnect.
    pub fn death(&mut self) -> Message {
        self.node.disconnected();
        self.node.death(Utc::now())
    }

    /// The connection is gone.
    pub fn disconnected(&mut self) {
        self.node.disconnected();
    }
}

fn log_bdseq_error(e: &BdSeqError) {
    tracing::error!(error = %e, "cannot persist the Sparkplug bdSeq; continuing with the next number in memory");
}

/// The status body as node metrics: identity under `Properties/`, counters by section
/// (`Store/backlog`, `Forwarder/connected`, `Devices/<name>/timeouts`). Nulls and lists are left out.
pub fn node_metrics(status: &Json) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, name) in [
        ("version", "Properties/Version"),
        ("config_hash", "Properties/Config Hash"),
        ("started", "Properties/Started"),
    ] {
        if let Some(s) = status.get(key).and_then(Json::as_str) {
            out.push((name.to_string(), Value::Str(Arc::from(s))));
        }
    }
    let Some(metrics) = status.get("metrics") else {
        return out;
    };
    for (section, name) in [("store", "Store"), ("forwarder", "Forwarder")] {
        if let Some(obj) = metrics.get(section) {
            flatten(name, obj, &mut out);
        }
    }
    if let Some(devices) = metrics.get("devices").and_then(Json::as_array) {
        for d in devices {
            if let Some(n) = d.get("name").and_then(Json::as_str) {
                flatten(&format!("Devices/{}", n.replace('/', "_")), d, &mut out);
            }
        }
    }
    out
}

fn flatten(prefix: &str, v: &Json, out: &mut Vec<(String, Value)>) {
    let Some(obj) = v.as_object() else { return };
    for (k, v) in obj {
        let name = format!("{prefix}/{k}");
        match v {
            Json::Bool(b) => out.push((name, Value::Bool(*b))),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    out.push((name, Value::I64(i)));
                } else if let Some(f) = n.as_f64() {
                    out.push((name, Value::F64(f)));
                }
            }
            Json::String(s) => out.push((name, Value::Str(Arc::from(s.as_str())))),
            Json::Object(_) => flatten(&name, v, out),
            Json::Null | Json::Array(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn status_becomes_node_metrics() {
        let status = json!({
            "agent": "gw", "state": "online", "version": "0.1.0", "config_hash": "sha256:ab",
            "started": "2026-11-28T10:00:00Z",
            "metrics": {
                "store": {"backlog": 5, "oldest_unforwarded": null},
                "forwarder": {"connected": true, "seconds_since_ack": 0.5, "commands": {"accepted": 2}},
                "alarms": [1, 2],
                "devices": [{"name": "press", "state": "connected", "timeouts": 3}]
            }
        });
        let m = node_metrics(&status);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"Properties/Version"));
        assert!(names.contains(&"Store/backlog"));
        assert!(!names.contains(&"Store/oldest_unforwarded"));
        assert!(names.contains(&"Forwarder/commands/accepted"));
        assert!(names.contains(&"Devices/press/timeouts"));
        assert!(names.contains(&"Devices/press/state"));
        let f = m
            .iter()
            .find(|(n, _)| n == "Forwarder/seconds_since_ack")
            .unwrap();
        assert_eq!(f.1, Value::F64(0.5));
    }
}
