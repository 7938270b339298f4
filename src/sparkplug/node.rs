//! The edge node's session: the sequence numbers and the order of births, data and deaths.
//!
//! Pure state, no I/O: every method returns the messages to publish, already encoded, and the caller
//! publishes them in the order returned (the `seq` of each is fixed when it is encoded). A session is
//! one MQTT connection:
//!
//! 1. [`EdgeNode::connect`] with the next persisted `bdSeq` gives the NDEATH to register as the will.
//! 2. [`EdgeNode::birth`] (once connected, and once the primary host is online if one is configured)
//!    gives the NBIRTH (`seq` 0, `bdSeq`, `Node Control/Rebirth`, node metrics) and a DBIRTH per device.
//! 3. [`EdgeNode::pack`] turns readings (in store order) into DDATA by alias, inserting a DBIRTH first
//!    where a device's metric set changed. Readings at or below the session's backlog mark are flagged
//!    `is_historical` and keep their original timestamps.
//! 4. [`EdgeNode::device_down`] / [`EdgeNode::device_up`] give DDEATH / DBIRTH; [`EdgeNode::command`]
//!    handles NCMD (`Node Control/Rebirth`, rate-limited).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lineside_drivers::{Quality, Value};
use prost::Message as _;

use super::catalog::{self, Catalog, Fit, Sample};
use super::datatype::{self, DataType};
use super::proto;
use super::topic::{MessageType, NodeTopics};
use crate::store::StoredReading;

pub const BD_SEQ: &str = "bdSeq";
pub const REBIRTH: &str = "Node Control/Rebirth";

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageType,
    pub topic: String,
    pub device: Option<Arc<str>>,
    /// `None` only for NDEATH.
    pub seq: Option<u8>,
    pub payload: Vec<u8>,
    /// DDATA: the lowest and highest store seq of the readings it carries (0 for other messages).
    pub lo: u64,
    pub hi: u64,
}

/// Limits for packing readings into DDATA messages.
#[derive(Debug, Clone, Copy)]
pub struct PackLimits {
    pub max_metrics: usize,
    pub max_bytes: usize,
    /// Messages (DDATA and DBIRTH) per call at most.
    pub max_messages: usize,
}

/// The result of [`EdgeNode::pack`].
#[derive(Debug, Default)]
pub struct Packed {
    pub messages: Vec<Message>,
    /// Readings consumed from the front of the slice (sent, or skipped as below).
    pub taken: usize,
    /// Readings not sent because their device was dead (no DBIRTH) and they were not good.
    pub skipped: usize,
}

/// What an NCMD asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCommand {
    /// Publish a new birth sequence now.
    Rebirth,
    /// A rebirth was asked for too soon after the last one; [`EdgeNode::rebirth_due`] says when.
    RebirthDeferred,
    /// Nothing lineside acts on.
    Ignored,
}

pub struct EdgeNode {
    topics: NodeTopics,
    catalog: Catalog,
    bd_seq: u8,
    next_seq: u8,
    born: bool,
    /// Devices with a DDEATH in this session and no DBIRTH since (or down before the birth).
    dead: HashSet<Arc<str>>,
    /// Node-level metrics announced in the NBIRTH: alias, datatype, last value sent.
    node_metrics: BTreeMap<String, (u64, DataType, Value)>,
    /// Readings with a seq at or below this were in the store before the session was born.
    backlog_upto: u64,
    rebirth_min: Duration,
    last_birth: Option<Instant>,
    rebirth_pending: bool,
}

fn millis(ts: DateTime<Utc>) -> u64 {
    ts.timestamp_millis().max(0) as u64
}

/// Bytes of a length-delimited field holding `len` bytes (tag byte, length varint, body).
fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

impl EdgeNode {
    pub fn new(topics: NodeTopics, catalog: Catalog, rebirth_min: Duration) -> Self {
        EdgeNode {
            topics,
            catalog,
            bd_seq: 0,
            next_seq: 0,
            born: false,
            dead: HashSet::new(),
            node_metrics: BTreeMap::new(),
            backlog_upto: 0,
            rebirth_min,
            last_birth: None,
            rebirth_pending: false,
        }
    }

    pub fn topics(&self) -> &NodeTopics {
        &self.topics
    }

    pub fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    pub fn born(&self) -> bool {
        self.born
    }

    /// Starts a session (a new MQTT connection) with the given bdSeq. Returns the NDEATH to register
    /// as the connection's will (QoS 1, not retained).
    pub fn connect(&mut self, bd_seq: u8, now: DateTime<Utc>) -> Message {
        self.bd_seq = bd_seq;
        self.born = false;
        self.rebirth_pending = false;
        self.death(now)
    }

    /// The NDEATH of the current session: the will, and what is published before a deliberate
    /// disconnect (a DISCONNECT suppresses the will).
    pub fn death(&self, now: DateTime<Utc>) -> Message {
        let payload = proto::Payload {
            timestamp: Some(millis(now)),
            metrics: vec![proto::Metric {
                name: Some(BD_SEQ.into()),
                timestamp: Some(millis(now)),
                datatype: Some(DataType::Int64.code()),
                value: Some(proto::metric::Value::LongValue(u64::from(self.bd_seq))),
                ..Default::default()
            }],
            ..Default::default()
        };
        Message {
            kind: MessageType::NDeath,
            topic: self.topics.node_topic(MessageType::NDeath),
            device: None,
            seq: None,
            payload: payload.encode_to_vec(),
            lo: 0,
            hi: 0,
        }
    }

    /// Ends the session on our side (connection lost or closed): nothing more is sent until the next
    /// [`EdgeNode::connect`] and [`EdgeNode::birth`].
    pub fn disconnected(&mut self) {
        self.born = false;
    }

    fn take_seq(&mut self) -> u8 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    fn seal(
        &mut self,
        kind: MessageType,
        device: Option<&Arc<str>>,
        mut payload: proto::Payload,
    ) -> Message {
        let seq = self.take_seq();
        payload.seq = Some(u64::from(seq));
        let topic = match device {
            Some(d) => self.topics.device_topic(kind, d),
            None => self.topics.node_topic(kind),
        };
        Message {
            kind,
            topic,
            device: device.cloned(),
            seq: Some(seq),
            payload: payload.encode_to_vec(),
            lo: 0,
            hi: 0,
        }
    }

    /// Records the latest value of each tag (the store's newest readings at birth time), so the
    /// births carry current values.
    pub fn remember_latest(&mut self, latest: &[StoredReading]) {
        for r in latest {
            let rd = &r.reading;
            self.catalog
                .fit(&rd.device, &rd.tag, rd.value.as_ref(), rd.unit.as_ref());
            self.catalog.remember(
                &rd.device,
                &rd.tag,
                Sample {
                    ts: rd.ts,
                    value: rd.value.clone(),
                    quality: rd.quality.clone(),
                },
            );
        }
    }

    /// The birth sequence: NBIRTH with `seq` 0, then a DBIRTH per device that is not down. Readings
    /// with a seq up to `backlog_upto` (what the store held when the session was born) are sent later
    /// as historical. Also used for a rebirth (same bdSeq: the will is unchanged).
    pub fn birth(
        &mut self,
        now: DateTime<Utc>,
        node_metrics: &[(String, Value)],
        backlog_upto: u64,
        at: Instant,
    ) -> Vec<Message> {
        self.next_seq = 0;
        self.born = true;
        self.rebirth_pending = false;
        self.last_birth = Some(at);
        self.backlog_upto = self.backlog_upto.max(backlog_upto);
        let ts = Some(millis(now));
        let mut metrics = vec![
            proto::Metric {
                name: Some(BD_SEQ.into()),
                timestamp: ts,
                datatype: Some(DataType::Int64.code()),
                value: Some(proto::metric::Value::LongValue(u64::from(self.bd_seq))),
                ..Default::default()
            },
            // Never aliased (specification 6.4.21): any host can ask for a rebirth by name.
            proto::Metric {
                name: Some(REBIRTH.into()),
                timestamp: ts,
                datatype: Some(DataType::Boolean.code()),
                value: Some(proto::metric::Value::BooleanValue(false)),
                ..Default::default()
            },
        ];
        for (name, value) in node_metrics {
            let dt = DataType::of(value);
            let alias = match self.node_metrics.get(name) {
                Some((alias, _, _)) => *alias,
                None => self.catalog.take_alias(),
            };
            self.node_metrics
                .insert(name.clone(), (alias, dt, value.clone()));
            let mut m = catalog::metric(now, dt, Some(value), &Quality::Good, false);
            m.name = Some(name.clone());
            m.alias = Some(alias);
            m.datatype = Some(dt.code());
            metrics.push(m);
        }
        let nbirth = proto::Payload {
            timestamp: ts,
            metrics,
            ..Default::default()
        };
        let mut out = vec![self.seal(MessageType::NBirth, None, nbirth)];
        let devices: Vec<Arc<str>> = self.catalog.devices().map(Arc::from).collect();
        for d in devices {
            if !self.dead.contains(&d) {
                out.push(self.dbirth(&d, now));
            }
        }
        out
    }

    fn dbirth(&mut self, device: &Arc<str>, now: DateTime<Utc>) -> Message {
        let payload = proto::Payload {
            timestamp: Some(millis(now)),
            metrics: self.catalog.birth_metrics(device, now),
            ..Default::default()
        };
        self.seal(MessageType::DBirth, Some(device), payload)
    }

    /// Changed node metrics as NDATA (none when nothing changed or the node is not born). Names that
    /// were not in the NBIRTH wait for the next birth.
    pub fn node_data(
        &mut self,
        now: DateTime<Utc>,
        node_metrics: &[(String, Value)],
    ) -> Option<Message> {
        if !self.born {
            return None;
        }
        let mut metrics = Vec::new();
        for (name, value) in node_metrics {
            let Some((alias, dt, last)) = self.node_metrics.get_mut(name) else {
                continue;
            };
            if last == value || datatype::encode(*dt, value).is_none() {
                continue;
            }
            *last = value.clone();
            let mut m = catalog::metric(now, *dt, Some(value), &Quality::Good, false);
            m.alias = Some(*alias);
            metrics.push(m);
        }
        if metrics.is_empty() {
            return None;
        }
        let payload = proto::Payload {
            timestamp: Some(millis(now)),
            metrics,
            ..Default::default()
        };
        Some(self.seal(MessageType::NData, None, payload))
    }

    /// A device lost its connection: DDEATH (once), and no DDATA for it until it is back.
    pub fn device_down(&mut self, device: &Arc<str>, now: DateTime<Utc>) -> Option<Message> {
        if !self.dead.insert(device.clone()) || !self.born {
            return None;
        }
        let payload = proto::Payload {
            timestamp: Some(millis(now)),
            ..Default::default()
        };
        Some(self.seal(MessageType::DDeath, Some(device), payload))
    }

    /// A device is connected again: DBIRTH with its current values.
    pub fn device_up(&mut self, device: &Arc<str>, now: DateTime<Utc>) -> Option<Message> {
        if !self.dead.remove(device) || !self.born {
            return None;
        }
        Some(self.dbirth(device, now))
    }

    /// Packs readings (in store order) into DDATA messages, one device per message, and a DBIRTH
    /// ahead of the data of a device whose metric set changed. Stops before a reading that would need
    /// more than `limits.max_messages` messages.
    pub fn pack(
        &mut self,
        readings: &[StoredReading],
        now: DateTime<Utc>,
        limits: PackLimits,
    ) -> Packed {
        let mut packed = Packed::default();
        if !self.born {
            return packed;
        }
        // Messages in send order; `open` points at the DDATA still taking metrics, per device.
        let mut drafts: Vec<Draft> = Vec::new();
        let mut open: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        for r in readings {
            let rd = &r.reading;
            let device = &rd.device;
            let revive = self.dead.contains(device);
            if revive && !rd.quality.is_good() {
                packed.taken += 1;
                packed.skipped += 1;
                continue;
            }
            let fit = self
                .catalog
                .fit(device, &rd.tag, rd.value.as_ref(), rd.unit.as_ref());
            let birth = revive || fit == Fit::NeedsBirth || self.catalog.needs_birth(device);
            // After a NeedsBirth the catalog holds the new definition: asking again gives its alias.
            let alias = match fit {
                Fit::Announced(a) => Some(a),
                Fit::NeedsBirth => match self.catalog.fit(device, &rd.tag, rd.value.as_ref(), None)
                {
                    Fit::Announced(a) => Some(a),
                    Fit::NeedsBirth => None,
                },
            };
            let Some(alias) = alias else {
                // Cannot happen (a definition just made fits its value); skip rather than send junk.
                packed.taken += 1;
                packed.skipped += 1;
                continue;
            };
            let dt = self.catalog_datatype(device, &rd.tag);
            let mut m = catalog::metric(
                rd.ts,
                dt,
                rd.value.as_ref(),
                &rd.quality,
                r.seq <= self.backlog_upto,
            );
            m.alias = Some(alias);
            let add = field_len(m.encoded_len());
            let fits_open = !birth
                && open.get(device).is_some_and(|&i| {
                    drafts[i].metrics < limits.max_metrics
                        && drafts[i].bytes + add <= limits.max_bytes
                });
            let needed = usize::from(birth) + usize::from(!fits_open);
            if drafts.len() + needed > limits.max_messages {
                // A new tag or type stays recorded (the device still needs its birth): next call.
                break;
            }
            if birth {
                open.remove(device);
                self.dead.remove(device);
                // The birth carries the values sent before this reading (which follows in DDATA).
                let metrics = self.catalog.birth_metrics(device, now);
                drafts.push(Draft::birth(device.clone(), metrics));
            }
            let idx = match open.get(device) {
                Some(&i) if fits_open => i,
                _ => {
                    drafts.push(Draft::data(device.clone()));
                    open.insert(device.clone(), drafts.len() - 1);
                    drafts.len() - 1
                }
            };
            let d = &mut drafts[idx];
            d.bytes += add;
            d.metrics += 1;
            d.payload.metrics.push(m);
            if d.lo == 0 {
                d.lo = r.seq;
            }
            d.hi = r.seq;
            // Births read the latest value; a birth placed before this reading carries the previous one.
            self.catalog.remember(
                device,
                &rd.tag,
                Sample {
                    ts: rd.ts,
                    value: rd.value.clone(),
                    quality: rd.quality.clone(),
                },
            );
            packed.taken += 1;
        }
        // Sequence numbers are taken in send order.
        for mut d in drafts {
            d.payload.timestamp = Some(millis(now));
            let mut msg = self.seal(d.kind, Some(&d.device), d.payload);
            (msg.lo, msg.hi) = (d.lo, d.hi);
            packed.messages.push(msg);
        }
        packed
    }

    fn catalog_datatype(&self, device: &str, tag: &str) -> DataType {
        self.catalog
            .datatype(device, tag)
            .unwrap_or(DataType::Double)
    }

    /// Handles an NCMD payload.
    pub fn command(&mut self, payload: &[u8], at: Instant) -> NodeCommand {
        let Ok(p) = proto::Payload::decode(payload) else {
            tracing::warn!("ignored an NCMD that is not a Sparkplug B payload");
            return NodeCommand::Ignored;
        };
        let rebirth = p.metrics.iter().any(|m| {
            m.name.as_deref() == Some(REBIRTH)
                && matches!(m.value, Some(proto::metric::Value::BooleanValue(true)))
        });
        if !rebirth {
            return NodeCommand::Ignored;
        }
        match self.last_birth {
            Some(t) if at.duration_since(t) < self.rebirth_min => {
                self.rebirth_pending = true;
                NodeCommand::RebirthDeferred
            }
            _ => NodeCommand::Rebirth,
        }
    }

    /// When a deferred rebirth is due (`None`: none is pending).
    pub fn rebirth_due(&self) -> Option<Instant> {
        if !self.rebirth_pending || !self.born {
            return None;
        }
        Some(
            self.last_birth
                .map_or_else(Instant::now, |t| t + self.rebirth_min),
        )
    }
}

/// A message being assembled by [`EdgeNode::pack`].
struct Draft {
    kind: MessageType,
    device: Arc<str>,
    payload: proto::Payload,
    metrics: usize,
    bytes: usize,
    lo: u64,
    hi: u64,
}

impl Draft {
    fn birth(device: Arc<str>, metrics: Vec<proto::Metric>) -> Self {
        Draft {
            kind: MessageType::DBirth,
            device,
            payload: proto::Payload {
                metrics,
                ..Default::default()
            },
            metrics: 0,
            bytes: 0,
            lo: 0,
            hi: 0,
        }
    }

    fn data(device: Arc<str>) -> Self {
        Draft {
            kind: MessageType::DData,
            device,
            payload: proto::Payload::default(),
            metrics: 0,
            // Payload timestamp and seq.
            bytes: 16,
            lo: 0,
            hi: 0,
        }
    }
}

#[cfg(test)]
mod tests;
