//! The station's in-memory view of the line: what SPC publishes (points, limits, capability, open
//! alarms, taken from the uplink's side-message tap) and what the store commits (each device's last
//! reading, each characteristic's recent values for the histogram). Browsers get a snapshot from here
//! and then the live feed; nothing a browser does reads the database.
//!
//! Every change is an event with a number. The last `RING` events are kept, so a browser that
//! reconnects with `Last-Event-ID` gets what it missed; one that was away longer gets a `reset` and
//! reloads its snapshot.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::payloads::{self, Kind};
use crate::bus::SidePublish;
use crate::config::CharacteristicConfig;
use crate::store::CommittedBatch;

/// Events kept for reconnecting browsers.
const RING: usize = 4096;
/// Recent source values per characteristic for the histogram.
const VALUES: usize = 2000;
/// Live-feed slots per subscriber before it lags (it then gets a reset).
const CHANNEL: usize = 1024;

/// One change, as sent to browsers (`id` 0: not replayable, e.g. the periodic device summary).
#[derive(Debug)]
pub struct FeedEvent {
    pub id: u64,
    /// The characteristic it concerns, for streams of one characteristic.
    pub characteristic: Option<Arc<str>>,
    pub kind: &'static str,
    pub data: String,
}

/// A characteristic as the station shows it.
struct CharView {
    /// Static facts from the config: chart type, subgroup size, spec limits, unit.
    info: Value,
    source: (Arc<str>, Arc<str>),
    /// Points per chart (and partition), oldest first, at most `history` each.
    points: BTreeMap<(String, String), VecDeque<Value>>,
    limits: Option<Value>,
    capability: Option<Value>,
    active: Option<Value>,
    values: VecDeque<f64>,
    last_point: Option<Value>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct DeviceSeen {
    last_reading: Option<DateTime<Utc>>,
    last_good: Option<DateTime<Utc>>,
    /// Of the readings seen since the station started.
    readings: u64,
    bad: u64,
}

struct State {
    next_id: u64,
    ring: VecDeque<Arc<FeedEvent>>,
    chars: BTreeMap<String, CharView>,
    devices: HashMap<Arc<str>, DeviceSeen>,
}

pub struct Hub {
    /// `<prefix>/<agent>`, stripped from topics.
    base: String,
    history: usize,
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<FeedEvent>>,
}

/// What a new live stream starts with.
pub struct Subscription {
    /// Events after the client's Last-Event-ID, oldest first.
    pub missed: Vec<Arc<FeedEvent>>,
    /// The client was away longer than the ring reaches back: it must reload its snapshot.
    pub reset: bool,
    pub rx: broadcast::Receiver<Arc<FeedEvent>>,
    /// The newest event id when subscribing.
    pub head: u64,
}

impl Hub {
    pub fn new(base: &str, history: usize, characteristics: &[CharacteristicConfig]) -> Hub {
        let (tx, _) = broadcast::channel(CHANNEL);
        let chars = characteristics
            .iter()
            .map(|c| (c.spec.name.clone(), CharView::new(c)))
            .collect();
        Hub {
            base: base.to_string(),
            history: history.max(1),
            state: Mutex::new(State {
                next_id: 1,
                ring: VecDeque::new(),
                chars,
                devices: HashMap::new(),
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one of SPC's side messages (the same bytes the forwarder publishes).
    pub fn on_side(&self, m: &SidePublish) {
        let Some((kind, name)) = payloads::classify(&self.base, &m.topic) else {
            return;
        };
        let doc: Value = if m.payload.is_empty() {
            Value::Null // a cleared retained topic
        } else {
            match serde_json::from_slice(&m.payload) {
                Ok(v) => v,
                Err(_) => return,
            }
        };
        let doc = match kind {
            Kind::Point => payloads::normalize_point(doc),
            Kind::Active => payloads::normalize_active(&doc),
            _ => doc,
        };
        let mut st = self.lock();
        let Some(view) = st.chars.get_mut(name) else {
            return;
        };
        match kind {
            Kind::Point => {
                view.add_point(doc.clone(), self.history);
                if payloads::is_headline(&doc) {
                    view.last_point = Some(doc.clone());
                }
            }
            Kind::Limits => view.limits = Some(doc.clone()),
            Kind::Capability => view.capability = Some(doc.clone()),
            Kind::Active => view.active = Some(doc.clone()),
        }
        let summary = view.summary(name);
        let name: Arc<str> = Arc::from(name);
        Self::emit(
            &mut st,
            &self.tx,
            Some(name.clone()),
            kind.as_str(),
            json!({"characteristic": &*name, "doc": doc, "summary": summary}),
        );
    }

    /// Takes a committed batch: device activity and the characteristics' source values.
    pub fn on_batch(&self, batch: &CommittedBatch) {
        let mut st = self.lock();
        let st = &mut *st;
        for r in &batch.readings {
            let seen = match st.devices.get_mut(&r.device) {
                Some(s) => s,
                None => st.devices.entry(r.device.clone()).or_default(),
            };
            seen.readings += 1;
            seen.last_reading = Some(r.ts);
            if r.quality.is_good() {
                seen.last_good = Some(r.ts);
            } else {
                seen.bad += 1;
            }
            if !r.quality.is_good() {
                continue;
            }
            let Some(v) = r.value.as_ref().and_then(|v| v.as_f64()) else {
                continue;
            };
            for view in st.chars.values_mut() {
                if view.source.0 == r.device && view.source.1 == r.tag {
                    view.push_value(v);
                }
            }
        }
    }

    /// Seeds a characteristic's chart and histogram from the store (before the live feed starts).
    pub fn seed(&self, name: &str, points: Vec<Value>, values: Vec<f64>) {
        let mut st = self.lock();
        if let Some(view) = st.chars.get_mut(name) {
            for p in points {
                view.add_point(payloads::normalize_point(p), self.history);
            }
            for v in values {
                view.push_value(v);
            }
        }
    }

    fn emit(
        st: &mut State,
        tx: &broadcast::Sender<Arc<FeedEvent>>,
        characteristic: Option<Arc<str>>,
        kind: &'static str,
        data: Value,
    ) {
        let id = st.next_id;
        st.next_id += 1;
        let ev = Arc::new(FeedEvent {
            id,
            characteristic,
            kind,
            data: data.to_string(),
        });
        st.ring.push_back(ev.clone());
        while st.ring.len() > RING {
            st.ring.pop_front();
        }
        let _ = tx.send(ev);
    }

    /// Sends a non-replayable event (the device summary) to every live stream.
    pub fn broadcast_ephemeral(&self, kind: &'static str, data: Value) {
        let _ = self.tx.send(Arc::new(FeedEvent {
            id: 0,
            characteristic: None,
            kind,
            data: data.to_string(),
        }));
    }

    /// Starts a live stream after `last_id` (the browser's Last-Event-ID).
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let st = self.lock();
        // Subscribing under the lock: every event is either in `missed` or comes through `rx`.
        let rx = self.tx.subscribe();
        let head = st.next_id - 1;
        let (missed, reset) = match last_id {
            None => (Vec::new(), false),
            Some(last) if last >= head => (Vec::new(), last > head),
            Some(last) => {
                let oldest = st.ring.front().map_or(head + 1, |e| e.id);
                if last + 1 < oldest {
                    (Vec::new(), true)
                } else {
                    (
                        st.ring.iter().filter(|e| e.id > last).cloned().collect(),
                        false,
                    )
                }
            }
        };
        Subscription {
            missed,
            reset,
            rx,
            head,
        }
    }

    /// Every characteristic's summary line, for the overview.
    pub fn overview(&self) -> Value {
        let st = self.lock();
        let list: Vec<Value> = st.chars.iter().map(|(n, v)| v.summary(n)).collect();
        json!({"characteristics": list, "event_id": st.next_id - 1})
    }

    /// Everything a characteristic page draws; None for an unknown name.
    pub fn snapshot(&self, name: &str) -> Option<Value> {
        let st = self.lock();
        let v = st.chars.get(name)?;
        let charts: Vec<Value> = v
            .points
            .iter()
            .map(|((chart, partition), pts)| {
                json!({"chart": chart, "partition": partition, "points": pts})
            })
            .collect();
        Some(json!({
            "characteristic": name,
            "info": v.info,
            "summary": v.summary(name),
            "charts": charts,
            "limits": v.limits,
            "capability": v.capability,
            "active": v.active,
            "values": v.values,
            "event_id": st.next_id - 1,
        }))
    }

    /// The open alarm documents of every characteristic.
    pub fn alarms(&self) -> Value {
        let st = self.lock();
        let list: Vec<Value> = st
            .chars
            .iter()
            .filter_map(|(n, v)| {
                let doc = v.active.as_ref()?;
                (payloads::open_alarms(doc) > 0).then(|| json!({"characteristic": n, "doc": doc}))
            })
            .collect();
        json!({"alarms": list, "event_id": st.next_id - 1})
    }

    /// What the store's batches showed of each device since start.
    pub fn devices_seen(&self) -> BTreeMap<String, Value> {
        let st = self.lock();
        st.devices
            .iter()
            .map(|(d, s)| (d.to_string(), json!(s)))
            .collect()
    }

    pub fn knows(&self, name: &str) -> bool {
        self.lock().chars.contains_key(name)
    }

    #[cfg(test)]
    pub fn points(&self, name: &str) -> usize {
        self.lock()
            .chars
            .get(name)
            .map_or(0, |v| v.points.values().map(VecDeque::len).sum())
    }
}

impl CharView {
    fn new(c: &CharacteristicConfig) -> CharView {
        let s = &c.spec;
        let info = json!({
            "name": s.name,
            "chart": s.chart.as_str(),
            "subgroup_size": s.subgroup_size,
            "usl": s.usl,
            "lsl": s.lsl,
            "target": s.target,
            "unit": c.unit,
            "source": c.source.to_string(),
            "context": s.context,
        });
        CharView {
            info,
            source: (
                Arc::from(c.source.device.as_str()),
                Arc::from(c.source.tag.as_str()),
            ),
            points: BTreeMap::new(),
            limits: None,
            capability: None,
            active: None,
            values: VecDeque::new(),
            last_point: None,
        }
    }

    fn add_point(&mut self, p: Value, history: usize) {
        let Some((chart, partition, seq)) = payloads::point_key(&p) else {
            return;
        };
        let pts = self.points.entry((chart, partition)).or_default();
        // A point sent again (the baseline completed: now with limits) replaces the first one.
        if let Some(existing) = pts
            .iter_mut()
            .rev()
            .take(64)
            .find(|q| q.get("seq").and_then(Value::as_u64) == Some(seq))
        {
            *existing = p;
            return;
        }
        pts.push_back(p);
        while pts.len() > history {
            pts.pop_front();
        }
    }

    fn push_value(&mut self, v: f64) {
        self.values.push_back(v);
        while self.values.len() > VALUES {
            self.values.pop_front();
        }
    }

    fn summary(&self, name: &str) -> Value {
        let open = self.active.as_ref().map_or(0, payloads::open_alarms);
        let unacked = self.active.as_ref().map_or(0, payloads::unacked);
        let last = self.last_point.as_ref().or_else(|| {
            self.points
                .values()
                .filter_map(|p| p.back())
                .filter(|p| payloads::is_headline(p))
                .max_by_key(|p| p.get("seq").and_then(Value::as_u64))
        });
        let state = match last {
            _ if open > 0 => payloads::State::Alarm,
            None => payloads::State::Waiting,
            Some(p) if payloads::point_rules(p) > 0 => payloads::State::Alarm,
            Some(p) if !payloads::point_has_limits(p) => payloads::State::Baseline,
            Some(_) => payloads::State::Ok,
        };
        let active = self
            .active
            .as_ref()
            .and_then(|a| a.get("alarms"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned();
        json!({
            "name": name,
            "chart": self.info["chart"],
            "unit": self.info["unit"],
            "state": state,
            "last_value": last.and_then(payloads::point_value),
            "last_ts": last.and_then(|p| p.get("ts")).cloned(),
            "cpk": self.capability.as_ref().and_then(payloads::cpk),
            "open_alarms": open,
            "unacked": unacked,
            "suppression": self.active.as_ref().and_then(|a| a.get("suppression")).cloned(),
            "newest_alarm": active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        let cfg = crate::config::load_str(
            std::path::Path::new("t.toml"),
            r#"
[agent]
id = "gw"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[device]]
name = "g"
driver = "sim"
interval = "1s"
[[device.tag]]
name = "d"
mean = 1.0
sigma = 0.1
[[characteristic]]
name = "bore"
source = "g/d"
chart = "i-mr"
limits = { centre = 1.0, sigma = 0.1 }
"#,
        )
        .unwrap();
        Hub::new("lineside/gw", 3, &cfg.characteristics)
    }

    fn point(seq: u64, limits: bool) -> SidePublish {
        let l = if limits {
            json!({"centre": 1.0, "ucl": 1.3, "lcl": 0.7})
        } else {
            Value::Null
        };
        SidePublish {
            topic: "lineside/gw/spc/bore/points".into(),
            payload: serde_json::to_vec(&json!({"characteristic": "bore", "chart": "i", "seq": seq, "value": 1.0, "limits": l, "rules": []})).unwrap(),
            retain: false,
        }
    }

    #[test]
    fn points_are_bounded_and_replaced() {
        let h = hub();
        for s in 1..=5 {
            h.on_side(&point(s, false));
        }
        assert_eq!(h.points("bore"), 3);
        h.on_side(&point(5, true));
        assert_eq!(h.points("bore"), 3);
        let snap = h.snapshot("bore").unwrap();
        assert_eq!(snap["summary"]["state"], "ok");
        assert_eq!(snap["charts"][0]["points"][2]["limits"]["ucl"], 1.3);
    }

    #[test]
    fn reconnect_replays_or_resets() {
        let h = hub();
        for s in 1..=3 {
            h.on_side(&point(s, true));
        }
        let sub = h.subscribe(Some(1));
        assert_eq!(
            sub.missed.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(!sub.reset);
        assert!(h.subscribe(Some(99)).reset, "an id from before a restart");
        for s in 4..(RING as u64 + 10) {
            h.on_side(&point(s, true));
        }
        assert!(h.subscribe(Some(1)).reset, "too far behind");
        assert!(h.subscribe(None).missed.is_empty());
    }
}
