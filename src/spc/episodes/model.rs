//! What an episode is made of: its states, its body (the JSON of every `spc.alarm` event), the policy
//! it follows, the transitions it produces and the rate guards. No behaviour beyond small helpers.

use std::collections::{BTreeMap, VecDeque};

use lineside_spc::{ChartId, PointLimits, Rule, RuleText, Severity, SpecSide};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spc::rounding::Rounding;

/// Event kind of an episode transition.
pub const ALARM: &str = "spc.alarm";
/// Event kind of a shelving / out-of-service change.
pub const SUPPRESSION: &str = "spc.suppression";

/// Points an episode lists at most (newest kept).
pub(super) const MAX_POINTS: usize = 50;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpisodeKind {
    OutOfControl,
    OutOfSpec,
}

/// ISA-18.2 alarm states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmState {
    ActiveUnacked,
    ActiveAcked,
    RtnUnacked,
    Normal,
}

/// What each characteristic's alarms follow (from its configuration).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Consecutive in-control points that end an out-of-control episode.
    pub return_to_normal: u32,
    /// Consecutive in-spec readings that end an out-of-spec episode: `return_to_normal` times the
    /// subgroup size, the same stretch of production.
    pub return_to_normal_readings: u32,
    /// An `updated` event every this many further points (besides new rules and re-activation).
    pub update_every: u32,
    pub reaction_plan: Vec<String>,
    /// Steps for a rule (`nelson-2`, ...) or `out-of-spec`, instead of `reaction_plan`.
    pub reaction_plan_rule: BTreeMap<String, Vec<String>>,
    pub unit: Option<String>,
    /// K of each enabled rule, for its text and the points of its pattern.
    pub rule_points: BTreeMap<Rule, u32>,
    pub usl: Option<f64>,
    pub lsl: Option<f64>,
    pub target: Option<f64>,
    pub rounding: Rounding,
    /// Raised episodes per characteristic per 10 minutes (0: no limit).
    pub max_raised_per_10min: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRef {
    pub subgroup: Option<u64>,
    pub seq: u64,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    pub rule: Rule,
    pub severity: Severity,
    pub direction: String,
    pub first_subgroup: Option<u64>,
    pub text: RuleText,
}

/// Who acknowledged, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckInfo {
    pub by: String,
    pub via: String,
    pub at: String,
    pub cause: Option<String>,
    pub action: Option<String>,
    pub note: Option<String>,
}

/// One episode: the body of every `spc.alarm` event and an entry of the retained active set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub episode: u64,
    pub characteristic: String,
    pub episode_kind: EpisodeKind,
    pub chart: Option<ChartId>,
    pub partition: Option<String>,
    pub state: AlarmState,
    pub severity: Severity,
    pub raised_at: String,
    pub last_at: String,
    pub rules: Vec<RuleHit>,
    pub direction: Option<String>,
    pub count: u64,
    pub points: VecDeque<PointRef>,
    pub points_truncated: bool,
    pub worst: Option<PointRef>,
    pub last: Option<PointRef>,
    pub limits: Option<PointLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<SpecSide>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    pub unit: Option<String>,
    pub context: Value,
    pub reaction_plan: Vec<String>,
    pub in_control_run: u32,
    pub return_to_normal: u32,
    pub ack: Option<AckInfo>,
    /// Raised at (Unix µs), for the time to acknowledge.
    #[serde(default)]
    pub raised_micros: i64,
}

/// Shelved (with an expiry) or out of service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// "shelved" or "out-of-service".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_micros: Option<i64>,
    pub by: String,
    pub via: String,
    pub note: Option<String>,
}

/// Who asked for a change, and when (Unix µs and RFC 3339).
#[derive(Debug, Clone)]
pub struct Actor {
    pub by: String,
    pub via: String,
    pub now_micros: i64,
}

/// An event to store: the episode's (or suppression's) whole state after the transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: &'static str,
    pub transition: &'static str,
    pub episode: Option<u64>,
    pub body: Value,
    /// The same for a transition regenerated by a replay: stored once.
    pub dedup: String,
    /// Seconds from raise to acknowledgement (for the KPI), on an acknowledgement.
    pub ack_seconds: Option<f64>,
}

/// Per chart (and partition): subgroup numbers and the recent points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChartTrack {
    pub subgroups: u64,
    pub last_seq: u64,
    pub recent: VecDeque<PointRef>,
}

/// A sliding 10-minute window of raise times, by the points' timestamps (deterministic on replay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateGuard {
    pub times: VecDeque<i64>,
    #[serde(default)]
    pub suppressed: u64,
}

pub const TEN_MINUTES_US: i64 = 600_000_000;

impl RateGuard {
    /// Whether one more raise at `at` stays within `max` per 10 minutes (0: unlimited).
    pub fn allows(&mut self, at: i64, max: u32) -> bool {
        while self
            .times
            .front()
            .is_some_and(|&t| t <= at - TEN_MINUTES_US)
        {
            self.times.pop_front();
        }
        max == 0 || self.times.len() < max as usize
    }
    pub fn record(&mut self, at: i64) {
        self.times.push_back(at);
    }
}

/// The agent-wide rate guard and its limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentGuard {
    pub guard: RateGuard,
    /// Raised episodes per 10 minutes over all characteristics (0: no limit).
    pub max: u32,
}

pub(super) fn chart_key(chart: ChartId, partition: Option<&str>) -> String {
    format!("{}|{}", chart.as_str(), partition.unwrap_or(""))
}

fn code(kind: EpisodeKind, chart: Option<ChartId>) -> u64 {
    match (kind, chart) {
        (EpisodeKind::OutOfSpec, _) | (_, None) => 15,
        (_, Some(c)) => c as u64,
    }
}

/// Episode ids are derived from the reading that raised it, so a replay gives the same id: the
/// seq of the raising point times 16 plus the chart (15 for out-of-spec). Opaque to upstream.
pub(super) fn episode_id(seq: u64, kind: EpisodeKind, chart: Option<ChartId>) -> u64 {
    seq.saturating_mul(16).saturating_add(code(kind, chart))
}

pub(super) fn worse(a: &PointRef, b: &PointRef, centre: f64) -> bool {
    (b.value - centre).abs() > (a.value - centre).abs()
}

impl Episode {
    pub(super) fn body(&self, transition: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("raised_micros");
            m.insert("transition".into(), transition.into());
        }
        v
    }

    pub(super) fn push_point(&mut self, p: PointRef, centre: f64) {
        if self.points.iter().any(|q| q.seq == p.seq) {
            return;
        }
        if self.worst.as_ref().is_none_or(|w| worse(w, &p, centre)) {
            self.worst = Some(p.clone());
        }
        let at = self.points.partition_point(|q| q.seq < p.seq);
        self.points.insert(at, p);
        while self.points.len() > MAX_POINTS {
            self.points.pop_front();
            self.points_truncated = true;
        }
    }
}

pub(super) fn plan(policy: &Policy, rule: Option<&str>) -> Vec<String> {
    rule.and_then(|r| policy.reaction_plan_rule.get(r))
        .unwrap_or(&policy.reaction_plan)
        .clone()
}

pub(super) fn transition(e: &Episode, t: &'static str, ack_seconds: Option<f64>) -> Transition {
    Transition {
        kind: ALARM,
        transition: t,
        episode: Some(e.episode),
        dedup: format!(
            "{ALARM}|{}|{}|{t}|{}|{}",
            e.characteristic,
            e.episode,
            e.last.as_ref().map_or(0, |p| p.seq),
            e.count
        ),
        body: e.body(t),
        ack_seconds,
    }
}
