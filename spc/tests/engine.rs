//! Engine behaviour: subgrouping, context, separate charts, phases, out-of-spec, restore and
//! recalculation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lineside_spc::{
    Characteristic, ChartId, FrozenLimits, IgnoreReason, Limits, LimitsError, Observation, Output,
    SpecSide,
};

fn obs<'a>(seq: u64, secs: i64, v: f64, ctx: &'a [Option<&'a str>]) -> Observation<'a> {
    Observation {
        seq,
        ts_micros: secs * 1_000_000,
        value: v,
        size: None,
        context: ctx,
    }
}

fn ignored(out: &[Output]) -> Vec<(u64, u64, IgnoreReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ignored(i) => Some((i.seq_first, i.seq, i.reason)),
            _ => None,
        })
        .collect()
}

const FIXED_XR: &str =
    "name = \"x\"\nsource = \"d/t\"\nchart = \"xbar-r\"\nlimits = { centre = 10.0, sigma = 1.0 }\n";

#[test]
fn time_windows_close_subgroups() {
    let mut c = engine(&format!(
        "{FIXED_XR}subgroup_size = 4\nsubgroup_window = \"1m\""
    ));
    let mut out = Vec::new();
    // Window [0, 60 s): 3 readings; window [60, 120): 4 readings close it by size; a late
    // reading (ts 50 s) joins the open window; window [180, 240): one reading then a jump.
    let ts = [0, 10, 20, 61, 62, 63, 64, 65, 50, 185, 300, 301];
    for (i, &t) in ts.iter().enumerate() {
        c.push(obs(i as u64 + 1, t, 10.0 + i as f64 * 0.01, &[]), &mut out);
    }
    let x = points(&out, ChartId::Xbar);
    let spans: Vec<(u64, u64, u32)> = x.iter().map(|p| (p.seq_first, p.seq, p.n)).collect();
    // seq 4..=7 fills the second window; seq 8 (65 s) and 9 (late, 50 s) form the next subgroup
    // in window 1, closed by seq 10 (185 s); seq 10 alone in window 3 is closed by seq 11 (300 s).
    assert_eq!(spans, vec![(1, 3, 3), (4, 7, 4), (8, 9, 2)]);
    assert_eq!(ignored(&out), vec![(10, 10, IgnoreReason::SubgroupOfOne)]);
    // Limits depend on the subgroup size.
    let l3 = x[0].limits.unwrap();
    let l4 = x[1].limits.unwrap();
    assert_close(l3.ucl, 10.0 + 3.0 / 3f64.sqrt(), 1e-12);
    assert_close(l4.ucl, 10.0 + 3.0 / 2.0, 1e-12);
    let r = points(&out, ChartId::Range);
    assert_close(r[0].limits.unwrap().centre, 1.693, 0.001);
    assert_close(r[1].limits.unwrap().centre, 2.059, 0.001);
}

#[test]
fn a_context_change_closes_the_subgroup() {
    let mut c = engine(&format!(
        "{FIXED_XR}subgroup_size = 5\ncontext = [\"lot\", \"operator\"]"
    ));
    let mut out = Vec::new();
    let a = [Some("L1"), Some("ann")];
    let b = [Some("L2"), Some("ann")];
    for i in 0..3 {
        c.push(obs(i + 1, 0, 10.0 + i as f64, &a), &mut out);
    }
    for i in 3..8 {
        c.push(obs(i + 1, 0, 10.0, &b), &mut out);
    }
    let x = points(&out, ChartId::Xbar);
    assert_eq!(x.len(), 2);
    assert_eq!((x[0].seq_first, x[0].seq, x[0].n), (1, 3, 3));
    assert_eq!(x[0].context.get("lot"), Some("L1"));
    assert_eq!((x[1].seq_first, x[1].seq, x[1].n), (4, 8, 5));
    assert_eq!(x[1].context.get("lot"), Some("L2"));
    let json = serde_json::to_value(&x[1].context).unwrap();
    assert_eq!(json, serde_json::json!({"lot": "L2", "operator": "ann"}));
    // A missing value counts as a change too, and is left out of the map.
    c.push(obs(9, 0, 10.0, &[Some("L2")]), &mut out);
    c.push(obs(10, 0, 10.0, &[Some("L2")]), &mut out);
    c.push(obs(11, 0, 10.0, &b), &mut out);
    let x = points(&out, ChartId::Xbar);
    assert_eq!(x.len(), 3);
    assert_eq!(
        serde_json::to_value(&x[2].context).unwrap(),
        serde_json::json!({"lot": "L2"})
    );
}

#[test]
fn separate_chart_per_part() {
    let mut c = engine(
        "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\ncontext = [\"part\", \"lot\"]\nchart_per = \"part\"\nlimits = { baseline = 5 }",
    );
    let mut out = Vec::new();
    // Parts interleave; part A near 10, part B near 50.
    for i in 0..12u64 {
        let (part, v) = if i % 2 == 0 {
            ("A", 10.0 + (i % 4) as f64 * 0.1)
        } else {
            ("B", 50.0 + (i % 3) as f64)
        };
        c.push(obs(i + 1, 0, v, &[Some(part), Some("L1")]), &mut out);
    }
    let f = frozen(&out);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].partition.as_deref(), Some("A"));
    assert_eq!(f[1].partition.as_deref(), Some("B"));
    let Some(Limits::Variables { centre: ca, .. }) = c.limits(Some("A")) else {
        panic!()
    };
    let Some(Limits::Variables { centre: cb, .. }) = c.limits(Some("B")) else {
        panic!()
    };
    assert!((ca - 10.0).abs() < 1.0 && (cb - 50.0).abs() < 2.0);
    // Moving ranges are within a part, never across parts.
    for p in points(&out, ChartId::MovingRange) {
        assert!(p.value < 5.0, "{p:?}");
        assert_eq!(p.context.partition(), p.context.get("part"));
    }
    let parts: Vec<_> = c.partitions().collect();
    assert_eq!(parts, vec![Some("A"), Some("B")]);
    assert!(c.capability(Some("A")).is_some());
    assert!(c.capability(Some("C")).is_none());
}

#[test]
fn provisional_points_then_final_points_at_freeze() {
    let mut c =
        engine("name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { baseline = 4 }");
    let out = run(&mut c, &[1.0, 2.0, 1.0, 2.0, 1.5, 9.0]);
    let kinds: Vec<String> = out
        .iter()
        .map(|o| match o {
            Output::Point(p) => format!(
                "{}{}{}",
                p.chart.as_str(),
                p.seq,
                if p.limits.is_some() { "+" } else { "" }
            ),
            Output::LimitsFrozen(_) => "frozen".into(),
            Output::Violation(v) => format!("!{}{}", v.rule, v.seq),
            o => format!("{o:?}"),
        })
        .collect();
    let want = [
        "i1",
        "i2",
        "mr2",
        "i3",
        "mr3",
        "i4",
        "mr4",
        "frozen",
        "i1+",
        "i2+",
        "mr2+",
        "i3+",
        "mr3+",
        "i4+",
        "mr4+",
        "i5+",
        "mr5+",
        "i6+",
        "!nelson-16",
        "mr6+",
        "!nelson-16",
    ];
    assert_eq!(kinds, want);
    let f = &frozen(&out)[0];
    // mean 1.5, MR-bar 1 -> sigma = 1/d2(2).
    assert_eq!((f.subgroups, f.seq_first, f.seq_last), (4, 1, 4));
    assert_eq!(
        f.limits,
        Limits::Variables {
            centre: 1.5,
            sigma_upper: 1.0 / std::f64::consts::FRAC_2_SQRT_PI,
            sigma_lower: 1.0 / std::f64::consts::FRAC_2_SQRT_PI
        }
    );
}

#[test]
fn baseline_exclusion_for_variables() {
    let spec = "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { baseline = 20, exclude_out_of_control = true }";
    let mut vals: Vec<f64> = (0..20)
        .map(|i| 10.0 + [0.1, -0.1, 0.2, -0.2][i % 4])
        .collect();
    vals[10] = 30.0;
    let mut c = engine(spec);
    let f = frozen(&run(&mut c, &vals))[0].clone();
    assert_eq!(f.excluded, 1);
    let Limits::Variables {
        centre,
        sigma_upper,
        ..
    } = f.limits
    else {
        panic!()
    };
    let kept: Vec<f64> = vals.iter().copied().filter(|v| *v < 20.0).collect();
    assert_close(centre, kept.iter().sum::<f64>() / 19.0, 1e-12);
    // Moving ranges touching the excluded point are left out: 19 - 2 = 17 ranges remain.
    let mut mrs = Vec::new();
    for i in 1..20 {
        if i != 10 && i != 11 {
            mrs.push((vals[i] - vals[i - 1]).abs());
        }
    }
    assert_close(
        sigma_upper,
        mrs.iter().sum::<f64>() / mrs.len() as f64 / std::f64::consts::FRAC_2_SQRT_PI,
        1e-12,
    );
}

#[test]
fn a_baseline_without_spread_waits_for_more_data() {
    let mut c =
        engine("name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { baseline = 3 }");
    let out = run(&mut c, &[5.0, 5.0, 5.0, 5.0, 6.0]);
    let f = frozen(&out);
    assert_eq!(f.len(), 1);
    // The rolling baseline is the last three: 5, 5, 6.
    assert_eq!((f[0].seq_first, f[0].seq_last), (3, 5));
}

#[test]
fn out_of_spec_is_its_own_event_and_strict() {
    let mut c = engine(
        "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nusl = 12.0\nlsl = 8.0\nlimits = { centre = 10.0, sigma = 5.0 }",
    );
    let out = run(&mut c, &[12.0, 12.5, 8.0, 7.9, 10.0]);
    let oos: Vec<(u64, SpecSide, f64)> = out
        .iter()
        .filter_map(|o| match o {
            Output::OutOfSpec(s) => Some((s.seq, s.side, s.limit)),
            _ => None,
        })
        .collect();
    assert_eq!(
        oos,
        vec![(2, SpecSide::AboveUsl, 12.0), (4, SpecSide::BelowLsl, 8.0)]
    );
    // In control nonetheless: out of specification is not out of control.
    assert!(violations(&out, ChartId::Individuals).is_empty());
}

#[test]
fn bad_input_is_ignored_and_reported() {
    let mut c = engine(
        "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { centre = 10.0, sigma = 1.0 }",
    );
    let out = run(&mut c, &[f64::NAN, f64::INFINITY, 10.0]);
    assert_eq!(
        ignored(&out),
        vec![
            (1, 1, IgnoreReason::NotFinite),
            (2, 2, IgnoreReason::NotFinite)
        ]
    );
    assert_eq!(points(&out, ChartId::Individuals).len(), 1);

    let mut p = engine(
        "name = \"p\"\nsource = \"d/t\"\nchart = \"p\"\nsample_size_source = \"d/n\"\nlimits = { centre = 0.1 }",
    );
    let mut out = Vec::new();
    let cases = [
        (1.5, Some(10.0)),
        (-1.0, Some(10.0)),
        (3.0, None),
        (3.0, Some(0.0)),
        (11.0, Some(10.0)),
        (3.0, Some(2.5)),
        (3.0, Some(10.0)),
    ];
    for (i, (v, n)) in cases.iter().enumerate() {
        p.push(
            Observation {
                seq: i as u64 + 1,
                ts_micros: 0,
                value: *v,
                size: *n,
                context: &[],
            },
            &mut out,
        );
    }
    let reasons: Vec<IgnoreReason> = ignored(&out).into_iter().map(|i| i.2).collect();
    assert_eq!(
        reasons,
        vec![
            IgnoreReason::NotACount,
            IgnoreReason::NotACount,
            IgnoreReason::NoSampleSize,
            IgnoreReason::BadSampleSize,
            IgnoreReason::CountExceedsSampleSize,
            IgnoreReason::BadSampleSize,
        ]
    );
    assert_eq!(points(&out, ChartId::P).len(), 1);
}

#[test]
fn restore_limits_starts_in_phase_two() {
    let spec = "name = \"x\"\nsource = \"d/t\"\nchart = \"xbar-r\"\nsubgroup_size = 2\ncontext = [\"part\"]\nchart_per = \"part\"\nlimits = { baseline = 25 }";
    let mut c = engine(spec);
    let persisted = FrozenLimits {
        partition: Some("A".into()),
        limits: Limits::Variables {
            centre: 10.0,
            sigma_upper: 1.0,
            sigma_lower: 1.0,
        },
        subgroups: 25,
        excluded: 0,
        seq_first: 1,
        seq_last: 50,
    };
    // Round trip through JSON as the agent would persist it.
    let json = serde_json::to_string(&persisted).unwrap();
    let back: FrozenLimits = serde_json::from_str(&json).unwrap();
    c.restore_limits(&back).unwrap();
    let mut out = Vec::new();
    c.push(obs(51, 0, 20.0, &[Some("A")]), &mut out);
    c.push(obs(52, 0, 20.0, &[Some("A")]), &mut out);
    assert!(frozen(&out).is_empty());
    let x = points(&out, ChartId::Xbar);
    assert_eq!(x[0].limits.unwrap().centre, 10.0);
    assert_eq!(violations(&out, ChartId::Xbar)[0].0, 52);
    // Part B has no limits yet: provisional points.
    c.push(obs(53, 0, 20.0, &[Some("B")]), &mut out);
    c.push(obs(54, 0, 21.0, &[Some("B")]), &mut out);
    assert!(points(&out, ChartId::Xbar).last().unwrap().limits.is_none());

    let wrong = FrozenLimits {
        limits: Limits::Rate { c_bar: 2.0 },
        ..persisted.clone()
    };
    assert!(matches!(
        c.restore_limits(&wrong),
        Err(LimitsError::Incompatible(_))
    ));
    let bad = FrozenLimits {
        limits: Limits::Variables {
            centre: 1.0,
            sigma_upper: 0.0,
            sigma_lower: 1.0,
        },
        ..persisted
    };
    assert!(c.restore_limits(&bad).is_err());
}

#[test]
fn recalculate_on_request() {
    let spec = "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { baseline = 6 }";
    let mut c = engine(spec);
    let mut vals = vec![10.0, 10.2, 9.8, 10.1, 9.9, 10.0];
    vals.extend([20.0, 20.2, 19.8, 20.1, 19.9, 20.0]);
    let out = run(&mut c, &vals);
    assert_eq!(frozen(&out).len(), 1);
    assert!(!violations(&out, ChartId::Individuals).is_empty());
    let mut out = Vec::new();
    assert_eq!(c.recalculate(&mut out), Ok(1));
    let f = frozen(&out);
    assert_eq!((f[0].seq_first, f[0].seq_last), (7, 12));
    let Some(Limits::Variables { centre, .. }) = c.limits(None) else {
        panic!()
    };
    assert_close(centre, 20.0, 1e-9);
    // Only the frozen limits are emitted: the window is re-evaluated silently.
    assert_eq!(out.len(), 1);
    let out = run(&mut c, &[20.05]);
    assert!(violations(&out, ChartId::Individuals).is_empty());

    let mut fixed = engine(
        "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { centre = 1.0, sigma = 1.0 }",
    );
    assert_eq!(
        fixed.recalculate(&mut Vec::new()),
        Err(LimitsError::FixedLimits)
    );
    let mut empty = engine(spec);
    assert_eq!(
        empty.recalculate(&mut Vec::new()),
        Err(LimitsError::NotEnoughData)
    );
}

#[test]
fn replay_is_deterministic() {
    let spec = "name = \"x\"\nsource = \"d/t\"\nchart = \"xbar-s\"\nsubgroup_size = 3\nlimits = { baseline = 5, exclude_out_of_control = true }";
    let vals: Vec<f64> = (0..200).map(|i| ((i * 7919) % 101) as f64 / 10.0).collect();
    let a = run(&mut engine(spec), &vals);
    let b = run(&mut engine(spec), &vals);
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

#[test]
fn ewma_and_cusum_get_only_the_beyond_limit_test() {
    for chart in ["ewma", "cusum"] {
        let mut c = engine(&format!(
            "name = \"x\"\nsource = \"d/t\"\nchart = \"{chart}\"\nlimits = {{ centre = 0.0, sigma = 1.0 }}"
        ));
        // A long run on one side, a trend, alternation: only beyond-limit may fire.
        let vals: Vec<f64> = (0..60)
            .map(|i| 0.3 + (i % 2) as f64 * 0.01 + i as f64 * 0.001)
            .collect();
        let out = run(&mut c, &vals);
        for o in &out {
            if let Output::Violation(v) = o {
                assert_eq!(v.rule, lineside_spc::Rule::Nelson(1), "{chart}: {v:?}");
            }
        }
    }
}

#[test]
fn ewma_baseline_emits_points_at_freeze() {
    let mut c = engine(
        "name = \"x\"\nsource = \"d/t\"\nchart = \"ewma\"\nlimits = { baseline = 5 }\newma = { lambda = 0.2, l = 3.0 }",
    );
    let out = run(&mut c, &[1.0, 2.0, 1.0, 2.0, 1.0, 1.5]);
    // Nothing before the freeze, then the five baseline points and the sixth.
    assert!(matches!(out[0], Output::LimitsFrozen(_)));
    let p = points(&out, ChartId::Ewma);
    assert_eq!(p.len(), 6);
    assert_close(p[0].value, 0.2 * 1.0 + 0.8 * 1.4, 1e-12);
}

#[test]
fn characteristic_is_send_and_clone() {
    fn assert_send<T: Send + Sync + Clone>() {}
    assert_send::<Characteristic>();
    assert_send::<Output>();
}
