//! Restart: snapshot, persist (JSON), restore, replay the rest: the outputs are exactly those of
//! an engine that was never interrupted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lineside_spc::{
    Characteristic, CharacteristicSpec, Observation, Output, Snapshot, SnapshotError,
};
use proptest::prelude::*;

const SPECS: [&str; 6] = [
    r#"name = "a"
source = "d/t"
chart = "xbar-r"
subgroup_size = 4
subgroup_window = "1m"
context = ["part", "lot"]
limits = { baseline = 6, exclude_out_of_control = true }
usl = 3.0
lsl = -3.0"#,
    r#"name = "b"
source = "d/t"
chart = "i-mr"
context = ["part", "lot"]
chart_per = "part"
capability_window = 10
limits = { baseline = 8 }"#,
    r#"name = "c"
source = "d/t"
chart = "ewma"
subgroup_size = 3
ewma = { lambda = 0.3, l = 2.8 }
limits = { baseline = 5 }"#,
    r#"name = "d"
source = "d/t"
chart = "cusum"
cusum = { k = 0.5, h = 3.0, head_start = 1.5 }
limits = { baseline = 10 }"#,
    r#"name = "e"
source = "d/t"
chart = "u"
sample_size_source = "d/n"
context = ["part", "lot"]
limits = { baseline = 7, exclude_out_of_control = true }"#,
    r#"name = "f"
source = "d/t"
chart = "xbar-s"
subgroup_size = 5
rules = "western-electric"
context = ["part", "lot"]
chart_per = "lot"
limits = { baseline = 4 }"#,
];

#[derive(Debug, Clone)]
struct Obs {
    dt: i64,
    value: f64,
    size: f64,
    part: Option<&'static str>,
    lot: Option<&'static str>,
}

fn obs_strategy() -> impl Strategy<Value = Obs> {
    (
        0i64..40_000_000,
        prop_oneof![(0i32..=8).prop_map(f64::from), -4.0f64..4.0],
        1.0f64..20.0,
        prop::sample::select(vec![Some("A"), Some("B"), None]),
        prop::sample::select(vec![Some("L1"), Some("L1"), Some("L1"), Some("L2")]),
    )
        .prop_map(|(dt, value, size, part, lot)| Obs {
            dt,
            value,
            size,
            part,
            lot,
        })
}

fn push_all(c: &mut Characteristic, obs: &[Obs], first_seq: u64, t0: i64) -> Vec<Output> {
    let mut out = Vec::new();
    let mut ts = t0;
    for (i, o) in obs.iter().enumerate() {
        ts += o.dt;
        let ctx = [o.part, o.lot];
        // Attribute charts need whole counts.
        let value = if c.spec().chart == lineside_spc::ChartType::U {
            o.value.abs().round()
        } else {
            o.value
        };
        let ob = Observation {
            seq: first_seq + i as u64,
            ts_micros: ts,
            value,
            size: Some(o.size),
            context: &ctx,
        };
        c.push(ob, &mut out);
    }
    out
}

fn spec(i: usize) -> CharacteristicSpec {
    toml::from_str(SPECS[i]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn restore_then_replay_equals_uninterrupted(
        which in 0usize..SPECS.len(),
        obs in prop::collection::vec(obs_strategy(), 1..160),
        split in 0usize..160,
        recalc in any::<bool>(),
    ) {
        let split = split.min(obs.len());
        let t_split: i64 = obs[..split].iter().map(|o| o.dt).sum();

        let mut a = Characteristic::new(spec(which)).unwrap();
        let mut before = push_all(&mut a, &obs[..split], 1, 0);
        if recalc {
            let _ = a.recalculate(&mut before);
        }
        let snap = a.snapshot();
        let after_a = push_all(&mut a, &obs[split..], split as u64 + 1, t_split);

        let json = serde_json::to_string(&snap).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &snap);
        prop_assert_eq!(back.last_seq(), if split == 0 { None } else { Some(split as u64) });
        let mut b = Characteristic::from_snapshot(spec(which), &back).unwrap();
        let after_b = push_all(&mut b, &obs[split..], split as u64 + 1, t_split);
        prop_assert_eq!(after_a, after_b);
        prop_assert_eq!(a.capability(None), b.capability(None));
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }
}

#[test]
fn a_changed_spec_is_refused() {
    let c = Characteristic::new(spec(0)).unwrap();
    let snap = c.snapshot();
    let mut other = spec(0);
    other.subgroup_size = Some(5);
    assert_eq!(
        Characteristic::from_snapshot(other, &snap).err(),
        Some(SnapshotError::SpecChanged)
    );
}

/// The issue's restart scenario at engine level: a mean shift starts a run; the process restarts
/// in the middle of the developing run; the run rule still fires at the right point, once.
#[test]
fn restart_in_a_developing_run_alarms_once_at_the_right_point() {
    let text = "name = \"s\"\nsource = \"sim/x\"\nchart = \"i-mr\"\nlimits = { baseline = 20 }";
    // In control around 10 for 30 readings, then shifted by +1.2 sigma-ish.
    let mut values: Vec<f64> = (0..30)
        .map(|i| 10.0 + [0.3, -0.2, 0.1, -0.3, 0.2][i % 5])
        .collect();
    values.extend((0..12).map(|i| 10.4 + [0.05, -0.05, 0.1][i % 3]));
    let obs = |c: &mut Characteristic, from: usize, to: usize, out: &mut Vec<Output>| {
        for (i, v) in values.iter().enumerate().take(to).skip(from) {
            c.push(Observation::new(i as u64 + 1, 0, *v), out);
        }
    };
    let run_alarms = |out: &[Output]| -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::Violation(v)
                    if v.rule == lineside_spc::Rule::Nelson(2)
                        && v.chart == lineside_spc::ChartId::Individuals =>
                {
                    Some(v.seq)
                }
                _ => None,
            })
            .collect()
    };
    let s: CharacteristicSpec = toml::from_str(text).unwrap();

    // Centre 10.02 (mean of the first 20). Seq 30 (10.2) is already above it, so the run of 9
    // completes at seq 38; it is flagged there and at every further point.
    let mut a = Characteristic::new(s.clone()).unwrap();
    let mut out = Vec::new();
    obs(&mut a, 0, 42, &mut out);
    assert_eq!(run_alarms(&out), vec![38, 39, 40, 41, 42]);

    // Snapshot after seq 34 (run of 5 developing), crash after seq 36, restart, replay 35..=42.
    let mut b = Characteristic::new(s.clone()).unwrap();
    let mut published = Vec::new();
    obs(&mut b, 0, 34, &mut published);
    let snap = serde_json::to_string(&b.snapshot()).unwrap();
    obs(&mut b, 34, 36, &mut published);
    drop(b);
    let snap: Snapshot = serde_json::from_str(&snap).unwrap();
    let mut c = Characteristic::from_snapshot(s, &snap).unwrap();
    let mut replayed = Vec::new();
    obs(&mut c, snap.last_seq().unwrap() as usize, 42, &mut replayed);
    // De-duplicate on the alarm key, as the agent does.
    let mut seen = std::collections::BTreeSet::new();
    for seq in run_alarms(&published)
        .into_iter()
        .chain(run_alarms(&replayed))
    {
        seen.insert(seq);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![38, 39, 40, 41, 42]
    );
    assert_eq!(run_alarms(&replayed), vec![38, 39, 40, 41, 42]);
}
