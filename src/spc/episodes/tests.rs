//! Episodes driven by the real engine: I-MR with fixed limits (centre 10, σ 1), Nelson rules.

use lineside_spc::{Characteristic, CharacteristicSpec, Observation, Output, Rule};

use super::*;

struct Harness {
    engine: Characteristic,
    alarms: CharAlarms,
    policy: Policy,
    agent: AgentGuard,
    seq: u64,
    out: Vec<Output>,
}

const S: i64 = 1_000_000;

impl Harness {
    fn new(return_to_normal: u32) -> Harness {
        let spec: CharacteristicSpec = toml::from_str(
            r#"
            name = "bore"
            source = "g/bore"
            chart = "i-mr"
            usl = 16.0
            lsl = 4.0
            limits = { centre = 10.0, sigma = 1.0 }
            "#,
        )
        .unwrap();
        let rule_points = (1..=8)
            .filter_map(|n| {
                let r = Rule::Nelson(n);
                spec.rule_points(r).map(|k| (r, k))
            })
            .collect();
        Harness {
            engine: Characteristic::new(spec).unwrap(),
            alarms: CharAlarms::default(),
            policy: Policy {
                return_to_normal,
                return_to_normal_readings: return_to_normal,
                update_every: 0,
                reaction_plan: vec!["Stop the hone".into(), "Measure 5 parts".into()],
                reaction_plan_rule: BTreeMap::from([(
                    "out-of-spec".to_string(),
                    vec!["Quarantine the part".to_string()],
                )]),
                unit: Some("mm".into()),
                rule_points,
                usl: Some(16.0),
                lsl: Some(4.0),
                target: None,
                rounding: Rounding::default(),
                max_raised_per_10min: 0,
            },
            agent: AgentGuard::default(),
            seq: 0,
            out: Vec::new(),
        }
    }

    fn now(&self) -> i64 {
        self.seq as i64 * S
    }

    fn push(&mut self, values: &[f64]) -> Vec<Transition> {
        let mut tr = Vec::new();
        for &v in values {
            self.seq += 1;
            self.out.clear();
            self.engine.push(
                Observation {
                    seq: self.seq,
                    ts_micros: self.seq as i64 * S,
                    value: v,
                    size: None,
                    context: &[],
                },
                &mut self.out,
            );
            let mut oos = false;
            for o in self.out.drain(..) {
                match o {
                    Output::Point(p) => {
                        self.alarms
                            .point("bore", &self.policy, &mut self.agent, &p, &mut tr);
                    }
                    Output::Violation(v) => self.alarms.violation(v),
                    Output::OutOfSpec(o) => {
                        oos = true;
                        self.alarms
                            .flush("bore", &self.policy, &mut self.agent, &mut tr);
                        self.alarms
                            .out_of_spec("bore", &self.policy, &mut self.agent, &o, &mut tr);
                    }
                    _ => {}
                }
            }
            self.alarms
                .flush("bore", &self.policy, &mut self.agent, &mut tr);
            if !oos {
                self.alarms
                    .in_spec(&self.policy, self.seq as i64 * S, &mut tr);
            }
        }
        tr
    }

    fn ack(&mut self, ids: Option<&[u64]>) -> Vec<Transition> {
        let ids = self.alarms.select(ids).unwrap();
        let mut tr = Vec::new();
        let info = AckInfo {
            by: "alice".into(),
            via: "mqtt".into(),
            at: "t".into(),
            cause: Some("tool-wear".into()),
            action: None,
            note: None,
        };
        let now = self.now();
        self.alarms.acknowledge(&ids, &info, now, &mut tr);
        tr
    }
}

/// A mean shift of about +2σ with ordinary scatter (so the moving range stays in control).
fn shift(n: usize) -> Vec<f64> {
    const C: [f64; 10] = [11.3, 12.8, 11.9, 12.4, 11.2, 12.9, 12.0, 11.6, 12.7, 11.4];
    C.iter().copied().cycle().take(n).collect()
}

fn names(tr: &[Transition]) -> Vec<&str> {
    tr.iter().map(|t| t.transition).collect()
}

#[test]
fn a_sustained_shift_is_one_episode_with_the_rules_accumulated() {
    let mut h = Harness::new(5);
    assert!(h.push(&[10.0; 5]).is_empty());
    let tr = h.push(&shift(30));
    let raised: Vec<_> = tr.iter().filter(|t| t.transition == "raised").collect();
    assert_eq!(raised.len(), 1, "{:?}", names(&tr));
    assert!(
        tr.len() <= 4,
        "raised + one update per new rule: {:?}",
        names(&tr)
    );
    assert_eq!(h.alarms.open.len(), 1);
    let e = &h.alarms.open[0];
    let rules: Vec<String> = e.rules.iter().map(|r| r.rule.to_string()).collect();
    assert_eq!(rules, ["nelson-5", "nelson-6", "nelson-8", "nelson-2"]);
    assert_eq!(
        e.count, 27,
        "every point from the fourth of the shift broke a rule"
    );
    assert_eq!(e.state, AlarmState::ActiveUnacked);
    assert_eq!(e.direction.as_deref(), Some("above"));
    assert!(e.rules.iter().all(|r| r.direction == "above"));
    let run = e.rules.iter().find(|r| r.rule == Rule::Nelson(2)).unwrap();
    assert_eq!(
        run.text.en,
        "9 points in a row on the same side of the centre line"
    );
    assert_eq!(run.text.zh, "连续9点落在中心线同一侧");
    assert_eq!(run.first_subgroup, Some(14), "the 9th point of the shift");
    assert_eq!(
        e.rules[0].first_subgroup,
        Some(9),
        "raised at the 4th point"
    );
    // The points of the first patterns (4 of 5 beyond 1σ: subgroups 5 to 9) are listed.
    let subgroups: Vec<u64> = e.points.iter().filter_map(|p| p.subgroup).collect();
    assert_eq!(subgroups.first(), Some(&5));
    assert_eq!(subgroups.last(), Some(&35));
    assert_eq!(e.reaction_plan, ["Stop the hone", "Measure 5 parts"]);
    assert_eq!(e.limits.unwrap().ucl, 13.0);
    let body = &tr[0].body;
    assert_eq!(body["transition"], "raised");
    assert_eq!(body["state"], "active-unacked");
    assert_eq!(body["chart"], "i");
    assert_eq!(body["episode_kind"], "out-of-control");
    assert_eq!(
        body["rules"][0]["text"]["zh"],
        "连续3点中有2点落在中心线同一侧2σ以外"
    );
}

#[test]
fn return_to_normal_after_the_configured_in_control_run() {
    let mut h = Harness::new(5);
    h.push(&[10.0; 5]);
    h.push(&shift(12));
    assert!(
        h.push(&[10.0; 4]).is_empty(),
        "4 in-control points are not enough"
    );
    let tr = h.push(&[10.0]);
    assert_eq!(names(&tr), ["returned"]);
    assert_eq!(h.alarms.open[0].state, AlarmState::RtnUnacked);
    // Out of control again before anyone acknowledged: the same episode is active again.
    let id = h.alarms.open[0].episode;
    let tr = h.push(&[13.5]);
    assert_eq!(names(&tr), ["updated"]);
    assert_eq!(h.alarms.open.len(), 1);
    assert_eq!(h.alarms.open[0].episode, id);
    assert_eq!(h.alarms.open[0].state, AlarmState::ActiveUnacked);
    // Back to normal and acknowledged: closed.
    h.push(&[10.0; 5]);
    let tr = h.ack(None);
    assert_eq!(names(&tr), ["cleared"]);
    assert_eq!(tr[0].body["state"], "normal");
    assert_eq!(tr[0].body["ack"]["by"], "alice");
    assert!(h.alarms.open.is_empty());
    // The next shift is a new episode.
    let tr = h.push(&[13.5]);
    assert_eq!(names(&tr), ["raised"]);
    assert_ne!(tr[0].episode, Some(id));
}

#[test]
fn an_acknowledged_episode_stays_active_acked_until_it_returns_to_normal() {
    let mut h = Harness::new(5);
    h.push(&[10.0; 5]);
    h.push(&shift(4));
    let id = h.alarms.open[0].episode;
    let tr = h.ack(Some(&[id]));
    assert_eq!(names(&tr), ["acknowledged"]);
    assert!(tr[0].ack_seconds.is_some());
    assert_eq!(h.alarms.open[0].state, AlarmState::ActiveAcked);
    // Further out-of-control points and a new rule do not undo the acknowledgement.
    h.push(&shift(10));
    assert_eq!(h.alarms.open[0].state, AlarmState::ActiveAcked);
    assert!(h.alarms.select(Some(&[id])).is_ok());
    h.push(&[10.0; 4]);
    assert_eq!(h.alarms.open[0].state, AlarmState::ActiveAcked);
    let tr = h.push(&[10.0]);
    assert_eq!(names(&tr), ["cleared"]);
    assert!(h.alarms.open.is_empty());
}

#[test]
fn shelving_suppresses_and_expires() {
    let mut h = Harness::new(5);
    let who = Actor {
        by: "alice".into(),
        via: "station".into(),
        now_micros: 0,
    };
    let until = 60 * S;
    let t = h
        .alarms
        .suppress("bore", "shelved", Some(until), &who, None);
    assert_eq!(t.kind, SUPPRESSION);
    assert_eq!(t.body["transition"], "shelved");
    assert!(
        h.push(&shift(20)).is_empty(),
        "nothing is raised while shelved"
    );
    assert!(h.alarms.expire("bore", until - 1).is_none());
    let t = h.alarms.expire("bore", until).unwrap();
    assert_eq!(t.body["transition"], "unshelved");
    assert_eq!(t.body["reason"], "expired");
    assert!(h.alarms.suppression.is_none());
    assert!(h.alarms.expire("bore", until + S).is_none(), "once");
    // The shift still going on raises once the shelving expired.
    assert_eq!(names(&h.push(&[13.5])), ["raised"]);
}

#[test]
fn out_of_spec_is_its_own_episode() {
    let mut h = Harness::new(3);
    h.push(&[10.0; 5]);
    let tr = h.push(&[16.5]);
    let kinds: Vec<_> = tr.iter().map(|t| t.body["episode_kind"].clone()).collect();
    assert!(kinds.contains(&"out-of-spec".into()), "{kinds:?}");
    assert!(kinds.contains(&"out-of-control".into()), "{kinds:?}");
    let oos = h
        .alarms
        .open
        .iter()
        .find(|e| e.episode_kind == EpisodeKind::OutOfSpec)
        .unwrap();
    assert_eq!(oos.reaction_plan, ["Quarantine the part"]);
    assert_eq!(oos.side, Some(SpecSide::AboveUsl));
    h.push(&[10.0; 3]);
    let oos = h
        .alarms
        .open
        .iter()
        .find(|e| e.episode_kind == EpisodeKind::OutOfSpec)
        .unwrap();
    assert_eq!(oos.state, AlarmState::RtnUnacked);
}

#[test]
fn the_rate_guard_holds_raises_per_ten_minutes() {
    let mut h = Harness::new(1);
    h.policy.max_raised_per_10min = 2;
    let mut raised = 0;
    for _ in 0..5 {
        raised += names(&h.push(&[13.5]))
            .iter()
            .filter(|t| **t == "raised")
            .count();
        h.push(&[10.0, 10.0]);
        if !h.alarms.open.is_empty() {
            h.ack(None);
        }
    }
    assert_eq!(raised, 2);
    assert_eq!(h.alarms.guard.suppressed, 3);
}

#[test]
fn a_replay_regenerates_the_same_transitions() {
    let mut a = Harness::new(5);
    let mut b = Harness::new(5);
    let values: Vec<f64> = [10.0; 5]
        .into_iter()
        .chain(shift(12))
        .chain([10.0; 6])
        .collect();
    let ta = a.push(&values);
    let tb = b.push(&values);
    assert_eq!(
        ta.iter().map(|t| &t.dedup).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.dedup).collect::<Vec<_>>()
    );
    // The state survives a round trip through the state file.
    let saved = serde_json::to_string(&a.alarms).unwrap();
    let back: CharAlarms = serde_json::from_str(&saved).unwrap();
    assert_eq!(back, a.alarms);
}
