//! The derived MQTT messages SPC publishes through the forwarder's side channel: plotted points,
//! capability indices and the current control limits. Alarms go through the store instead (see
//! `alarms`), because they must arrive at least once.

use std::collections::BTreeMap;

use lineside_spc::{
    Capability, ChartId, Context, FrozenLimits, Limits, Point, PointLimits, RuleSet,
};
use serde::Serialize;

use super::alarms::ts_string;
use super::rounding::Rounding;

/// One plotted point (`<prefix>/<agent>/spc/<characteristic>/points`, QoS 1, not retained), sent once:
/// numbered per chart (`subgroup`), marked `baseline` or `monitoring`, rounded (see `rounding`).
#[derive(Serialize)]
struct PointMsg<'a> {
    characteristic: &'a str,
    chart: ChartId,
    partition: Option<&'a str>,
    subgroup: u64,
    phase: &'static str,
    seq_first: u64,
    seq: u64,
    ts: String,
    n: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_size: Option<f64>,
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    /// CUSUM: the unit of the measured values (the sums are in σ).
    #[serde(skip_serializing_if = "Option::is_none")]
    source_unit: Option<&'a str>,
    limits: Option<PointLimits>,
    rules: RuleSet,
    context: &'a Context,
}

/// The unit of a chart's values: σ for CUSUM sums, none for fractions and counts, else the source's.
pub fn chart_unit(chart: ChartId, unit: Option<&str>) -> Option<&str> {
    match chart {
        ChartId::CusumUpper | ChartId::CusumLower => Some("σ"),
        ChartId::P | ChartId::Np | ChartId::C | ChartId::U => None,
        _ => unit,
    }
}

pub fn point(
    ch: &str,
    unit: Option<&str>,
    p: &Point,
    subgroup: u64,
    baseline: bool,
    rounding: &Rounding,
) -> Vec<u8> {
    let cusum = matches!(p.chart, ChartId::CusumUpper | ChartId::CusumLower);
    let msg = PointMsg {
        characteristic: ch,
        chart: p.chart,
        partition: p.context.partition(),
        subgroup,
        phase: if baseline || p.limits.is_none() {
            "baseline"
        } else {
            "monitoring"
        },
        seq_first: p.seq_first,
        seq: p.seq,
        ts: ts_string(p.ts_micros),
        n: p.n,
        sample_size: p.sample_size,
        value: rounding.value(p.chart, p.value),
        unit: chart_unit(p.chart, unit),
        source_unit: if cusum { unit } else { None },
        limits: p.limits.map(|l| rounding.limits(p.chart, l)),
        rules: p.rules,
        context: &p.context,
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
