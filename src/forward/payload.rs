//! The encoding seam: JSON payloads. Readings are grouped per device and packed into messages up to a
//! count and a size. Nothing here knows about connections or acknowledgements; another encoding
//! (Sparkplug B) would sit beside this module and produce the same [`DataMessage`]s.

use lineside_drivers::{Reading, Value};
use serde::Serialize;

use crate::store::{StoredEvent, StoredReading};
use crate::timefmt::rfc3339;

#[derive(Serialize)]
struct ReadingJson<'a> {
    seq: u64,
    device: &'a str,
    tag: &'a str,
    ts: String,
    value: ValueJson<'a>,
    quality: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ValueJson<'a> {
    Null,
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(&'a str),
}

fn value_json(v: &Option<Value>) -> ValueJson<'_> {
    match v {
        None => ValueJson::Null,
        Some(Value::F64(x)) if !x.is_finite() => ValueJson::Null,
        Some(Value::F64(x)) => ValueJson::F64(*x),
        Some(Value::I64(x)) => ValueJson::I64(*x),
        Some(Value::Bool(b)) => ValueJson::Bool(*b),
        Some(Value::Str(s)) => ValueJson::Str(s),
    }
}

pub fn encode_reading(seq: u64, r: &Reading, out: &mut Vec<u8>) {
    let json = ReadingJson {
        seq,
        device: &r.device,
        tag: &r.tag,
        ts: rfc3339(r.ts),
        value: value_json(&r.value),
        quality: r.quality.name(),
        reason: r.quality.reason(),
        unit: r.unit.as_deref(),
    };
    // Serializing plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &json);
}

/// One data message ready to publish.
#[derive(Debug)]
pub struct DataMessage {
    pub device: String,
    pub payload: Vec<u8>,
    /// Lowest and highest seq in the message.
    pub lo: u64,
    pub hi: u64,
}

/// Packs readings (in seq order) into per-device messages. Stops before a reading that would need more
/// than `max_messages` messages in all, and returns how many readings it took.
pub struct Packer<'a> {
    agent: &'a str,
    /// The store's epoch: with `agent` and each `seq`, the identity of a reading.
    epoch: &'a str,
    max_readings: usize,
    max_bytes: usize,
    open: Vec<Open>,
    done: Vec<DataMessage>,
    scratch: Vec<u8>,
}

/// A message being filled: device, payload so far, readings, lowest seq.
struct Open {
    device: String,
    buf: Vec<u8>,
    n: usize,
    lo: u64,
    hi: u64,
}

impl<'a> Packer<'a> {
    pub fn new(agent: &'a str, epoch: &'a str, max_readings: usize, max_bytes: usize) -> Self {
        Packer {
            agent,
            epoch,
            max_readings,
            max_bytes,
            open: Vec::new(),
            done: Vec::new(),
            scratch: Vec::with_capacity(256),
        }
    }

    fn header(&self, device: &str) -> Vec<u8> {
        let mut h = Vec::with_capacity(self.max_bytes.min(64 * 1024));
        let _ = serde_json::to_writer(
            &mut h,
            &serde_json::json!({"agent": self.agent, "epoch": self.epoch, "device": device}),
        );
        h.pop(); // reopen the object to append the readings array
        h.extend_from_slice(b",\"readings\":[");
        h
    }

    pub fn messages(&self) -> usize {
        self.done.len() + self.open.len()
    }

    /// Adds one reading unless that would open message number `max_messages + 1`; returns false then.
    pub fn push(&mut self, r: &StoredReading, max_messages: usize) -> bool {
        self.scratch.clear();
        encode_reading(r.seq, &r.reading, &mut self.scratch);
        let device = &*r.reading.device;
        let idx = self.open.iter().position(|o| o.device == device);
        let fits = |o: &Open, add: usize| {
            o.n < self.max_readings && o.buf.len() + add + 3 <= self.max_bytes
        };
        match idx {
            Some(i) if fits(&self.open[i], self.scratch.len()) => {
                let o = &mut self.open[i];
                o.buf.push(b',');
                o.buf.extend_from_slice(&self.scratch);
                o.n += 1;
                o.hi = r.seq;
                true
            }
            Some(i) => {
                // Full: this device's message is complete; start the next one if allowed.
                if self.messages() + 1 > max_messages {
                    return false;
                }
                let o = self.open.swap_remove(i);
                self.done.push(finish(o));
                self.start(device, r.seq);
                true
            }
            None => {
                if self.messages() + 1 > max_messages {
                    return false;
                }
                self.start(device, r.seq);
                true
            }
        }
    }

    fn start(&mut self, device: &str, seq: u64) {
        let mut buf = self.header(device);
        buf.extend_from_slice(&self.scratch);
        self.open.push(Open {
            device: device.to_string(),
            buf,
            n: 1,
            lo: seq,
            hi: seq,
        });
    }

    pub fn finish(mut self) -> Vec<DataMessage> {
        for o in std::mem::take(&mut self.open) {
            self.done.push(finish(o));
        }
        self.done
    }
}

fn finish(o: Open) -> DataMessage {
    let mut payload = o.buf;
    payload.extend_from_slice(b"]}");
    DataMessage {
        device: o.device,
        payload,
        lo: o.lo,
        hi: o.hi,
    }
}

/// An event as published on the alarms topic: the stored body plus its sequence number, the store's
/// epoch and time.
pub fn encode_event(agent: &str, epoch: &str, e: &StoredEvent) -> Vec<u8> {
    let mut body = match &e.body {
        serde_json::Value::Object(m) => m.clone(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("body".into(), other.clone());
            m
        }
    };
    body.insert("seq".into(), e.seq.into());
    body.insert("agent".into(), agent.into());
    body.insert("epoch".into(), epoch.into());
    body.insert("ts".into(), rfc3339(e.ts).into());
    body.entry("kind").or_insert_with(|| e.kind.clone().into());
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lineside_drivers::Quality;

    use super::*;
    use chrono::DateTime;

    fn sr(seq: u64, device: &str, value: Option<Value>) -> StoredReading {
        StoredReading {
            seq,
            reading: Reading {
                device: Arc::from(device),
                tag: Arc::from("t"),
                ts: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
                value,
                quality: if seq.is_multiple_of(2) {
                    Quality::Good
                } else {
                    Quality::Bad(Arc::from("timeout"))
                },
                unit: Some(Arc::from("mm")),
            },
        }
    }

    fn count(m: &DataMessage) -> usize {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        v["readings"].as_array().unwrap().len()
    }

    #[test]
    fn readings_are_grouped_per_device_and_valid_json() {
        let mut p = Packer::new("gw", "00000000000000e1", 1000, 64 * 1024);
        for seq in 1..=6 {
            assert!(p.push(
                &sr(
                    seq,
                    if seq % 3 == 0 { "b" } else { "a" },
                    Some(Value::F64(seq as f64))
                ),
                10
            ));
        }
        let msgs = p.finish();
        assert_eq!(msgs.len(), 2);
        let v: serde_json::Value = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(v["agent"], "gw");
        assert_eq!(v["epoch"], "00000000000000e1");
        assert_eq!(v["device"], "a");
        let rs = v["readings"].as_array().unwrap();
        assert_eq!(
            rs.iter()
                .map(|r| r["seq"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 2, 4, 5]
        );
        assert_eq!(rs[1]["ts"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(rs[1]["quality"], "good");
        assert_eq!(rs[0]["quality"], "bad");
        assert_eq!(rs[0]["reason"], "timeout");
        assert_eq!(rs[0]["unit"], "mm");
        assert_eq!(rs[0]["device"], "a");
    }

    #[test]
    fn messages_respect_count_and_size_and_the_message_limit() {
        let mut p = Packer::new("gw", "00000000000000e1", 3, 64 * 1024);
        let mut taken = 0;
        for seq in 1..=100 {
            if !p.push(&sr(seq, "a", Some(Value::I64(1))), 4) {
                break;
            }
            taken += 1;
        }
        assert_eq!(taken, 12, "4 messages of 3");
        let msgs = p.finish();
        assert!(msgs.iter().all(|m| count(m) == 3));

        let mut p = Packer::new("gw", "00000000000000e1", 1000, 4096);
        for seq in 1..=200 {
            p.push(
                &sr(
                    seq,
                    "a",
                    Some(Value::Str(Arc::from("x".repeat(50).as_str()))),
                ),
                1000,
            );
        }
        let msgs = p.finish();
        assert!(msgs.len() > 1);
        assert!(msgs.iter().all(|m| m.payload.len() <= 4096));
        assert_eq!(msgs.iter().map(count).sum::<usize>(), 200);
        for m in &msgs {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap();
        }
    }

    #[test]
    fn non_finite_values_become_null() {
        let mut out = Vec::new();
        encode_reading(1, &sr(2, "a", Some(Value::F64(f64::NAN))).reading, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["value"].is_null());
    }
}
