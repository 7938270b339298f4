#![allow(dead_code)]

use lineside_spc::{
    Characteristic, CharacteristicSpec, ChartId, FrozenLimits, Observation, Output, Point, Rule,
};

pub fn spec(text: &str) -> CharacteristicSpec {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub fn engine(text: &str) -> Characteristic {
    Characteristic::new(spec(text)).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Push values with seq 1.. and ts = seq seconds.
pub fn run(c: &mut Characteristic, values: &[f64]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let seq = i as u64 + 1;
        c.push(Observation::new(seq, seq as i64 * 1_000_000, v), &mut out);
    }
    out
}

/// Push (count, size) samples.
pub fn run_sized(c: &mut Characteristic, samples: &[(f64, f64)]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, &(v, n)) in samples.iter().enumerate() {
        let seq = i as u64 + 1;
        let obs = Observation {
            seq,
            ts_micros: seq as i64,
            value: v,
            size: Some(n),
            context: &[],
        };
        c.push(obs, &mut out);
    }
    out
}

pub fn frozen(out: &[Output]) -> Vec<FrozenLimits> {
    out.iter()
        .filter_map(|o| match o {
            Output::LimitsFrozen(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// The final points of a chart: for each seq the last point emitted (a provisional point is
/// replaced by the one emitted when the limits freeze).
pub fn points(out: &[Output], chart: ChartId) -> Vec<Point> {
    let mut v: Vec<Point> = Vec::new();
    for o in out {
        if let Output::Point(p) = o
            && p.chart == chart
        {
            if let Some(last) = v.iter_mut().find(|q| q.seq == p.seq) {
                *last = p.clone();
            } else {
                v.push(p.clone());
            }
        }
    }
    v
}

/// (seq, rule) of the violations on a chart.
pub fn violations(out: &[Output], chart: ChartId) -> Vec<(u64, Rule)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Violation(v) if v.chart == chart => Some((v.seq, v.rule)),
            _ => None,
        })
        .collect()
}

pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[track_caller]
pub fn assert_close(a: f64, b: f64, tol: f64) {
    assert!(close(a, b, tol), "{a} vs {b} (tolerance {tol})");
}
