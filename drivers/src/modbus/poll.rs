//! The poll loop of one Modbus device: every poll interval, run the plan's requests in order, turn each
//! reply into readings (one timestamp per request for all of its tags), apply deadband/heartbeat, and hand
//! the cycle's readings to the store in one batch.
//!
//! Fault isolation: a failed request marks exactly its own tags bad with the reason (an exception names
//! the exception). A unit that timed out is not asked again in the same cycle (its remaining requests are
//! marked bad without being sent), so a dead unit costs one timeout per cycle and the other units on the
//! link keep their pace.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, MissedTickBehavior};

use super::bus::{self, BusHandle};
use super::config::{DeviceSpec, TagSpec};
use super::decode;
use super::plan::Block;
use super::transport::{Link, ReadData, ReadRequest, TxError, TxOutcome};
use crate::device::{DeviceContext, DeviceMetrics, DeviceState, ErrorBurst};
use crate::reading::{Quality, Reading, Value};

/// How a device reaches its link.
enum Channel {
    /// Modbus TCP: the device owns its connection.
    Own(Link),
    /// RTU: the device shares the bus task of its port or gateway.
    Bus(Arc<BusHandle>),
    /// The bus is open with other line settings: every request fails with this reason.
    Refused(String),
}

impl Channel {
    fn open(name: &str, spec: &DeviceSpec) -> Channel {
        if spec.endpoint.is_bus() {
            match bus::attach(&spec.endpoint, &spec.timing, name) {
                Ok(handle) => Channel::Bus(handle),
                Err(e) => Channel::Refused(e),
            }
        } else {
            Channel::Own(Link::new(spec.endpoint.clone(), &spec.timing))
        }
    }

    async fn read(&mut self, req: ReadRequest, timeout: Duration, ifd: Duration) -> TxOutcome {
        match self {
            Channel::Own(link) => link.read(req, timeout, ifd).await,
            Channel::Bus(bus) => bus.read(req, timeout, ifd).await,
            Channel::Refused(e) => TxOutcome {
                result: Err(TxError::NotConnected(e.clone())),
                requests: 0,
                reconnected: false,
            },
        }
    }
}

/// What was last reported for a tag, for deadband and heartbeat.
#[derive(Default)]
struct Reported {
    value: Option<Value>,
    quality: Option<Quality>,
    at: Option<Instant>,
}

struct TagRt {
    spec: TagSpec,
    reported: Reported,
}

pub(crate) async fn run(name: String, spec: DeviceSpec, blocks: Vec<Block>, ctx: DeviceContext) {
    let device: Arc<str> = Arc::from(name.as_str());
    let mut channel = Channel::open(&name, &spec);
    let mut tags: Vec<TagRt> = spec
        .tags
        .iter()
        .map(|t| TagRt {
            spec: t.clone(),
            reported: Reported::default(),
        })
        .collect();
    let mut burst = ErrorBurst::new(Duration::from_secs(300));
    let mut ticker = tokio::time::interval(spec.timing.poll_interval);
    // A slow cycle (timeouts) delays the next one rather than firing a burst of catch-up polls at the line.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if let Channel::Refused(e) = &channel {
        ctx.metrics.set_last_error(e.clone());
        tracing::error!(device = %name, "modbus: {e}");
    }
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let cycle = poll_once(
            &device,
            &spec,
            &blocks,
            &mut channel,
            &mut tags,
            &ctx.metrics,
        );
        let out = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            out = cycle => out,
        };
        match (&out.first_error, out.answered) {
            (Some(e), _) => {
                if burst.error() {
                    let suppressed = burst.take_suppressed();
                    tracing::warn!(device = %name, suppressed, "modbus: {e}");
                }
            }
            (None, true) => {
                if let Some(n) = burst.ok() {
                    tracing::info!(device = %name, suppressed = n, "modbus: all requests answered again");
                }
            }
            (None, false) => {}
        }
        if out.answered {
            ctx.metrics.set_state(DeviceState::Connected);
        } else if out.first_error.is_some() {
            ctx.metrics.set_state(DeviceState::Disconnected);
        }
        if ctx.publish(out.readings).await.is_err() {
            break;
        }
    }
    ctx.metrics.set_state(DeviceState::Stopped);
}

struct CycleOutcome {
    readings: Vec<Reading>,
    /// At least one request got an answer (data or exception).
    answered: bool,
    first_error: Option<String>,
}

async fn poll_once(
    device: &Arc<str>,
    spec: &DeviceSpec,
    blocks: &[Block],
    channel: &mut Channel,
    tags: &mut [TagRt],
    metrics: &DeviceMetrics,
) -> CycleOutcome {
    let mut out = CycleOutcome {
        readings: Vec::with_capacity(tags.len()),
        answered: false,
        first_error: None,
    };
    let mut silent_units: Vec<u8> = Vec::new();
    for block in blocks {
        let req = ReadRequest {
            unit_id: block.unit_id,
            area: block.area,
            start: block.start,
            count: block.count,
        };
        let result = if silent_units.contains(&block.unit_id) {
            Err(Arc::<str>::from(format!(
                "timeout: unit {} did not answer earlier in this poll (not asked again)",
                block.unit_id
            )))
        } else {
            let outcome = channel
                .read(req, spec.timing.timeout, spec.timing.inter_frame_delay)
                .await;
            account(metrics, &outcome, req, &mut out);
            match outcome.result {
                Ok(data) => Ok(data),
                Err(e) => {
                    if matches!(e, TxError::Timeout(_)) {
                        silent_units.push(block.unit_id);
                    }
                    Err(Arc::<str>::from(e.reason()))
                }
            }
        };
        // One timestamp per request, shared by all of its tags.
        let ts = Utc::now();
        let now = Instant::now();
        for &i in &block.tags {
            let Some(tag) = tags.get_mut(i) else { continue };
            let reading = match &result {
                Ok(data) => match tag_value(&tag.spec, block, data) {
                    Ok(value) => good(device, &tag.spec, ts, value),
                    Err(e) => bad(device, &tag.spec, ts, Arc::from(format!("decode: {e}"))),
                },
                Err(reason) => bad(device, &tag.spec, ts, reason.clone()),
            };
            if should_report(&tag.spec, &tag.reported, &reading, now) {
                tag.reported = Reported {
                    value: reading.value.clone(),
                    quality: Some(reading.quality.clone()),
                    at: Some(now),
                };
                out.readings.push(reading);
            }
        }
    }
    out
}

/// Updates the device's counters from one transaction.
fn account(metrics: &DeviceMetrics, o: &TxOutcome, req: ReadRequest, out: &mut CycleOutcome) {
    metrics
        .requests
        .fetch_add(u64::from(o.requests), Ordering::Relaxed);
    if o.reconnected {
        metrics.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    let error = match &o.result {
        Ok(_) => {
            out.answered = true;
            return;
        }
        Err(TxError::Exception(_)) => {
            out.answered = true;
            metrics.exceptions.fetch_add(1, Ordering::Relaxed);
            o.result.as_ref().err()
        }
        Err(TxError::Timeout(_)) => {
            metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            o.result.as_ref().err()
        }
        Err(TxError::Transport(_) | TxError::Protocol(_) | TxError::Connect(_)) => {
            metrics.errors.fetch_add(1, Ordering::Relaxed);
            o.result.as_ref().err()
        }
        // Nothing was attempted; the fault was counted when it happened.
        Err(TxError::NotConnected(_)) => o.result.as_ref().err(),
    };
    if let Some(e) = error {
        let text = format!("{req}: {}", e.reason());
        if !matches!(e, TxError::NotConnected(_)) {
            metrics.set_last_error(text.clone());
        }
        out.first_error.get_or_insert(text);
    }
}

/// The tag's value from its request's data.
fn tag_value(tag: &TagSpec, block: &Block, data: &ReadData) -> Result<Value, String> {
    let offset = usize::from(tag.address.saturating_sub(block.start));
    let raw = match data {
        ReadData::Words(words) => {
            let slice = words
                .get(offset..offset + usize::from(tag.count))
                .ok_or_else(|| "reply too short for this tag".to_string())?;
            decode::decode_registers(slice, tag.ty, tag.order, tag.bit).map_err(|e| e.0)?
        }
        ReadData::Bits(bits) => {
            if tag.area.is_register() {
                return Err("bit data for a register tag".into());
            }
            let bit = bits
                .get(offset)
                .copied()
                .ok_or_else(|| "reply too short for this tag".to_string())?;
            decode::decode_bit(bit)
        }
    };
    decode::to_value(raw, tag.linear)
}

fn good(device: &Arc<str>, tag: &TagSpec, ts: DateTime<Utc>, value: Value) -> Reading {
    Reading::good(device, &tag.name, ts, value, tag.eng_unit.as_ref())
}

fn bad(device: &Arc<str>, tag: &TagSpec, ts: DateTime<Utc>, reason: Arc<str>) -> Reading {
    Reading::bad(device, &tag.name, ts, reason, tag.eng_unit.as_ref())
}

/// Report-by-exception: without `deadband` and `heartbeat` every poll is reported. With either, a reading is
/// reported when it is the first, when its quality (or bad reason) changed, when a number moved more than
/// `deadband` from the last reported value (any change without a deadband; any change for bools and text),
/// or when `heartbeat` has passed since the last report.
fn should_report(tag: &TagSpec, last: &Reported, reading: &Reading, now: Instant) -> bool {
    if tag.deadband.is_none() && tag.heartbeat.is_none() {
        return true;
    }
    let (Some(last_quality), Some(at)) = (&last.quality, last.at) else {
        return true;
    };
    if *last_quality != reading.quality {
        return true;
    }
    if tag
        .heartbeat
        .is_some_and(|hb| now.saturating_duration_since(at) >= hb)
    {
        return true;
    }
    match (&last.value, &reading.value) {
        (None, None) => false,
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64(), tag.deadband) {
            (Some(x), Some(y), Some(db)) if tag.numeric() => (y - x).abs() > db,
            _ => a != b,
        },
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::parse_spec;

    fn tag(extra: &str) -> TagSpec {
        let spec = parse_spec(
            toml::from_str(&format!(
                "transport = 'tcp'\naddress = 'x'\n[[tag]]\nname = 't'\naddress = 0\n{extra}"
            ))
            .unwrap(),
        )
        .unwrap();
        spec.tags[0].clone()
    }

    fn reading(value: Option<Value>) -> Reading {
        let d: Arc<str> = Arc::from("d");
        match value {
            Some(v) => Reading::good(&d, &d, Utc::now(), v, None),
            None => Reading::bad(&d, &d, Utc::now(), Arc::from("timeout"), None),
        }
    }

    fn step(t: &TagSpec, last: &mut Reported, v: Option<f64>, now: Instant) -> bool {
        let r = reading(v.map(Value::F64));
        let report = should_report(t, last, &r, now);
        if report {
            *last = Reported {
                value: r.value.clone(),
                quality: Some(r.quality.clone()),
                at: Some(now),
            };
        }
        report
    }

    #[test]
    fn deadband_and_heartbeat() {
        let t = tag("type = 'f32'\ndeadband = 0.5\nheartbeat = '10s'");
        let mut last = Reported::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert!(step(&t, &mut last, Some(10.0), t0), "first reading");
        assert!(
            !step(&t, &mut last, Some(10.4), t0 + s),
            "within the deadband"
        );
        assert!(
            !step(&t, &mut last, Some(9.6), t0 + 2 * s),
            "still within, against the last reported value"
        );
        assert!(
            step(&t, &mut last, Some(10.6), t0 + 3 * s),
            "beyond the deadband"
        );
        assert!(step(&t, &mut last, None, t0 + 4 * s), "quality changed");
        assert!(
            !step(&t, &mut last, None, t0 + 5 * s),
            "still bad, same reason"
        );
        assert!(step(&t, &mut last, Some(10.6), t0 + 6 * s), "recovered");
        assert!(step(&t, &mut last, Some(10.6), t0 + 16 * s), "heartbeat");
    }

    #[test]
    fn without_deadband_every_poll_is_reported() {
        let t = tag("type = 'f32'");
        let mut last = Reported::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(step(&t, &mut last, Some(1.0), t0));
        }
        let on_change = tag("type = 'f32'\nheartbeat = '1m'");
        let mut last = Reported::default();
        assert!(step(&on_change, &mut last, Some(1.0), t0));
        assert!(!step(&on_change, &mut last, Some(1.0), t0));
        assert!(
            step(&on_change, &mut last, Some(1.0001), t0),
            "heartbeat alone: any change"
        );
    }
}
