//! The encoding seam: JSON payloads. Readings are grouped per device and packed into messages up to a
//! count and a size. Nothing here knows about connections or acknowledgements; another encoding
//! (Sparkplug B) would sit beside this module and produce the same [`DataMessage`]s.

use std::collections::HashMap;
use std::sync::Arc;

use lineside_drivers::{Reading, Value};

use crate::config::JsonFormat;

use crate::store::{StoredEvent, StoredReading};
use crate::timefmt::rfc3339;

/// One reading of the default format, `{"seq":…,"device":…,"tag":…,"ts":…,"value":…,"quality":…}`
/// (plus `reason` and `unit` when there are some). Written by hand, byte for byte what serde_json
/// wrote from a struct before (a test keeps that reference): integers with the same formatter, floats
/// by serde_json, strings escaped by serde_json only when they need it, the timestamp without an
/// allocation. It runs for
/// every reading published, and serializing a map per reading was most of the forwarder's CPU.
pub fn encode_reading(seq: u64, r: &Reading, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"device\":");
    write_str(out, &r.device);
    out.extend_from_slice(b",\"tag\":");
    write_str(out, &r.tag);
    out.extend_from_slice(b",\"ts\":\"");
    crate::timefmt::write_rfc3339(r.ts, out);
    out.extend_from_slice(b"\",\"value\":");
    write_value(out, &r.value);
    out.extend_from_slice(b",\"quality\":\"");
    out.extend_from_slice(r.quality.name().as_bytes());
    out.push(b'"');
    if let Some(reason) = r.quality.reason() {
        out.extend_from_slice(b",\"reason\":");
        write_str(out, reason);
    }
    if let Some(unit) = &r.unit {
        out.extend_from_slice(b",\"unit\":");
        write_str(out, unit);
    }
    out.push(b'}');
}

/// A data message's opening, `{"agent":…,"epoch":…,"device":…`, left open for what follows.
fn write_header(agent: &str, epoch: &str, device: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"agent\":");
    write_str(out, agent);
    out.extend_from_slice(b",\"epoch\":");
    write_str(out, epoch);
    out.extend_from_slice(b",\"device\":");
    write_str(out, device);
}

/// The length of `s` as a JSON string written by [`write_str`] (serde_json's escapes: `\"`, `\\`, the
/// short forms of five control characters, `\u00XX` for the other ones).
fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// A JSON string: text that needs no escape (no control character, quote or backslash; UTF-8 goes in
/// as it is, as serde_json writes it) straight in, anything else through serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// A value as serde_json writes it, `null` for none and for non-finite floats.
fn write_value(out: &mut Vec<u8>, v: &Option<Value>) {
    match v {
        None => out.extend_from_slice(b"null"),
        Some(Value::F64(x)) if !x.is_finite() => out.extend_from_slice(b"null"),
        // serde_json's own float formatting (it has changed formatter crates before: ryu, zmij).
        Some(Value::F64(x)) => {
            let _ = serde_json::to_writer(&mut *out, x);
        }
        Some(Value::I64(x)) => out.extend_from_slice(itoa::Buffer::new().format(*x).as_bytes()),
        Some(Value::U64(x)) => out.extend_from_slice(itoa::Buffer::new().format(*x).as_bytes()),
        Some(Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::Str(s)) => write_str(out, s),
    }
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
    format: JsonFormat,
    open: Vec<Open>,
    done: Vec<DataMessage>,
    scratch: Vec<u8>,
}

/// A message being filled: device, payload so far, readings, lowest seq.
struct Open {
    device: String,
    /// Default format: the whole payload so far. Compact: the readings only (the header and tag table
    /// are written by `finish`).
    buf: Vec<u8>,
    n: usize,
    lo: u64,
    hi: u64,
    compact: Option<CompactTable>,
}

/// Tag table entries searched by a scan before a compact message's table gets a hash index.
const LINEAR_TAGS: usize = 64;

/// The compact format's per-message state: the time base and the tag table.
struct CompactTable {
    t0_us: i64,
    /// Tag table entries in order of first appearance: (tag, unit).
    tags: Vec<(Arc<str>, Option<Arc<str>>)>,
    /// Tag name to the entries with that name (one per unit seen, nearly always one), made once the
    /// table outgrows [`LINEAR_TAGS`] (below that a scan is cheaper than hashing every new name).
    /// Looked up by `&str`, so a hit clones nothing.
    index: Option<HashMap<Arc<str>, Vec<usize>>>,
    /// The entry after the last one used: a device's readings come in the same tag order every poll,
    /// so this guess nearly always matches and the map is not consulted.
    next_guess: usize,
    /// Bytes the header and the tag table will take.
    fixed_bytes: usize,
}

impl CompactTable {
    fn new(t0_us: i64, header_bytes: usize) -> Self {
        CompactTable {
            t0_us,
            tags: Vec::new(),
            index: None,
            next_guess: 0,
            fixed_bytes: header_bytes + 64,
        }
    }

    /// The table index of (tag, unit), added when new. Names are shared `Arc`s, so the pointer test
    /// decides most comparisons without reading the text.
    fn index_of(&mut self, tag: &Arc<str>, unit: &Option<Arc<str>>) -> usize {
        fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
            Arc::ptr_eq(a, b) || a == b
        }
        let matches = |(t, u): &(Arc<str>, Option<Arc<str>>)| {
            same(t, tag)
                && match (u, unit) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same(a, b),
                    _ => false,
                }
        };
        let guess = if self.next_guess < self.tags.len() {
            self.next_guess
        } else {
            0
        };
        let found = match self.tags.get(guess) {
            Some(entry) if matches(entry) => Some(guess),
            _ => match &self.index {
                None => self.tags.iter().position(matches),
                Some(index) => index
                    .get(&**tag)
                    .and_then(|ids| ids.iter().copied().find(|&i| matches(&self.tags[i]))),
            },
        };
        let i = match found {
            Some(i) => i,
            None => {
                let i = self.tags.len();
                // `{"tag":…,"unit":…}` and its comma, escapes included.
                self.fixed_bytes +=
                    9 + json_str_len(tag) + unit.as_ref().map_or(0, |u| 8 + json_str_len(u));
                self.tags.push((tag.clone(), unit.clone()));
                if let Some(index) = &mut self.index {
                    index.entry(tag.clone()).or_default().push(i);
                } else if self.tags.len() > LINEAR_TAGS {
                    let mut index: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
                    for (j, (t, _)) in self.tags.iter().enumerate() {
                        index.entry(t.clone()).or_default().push(j);
                    }
                    self.index = Some(index);
                }
                i
            }
        };
        self.next_guess = i + 1;
        i
    }
}

impl<'a> Packer<'a> {
    pub fn new(agent: &'a str, epoch: &'a str, max_readings: usize, max_bytes: usize) -> Self {
        Self::with_format(agent, epoch, max_readings, max_bytes, JsonFormat::Default)
    }

    pub fn with_format(
        agent: &'a str,
        epoch: &'a str,
        max_readings: usize,
        max_bytes: usize,
        format: JsonFormat,
    ) -> Self {
        Packer {
            agent,
            epoch,
            max_readings,
            max_bytes,
            format,
            open: Vec::new(),
            done: Vec::new(),
            scratch: Vec::with_capacity(256),
        }
    }

    /// A message's first buffer: room for a message of the configured size (64 KiB at most; a
    /// larger one grows).
    fn message_buffer(&self) -> Vec<u8> {
        Vec::with_capacity(self.max_bytes.min(64 * 1024))
    }

    pub fn messages(&self) -> usize {
        self.done.len() + self.open.len()
    }

    /// Adds one reading unless that would open message number `max_messages + 1`; returns false then.
    pub fn push(&mut self, r: &StoredReading, max_messages: usize) -> bool {
        self.push_reading(r.seq, &r.reading, max_messages)
    }

    /// [`Packer::push`] for a reading held in memory (a committed batch) with its seq.
    pub fn push_reading(&mut self, seq: u64, r: &Reading, max_messages: usize) -> bool {
        let device = &*r.device;
        let mut idx = self.open.iter().position(|o| o.device == device);
        if let Some(i) = idx {
            let table_len = self.open[i].compact.as_ref().map(|c| c.tags.len());
            self.encode(Some(i), seq, r);
            let o = &self.open[i];
            let fixed = o.compact.as_ref().map_or(0, |c| c.fixed_bytes);
            if o.n >= self.max_readings
                || fixed + o.buf.len() + self.scratch.len() + 3 > self.max_bytes
            {
                // Full: this device's message is complete; start the next one if allowed.
                if self.messages() + 1 > max_messages {
                    return false;
                }
                let mut o = self.open.swap_remove(i);
                // A tag the reading that did not fit added to the table is not this message's.
                if let (Some(table), Some(n)) = (o.compact.as_mut(), table_len) {
                    table.tags.truncate(n);
                }
                let m = self.finish_one(o);
                self.done.push(m);
                idx = None;
            }
        } else if self.messages() + 1 > max_messages {
            return false;
        }
        match idx {
            Some(i) => {
                let o = &mut self.open[i];
                o.buf.push(b',');
                o.buf.extend_from_slice(&self.scratch);
                o.n += 1;
                o.hi = seq;
            }
            None => self.start(seq, r),
        }
        true
    }

    /// Encodes `r` into `scratch` for the open message `open` (None: a new one).
    fn encode(&mut self, open: Option<usize>, seq: u64, r: &Reading) {
        self.scratch.clear();
        match self.format {
            JsonFormat::Default => encode_reading(seq, r, &mut self.scratch),
            JsonFormat::Compact => {
                let Some(table) = open.and_then(|i| self.open[i].compact.as_mut()) else {
                    return;
                };
                encode_compact(table, seq, r, &mut self.scratch);
            }
        }
    }

    fn start(&mut self, seq: u64, r: &Reading) {
        let device = &*r.device;
        let mut buf;
        let compact = match self.format {
            JsonFormat::Default => {
                self.scratch.clear();
                encode_reading(seq, r, &mut self.scratch);
                buf = self.message_buffer();
                write_header(self.agent, self.epoch, device, &mut buf);
                buf.extend_from_slice(b",\"readings\":[");
                None
            }
            JsonFormat::Compact => {
                // The header's length, measured in the scratch buffer (it is written by `finish`).
                self.scratch.clear();
                write_header(self.agent, self.epoch, device, &mut self.scratch);
                let header = self.scratch.len();
                let mut table = CompactTable::new(r.ts.timestamp_micros(), header);
                self.scratch.clear();
                encode_compact(&mut table, seq, r, &mut self.scratch);
                buf = self.message_buffer();
                Some(table)
            }
        };
        buf.extend_from_slice(&self.scratch);
        self.open.push(Open {
            device: device.to_string(),
            buf,
            n: 1,
            lo: seq,
            hi: seq,
            compact,
        });
    }

    fn finish_one(&self, o: Open) -> DataMessage {
        let payload = match &o.compact {
            None => {
                let mut payload = o.buf;
                payload.extend_from_slice(b"]}");
                payload
            }
            Some(table) => {
                // Header and table (estimated by `fixed_bytes`), the readings, the closing.
                let mut p = Vec::with_capacity(table.fixed_bytes + o.buf.len() + 4);
                write_header(self.agent, self.epoch, &o.device, &mut p);
                p.extend_from_slice(b",\"t0\":");
                p.extend_from_slice(itoa::Buffer::new().format(table.t0_us).as_bytes());
                p.extend_from_slice(b",\"tags\":[");
                for (i, (tag, unit)) in table.tags.iter().enumerate() {
                    if i > 0 {
                        p.push(b',');
                    }
                    p.extend_from_slice(b"{\"tag\":");
                    write_str(&mut p, tag);
                    if let Some(u) = unit {
                        p.extend_from_slice(b",\"unit\":");
                        write_str(&mut p, u);
                    }
                    p.push(b'}');
                }
                p.extend_from_slice(b"],\"readings\":[");
                p.extend_from_slice(&o.buf);
                p.extend_from_slice(b"]}");
                p
            }
        };
        DataMessage {
            device: o.device,
            payload,
            lo: o.lo,
            hi: o.hi,
        }
    }

    pub fn finish(mut self) -> Vec<DataMessage> {
        for o in std::mem::take(&mut self.open) {
            let m = self.finish_one(o);
            self.done.push(m);
        }
        self.done
    }
}

/// One reading in the compact format: `[seq, tag index, µs after t0, value]`, plus `quality` and
/// `reason` when the quality is not good. Adds the tag to the table when it is new.
fn encode_compact(table: &mut CompactTable, seq: u64, rd: &Reading, out: &mut Vec<u8>) {
    let tag = table.index_of(&rd.tag, &rd.unit);
    let dt = rd.ts.timestamp_micros() - table.t0_us;
    let mut num = itoa::Buffer::new();
    out.push(b'[');
    out.extend_from_slice(num.format(seq).as_bytes());
    out.push(b',');
    out.extend_from_slice(num.format(tag).as_bytes());
    out.push(b',');
    out.extend_from_slice(num.format(dt).as_bytes());
    out.push(b',');
    write_value(out, &rd.value);
    if !rd.quality.is_good() {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(rd.quality.name().as_bytes());
        out.push(b'"');
        if let Some(reason) = rd.quality.reason() {
            out.push(b',');
            write_str(out, reason);
        }
    }
    out.push(b']');
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
    use serde::Serialize;

    /// The encoder as it was (serde_json from a struct): the reference the hand-written one must match.
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
        U64(u64),
        Bool(bool),
        Str(&'a str),
    }

    fn value_json(v: &Option<Value>) -> ValueJson<'_> {
        match v {
            None => ValueJson::Null,
            Some(Value::F64(x)) if !x.is_finite() => ValueJson::Null,
            Some(Value::F64(x)) => ValueJson::F64(*x),
            Some(Value::I64(x)) => ValueJson::I64(*x),
            Some(Value::U64(x)) => ValueJson::U64(*x),
            Some(Value::Bool(b)) => ValueJson::Bool(*b),
            Some(Value::Str(s)) => ValueJson::Str(s),
        }
    }

    fn reference(seq: u64, r: &Reading) -> Vec<u8> {
        let json = ReadingJson {
            seq,
            device: &r.device,
            tag: &r.tag,
            ts: crate::timefmt::rfc3339(r.ts),
            value: value_json(&r.value),
            quality: r.quality.name(),
            reason: r.quality.reason(),
            unit: r.unit.as_deref(),
        };
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn the_hand_written_encoder_writes_what_serde_json_wrote() {
        use chrono::{TimeZone, Utc};
        let mut rng = fastrand::Rng::with_seed(11);
        let texts = [
            "plc1",
            "bore-diameter",
            "孔径",
            "a\"quote",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{1}",
            "del\u{7f}",
            "😀",
            "",
        ];
        let pick = |rng: &mut fastrand::Rng| texts[rng.usize(..texts.len())];
        let floats = [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e16,
            1e-7,
            123456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for i in 0..20_000u64 {
            let value = match rng.u8(0..8) {
                0 => None,
                1 => Some(Value::F64(floats[rng.usize(..floats.len())])),
                2 => Some(Value::F64(f64::from_bits(rng.u64(..)))),
                3 => Some(Value::I64(rng.i64(..))),
                4 => Some(Value::U64(rng.u64(..))),
                5 => Some(Value::Bool(rng.bool())),
                6 => Some(Value::Str(pick(&mut rng).into())),
                _ => Some(Value::I64([i64::MIN, i64::MAX, 0, -1][rng.usize(..4)])),
            };
            let quality = match rng.u8(0..3) {
                0 => Quality::Good,
                1 => Quality::Uncertain(pick(&mut rng).into()),
                _ => Quality::Bad(pick(&mut rng).into()),
            };
            let r = Reading {
                device: pick(&mut rng).into(),
                tag: pick(&mut rng).into(),
                ts: Utc
                    .timestamp_opt(rng.i64(0..4_102_444_800), rng.u32(0..1_000_000_000))
                    .unwrap(),
                value,
                quality,
                unit: rng.bool().then(|| pick(&mut rng).into()),
            };
            let seq = [i, u64::MAX, rng.u64(..)][rng.usize(..3)];
            let mut out = Vec::new();
            encode_reading(seq, &r, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(reference(seq, &r)).unwrap(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_json_length_of_a_string_is_what_serde_json_writes() {
        let mut texts: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        texts.extend(["", "孔径", "😀\u{7f}", "\"\\\n"].map(String::from));
        for t in &texts {
            assert_eq!(
                json_str_len(t),
                serde_json::to_string(t).unwrap().len(),
                "{t:?}"
            );
            let mut out = Vec::new();
            write_str(&mut out, t);
            assert_eq!(json_str_len(t), out.len(), "{t:?}");
        }
    }

    /// Random readings (escapes, CJK, the same tag with different units, names shared and not shared
    /// as `Arc`s, tag orders that change) packed in the compact format decode back to what went in.
    #[test]
    fn compact_messages_decode_to_the_readings_that_went_in() {
        use chrono::{TimeZone, Utc};
        let mut rng = fastrand::Rng::with_seed(17);
        let texts = [
            "r0",
            "孔径",
            "a\"q",
            "b\\s",
            "nl\n",
            "😀",
            "",
            "r1",
            "\u{1}\u{1f}\u{1}\u{1}",
        ];
        let shared: Vec<Arc<str>> = texts.iter().map(|t| Arc::from(*t)).collect();
        let name = |rng: &mut fastrand::Rng| -> Arc<str> {
            let i = rng.usize(..texts.len());
            if rng.bool() {
                shared[i].clone()
            } else {
                Arc::from(texts[i])
            }
        };
        for round in 0..200 {
            let max_bytes = rng.usize(300..20_000);
            let mut p = Packer::with_format(
                "gw\"1",
                "e",
                rng.usize(1..300),
                max_bytes,
                JsonFormat::Compact,
            );
            let mut want = Vec::new();
            for seq in 1..=rng.u64(1..2_000) {
                let r = Reading {
                    device: name(&mut rng),
                    tag: name(&mut rng),
                    ts: Utc
                        .timestamp_opt(
                            rng.i64(1_600_000_000..1_700_000_000),
                            rng.u32(..1_000_000_000),
                        )
                        .unwrap(),
                    value: match rng.u8(0..4) {
                        0 => None,
                        // Short floats: serde_json's parser (without `float_roundtrip`) may
                        // read other floats back one ULP off.
                        1 => Some(Value::F64(f64::from(rng.i16(..)) / 4.0)),
                        2 => Some(Value::I64(rng.i64(..))),
                        _ => Some(Value::Str(name(&mut rng))),
                    },
                    quality: match rng.u8(0..3) {
                        0 => Quality::Good,
                        1 => Quality::Uncertain(name(&mut rng)),
                        _ => Quality::Bad(name(&mut rng)),
                    },
                    unit: rng.bool().then(|| name(&mut rng)),
                };
                if !p.push_reading(seq, &r, 1_000_000) {
                    break;
                }
                want.push((seq, r));
            }
            let mut got = Vec::new();
            for m in p.finish() {
                assert!(
                    m.payload.len() <= max_bytes,
                    "{} > {max_bytes}",
                    m.payload.len()
                );
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert_eq!(v["agent"], "gw\"1");
                let t0 = v["t0"].as_i64().unwrap();
                let tags = v["tags"].as_array().unwrap();
                let used: std::collections::BTreeSet<u64> = v["readings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a[1].as_u64().unwrap())
                    .collect();
                assert_eq!(used.len(), tags.len(), "every table entry is used");
                for a in v["readings"].as_array().unwrap() {
                    let entry = &tags[a[1].as_u64().unwrap() as usize];
                    got.push((
                        a[0].as_u64().unwrap(),
                        v["device"].as_str().unwrap().to_string(),
                        entry["tag"].as_str().unwrap().to_string(),
                        entry.get("unit").map(|u| u.as_str().unwrap().to_string()),
                        t0 + a[2].as_i64().unwrap(),
                        a[3].clone(),
                        a.get(4)
                            .map_or("good".to_string(), |q| q.as_str().unwrap().to_string()),
                        a.get(5).map(|q| q.as_str().unwrap().to_string()),
                    ));
                }
            }
            got.sort_by_key(|g| g.0);
            let want: Vec<_> = want
                .iter()
                .map(|(seq, r)| {
                    (
                        *seq,
                        r.device.to_string(),
                        r.tag.to_string(),
                        r.unit.as_ref().map(|u| u.to_string()),
                        r.ts.timestamp_micros(),
                        serde_json::to_value(value_json(&r.value)).unwrap(),
                        r.quality.name().to_string(),
                        r.quality.reason().map(str::to_string),
                    )
                })
                .collect();
            assert_eq!(got.len(), want.len(), "round {round}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "round {round}");
            }
        }
    }

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
    fn sixty_four_bit_integers_are_exact_json_integers() {
        for (value, text) in [
            (Value::U64(u64::MAX), "18446744073709551615"),
            (
                Value::U64(12_345_678_901_234_567_890),
                "12345678901234567890",
            ),
            (Value::I64(i64::MIN), "-9223372036854775808"),
        ] {
            let mut out = Vec::new();
            encode_reading(1, &sr(2, "a", Some(value)).reading, &mut out);
            let json = String::from_utf8(out).unwrap();
            assert!(json.contains(&format!("\"value\":{text},")), "{json}");
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert!(v["value"].is_u64() || v["value"].is_i64(), "{json}");
        }
    }

    #[test]
    fn non_finite_values_become_null() {
        let mut out = Vec::new();
        encode_reading(1, &sr(2, "a", Some(Value::F64(f64::NAN))).reading, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["value"].is_null());
    }

    #[test]
    fn compact_messages_carry_the_tag_table_once_and_arrays_per_reading() {
        let mut p = Packer::with_format(
            "gw",
            "00000000000000e1",
            1000,
            64 * 1024,
            JsonFormat::Compact,
        );
        for seq in 1..=4 {
            let mut r = sr(seq, "a", Some(Value::F64(seq as f64 / 2.0)));
            if seq == 3 {
                r.reading.tag = Arc::from("u");
                r.reading.unit = None;
            }
            r.reading.ts += chrono::Duration::microseconds(seq as i64 * 10);
            assert!(p.push(&r, 4));
        }
        let msgs = p.finish();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].lo, msgs[0].hi), (1, 4));
        let v: serde_json::Value = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(v["device"], "a");
        assert_eq!(v["epoch"], "00000000000000e1");
        assert_eq!(v["t0"], 1_700_000_000_123_466i64);
        assert_eq!(
            v["tags"],
            serde_json::json!([{"tag": "t", "unit": "mm"}, {"tag": "u"}])
        );
        assert_eq!(
            v["readings"],
            serde_json::json!([
                [1, 0, 0, 0.5, "bad", "timeout"],
                [2, 0, 10, 1.0],
                [3, 1, 20, 1.5, "bad", "timeout"],
                [4, 0, 30, 2.0]
            ])
        );
    }

    #[test]
    fn compact_messages_respect_count_and_size() {
        let mut p = Packer::with_format("gw", "e", 1000, 2048, JsonFormat::Compact);
        for seq in 1..=500 {
            if !p.push(&sr(seq, "a", Some(Value::I64(seq as i64))), 1000) {
                break;
            }
        }
        let msgs = p.finish();
        assert!(msgs.len() > 1);
        let mut next = 1;
        for m in &msgs {
            assert!(m.payload.len() <= 2048, "{}", m.payload.len());
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            for r in v["readings"].as_array().unwrap() {
                assert_eq!(r[0], next);
                next += 1;
            }
        }
        assert_eq!(next, 501);
    }
}
