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

use lineside_spc::{ChartId, OutOfSpec, Point, Severity, SpecSide, Violation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spc::alarms::ts_string;
use crate::spc::rounding::Rounding;

mod model;
mod published;
mod suppression;

pub use model::*;
use model::{chart_key, episode_id, plan, transition};

/// Recent points kept per chart to list the whole pattern when a rule fires.
const RECENT: usize = 64;
/// Open episodes kept per characteristic (memory bound when nobody acknowledges).
const MAX_OPEN: usize = 200;

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
}

#[cfg(test)]
mod tests;
