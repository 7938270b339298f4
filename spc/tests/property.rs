//! Property: for random data, the streaming engine flags exactly the points that a straightforward
//! whole-series implementation of the rules (written here from their definitions, looking at
//! explicit windows of the series) flags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use lineside_spc::{Characteristic, CharacteristicSpec, ChartId, Observation, Output, Rule};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Beyond,
    Run,
    Trend,
    Alternate,
    Zone2,
    Zone1,
    Strat,
    Mixture,
}

/// Limits as the reference sees them: centre, one sigma, control limits.
#[derive(Debug, Clone, Copy)]
struct Lim {
    c: f64,
    s: f64,
    ucl: f64,
    lcl: f64,
}

/// Whole-series evaluation of one rule: the indices it flags.
fn reference(xs: &[f64], l: Lim, kind: Kind, k: usize) -> BTreeSet<usize> {
    let mut flagged = BTreeSet::new();
    for i in 0..xs.len() {
        // The window of the last k points ending at i, when there are k of them.
        let win = if i + 1 >= k {
            Some(&xs[i + 1 - k..=i])
        } else {
            None
        };
        let hit = match kind {
            Kind::Beyond => xs[i] > l.ucl || xs[i] < l.lcl,
            Kind::Run => {
                win.is_some_and(|w| w.iter().all(|&x| x > l.c) || w.iter().all(|&x| x < l.c))
            }
            Kind::Trend => win.is_some_and(|w| {
                w.windows(2).all(|p| p[1] > p[0]) || w.windows(2).all(|p| p[1] < p[0])
            }),
            Kind::Alternate => win.is_some_and(|w| {
                let d: Vec<f64> = w.windows(2).map(|p| p[1] - p[0]).collect();
                d.iter().all(|&x| x != 0.0) && d.windows(2).all(|p| (p[0] > 0.0) != (p[1] > 0.0))
            }),
            Kind::Zone2 | Kind::Zone1 => {
                let m = if matches!(kind, Kind::Zone2) {
                    2.0
                } else {
                    1.0
                };
                let above = |x: f64| x - l.c > m * l.s;
                let below = |x: f64| l.c - x > m * l.s;
                // The last k+1 points available (fewer at the start of the series).
                let w = &xs[i.saturating_sub(k)..=i];
                (above(xs[i]) && w.iter().filter(|&&x| above(x)).count() >= k)
                    || (below(xs[i]) && w.iter().filter(|&&x| below(x)).count() >= k)
            }
            Kind::Strat => win.is_some_and(|w| w.iter().all(|&x| (x - l.c).abs() <= l.s)),
            Kind::Mixture => win.is_some_and(|w| w.iter().all(|&x| (x - l.c).abs() > l.s)),
        };
        if hit {
            flagged.insert(i);
        }
    }
    flagged
}

const NELSON: [Kind; 8] = [
    Kind::Beyond,
    Kind::Run,
    Kind::Trend,
    Kind::Alternate,
    Kind::Zone2,
    Kind::Zone1,
    Kind::Strat,
    Kind::Mixture,
];

/// Values on a grid of half sigmas (exact zone boundaries, centre-line points, ties) mixed with
/// continuous values.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![(-8i32..=8).prop_map(|h| f64::from(h) * 0.5), -4.0f64..4.0,]
}

fn engine(extra: &str) -> Characteristic {
    let text = format!(
        "name = \"p\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = {{ centre = 0.0, sigma = 1.0 }}\n{extra}"
    );
    let spec: CharacteristicSpec = toml::from_str(&text).unwrap();
    Characteristic::new(spec).unwrap()
}

fn streamed(c: &mut Characteristic, xs: &[f64]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, &x) in xs.iter().enumerate() {
        c.push(Observation::new(i as u64 + 1, 0, x), &mut out);
    }
    out
}

/// (index into the chart's series, rule number) flagged by the engine.
fn engine_flags(out: &[Output], chart: ChartId, first_seq: u64) -> BTreeSet<(usize, u8)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Violation(v) if v.chart == chart => {
                let n = match v.rule {
                    Rule::Nelson(n) | Rule::WesternElectric(n) => n,
                };
                Some(((v.seq - first_seq) as usize, n))
            }
            _ => None,
        })
        .collect()
}

const D2: f64 = std::f64::consts::FRAC_2_SQRT_PI;
const D3: f64 = 0.852_502_466_427_421_7;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn nelson_streaming_equals_whole_series(
        xs in prop::collection::vec(value(), 1..250),
        ks in (2usize..12, 2usize..9, 2usize..16, 1usize..4, 1usize..6, 2usize..18, 2usize..10),
    ) {
        let (k2, k3, k4, k5, k6, k7, k8) = ks;
        let extra = format!(
            "[rule.2]\npoints = {k2}\n[rule.3]\npoints = {k3}\n[rule.4]\npoints = {k4}\n[rule.5]\npoints = {k5}\n[rule.6]\npoints = {k6}\n[rule.7]\npoints = {k7}\n[rule.8]\npoints = {k8}\n"
        );
        let out = streamed(&mut engine(&extra), &xs);
        let k = [1, k2, k3, k4, k5, k6, k7, k8];

        // Individuals chart: all eight rules.
        let lim = Lim { c: 0.0, s: 1.0, ucl: 3.0, lcl: -3.0 };
        let mut want = BTreeSet::new();
        for (r, kind) in NELSON.iter().enumerate() {
            for i in reference(&xs, lim, *kind, k[r]) {
                want.insert((i, r as u8 + 1));
            }
        }
        prop_assert_eq!(engine_flags(&out, ChartId::Individuals, 1), want);

        // Moving-range chart: rules 1-4 on the series of moving ranges (from the second point).
        let mrs: Vec<f64> = xs.windows(2).map(|p| (p[1] - p[0]).abs()).collect();
        let lim = Lim { c: D2, s: D3, ucl: D2 + 3.0 * D3, lcl: 0.0 };
        let mut want = BTreeSet::new();
        for (r, kind) in NELSON[..4].iter().enumerate() {
            for i in reference(&mrs, lim, *kind, k[r]) {
                want.insert((i, r as u8 + 1));
            }
        }
        prop_assert_eq!(engine_flags(&out, ChartId::MovingRange, 2), want);
    }

    #[test]
    fn western_electric_streaming_equals_whole_series(xs in prop::collection::vec(value(), 1..200)) {
        let out = streamed(&mut engine("rules = \"western-electric\""), &xs);
        let lim = Lim { c: 0.0, s: 1.0, ucl: 3.0, lcl: -3.0 };
        let mut want = BTreeSet::new();
        for (r, kind, k) in [(1u8, Kind::Beyond, 1), (2, Kind::Zone2, 2), (3, Kind::Zone1, 4), (4, Kind::Run, 8)] {
            for i in reference(&xs, lim, kind, k) {
                want.insert((i, r));
            }
        }
        prop_assert_eq!(engine_flags(&out, ChartId::Individuals, 1), want);
    }

    #[test]
    fn xbar_r_streaming_equals_whole_series(xs in prop::collection::vec(value(), 4..400)) {
        // Subgroups of 4 with sigma 1: the x-bar chart has sigma 1/2.
        let text = "name = \"p\"\nsource = \"d/t\"\nchart = \"xbar-r\"\nsubgroup_size = 4\nlimits = { centre = 0.0, sigma = 1.0 }";
        let mut c = Characteristic::new(toml::from_str(text).unwrap()).unwrap();
        let out = streamed(&mut c, &xs);
        let means: Vec<f64> = xs.chunks_exact(4).map(|g| g.iter().sum::<f64>() / 4.0).collect();
        let lim = Lim { c: 0.0, s: 0.5, ucl: 1.5, lcl: -1.5 };
        let defaults = [1, 9, 6, 14, 2, 4, 15, 8];
        let mut want = BTreeSet::new();
        for (r, kind) in NELSON.iter().enumerate() {
            for i in reference(&means, lim, *kind, defaults[r]) {
                want.insert((i, r as u8 + 1));
            }
        }
        // The engine reports the seq of the subgroup's last observation.
        let got: BTreeSet<(usize, u8)> = engine_flags(&out, ChartId::Xbar, 4)
            .into_iter()
            .map(|(i, r)| (i / 4, r))
            .collect();
        prop_assert_eq!(got, want);
    }
}
