//! The checking subscriber: subscribes to the agent's data topics, de-duplicates on `seq`, tracks the
//! contiguous prefix of delivered sequence numbers, counts payload bytes, and samples latency (the
//! reading's timestamp → arrival here). It reads both data formats: the default one (0.1.0's and this
//! tree's: an object per reading with `seq` and an RFC 3339 `ts`) and the compact one (`t0` plus an
//! array per reading, `[seq, tag index, µs after t0, value, ...]`).
//!
//! Its session is persistent (clean session off) and the broker keeps sessions across a restart, so a
//! broker outage loses nothing the agent publishes while this client reconnects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

pub struct Stats {
    /// Bit per seq seen.
    seen: Vec<u64>,
    /// Every seq below this one has arrived (the store's sequences start at 1).
    pub prefix: u64,
    pub unique: u64,
    pub duplicates: u64,
    /// Readings in payloads, duplicates included.
    pub readings: u64,
    pub payload_bytes: u64,
    pub messages: u64,
    pub bad_messages: u64,
    /// (arrival, latency) in µs, for sampled readings (seq a multiple of `sample_every`).
    pub latencies: Vec<(i64, i64)>,
    /// Arrival (µs since the epoch) of the last message.
    pub last_arrival: i64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            seen: Vec::new(),
            prefix: 1,
            unique: 0,
            duplicates: 0,
            readings: 0,
            payload_bytes: 0,
            messages: 0,
            bad_messages: 0,
            latencies: Vec::new(),
            last_arrival: 0,
        }
    }

    fn is_seen(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Marks `seq` seen; false when it was seen before.
    fn mark(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if self.seen.len() <= word {
            self.seen.resize(word + 1 + word / 2, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            return false;
        }
        self.seen[word] |= bit;
        while self.is_seen(self.prefix) {
            self.prefix += 1;
        }
        true
    }

    /// Sequence numbers in `1..=last` that never arrived.
    pub fn missing_up_to(&self, last: u64) -> u64 {
        (1..=last).filter(|&s| !self.is_seen(s)).count() as u64
    }

    /// Latency percentiles (ms) of the samples that arrived in `[from, to]` (µs since the epoch):
    /// p50, p95, p99, max and the number of samples.
    pub fn latency_ms(&self, from: i64, to: i64) -> Latency {
        let mut l: Vec<i64> = self
            .latencies
            .iter()
            .filter(|(a, _)| *a >= from && *a <= to)
            .map(|(_, l)| *l)
            .collect();
        l.sort_unstable();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Latency {
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: pct(1.0),
            samples: l.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

/// One reading as far as the subscriber cares: its seq and timestamp.
enum Reading<'a> {
    /// Default format: `ts` as RFC 3339.
    Full { seq: u64, ts: Option<&'a str> },
    /// Compact format: µs after the message's `t0`.
    Compact { seq: u64, offset_us: i64 },
}

impl<'de: 'a, 'a> Deserialize<'de> for Reading<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ReadingVisitor(std::marker::PhantomData))
    }
}

struct ReadingVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ReadingVisitor<'a> {
    type Value = Reading<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a reading (object or compact array)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let (mut seq, mut ts) = (None, None);
        while let Some(k) = m.next_key::<&'de str>()? {
            match k {
                "seq" => seq = Some(m.next_value::<u64>()?),
                "ts" => ts = Some(m.next_value::<&'de str>()?),
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        let seq = seq.ok_or_else(|| serde::de::Error::missing_field("seq"))?;
        Ok(Reading::Full { seq, ts })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let seq: u64 = s
            .next_element()?
            .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
        let _tag: IgnoredAny = s
            .next_element()?
            .ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
        let offset_us: i64 = s
            .next_element()?
            .ok_or_else(|| serde::de::Error::invalid_length(2, &self))?;
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Reading::Compact { seq, offset_us })
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    readings: Vec<Reading<'a>>,
    t0: Option<i64>,
}

pub type Shared = Arc<Mutex<Stats>>;

/// The subscriber's task and what it recorded; dropping it ends the task.
pub struct Subscriber {
    pub stats: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// A snapshot of the counters that matter for a window.
    pub fn counters(&self) -> Counters {
        let s = self.stats.lock().unwrap();
        Counters {
            unique: s.unique,
            readings: s.readings,
            payload_bytes: s.payload_bytes,
            messages: s.messages,
            prefix: s.prefix,
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub unique: u64,
    pub readings: u64,
    pub payload_bytes: u64,
    pub messages: u64,
    pub prefix: u64,
}

/// Connects to the broker on `port` and records every data message of agent `agent_id`; latency is
/// sampled for readings whose seq is a multiple of `sample_every`.
pub async fn start(port: u16, agent_id: &str, sample_every: u64) -> Subscriber {
    let stats: Shared = Arc::new(Mutex::new(Stats::new()));
    let mut opts = MqttOptions::new(format!("bench-sub-{port}"), "127.0.0.1", port);
    opts.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let topic = format!("lineside/{agent_id}/data/#");
    let st = stats.clone();
    let sample_every = sample_every.max(1);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if !ack.session_present {
                        let _ = client.subscribe(topic.clone(), QoS::AtLeastOnce).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => record(&st, &p.payload, sample_every),
                Ok(_) => {}
                // Retry fast: back after a broker restart before the agent (whose back-off is at least
                // 200 ms), so the drain case's first message is the agent's, not a queued burst.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Subscriber { stats, task }
}

fn record(stats: &Shared, payload: &[u8], sample_every: u64) {
    let now = chrono::Utc::now().timestamp_micros();
    let mut s = stats.lock().unwrap();
    s.messages += 1;
    s.payload_bytes += payload.len() as u64;
    s.last_arrival = now;
    let Ok(msg) = serde_json::from_slice::<Message>(payload) else {
        s.bad_messages += 1;
        return;
    };
    for r in &msg.readings {
        let (seq, ts) = match r {
            Reading::Full { seq, ts } => (*seq, *ts),
            Reading::Compact { seq, .. } => (*seq, None),
        };
        s.readings += 1;
        if !s.mark(seq) {
            s.duplicates += 1;
            continue;
        }
        s.unique += 1;
        if seq.is_multiple_of(sample_every) {
            let at = match (r, ts) {
                (Reading::Compact { offset_us, .. }, _) => msg.t0.map(|t0| t0 + offset_us),
                (_, Some(ts)) => chrono::DateTime::parse_from_rfc3339(ts)
                    .ok()
                    .map(|t| t.timestamp_micros()),
                _ => None,
            };
            if let Some(at) = at {
                s.latencies.push((now, now - at));
            }
        }
    }
}
