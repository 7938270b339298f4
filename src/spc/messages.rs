//! The derived MQTT messages SPC publishes through the forwarder's side channel: plotted points,
//! capability indices and the current control limits. Alarms go through the store instead (see
//! `alarms`), because they must arrive at least once.

use std::collections::BTreeMap;

use lineside_spc::{Capability, FrozenLimits, Limits, Point};
use serde::Serialize;

use super::alarms::ts_string;

/// One plotted point (`<prefix>/<agent>/spc/<characteristic>/points`, QoS 1, not retained). When a
/// baseline completes, its points are sent again with limits: the later message for the same
/// (chart, seq) replaces the earlier one.
#[derive(Serialize)]
struct PointMsg<'a> {
    characteristic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<&'a str>,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(flatten)]
    point: &'a Point,
}

pub fn point(ch: &str, unit: Option<&str>, p: &Point) -> Vec<u8> {
    let msg = PointMsg {
        characteristic: ch,
        partition: p.context.partition(),
        ts: ts_string(p.ts_micros),
        unit,
        point: p,
    };
    serde_json::to_vec(&msg).unwrap_or_default()
}

/// Capability of one chart (`.../spc/<characteristic>/capability`).
#[derive(Serialize)]
struct CapabilityMsg<'a> {
    characteristic: &'a str,
    partition: Option<&'a str>,
    ts: String,
    /// The last reading seq taken into account.
    seq: u64,
    usl: Option<f64>,
    lsl: Option<f64>,
    target: Option<f64>,
    unit: Option<&'a str>,
    #[serde(flatten)]
    capability: &'a Capability,
}

pub struct CapabilityCtx<'a> {
    pub characteristic: &'a str,
    pub usl: Option<f64>,
    pub lsl: Option<f64>,
    pub target: Option<f64>,
    pub unit: Option<&'a str>,
    pub seq: u64,
    pub now: &'a str,
}

pub fn capability(c: &CapabilityCtx<'_>, partition: Option<&str>, cap: &Capability) -> Vec<u8> {
    let msg = CapabilityMsg {
        characteristic: c.characteristic,
        partition,
        ts: c.now.to_string(),
        seq: c.seq,
        usl: c.usl,
        lsl: c.lsl,
        target: c.target,
        unit: c.unit,
        capability: cap,
    };
    serde_json::to_vec(&msg).unwrap_or_default()
}

#[derive(Serialize)]
struct ChartLimits<'a> {
    partition: Option<&'a str>,
    /// None while the baseline is being collected.
    limits: Option<Limits>,
    /// "fixed" (from the configuration), "computed" (baseline or recalculation) or "collecting".
    origin: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    computed: Option<&'a FrozenLimits>,
}

/// The current limits of every chart of a characteristic (`.../spc/<characteristic>/limits`,
/// retained): what an upstream chart needs to draw its lines before the next point arrives.
pub fn limits<'a>(
    ch: &str,
    now: &str,
    fixed: bool,
    charts: impl Iterator<Item = (Option<&'a str>, Option<Limits>)>,
    computed: &'a BTreeMap<Option<String>, FrozenLimits>,
) -> Vec<u8> {
    let charts: Vec<ChartLimits<'a>> = charts
        .map(|(partition, limits)| {
            let computed = computed.get(&partition.map(str::to_string));
            ChartLimits {
                partition,
                limits,
                origin: match (limits.is_some(), fixed) {
                    (false, _) => "collecting",
                    (true, true) if computed.is_none() => "fixed",
                    _ => "computed",
                },
                computed,
            }
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "characteristic": ch,
        "ts": now,
        "charts": charts,
    }))
    .unwrap_or_default()
}
