//! A characteristic and where its outputs go: plotted points are numbered and published once, rule
//! violations and out-of-spec readings become episode transitions, computed limits become events.
//! Events are collected as [`Effect`]s and stored after the batch (storing waits for the store's
//! commit), in order, skipping what a replay regenerated and the store already holds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lineside_drivers::{Reading, Value};
use lineside_spc::spec::MAX_CONTEXT_KEYS;
use lineside_spc::{Characteristic, FrozenLimits, Observation, Output, Rule};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Runtime, Stats};
use crate::bus::SidePublish;
use crate::config::{CharacteristicConfig, SpcConfig};
use crate::spc::SpcTopics;
use crate::spc::alarms;
use crate::spc::context::{Inputs, Slot};
use crate::spc::episodes::{AgentGuard, CharAlarms, Policy, Transition};
use crate::spc::messages;
use crate::spc::rounding::Rounding;

/// An event to store once the current batch is processed.
pub(super) struct Effect {
    pub ci: usize,
    pub kind: &'static str,
    pub ts: DateTime<Utc>,
    pub body: serde_json::Value,
    /// Set for what a replay regenerates (checked against the events stored since the state).
    pub dedup: Option<String>,
    pub transition: Option<&'static str>,
    pub ack_seconds: Option<f64>,
}

impl Effect {
    pub fn from_transition(ci: usize, ts: DateTime<Utc>, t: Transition) -> Effect {
        Effect {
            ci,
            kind: t.kind,
            ts,
            body: t.body,
            dedup: Some(t.dedup),
            transition: Some(t.transition),
            ack_seconds: t.ack_seconds,
        }
    }
}

/// Where outputs go: one struct beside the characteristics, so a characteristic borrowed mutably
/// can write to it.
pub(super) struct Outputs {
    pub out: Vec<Output>,
    pub transitions: Vec<Transition>,
    pub effects: Vec<Effect>,
    pub stats: Stats,
    pub side: mpsc::Sender<SidePublish>,
    pub agent_guard: AgentGuard,
}

impl Outputs {
    pub fn new(side: mpsc::Sender<SidePublish>, policy: &SpcConfig) -> Outputs {
        Outputs {
            out: Vec::new(),
            transitions: Vec::new(),
            effects: Vec::new(),
            stats: Stats::default(),
            side,
            agent_guard: AgentGuard {
                max: policy.max_alarms_per_10min,
                ..AgentGuard::default()
            },
        }
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        self.side
            .try_send(SidePublish {
                topic: topic.to_string(),
                payload,
                retain,
            })
            .is_ok()
    }

    /// The transitions collected so far become effects of characteristic `ci`.
    fn take_transitions(&mut self, ci: usize, ts: DateTime<Utc>) {
        for t in self.transitions.drain(..) {
            self.effects.push(Effect::from_transition(ci, ts, t));
        }
    }
}

/// The alarm policy of a characteristic.
pub(super) fn policy(cfg: &CharacteristicConfig, spc: &SpcConfig) -> Policy {
    let spec = &cfg.spec;
    let rule_points = (1..=8)
        .map(Rule::Nelson)
        .chain((1..=4).map(Rule::WesternElectric))
        .filter_map(|r| spec.rule_points(r).map(|k| (r, k)))
        .collect();
    Policy {
        return_to_normal: cfg.alarm.return_to_normal,
        return_to_normal_readings: cfg
            .alarm
            .return_to_normal
            .saturating_mul(spec.subgroup_size.unwrap_or(1).max(1)),
        update_every: spc.update_every,
        reaction_plan: cfg.alarm.reaction_plan.clone(),
        reaction_plan_rule: cfg.alarm.reaction_plan_rule.clone(),
        unit: cfg.unit.clone(),
        rule_points,
        usl: spec.usl,
        lsl: spec.lsl,
        target: spec.target,
        rounding: Rounding::from_resolution(cfg.alarm.resolution),
        max_raised_per_10min: cfg.alarm.max_alarms_per_10min,
    }
}

pub(super) struct Char {
    pub index: usize,
    pub cfg: CharacteristicConfig,
    pub policy: Policy,
    pub inputs: Inputs,
    pub engine: Characteristic,
    /// Readings up to this seq are already in the engine (restored from a snapshot).
    pub fed_upto: u64,
    /// Outputs caused by readings up to this seq were published before (or belong to history that
    /// is only replayed to rebuild the windows): they are not published again.
    pub silent_upto: u64,
    /// Restored from a snapshot: its replay regenerates transitions, de-duplicated against the
    /// stored events.
    pub restored: bool,
    pub limits: BTreeMap<Option<String>, FrozenLimits>,
    pub alarms: CharAlarms,
    pub active_dirty: bool,
    pub limits_dirty: bool,
    pub next_capability: Instant,
    pub topic_points: String,
    pub topic_active: String,
    pub topic_limits: String,
    pub topic_capability: String,
}

impl Char {
    /// A characteristic that has seen no reading yet, with no limits and no open episode.
    pub fn new(
        index: usize,
        cfg: CharacteristicConfig,
        spc: &SpcConfig,
        inputs: Inputs,
        engine: Characteristic,
        topics: &SpcTopics,
        now: Instant,
    ) -> Char {
        let ch = &cfg.spec.name;
        Char {
            index,
            policy: policy(&cfg, spc),
            inputs,
            engine,
            fed_upto: 0,
            silent_upto: 0,
            restored: false,
            limits: BTreeMap::new(),
            alarms: CharAlarms::default(),
            active_dirty: true,
            limits_dirty: true,
            next_capability: now + cfg.capability_interval,
            topic_points: topics.points(ch),
            topic_active: topics.active(ch),
            topic_limits: topics.limits(ch),
            topic_capability: topics.capability(ch),
            cfg,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.spec.name
    }

    /// One committed reading of this characteristic's source.
    pub fn push(&mut self, seq: u64, r: &Reading, slots: &[Slot], o: &mut Outputs) {
        if seq <= self.fed_upto {
            return;
        }
        if !r.quality.is_good() {
            o.stats.skipped_quality += 1;
            return;
        }
        let Some(value) = r.value.as_ref().and_then(Value::as_f64) else {
            o.stats.skipped_not_numeric += 1;
            return;
        };
        let mut ctx: [Option<&str>; MAX_CONTEXT_KEYS] = [None; MAX_CONTEXT_KEYS];
        for (c, &s) in ctx.iter_mut().zip(&self.inputs.context) {
            *c = slots.get(s).and_then(|s| s.text.as_deref());
        }
        let context = ctx.get(..self.inputs.context.len()).unwrap_or(&[]);
        let size = self
            .inputs
            .size
            .and_then(|s| slots.get(s))
            .and_then(|s| s.num);
        o.out.clear();
        self.engine.push(
            Observation {
                seq,
                ts_micros: r.ts.timestamp_micros(),
                value,
                size,
                context,
            },
            &mut o.out,
        );
        o.stats.pushed += 1;
        let silent = seq <= self.silent_upto;
        let out_of_spec = self.handle(silent, "baseline", r.ts, o);
        if !silent && !out_of_spec {
            self.alarms
                .in_spec(&self.policy, r.ts.timestamp_micros(), &mut o.transitions);
            o.take_transitions(self.index, r.ts);
        }
    }

    /// Turns the engine's outputs (in `o.out`) into messages and transitions. Silent: history being
    /// rebuilt, nothing is published or alarmed. Returns whether a reading was out of spec.
    pub fn handle(
        &mut self,
        silent: bool,
        reason: &str,
        ts: DateTime<Utc>,
        o: &mut Outputs,
    ) -> bool {
        let name = self.cfg.spec.name.clone();
        let unit = self.cfg.unit.as_deref();
        let mut out = std::mem::take(&mut o.out);
        let mut out_of_spec = false;
        // Points re-plotted right after a baseline froze belong to the baseline.
        let mut baseline_upto: Option<u64> = None;
        for output in out.drain(..) {
            match output {
                Output::Point(p) => {
                    if silent {
                        continue;
                    }
                    let Some(subgroup) = self.alarms.point(
                        &name,
                        &self.policy,
                        &mut o.agent_guard,
                        &p,
                        &mut o.transitions,
                    ) else {
                        continue;
                    };
                    if !self.cfg.publish_points {
                        continue;
                    }
                    let baseline = baseline_upto.is_some_and(|b| p.seq <= b);
                    let payload =
                        messages::point(&name, unit, &p, subgroup, baseline, &self.policy.rounding);
                    if o.publish(&self.topic_points, payload, false) {
                        o.stats.points_published += 1;
                    } else {
                        o.stats.points_dropped += 1;
                    }
                }
                Output::Violation(v) if !silent => self.alarms.violation(v),
                Output::OutOfSpec(x) if !silent => {
                    out_of_spec = true;
                    self.alarms
                        .flush(&name, &self.policy, &mut o.agent_guard, &mut o.transitions);
                    self.alarms.out_of_spec(
                        &name,
                        &self.policy,
                        &mut o.agent_guard,
                        &x,
                        &mut o.transitions,
                    );
                }
                Output::LimitsFrozen(f) => {
                    if !silent {
                        o.effects.push(Effect {
                            ci: self.index,
                            kind: alarms::LIMITS,
                            ts,
                            body: alarms::limits_body(&name, &f, reason),
                            dedup: alarms::dedup_key(
                                alarms::LIMITS,
                                &alarms::limits_body(&name, &f, reason),
                            ),
                            transition: None,
                            ack_seconds: None,
                        });
                    }
                    if reason == "baseline" {
                        baseline_upto = Some(f.seq_last);
                    }
                    tracing::info!(characteristic = %name, partition = ?f.partition, limits = ?f.limits, reason, "control limits computed");
                    self.limits.insert(f.partition.clone(), f);
                    self.limits_dirty = true;
                }
                Output::Ignored(i) => {
                    o.stats.ignored += 1;
                    tracing::debug!(characteristic = %name, seq = i.seq, reason = ?i.reason, "not charted");
                }
                Output::Violation(_) | Output::OutOfSpec(_) => {}
            }
        }
        o.out = out;
        if !silent {
            self.alarms
                .flush(&name, &self.policy, &mut o.agent_guard, &mut o.transitions);
            o.take_transitions(self.index, ts);
        }
        out_of_spec
    }
}

impl Runtime {
    /// Stores the events of the last batch, in order, skipping what the store already holds.
    pub(super) async fn apply_effects(&mut self) {
        for e in std::mem::take(&mut self.outputs.effects) {
            if !self.dedup.is_empty() && e.dedup.as_ref().is_some_and(|k| self.dedup.contains(k)) {
                self.outputs.stats.duplicates_dropped += 1;
                continue;
            }
            if let Some(ch) = self.chars.get_mut(e.ci) {
                ch.active_dirty = true;
            }
            self.state_dirty = true;
            if e.kind == alarms::ALARM {
                self.outputs.stats.transitions += 1;
                self.kpi.record(&e, &self.kpis);
            }
            if let Err(err) = self.store.append_event(e.kind, e.ts, e.body).await {
                tracing::error!(error = %err, kind = e.kind, "SPC: cannot store an event");
            }
        }
    }
}
