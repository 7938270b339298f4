//! Alarm episodes: one alarm per assignable cause, with the ISA-18.2 lifecycle.
//!
//! An episode opens when a chart of a characteristic (per partition) goes out of control, or when a
//! reading is beyond a specification limit (its own kind), and stays one alarm while the condition
//! persists: further points and rules update it. It returns to normal after `return_to_normal`
//! consecutive in-control points (in-spec readings for out-of-spec episodes).
//!
//! ```text
//!   raise ──▶ active-unacked ──ack──▶ active-acked
//!                 │   ▲                    │
//!             RTN │   │ out of control     │ RTN
//!                 ▼   │ again              ▼
//!             rtn-unacked ───ack──────▶ normal (closed, leaves the active set)
//! ```
//!
//! Shelving (until an expiry) and out-of-service apply to a whole characteristic: while suppressed
//! no episode is raised or updated; return to normal still closes open ones.
//!
//! Pure: no I/O and no clock. Every input carries its time; the same inputs give the same
//! transitions, so a replay after a restart regenerates the transitions already stored and the
//! runtime drops them by [`Transition::dedup`].

use std::collections::{BTreeMap, VecDeque};

use lineside_spc::{
    ChartId, OutOfSpec, Point, PointLimits, Rule, RuleText, Severity, SpecSide, Violation,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::alarms::ts_string;
use super::rounding::Rounding;

/// Event kind of an episode transition.
pub const ALARM: &str = "spc.alarm";
/// Event kind of a shelving / out-of-service change.
pub const SUPPRESSION: &str = "spc.suppression";

/// Points an episode lists at most (newest kept).
const MAX_POINTS: usize = 50;
/// Recent points kept per chart to list the whole pattern when a rule fires.
const RECENT: usize = 64;
/// Open episodes kept per characteristic (memory bound when nobody acknowledges).
const MAX_OPEN: usize = 200;

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

/// The alarms of one characteristic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CharAlarms {
    pub open: Vec<Episode>,
    pub suppression: Option<Suppression>,
    pub charts: BTreeMap<String, ChartTrack>,
    #[serde(default)]
    pub guard: RateGuard,
    /// Violations of the current point, applied together by `flush`.
    #[serde(skip)]
    pending: Vec<Violation>,
    /// The current point was charted before: its violations are not alarmed again.
    #[serde(skip)]
    replotting: bool,
}

/// The agent-wide rate guard and its limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentGuard {
    pub guard: RateGuard,
    /// Raised episodes per 10 minutes over all characteristics (0: no limit).
    pub max: u32,
}

fn chart_key(chart: ChartId, partition: Option<&str>) -> String {
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
fn episode_id(seq: u64, kind: EpisodeKind, chart: Option<ChartId>) -> u64 {
    seq.saturating_mul(16).saturating_add(code(kind, chart))
}

fn worse(a: &PointRef, b: &PointRef, centre: f64) -> bool {
    (b.value - centre).abs() > (a.value - centre).abs()
}

impl Episode {
    fn body(&self, transition: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("raised_micros");
            m.insert("transition".into(), transition.into());
        }
        v
    }

    fn push_point(&mut self, p: PointRef, centre: f64) {
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

impl CharAlarms {
    /// Whether a point of `chart` with this seq was charted before (a baseline re-plotted when its
    /// limits froze): it is then neither numbered, published nor alarmed again.
    fn seen(&self, chart: ChartId, partition: Option<&str>, seq: u64) -> bool {
        self.charts
            .get(&chart_key(chart, partition))
            .is_some_and(|t| seq <= t.last_seq)
    }

    /// Numbers a new point of its chart (1, 2, 3 ...) and keeps it among the recent points. Call
    /// only for points not [`Self::seen`].
    fn number(&mut self, p: &Point, rounding: &Rounding) -> u64 {
        let t = self
            .charts
            .entry(chart_key(p.chart, p.context.partition()))
            .or_default();
        t.subgroups += 1;
        t.last_seq = p.seq;
        t.recent.push_back(PointRef {
            subgroup: Some(t.subgroups),
            seq: p.seq,
            value: rounding.value(p.chart, p.value),
            ts: Some(ts_string(p.ts_micros)),
        });
        while t.recent.len() > RECENT {
            t.recent.pop_front();
        }
        t.subgroups
    }

    /// A plotted point that broke no rule: one more in-control point for its chart's episode.
    fn in_control(&mut self, policy: &Policy, p: &Point, out: &mut Vec<Transition>) {
        let part = p.context.partition();
        let Some(i) = self.open.iter().position(|e| {
            e.episode_kind == EpisodeKind::OutOfControl
                && e.chart == Some(p.chart)
                && e.partition.as_deref() == part
                && matches!(e.state, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
        }) else {
            return;
        };
        self.count_in_control(policy.return_to_normal, i, ts_string(p.ts_micros), out);
    }

    /// A reading charted without being out of specification.
    pub fn in_spec(&mut self, policy: &Policy, ts_micros: i64, out: &mut Vec<Transition>) {
        let idx: Vec<usize> = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.episode_kind == EpisodeKind::OutOfSpec
                    && matches!(e.state, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
            })
            .map(|(i, _)| i)
            .collect();
        for i in idx.into_iter().rev() {
            let n = policy.return_to_normal_readings;
            self.count_in_control(n, i, ts_string(ts_micros), out);
        }
    }

    fn count_in_control(&mut self, needed: u32, i: usize, at: String, out: &mut Vec<Transition>) {
        let Some(e) = self.open.get_mut(i) else {
            return;
        };
        e.in_control_run += 1;
        if e.in_control_run < needed.max(1) {
            return;
        }
        e.last_at = at;
        match e.state {
            AlarmState::ActiveAcked => {
                e.state = AlarmState::Normal;
                let e = self.open.remove(i);
                out.push(transition(&e, "cleared", None));
            }
            _ => {
                e.state = AlarmState::RtnUnacked;
                out.push(transition(e, "returned", None));
            }
        }
    }

    /// A plotted point, in output order: applies the previous point's violations, then numbers this
    /// one and counts it toward return to normal if it broke no rule. Returns its subgroup number,
    /// or None for a point charted before (a baseline re-plotted when its limits froze: it is not
    /// published, numbered or alarmed again).
    pub fn point(
        &mut self,
        ch: &str,
        policy: &Policy,
        agent: &mut AgentGuard,
        p: &Point,
        out: &mut Vec<Transition>,
    ) -> Option<u64> {
        self.flush(ch, policy, agent, out);
        if self.seen(p.chart, p.context.partition(), p.seq) {
            self.replotting = true;
            return None;
        }
        self.replotting = false;
        let n = self.number(p, &policy.rounding);
        if p.rules.is_empty() {
            self.in_control(policy, p, out);
        }
        Some(n)
    }

    /// A rule broken by the current point; applied with the point's other rules by `flush`.
    pub fn violation(&mut self, v: Violation) {
        if !self.replotting {
            self.pending.push(v);
        }
    }

    /// Applies the violations of the current point: raises an episode or updates the open one.
    pub fn flush(
        &mut self,
        ch: &str,
        policy: &Policy,
        agent: &mut AgentGuard,
        out: &mut Vec<Transition>,
    ) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        // Group by chart (an X-bar-R subgroup can break rules on both charts).
        let mut i = 0;
        while let Some(first) = pending.get(i) {
            let (chart, seq) = (first.chart, first.seq);
            let group: Vec<&Violation> = pending[i..]
                .iter()
                .take_while(|v| v.chart == chart && v.seq == seq)
                .collect();
            i += group.len();
            self.apply_group(ch, policy, agent, &group, out);
        }
    }

    fn apply_group(
        &mut self,
        ch: &str,
        policy: &Policy,
        agent: &mut AgentGuard,
        group: &[&Violation],
        out: &mut Vec<Transition>,
    ) {
        let Some(v) = group.first() else { return };
        let part = v.context.partition().map(str::to_string);
        let key = chart_key(v.chart, part.as_deref());
        let recent: Vec<PointRef> = self
            .charts
            .get(&key)
            .map(|t| t.recent.iter().cloned().collect())
            .unwrap_or_default();
        let current = recent
            .iter()
            .rev()
            .find(|p| p.seq == v.seq)
            .cloned()
            .unwrap_or(PointRef {
                subgroup: None,
                seq: v.seq,
                value: policy.rounding.value(v.chart, v.value),
                ts: Some(ts_string(v.ts_micros)),
            });
        let centre = v.limits.centre;
        let at = ts_string(v.ts_micros);
        let open = self.open.iter().position(|e| {
            e.episode_kind == EpisodeKind::OutOfControl
                && e.chart == Some(v.chart)
                && e.partition == part
        });
        let limits = policy.rounding.limits(v.chart, v.limits);
        let mut hits = Vec::new();
        for v in group {
            let k = policy.rule_points.get(&v.rule).copied();
            let n = lineside_spc::pattern_points(v.rule, k) as usize;
            let pattern: Vec<PointRef> = recent
                .iter()
                .rev()
                .skip_while(|p| p.seq != v.seq)
                .take(n)
                .cloned()
                .collect();
            let direction = if lineside_spc::is_trend(v.rule) {
                match recent.iter().rev().skip_while(|p| p.seq != v.seq).nth(1) {
                    Some(prev) if prev.value > v.value => "decreasing",
                    _ => "increasing",
                }
            } else if v.value >= centre {
                "above"
            } else {
                "below"
            };
            hits.push((
                RuleHit {
                    rule: v.rule,
                    severity: v.severity,
                    direction: direction.to_string(),
                    first_subgroup: current.subgroup,
                    text: lineside_spc::rule_text(v.rule, k),
                },
                pattern,
            ));
        }
        match open {
            Some(idx) => {
                let Some(e) = self.open.get_mut(idx) else {
                    return;
                };
                let suppressed = self.suppression.is_some();
                let mut new_rule = false;
                for (hit, pattern) in hits {
                    if !e.rules.iter().any(|r| r.rule == hit.rule) {
                        new_rule = true;
                        if hit.severity == Severity::Violation {
                            e.severity = Severity::Violation;
                        }
                        e.rules.push(hit);
                        for p in pattern.into_iter().rev() {
                            e.push_point(p, centre);
                        }
                    }
                }
                e.push_point(current.clone(), centre);
                e.count += 1;
                e.last = Some(current);
                e.last_at = at;
                e.limits = Some(limits);
                e.context = serde_json::to_value(&v.context).unwrap_or(Value::Null);
                e.in_control_run = 0;
                let reactivated = e.state == AlarmState::RtnUnacked;
                if reactivated {
                    e.state = AlarmState::ActiveUnacked;
                }
                let periodic =
                    policy.update_every > 0 && e.count % u64::from(policy.update_every) == 0;
                if !suppressed && (new_rule || reactivated || periodic) {
                    out.push(transition(e, "updated", None));
                }
            }
            None => {
                if self.suppression.is_some() {
                    return;
                }
                let ts = v.ts_micros;
                if !self.guard.allows(ts, policy.max_raised_per_10min)
                    || !agent.guard.allows(ts, agent.max)
                {
                    self.guard.suppressed += 1;
                    agent.guard.suppressed += 1;
                    return;
                }
                self.guard.record(ts);
                agent.guard.record(ts);
                let first_rule = hits.first().map(|(h, _)| h.rule.to_string());
                let mut e = Episode {
                    episode: episode_id(v.seq, EpisodeKind::OutOfControl, Some(v.chart)),
                    characteristic: ch.to_string(),
                    episode_kind: EpisodeKind::OutOfControl,
                    chart: Some(v.chart),
                    partition: part,
                    state: AlarmState::ActiveUnacked,
                    severity: if hits.iter().any(|(h, _)| h.severity == Severity::Violation) {
                        Severity::Violation
                    } else {
                        Severity::Warning
                    },
                    raised_at: at.clone(),
                    last_at: at,
                    rules: Vec::new(),
                    direction: hits.first().map(|(h, _)| h.direction.clone()),
                    count: 1,
                    points: VecDeque::new(),
                    points_truncated: false,
                    worst: None,
                    last: Some(current.clone()),
                    limits: Some(limits),
                    side: None,
                    spec: None,
                    unit: policy.unit.clone(),
                    context: serde_json::to_value(&v.context).unwrap_or(Value::Null),
                    reaction_plan: plan(policy, first_rule.as_deref()),
                    in_control_run: 0,
                    return_to_normal: policy.return_to_normal,
                    ack: None,
                    raised_micros: ts,
                };
                for (hit, pattern) in hits {
                    e.rules.push(hit);
                    for p in pattern.into_iter().rev() {
                        e.push_point(p, centre);
                    }
                }
                e.push_point(current, centre);
                out.push(transition(&e, "raised", None));
                self.insert(e);
            }
        }
    }

    /// A reading beyond a specification limit.
    pub fn out_of_spec(
        &mut self,
        ch: &str,
        policy: &Policy,
        agent: &mut AgentGuard,
        o: &OutOfSpec,
        out: &mut Vec<Transition>,
    ) {
        let part = o.context.partition().map(str::to_string);
        let point = PointRef {
            subgroup: None,
            seq: o.seq,
            value: policy.rounding.value(ChartId::Individuals, o.value),
            ts: Some(ts_string(o.ts_micros)),
        };
        let centre = policy.target.unwrap_or(o.limit);
        let at = ts_string(o.ts_micros);
        if let Some(e) = self
            .open
            .iter_mut()
            .find(|e| e.episode_kind == EpisodeKind::OutOfSpec && e.partition == part)
        {
            e.push_point(point.clone(), centre);
            e.count += 1;
            e.last = Some(point);
            e.last_at = at;
            e.in_control_run = 0;
            e.context = serde_json::to_value(&o.context).unwrap_or(Value::Null);
            let reactivated = e.state == AlarmState::RtnUnacked;
            if reactivated {
                e.state = AlarmState::ActiveUnacked;
            }
            let new_side = e.side != Some(o.side);
            e.side = Some(o.side);
            let periodic = policy.update_every > 0 && e.count % u64::from(policy.update_every) == 0;
            if self.suppression.is_none() && (reactivated || new_side || periodic) {
                out.push(transition(e, "updated", None));
            }
            return;
        }
        if self.suppression.is_some() {
            return;
        }
        if !self.guard.allows(o.ts_micros, policy.max_raised_per_10min)
            || !agent.guard.allows(o.ts_micros, agent.max)
        {
            self.guard.suppressed += 1;
            agent.guard.suppressed += 1;
            return;
        }
        self.guard.record(o.ts_micros);
        agent.guard.record(o.ts_micros);
        let mut e = Episode {
            episode: episode_id(o.seq, EpisodeKind::OutOfSpec, None),
            characteristic: ch.to_string(),
            episode_kind: EpisodeKind::OutOfSpec,
            chart: None,
            partition: part,
            state: AlarmState::ActiveUnacked,
            severity: Severity::Violation,
            raised_at: at.clone(),
            last_at: at,
            rules: Vec::new(),
            direction: Some(
                match o.side {
                    SpecSide::AboveUsl => "above",
                    SpecSide::BelowLsl => "below",
                }
                .into(),
            ),
            count: 1,
            points: VecDeque::new(),
            points_truncated: false,
            worst: None,
            last: Some(point.clone()),
            limits: None,
            side: Some(o.side),
            spec: Some(json!({"usl": policy.usl, "lsl": policy.lsl, "target": policy.target})),
            unit: policy.unit.clone(),
            context: serde_json::to_value(&o.context).unwrap_or(Value::Null),
            reaction_plan: plan(policy, Some("out-of-spec")),
            in_control_run: 0,
            return_to_normal: policy.return_to_normal_readings,
            ack: None,
            raised_micros: o.ts_micros,
        };
        e.push_point(point, centre);
        out.push(transition(&e, "raised", None));
        self.insert(e);
    }

    fn insert(&mut self, e: Episode) {
        self.open.push(e);
        while self.open.len() > MAX_OPEN {
            self.open.remove(0);
        }
    }

    /// The open episodes an acknowledgement names (`None`: all); an error names what is not open.
    pub fn select(&self, ids: Option<&[u64]>) -> Result<Vec<u64>, String> {
        let ids: Vec<u64> = match ids {
            None => self.open.iter().map(|e| e.episode).collect(),
            Some(ids) => {
                let missing: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| !self.open.iter().any(|e| e.episode == *id))
                    .take(20)
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("not an open episode: {missing:?}"));
                }
                ids.to_vec()
            }
        };
        if ids.is_empty() {
            return Err("there is no open episode".into());
        }
        Ok(ids)
    }

    /// Acknowledges episodes: active → active-acked; returned → closed. Already acknowledged ones
    /// are left as they are. Returns the transitions (empty: nothing needed an acknowledgement).
    pub fn acknowledge(
        &mut self,
        ids: &[u64],
        ack: &AckInfo,
        now_micros: i64,
        out: &mut Vec<Transition>,
    ) {
        let mut i = 0;
        while i < self.open.len() {
            let Some(e) = self.open.get_mut(i) else { break };
            if !ids.contains(&e.episode) || e.ack.is_some() {
                i += 1;
                continue;
            }
            e.ack = Some(ack.clone());
            let secs = (now_micros - e.raised_micros).max(0) as f64 / 1e6;
            match e.state {
                AlarmState::RtnUnacked => {
                    e.state = AlarmState::Normal;
                    let e = self.open.remove(i);
                    out.push(transition(&e, "cleared", Some(secs)));
                }
                _ => {
                    e.state = AlarmState::ActiveAcked;
                    out.push(transition(e, "acknowledged", Some(secs)));
                    i += 1;
                }
            }
        }
    }

    /// Shelves (with `until`) or takes out of service (`until` None, `state` "out-of-service").
    pub fn suppress(
        &mut self,
        ch: &str,
        state: &str,
        until_micros: Option<i64>,
        who: &Actor,
        note: Option<String>,
    ) -> Transition {
        self.suppression = Some(Suppression {
            state: state.to_string(),
            until: until_micros.map(ts_string),
            until_micros,
            by: who.by.clone(),
            via: who.via.clone(),
            note: note.clone(),
        });
        let transition = if state == "shelved" {
            "shelved"
        } else {
            "out-of-service"
        };
        self.suppression_event(ch, transition, "command", who, note)
    }

    /// Ends shelving or out-of-service; None if the characteristic was not in that state.
    pub fn unsuppress(
        &mut self,
        ch: &str,
        state: &str,
        reason: &str,
        who: &Actor,
        note: Option<String>,
    ) -> Option<Transition> {
        if self.suppression.as_ref().is_none_or(|s| s.state != state) {
            return None;
        }
        let until = self.suppression.take().and_then(|s| s.until);
        let transition = if state == "shelved" {
            "unshelved"
        } else {
            "in-service"
        };
        let mut t = self.suppression_event(ch, transition, reason, who, note);
        if let (Some(u), Value::Object(m)) = (until, &mut t.body) {
            m.insert("until".into(), u.into());
        }
        Some(t)
    }

    /// Shelving that expired at `now`.
    pub fn expire(&mut self, ch: &str, now_micros: i64) -> Option<Transition> {
        let due = self.suppression.as_ref().is_some_and(|s| {
            s.state == "shelved" && s.until_micros.is_some_and(|u| u <= now_micros)
        });
        if !due {
            return None;
        }
        let who = Actor {
            by: "lineside".into(),
            via: "expiry".into(),
            now_micros,
        };
        self.unsuppress(ch, "shelved", "expired", &who, None)
    }

    fn suppression_event(
        &self,
        ch: &str,
        transition: &'static str,
        reason: &str,
        who: &Actor,
        note: Option<String>,
    ) -> Transition {
        let mut body = json!({
            "characteristic": ch,
            "transition": transition,
            "reason": reason,
            "by": who.by,
            "via": who.via,
            "note": note,
            "episodes": self.open.iter().map(|e| e.episode).take(100).collect::<Vec<_>>(),
        });
        if let (Some(Some(u)), Value::Object(m)) =
            (self.suppression.as_ref().map(|s| &s.until), &mut body)
        {
            m.insert("until".into(), u.clone().into());
        }
        Transition {
            kind: SUPPRESSION,
            transition,
            episode: None,
            dedup: format!("{SUPPRESSION}|{ch}|{transition}|{}", who.now_micros),
            body,
            ack_seconds: None,
        }
    }

    /// The retained active set.
    pub fn payload(&self, ch: &str, now: &str) -> Vec<u8> {
        const MAX_LISTED: usize = 100;
        const MAX_LISTED_BYTES: usize = 48 * 1024;
        let mut listed = Vec::new();
        let mut bytes = 0;
        for e in self.open.iter().rev().take(MAX_LISTED) {
            let mut j = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut j {
                m.remove("raised_micros");
            }
            bytes += j.to_string().len() + 1;
            if bytes > MAX_LISTED_BYTES {
                break;
            }
            listed.push(j);
        }
        let suppression = self.suppression.as_ref().map(|s| {
            json!({"state": s.state, "until": s.until, "by": s.by, "via": s.via, "note": s.note})
        });
        serde_json::to_vec(&json!({
            "characteristic": ch,
            "ts": now,
            "count": self.open.len(),
            "truncated": self.open.len() > listed.len(),
            "suppression": suppression,
            "episodes": listed,
        }))
        .unwrap_or_default()
    }

    /// Applies a stored transition read back at start (events stored after the saved state).
    pub fn apply_stored(&mut self, kind: &str, body: &Value) {
        match kind {
            ALARM => {
                let Ok(e) = serde_json::from_value::<Episode>(strip_transition(body)) else {
                    return;
                };
                self.open.retain(|o| o.episode != e.episode);
                if e.state != AlarmState::Normal {
                    self.insert(e);
                }
            }
            SUPPRESSION => {
                let t = body.get("transition").and_then(Value::as_str).unwrap_or("");
                let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
                match t {
                    "shelved" | "out-of-service" => {
                        let until = s("until");
                        let until_micros = until
                            .as_deref()
                            .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
                            .map(|d| d.timestamp_micros());
                        self.suppression = Some(Suppression {
                            state: if t == "shelved" {
                                "shelved"
                            } else {
                                "out-of-service"
                            }
                            .into(),
                            until,
                            until_micros,
                            by: s("by").unwrap_or_default(),
                            via: s("via").unwrap_or_default(),
                            note: s("note"),
                        });
                    }
                    _ => self.suppression = None,
                }
            }
            _ => {}
        }
    }
}

fn strip_transition(body: &Value) -> Value {
    let mut b = body.clone();
    if let Value::Object(m) = &mut b {
        m.remove("transition");
        for k in ["seq", "agent", "ts", "kind"] {
            m.remove(k);
        }
    }
    b
}

fn plan(policy: &Policy, rule: Option<&str>) -> Vec<String> {
    rule.and_then(|r| policy.reaction_plan_rule.get(r))
        .unwrap_or(&policy.reaction_plan)
        .clone()
}

fn transition(e: &Episode, t: &'static str, ack_seconds: Option<f64>) -> Transition {
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

#[cfg(test)]
mod tests;
