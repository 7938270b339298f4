//! The poll loop of one Modbus device: every poll interval, run the plan's requests in order, turn each
//! reply into readings (one timestamp per request for all of its tags), apply deadband/heartbeat, and hand
//! the cycle's readings to the store in one batch.
//!
//! Fault isolation: a failed request marks exactly its own tags bad with the reason (an exception names
//! the exception). A unit that timed out is not asked again in the same cycle (its remaining requests are
//! marked bad without being sent), so a dead unit costs one timeout per cycle and the other units on the
//! link keep their pace.
//!
//! Exception isolation: a merged request answered with `IllegalDataAddress` or `IllegalDataValue` (one of
//! its registers does not exist, or the device refuses the span) is split in two and both halves are read
//! again at once, recursively, until the refused registers are alone in their request; only the tags of
//! those requests are bad. The split plan is kept for the following polls (and shown in the device's
//! `notes` in `/status`); every [`MERGE_RETRY`] the configured plan is tried again, in case the device's
//! map changed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, MissedTickBehavior};

use super::bus::{self, BusHandle};
use super::config::{DeviceConfig, TagConfig};
use super::decode;
use super::plan::Block;
use super::transport::{Link, LinkDown, ReadData, ReadRequest, TxError, TxOutcome, exception_name};
use crate::device::{DeviceContext, DeviceMetrics, DeviceState, ErrorBurst};
use crate::reading::{Quality, Reading, Value};

/// How a device reaches its link.
enum Channel {
    /// Modbus TCP: the device owns its connection.
    Own(Link),
    /// RTU: the device shares the bus task of its port or gateway.
    Bus(Arc<BusHandle>),
    /// The bus is open with other line settings: every request fails with this reason.
    Refused(bus::BusConflict),
}

impl Channel {
    fn open(name: &str, spec: &DeviceConfig) -> Channel {
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
                result: Err(TxError::NotConnected(LinkDown::Refused(e.to_string()))),
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
    spec: TagConfig,
    reported: Reported,
}

/// How long a plan split after exceptions is kept before the configured plan is tried again.
pub const MERGE_RETRY: Duration = Duration::from_secs(600);

/// The requests a poll sends: the configured plan, with the requests split after exceptions replaced by
/// their parts.
pub(crate) struct LivePlan {
    configured: Vec<Block>,
    current: Vec<Block>,
    split_since: Option<Instant>,
}

impl LivePlan {
    pub(crate) fn new(blocks: Vec<Block>) -> Self {
        LivePlan {
            current: blocks.clone(),
            configured: blocks,
            split_since: None,
        }
    }

    /// Goes back to the configured plan once [`MERGE_RETRY`] has passed since the split.
    fn maybe_merge_again(&mut self, now: Instant) -> bool {
        if self
            .split_since
            .is_some_and(|t| now.saturating_duration_since(t) >= MERGE_RETRY)
        {
            self.current = self.configured.clone();
            self.split_since = None;
            return true;
        }
        false
    }
}

/// Exceptions that say "something in this span is not readable", which splitting can narrow down.
fn isolatable(e: &TxError) -> bool {
    matches!(
        e,
        TxError::Exception(
            tokio_modbus::ExceptionCode::IllegalDataAddress
                | tokio_modbus::ExceptionCode::IllegalDataValue
        )
    )
}

/// Splits a block in two by its tags (tags that share registers stay together); `None` when it cannot be
/// split further.
pub(crate) fn split_block(block: &Block, tags: &[TagConfig]) -> Option<(Block, Block)> {
    let mut order: Vec<usize> = block.tags.clone();
    order.sort_by_key(|&i| tags.get(i).map(|t| (t.address, t.end())));
    // Spans of overlapping tags: a split between two spans never cuts a tag.
    let mut spans: Vec<Vec<usize>> = Vec::new();
    let mut span_end = 0u32;
    for i in order {
        let t = tags.get(i)?;
        match spans.last_mut() {
            Some(span) if u32::from(t.address) < span_end => {
                span.push(i);
                span_end = span_end.max(t.end());
            }
            _ => {
                spans.push(vec![i]);
                span_end = t.end();
            }
        }
    }
    if spans.len() < 2 {
        return None;
    }
    let right = spans.split_off(spans.len() / 2);
    let part = |group: Vec<Vec<usize>>| -> Option<Block> {
        let idx: Vec<usize> = group.into_iter().flatten().collect();
        let start = idx
            .iter()
            .filter_map(|&i| tags.get(i))
            .map(|t| t.address)
            .min()?;
        let end = idx
            .iter()
            .filter_map(|&i| tags.get(i))
            .map(|t| t.end())
            .max()?;
        Some(Block {
            unit_id: block.unit_id,
            area: block.area,
            start,
            count: u16::try_from(end.checked_sub(u32::from(start))?).ok()?,
            tags: idx,
        })
    };
    Some((part(spans)?, part(right)?))
}

/// How the split plan reads in `/status`.
fn split_notes(plan: &LivePlan) -> Vec<String> {
    if plan.split_since.is_none() {
        return Vec::new();
    }
    let parts: Vec<String> = plan
        .current
        .iter()
        .map(|b| {
            format!(
                "unit {} {} {}..={}",
                b.unit_id,
                b.area.name(),
                b.start,
                b.end().saturating_sub(1)
            )
        })
        .collect();
    vec![format!(
        "read requests split after exceptions ({} request(s) instead of {}; merging retried every {}): {}",
        plan.current.len(),
        plan.configured.len(),
        humantime::format_duration(MERGE_RETRY),
        parts.join(", ")
    )]
}

pub(crate) async fn run(name: String, spec: DeviceConfig, blocks: Vec<Block>, ctx: DeviceContext) {
    let mut plan = LivePlan::new(blocks);
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
        ctx.metrics.set_last_error(e.to_string());
        tracing::error!(device = %name, "modbus: {e}");
    }
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if plan.maybe_merge_again(Instant::now()) {
            tracing::info!(device = %name, "modbus: trying the configured read requests again");
            ctx.metrics.set_notes(Vec::new());
        }
        let was_split = plan.split_since.is_some();
        let cycle = poll_once(
            &device,
            &spec,
            &mut plan,
            &mut channel,
            &mut tags,
            &ctx.metrics,
        );
        let out = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            out = cycle => out,
        };
        if plan.split_since.is_some() && (out.split || !was_split) {
            ctx.metrics.set_notes(split_notes(&plan));
        }
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
    /// A request was split after an exception in this poll.
    split: bool,
}

async fn poll_once(
    device: &Arc<str>,
    spec: &DeviceConfig,
    plan: &mut LivePlan,
    channel: &mut Channel,
    tags: &mut [TagRt],
    metrics: &DeviceMetrics,
) -> CycleOutcome {
    let mut out = CycleOutcome {
        readings: Vec::with_capacity(tags.len()),
        answered: false,
        first_error: None,
        split: false,
    };
    let mut silent_units: Vec<u8> = Vec::new();
    let mut queue: VecDeque<Block> = plan.current.iter().cloned().collect();
    let mut sent: Vec<Block> = Vec::with_capacity(queue.len());
    while let Some(block) = queue.pop_front() {
        let block = &block;
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
                    if isolatable(&e)
                        && let Some((left, right)) = split_block(block, &spec.tags)
                    {
                        if let TxError::Exception(code) = &e {
                            tracing::info!(
                                "modbus: {req} answered {}; reading {} and {} separately",
                                exception_name(*code),
                                describe_span(&left),
                                describe_span(&right)
                            );
                        }
                        queue.push_front(right);
                        queue.push_front(left);
                        out.split = true;
                        continue;
                    }
                    Err(Arc::<str>::from(e.reason()))
                }
            }
        };
        sent.push(block.clone());
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
    if out.split {
        plan.current = sent;
        plan.split_since.get_or_insert_with(Instant::now);
    }
    out
}

fn describe_span(b: &Block) -> String {
    format!("{}..={}", b.start, b.end().saturating_sub(1))
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

/// Why a tag's value could not be taken from its request's reply (the reason reads `decode: ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum TagValueError {
    #[error("reply too short for this tag")]
    ReplyTooShort,
    #[error("bit data for a register tag")]
    BitsForRegister,
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
}

/// The tag's value from its request's data.
fn tag_value(tag: &TagConfig, block: &Block, data: &ReadData) -> Result<Value, TagValueError> {
    let offset = usize::from(tag.address.saturating_sub(block.start));
    let raw = match data {
        ReadData::Words(words) => {
            let slice = words
                .get(offset..offset + usize::from(tag.count))
                .ok_or(TagValueError::ReplyTooShort)?;
            decode::decode_registers(slice, tag.ty, tag.order, tag.bit)?
        }
        ReadData::Bits(bits) => {
            if tag.area.is_register() {
                return Err(TagValueError::BitsForRegister);
            }
            let bit = bits
                .get(offset)
                .copied()
                .ok_or(TagValueError::ReplyTooShort)?;
            decode::decode_bit(bit)
        }
    };
    Ok(decode::to_value(raw, tag.linear)?)
}

fn good(device: &Arc<str>, tag: &TagConfig, ts: DateTime<Utc>, value: Value) -> Reading {
    Reading::good(device, &tag.name, ts, value, tag.eng_unit.as_ref())
}

fn bad(device: &Arc<str>, tag: &TagConfig, ts: DateTime<Utc>, reason: Arc<str>) -> Reading {
    Reading::bad(device, &tag.name, ts, reason, tag.eng_unit.as_ref())
}

/// Report-by-exception: without `deadband` and `heartbeat` every poll is reported. With either, a reading is
/// reported when it is the first, when its quality (or bad reason) changed, when a number moved more than
/// `deadband` from the last reported value (any change without a deadband; any change for bools and text),
/// or when `heartbeat` has passed since the last report.
fn should_report(tag: &TagConfig, last: &Reported, reading: &Reading, now: Instant) -> bool {
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
    use crate::modbus::config::parse as parse_config;

    fn tag(extra: &str) -> TagConfig {
        let spec = parse_config(
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

    fn step(t: &TagConfig, last: &mut Reported, v: Option<f64>, now: Instant) -> bool {
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
