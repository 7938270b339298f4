//! One chart's state: its limits, the running EWMA/CUSUM statistics and the rule state, and how a
//! closed subgroup becomes plotted points and violations. Also the phase-I limit computation.

use serde::{Deserialize, Serialize};

use crate::constants::Constants;
use crate::float_bits::{bits, opt_bits, opt_limits_bits};
use crate::output::{ChartId, Context, Limits, Output, Point, PointLimits, Violation};
use crate::rules::{ActiveRule, RuleSet, RuleState, Zones};
use crate::spec::ChartType;

/// d2 and d3 for moving ranges of two.
const D2_MR: f64 = std::f64::consts::FRAC_2_SQRT_PI;
const D3_MR: f64 = 0.8525024664274217; // sqrt(2 - 4 / pi): sd of |X1 - X2| / sigma

/// A closed subgroup (a single observation for individuals and attribute charts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub seq_first: u64,
    pub seq: u64,
    pub ts_micros: i64,
    pub n: u32,
    /// Mean of the subgroup (individual value; the count for attribute charts).
    #[serde(with = "bits")]
    pub mean: f64,
    #[serde(with = "bits")]
    pub range: f64,
    /// Sample standard deviation (0 for n = 1).
    #[serde(with = "bits")]
    pub sd: f64,
    /// I-MR and individual EWMA/CUSUM: moving range to the previous observation of this chart.
    #[serde(with = "opt_bits")]
    pub mr: Option<f64>,
    /// Attribute charts: sample size / inspection units.
    #[serde(with = "bits")]
    pub size: f64,
}

/// What the within-subgroup sigma estimators read of a subgroup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Spread {
    pub n: u32,
    #[serde(with = "bits")]
    pub mean: f64,
    #[serde(with = "bits")]
    pub range: f64,
    #[serde(with = "bits")]
    pub sd: f64,
    #[serde(with = "opt_bits")]
    pub mr: Option<f64>,
}

impl Record {
    pub fn spread(&self) -> Spread {
        Spread {
            n: self.n,
            mean: self.mean,
            range: self.range,
            sd: self.sd,
            mr: self.mr,
        }
    }
}

/// The derived configuration a chart needs.
#[derive(Debug, Clone)]
pub(crate) struct ChartConfig {
    pub kind: ChartType,
    /// Largest subgroup (1 for individuals and attribute charts).
    pub n: usize,
    pub prim_rules: Vec<ActiveRule>,
    pub disp_rules: Vec<ActiveRule>,
    pub lambda: f64,
    pub l: f64,
    pub k: f64,
    pub h: f64,
    pub head_start: f64,
    pub reset_after_signal: bool,
    /// np chart: the fixed sample size.
    pub np_size: f64,
}

/// What to emit while plotting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emit {
    /// Points and violations.
    All,
    /// Nothing: only update the state (priming after a recalculation).
    Nothing,
}

/// Running state of one chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Core {
    #[serde(with = "opt_limits_bits")]
    pub limits: Option<Limits>,
    pub prim: RuleState,
    pub disp: RuleState,
    #[serde(with = "bits")]
    pub ewma_z: f64,
    /// Variance of z, recursively: V_i = lambda^2 sigma^2 / n_i + (1 - lambda)^2 V_{i-1}.
    #[serde(with = "bits")]
    pub ewma_var: f64,
    #[serde(with = "bits")]
    pub cusum_hi: f64,
    #[serde(with = "bits")]
    pub cusum_lo: f64,
}

fn sym(centre: f64, sigma: f64, width: f64, lcl_floor: Option<f64>) -> Zones {
    let lcl = centre - width * sigma;
    Zones {
        centre,
        ucl: centre + width * sigma,
        lcl: Some(lcl_floor.map_or(lcl, |f| lcl.max(f))),
        sigma_hi: sigma,
        sigma_lo: sigma,
    }
}

impl Core {
    /// Start the running statistics afresh (new limits).
    pub fn reset(&mut self, cfg: &ChartConfig) {
        self.prim = RuleState::default();
        self.disp = RuleState::default();
        self.ewma_z = match self.limits {
            Some(Limits::Variables { centre, .. }) => centre,
            _ => 0.0,
        };
        self.ewma_var = 0.0;
        self.cusum_hi = cfg.head_start;
        self.cusum_lo = cfg.head_start;
    }

    /// Whether points are emitted before the limits are known (Shewhart and attribute charts).
    pub fn provisional_points(kind: ChartType) -> bool {
        !matches!(kind, ChartType::Ewma | ChartType::Cusum)
    }

    /// Plot a closed subgroup.
    pub fn plot(
        &mut self,
        cfg: &ChartConfig,
        rec: &Record,
        ctx: &Context,
        emit: Emit,
        out: &mut Vec<Output>,
    ) {
        let Some(limits) = self.limits else {
            if emit == Emit::All && Self::provisional_points(cfg.kind) {
                for (chart, x) in provisional(cfg, rec).into_iter().flatten() {
                    out.push(Output::Point(point(
                        chart,
                        rec,
                        ctx,
                        x,
                        None,
                        RuleSet::default(),
                        cfg,
                    )));
                }
            }
            return;
        };
        match (cfg.kind, limits) {
            (
                ChartType::IMr,
                Limits::Variables {
                    centre,
                    sigma_upper,
                    sigma_lower,
                },
            ) => {
                let z = Zones {
                    centre,
                    ucl: centre + 3.0 * sigma_upper,
                    lcl: Some(centre - 3.0 * sigma_lower),
                    sigma_hi: sigma_upper,
                    sigma_lo: sigma_lower,
                };
                self.eval(
                    cfg,
                    true,
                    ChartId::Individuals,
                    rec,
                    ctx,
                    rec.mean,
                    &z,
                    emit,
                    out,
                );
                if let Some(mr) = rec.mr {
                    let s = 0.5 * (sigma_upper + sigma_lower);
                    let z = sym(D2_MR * s, D3_MR * s, 3.0, Some(0.0));
                    self.eval(
                        cfg,
                        false,
                        ChartId::MovingRange,
                        rec,
                        ctx,
                        mr,
                        &z,
                        emit,
                        out,
                    );
                }
            }
            (
                ChartType::XbarR | ChartType::XbarS,
                Limits::Variables {
                    centre,
                    sigma_upper,
                    sigma_lower,
                },
            ) => {
                let Some(c) = Constants::for_n(rec.n as usize) else {
                    return;
                };
                let sq = f64::from(rec.n).sqrt();
                let z = Zones {
                    centre,
                    ucl: centre + 3.0 * sigma_upper / sq,
                    lcl: Some(centre - 3.0 * sigma_lower / sq),
                    sigma_hi: sigma_upper / sq,
                    sigma_lo: sigma_lower / sq,
                };
                self.eval(cfg, true, ChartId::Xbar, rec, ctx, rec.mean, &z, emit, out);
                let s = 0.5 * (sigma_upper + sigma_lower);
                if cfg.kind == ChartType::XbarR {
                    let z = sym(c.d2 * s, c.d3 * s, 3.0, Some(0.0));
                    self.eval(
                        cfg,
                        false,
                        ChartId::Range,
                        rec,
                        ctx,
                        rec.range,
                        &z,
                        emit,
                        out,
                    );
                } else {
                    let z = sym(c.c4 * s, (1.0 - c.c4 * c.c4).sqrt() * s, 3.0, Some(0.0));
                    self.eval(cfg, false, ChartId::StdDev, rec, ctx, rec.sd, &z, emit, out);
                }
            }
            (
                ChartType::Ewma,
                Limits::Variables {
                    centre,
                    sigma_upper,
                    sigma_lower,
                },
            ) => {
                let s = 0.5 * (sigma_upper + sigma_lower);
                let lam = cfg.lambda;
                self.ewma_z = lam * rec.mean + (1.0 - lam) * self.ewma_z;
                self.ewma_var = lam * lam * s * s / f64::from(rec.n)
                    + (1.0 - lam) * (1.0 - lam) * self.ewma_var;
                let z = sym(centre, self.ewma_var.sqrt(), cfg.l, None);
                let x = self.ewma_z;
                self.eval(cfg, true, ChartId::Ewma, rec, ctx, x, &z, emit, out);
            }
            (
                ChartType::Cusum,
                Limits::Variables {
                    centre,
                    sigma_upper,
                    sigma_lower,
                },
            ) => {
                let s = 0.5 * (sigma_upper + sigma_lower);
                let y = (rec.mean - centre) / (s / f64::from(rec.n).sqrt());
                self.cusum_hi = (y - cfg.k + self.cusum_hi).max(0.0);
                self.cusum_lo = (-y - cfg.k + self.cusum_lo).max(0.0);
                let z = Zones {
                    centre: 0.0,
                    ucl: cfg.h,
                    lcl: None,
                    sigma_hi: cfg.h / 3.0,
                    sigma_lo: cfg.h / 3.0,
                };
                let (hi, lo) = (self.cusum_hi, self.cusum_lo);
                self.eval(cfg, true, ChartId::CusumUpper, rec, ctx, hi, &z, emit, out);
                self.eval(cfg, false, ChartId::CusumLower, rec, ctx, lo, &z, emit, out);
                if cfg.reset_after_signal {
                    // Strictly beyond h is a signal (the same convention as every limit).
                    if hi > cfg.h {
                        self.cusum_hi = cfg.head_start;
                    }
                    if lo > cfg.h {
                        self.cusum_lo = cfg.head_start;
                    }
                }
            }
            (ChartType::P, Limits::Proportion { p_bar }) => {
                let sigma = (p_bar * (1.0 - p_bar) / rec.size).sqrt();
                let z = sym(p_bar, sigma, 3.0, Some(0.0));
                self.eval(
                    cfg,
                    true,
                    ChartId::P,
                    rec,
                    ctx,
                    rec.mean / rec.size,
                    &z,
                    emit,
                    out,
                );
            }
            (ChartType::Np, Limits::Proportion { p_bar }) => {
                let n = cfg.np_size;
                let z = sym(
                    n * p_bar,
                    (n * p_bar * (1.0 - p_bar)).sqrt(),
                    3.0,
                    Some(0.0),
                );
                self.eval(cfg, true, ChartId::Np, rec, ctx, rec.mean, &z, emit, out);
            }
            (ChartType::C, Limits::Rate { c_bar }) => {
                let z = sym(c_bar, c_bar.sqrt(), 3.0, Some(0.0));
                self.eval(cfg, true, ChartId::C, rec, ctx, rec.mean, &z, emit, out);
            }
            (ChartType::U, Limits::Rate { c_bar }) => {
                let z = sym(c_bar, (c_bar / rec.size).sqrt(), 3.0, Some(0.0));
                self.eval(
                    cfg,
                    true,
                    ChartId::U,
                    rec,
                    ctx,
                    rec.mean / rec.size,
                    &z,
                    emit,
                    out,
                );
            }
            // restore_limits rejects limits of the wrong kind, so this is unreachable in practice.
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn eval(
        &mut self,
        cfg: &ChartConfig,
        primary: bool,
        chart: ChartId,
        rec: &Record,
        ctx: &Context,
        x: f64,
        z: &Zones,
        emit: Emit,
        out: &mut Vec<Output>,
    ) {
        let (state, rules) = if primary {
            (&mut self.prim, &cfg.prim_rules)
        } else {
            (&mut self.disp, &cfg.disp_rules)
        };
        let broken = state.push(x, z, rules);
        if emit == Emit::Nothing {
            return;
        }
        let limits = PointLimits {
            centre: z.centre,
            ucl: z.ucl,
            lcl: z.lcl,
        };
        out.push(Output::Point(point(
            chart,
            rec,
            ctx,
            x,
            Some(limits),
            broken,
            cfg,
        )));
        if broken.is_empty() {
            return;
        }
        for r in rules.iter().filter(|r| broken.contains(r.rule)) {
            out.push(Output::Violation(Violation {
                rule: r.rule,
                severity: r.severity,
                chart,
                seq_first: rec.seq_first,
                seq: rec.seq,
                ts_micros: rec.ts_micros,
                value: x,
                limits,
                context: ctx.clone(),
            }));
        }
    }
}

fn point(
    chart: ChartId,
    rec: &Record,
    ctx: &Context,
    x: f64,
    limits: Option<PointLimits>,
    rules: RuleSet,
    cfg: &ChartConfig,
) -> Point {
    Point {
        chart,
        seq_first: rec.seq_first,
        seq: rec.seq,
        ts_micros: rec.ts_micros,
        n: rec.n,
        sample_size: matches!(cfg.kind, ChartType::P | ChartType::Np | ChartType::U)
            .then_some(rec.size),
        value: x,
        limits,
        rules,
        context: ctx.clone(),
    }
}

/// Statistics plotted before the limits are known.
fn provisional(cfg: &ChartConfig, rec: &Record) -> [Option<(ChartId, f64)>; 2] {
    match cfg.kind {
        ChartType::IMr => [
            Some((ChartId::Individuals, rec.mean)),
            rec.mr.map(|m| (ChartId::MovingRange, m)),
        ],
        ChartType::XbarR => [
            Some((ChartId::Xbar, rec.mean)),
            Some((ChartId::Range, rec.range)),
        ],
        ChartType::XbarS => [
            Some((ChartId::Xbar, rec.mean)),
            Some((ChartId::StdDev, rec.sd)),
        ],
        ChartType::P => [Some((ChartId::P, rec.mean / rec.size)), None],
        ChartType::Np => [Some((ChartId::Np, rec.mean)), None],
        ChartType::C => [Some((ChartId::C, rec.mean)), None],
        ChartType::U => [Some((ChartId::U, rec.mean / rec.size)), None],
        ChartType::Ewma | ChartType::Cusum => [None, None],
    }
}

/// Limits from the included records (phase I), or None when they are degenerate (no spread, too
/// few subgroups).
pub(crate) fn compute_limits(
    cfg: &ChartConfig,
    recs: &[&Record],
    included: &[bool],
) -> Option<Limits> {
    let inc = || {
        recs.iter()
            .zip(included)
            .filter(|(_, i)| **i)
            .map(|(r, _)| *r)
    };
    let count = inc().count();
    if count < 2 {
        return None;
    }
    let limits = if cfg.kind.is_attribute() {
        let (sum_c, sum_n) = inc().fold((0.0, 0.0), |(c, n), r| (c + r.mean, n + r.size));
        match cfg.kind {
            ChartType::P | ChartType::Np => Limits::Proportion {
                p_bar: sum_c / sum_n,
            },
            ChartType::C => Limits::Rate {
                c_bar: sum_c / count as f64,
            },
            _ => Limits::Rate {
                c_bar: sum_c / sum_n,
            },
        }
    } else {
        let (sum_x, sum_n) = inc().fold((0.0, 0.0), |(s, n), r| {
            (s + r.mean * f64::from(r.n), n + f64::from(r.n))
        });
        let centre = sum_x / sum_n;
        let sigma = sigma_within(
            cfg.kind,
            cfg.n,
            recs.iter()
                .map(|r| r.spread())
                .zip(included.iter().copied()),
        )?;
        Limits::Variables {
            centre,
            sigma_upper: sigma,
            sigma_lower: sigma,
        }
    };
    limits.is_valid().then_some(limits)
}

/// Within-subgroup sigma over records (with an inclusion flag): MR-bar/d2 for individuals,
/// mean(R_i/d2(n_i)) for X-bar-R, mean(S_i/c4(n_i)) for X-bar-S and subgrouped EWMA/CUSUM.
/// A moving range counts only when both its observations are included.
pub(crate) fn sigma_within(
    kind: ChartType,
    n: usize,
    recs: impl Iterator<Item = (Spread, bool)>,
) -> Option<f64> {
    let individuals = matches!(kind, ChartType::IMr)
        || (matches!(kind, ChartType::Ewma | ChartType::Cusum) && n == 1);
    let (mut sum, mut cnt) = (0.0, 0u64);
    let mut prev_included = false;
    for (r, inc) in recs {
        if individuals {
            if inc
                && prev_included
                && let Some(mr) = r.mr
            {
                sum += mr;
                cnt += 1;
            }
            prev_included = inc;
            continue;
        }
        if !inc || r.n < 2 {
            continue;
        }
        let c = Constants::for_n(r.n as usize)?;
        sum += if kind == ChartType::XbarR {
            r.range / c.d2
        } else {
            r.sd / c.c4
        };
        cnt += 1;
    }
    if cnt == 0 {
        return None;
    }
    let s = sum / cnt as f64;
    let s = if individuals { s / D2_MR } else { s };
    (s.is_finite() && s > 0.0).then_some(s)
}

/// Whether a record is beyond the 3-sigma limits of the Shewhart charts for these limits (used to
/// exclude out-of-control subgroups from a baseline): the individuals chart, or the X-bar chart
/// and the R chart (S chart for X-bar-S and subgrouped EWMA/CUSUM).
pub(crate) fn beyond_shewhart(cfg: &ChartConfig, rec: &Record, limits: &Limits) -> bool {
    let out = |x: f64, z: &Zones| x > z.ucl || z.lcl.is_some_and(|l| x < l);
    match *limits {
        Limits::Variables {
            centre,
            sigma_upper,
            sigma_lower,
        } => {
            let sq = f64::from(rec.n).sqrt();
            let z = Zones {
                centre,
                ucl: centre + 3.0 * sigma_upper / sq,
                lcl: Some(centre - 3.0 * sigma_lower / sq),
                sigma_hi: sigma_upper,
                sigma_lo: sigma_lower,
            };
            if out(rec.mean, &z) {
                return true;
            }
            let s = 0.5 * (sigma_upper + sigma_lower);
            if rec.n == 1 {
                // Individuals: a large moving range comes from the individual values on either
                // side of it, and excluding a point drops its moving ranges anyway.
                false
            } else if let Some(c) = Constants::for_n(rec.n as usize) {
                if cfg.kind == ChartType::XbarR {
                    out(rec.range, &sym(c.d2 * s, c.d3 * s, 3.0, Some(0.0)))
                } else {
                    out(
                        rec.sd,
                        &sym(c.c4 * s, (1.0 - c.c4 * c.c4).sqrt() * s, 3.0, Some(0.0)),
                    )
                }
            } else {
                false
            }
        }
        Limits::Proportion { p_bar } => {
            if cfg.kind == ChartType::Np {
                let n = cfg.np_size;
                out(
                    rec.mean,
                    &sym(
                        n * p_bar,
                        (n * p_bar * (1.0 - p_bar)).sqrt(),
                        3.0,
                        Some(0.0),
                    ),
                )
            } else {
                let sigma = (p_bar * (1.0 - p_bar) / rec.size).sqrt();
                out(rec.mean / rec.size, &sym(p_bar, sigma, 3.0, Some(0.0)))
            }
        }
        Limits::Rate { c_bar } => {
            let (x, sigma) = if cfg.kind == ChartType::C {
                (rec.mean, c_bar.sqrt())
            } else {
                (rec.mean / rec.size, (c_bar / rec.size).sqrt())
            };
            out(x, &sym(c_bar, sigma, 3.0, Some(0.0)))
        }
    }
}

/// Phase-I limits with optional exclusion of out-of-control subgroups: returns the limits and the
/// number of subgroups excluded.
pub(crate) fn baseline_limits(
    cfg: &ChartConfig,
    recs: &[&Record],
    exclude: bool,
) -> Option<(Limits, usize)> {
    let mut included = vec![true; recs.len()];
    let mut limits = compute_limits(cfg, recs, &included)?;
    if !exclude {
        return Some((limits, 0));
    }
    // Each pass excludes at least one subgroup, so this ends; the bound is a second guard.
    for _ in 0..recs.len() {
        let beyond: Vec<usize> = (0..recs.len())
            .filter(|&i| included[i] && beyond_shewhart(cfg, recs[i], &limits))
            .collect();
        if beyond.is_empty() {
            break;
        }
        let mut next = included.clone();
        for i in beyond {
            next[i] = false;
        }
        match compute_limits(cfg, recs, &next) {
            Some(l) => {
                included = next;
                limits = l;
            }
            // Excluding more would leave nothing usable: keep the last valid limits.
            None => break,
        }
    }
    let excluded = included.iter().filter(|i| !**i).count();
    Some((limits, excluded))
}

/// Sanity for constants used above.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants;

    #[test]
    fn mr_constants_match_table() {
        assert!((D2_MR - constants::d2(2).unwrap()).abs() < 1e-6);
        assert!((D3_MR - constants::d3(2).unwrap()).abs() < 1e-6);
    }
}
