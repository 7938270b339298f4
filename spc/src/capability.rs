//! Process capability (Cp, Cpk, Pp, Ppk, Cpm) over a rolling window of subgroups.
//!
//! Within-subgroup sigma ("potential" indices Cp/Cpk) is estimated as the chart does: MR-bar/d2
//! for individuals, mean(R_i/d2(n_i)) for X-bar-R, mean(S_i/c4(n_i)) for X-bar-S and subgrouped
//! EWMA/CUSUM. Overall sigma (Pp/Ppk/Cpm) is the sample standard deviation of every observation in
//! the window, computed exactly from the subgroups' sizes, means and standard deviations.

use serde::{Deserialize, Serialize};

use crate::chart::{self, Spread};
use crate::spec::ChartType;

/// Capability indices; an index is None when its inputs are missing (e.g. Cp without both
/// specification limits, Cpm without a target, any index when sigma is 0 or unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    /// Subgroups and observations in the window.
    pub subgroups: u32,
    pub observations: u64,
    pub mean: f64,
    pub sigma_within: Option<f64>,
    pub sigma_overall: Option<f64>,
    pub cp: Option<f64>,
    pub cpk: Option<f64>,
    pub pp: Option<f64>,
    pub ppk: Option<f64>,
    pub cpm: Option<f64>,
}

pub(crate) fn compute<'a>(
    kind: ChartType,
    n: usize,
    window: impl Iterator<Item = &'a Spread> + Clone,
    usl: Option<f64>,
    lsl: Option<f64>,
    target: Option<f64>,
) -> Option<Capability> {
    let (mut count, mut subgroups, mut sum) = (0u64, 0u32, 0.0);
    for r in window.clone() {
        count += u64::from(r.n);
        subgroups += 1;
        sum += r.mean * f64::from(r.n);
    }
    if count == 0 {
        return None;
    }
    let mean = sum / count as f64;
    // Total sum of squares = within-subgroup + between-subgroup parts.
    let ss: f64 = window
        .clone()
        .map(|r| (f64::from(r.n) - 1.0) * r.sd * r.sd + f64::from(r.n) * (r.mean - mean).powi(2))
        .sum();
    let sigma_overall = (count >= 2)
        .then(|| (ss / (count as f64 - 1.0)).sqrt())
        .filter(|s| *s > 0.0 && s.is_finite());
    let sigma_within = chart::sigma_within(kind, n, window.map(|r| (*r, true)));
    let potential = |s: Option<f64>| -> (Option<f64>, Option<f64>) {
        let Some(s) = s else { return (None, None) };
        let p = match (usl, lsl) {
            (Some(u), Some(l)) => Some((u - l) / (6.0 * s)),
            _ => None,
        };
        let upper = usl.map(|u| (u - mean) / (3.0 * s));
        let lower = lsl.map(|l| (mean - l) / (3.0 * s));
        let pk = match (upper, lower) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (p, pk)
    };
    let (cp, cpk) = potential(sigma_within);
    let (pp, ppk) = potential(sigma_overall);
    let cpm = match (usl, lsl, target, sigma_overall) {
        (Some(u), Some(l), Some(t), Some(s)) => {
            Some((u - l) / (6.0 * (s * s + (mean - t) * (mean - t)).sqrt()))
        }
        _ => None,
    };
    Some(Capability {
        subgroups,
        observations: count,
        mean,
        sigma_within,
        sigma_overall,
        cp,
        cpk,
        pp,
        ppk,
        cpm,
    })
}
