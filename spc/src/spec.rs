//! The `[[characteristic]]` configuration table and its semantic validation.
//!
//! Parsing (types, unknown keys) is serde's job: every struct denies unknown fields, so the agent's
//! loader reports a misspelt key with its path. [`CharacteristicSpec::validate`] then checks what
//! serde cannot (ranges, combinations) and returns every problem at once, each with the path of the
//! offending key relative to the `[[characteristic]]` table.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::constants;
use crate::rules::{RulePreset, RuleSpec};

/// One measured feature under SPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharacteristicSpec {
    /// Unique name, used in topics and alarms.
    pub name: String,
    /// The reading it charts, as "device/tag".
    pub source: String,
    /// Chart type.
    pub chart: ChartType,
    /// Observations per subgroup (X-bar charts: 2..=25, required; EWMA/CUSUM: 1..=25, default 1).
    /// With `subgroup_window` it is the largest subgroup: a subgroup closes when it is full or when
    /// its time window ends, whichever comes first.
    #[serde(default)]
    pub subgroup_size: Option<u32>,
    /// Time-window subgrouping, e.g. "10m": windows are aligned to the Unix epoch.
    #[serde(default)]
    pub subgroup_window: Option<String>,
    /// Upper specification limit.
    #[serde(default)]
    pub usl: Option<f64>,
    /// Lower specification limit.
    #[serde(default)]
    pub lsl: Option<f64>,
    /// Nominal (target) value, used by Cpm.
    #[serde(default)]
    pub target: Option<f64>,
    /// Control limits: fixed, or from a baseline (default: baseline of 25 subgroups).
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Rule preset: "nelson" (default), "western-electric" or "limits-only".
    #[serde(default)]
    pub rules: RulePreset,
    /// Per-rule overrides keyed by the rule's number in the preset, e.g. `[characteristic.rule.2]`.
    #[serde(default)]
    pub rule: BTreeMap<String, RuleSpec>,
    /// EWMA parameters (chart = "ewma").
    #[serde(default)]
    pub ewma: Option<EwmaSpec>,
    /// Tabular CUSUM parameters (chart = "cusum").
    #[serde(default)]
    pub cusum: Option<CusumSpec>,
    /// Names of context keys (e.g. "part", "lot", "operator"); the caller resolves them to values,
    /// in this order. A change of any value closes the open subgroup.
    #[serde(default)]
    pub context: Vec<String>,
    /// A context key (one of `context`) whose every value gets its own chart, limits and window.
    #[serde(default)]
    pub chart_per: Option<String>,
    /// Attribute charts: the fixed sample size n (p, np) or number of inspection units (u).
    #[serde(default)]
    pub sample_size: Option<f64>,
    /// Attribute charts (p, u): the reading, "device/tag", that gives each sample's size; the
    /// caller passes its value as `Observation::size`.
    #[serde(default)]
    pub sample_size_source: Option<String>,
    /// Capability window: the most recent subgroups (individual observations for I-MR/EWMA/CUSUM
    /// with subgroup size 1) that Cp/Cpk/Pp/Ppk/Cpm are computed over. Default 100.
    #[serde(default)]
    pub capability_window: Option<u32>,
}

/// The chart type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChartType {
    #[serde(rename = "i-mr")]
    IMr,
    #[serde(rename = "xbar-r")]
    XbarR,
    #[serde(rename = "xbar-s")]
    XbarS,
    #[serde(rename = "ewma")]
    Ewma,
    #[serde(rename = "cusum")]
    Cusum,
    #[serde(rename = "p")]
    P,
    #[serde(rename = "np")]
    Np,
    #[serde(rename = "c")]
    C,
    #[serde(rename = "u")]
    U,
}

impl ChartType {
    /// Charts of counts (p, np, c, u).
    pub fn is_attribute(self) -> bool {
        matches!(
            self,
            ChartType::P | ChartType::Np | ChartType::C | ChartType::U
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChartType::IMr => "i-mr",
            ChartType::XbarR => "xbar-r",
            ChartType::XbarS => "xbar-s",
            ChartType::Ewma => "ewma",
            ChartType::Cusum => "cusum",
            ChartType::P => "p",
            ChartType::Np => "np",
            ChartType::C => "c",
            ChartType::U => "u",
        }
    }
}

impl fmt::Display for ChartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `limits = { baseline = 25, exclude_out_of_control = true }`,
/// `limits = { centre = 74.0, sigma = 0.01 }` or `limits = { ucl = 74.014, lcl = 73.988 }`.
///
/// Fixed limits are in the units of the plotted statistic's process: `centre`/`sigma` are the
/// process mean and the standard deviation of individual observations; `ucl`/`lcl` are the limits
/// of the first chart (individuals, or X-bar at `subgroup_size`). Attribute charts take only
/// `centre` (p-bar, np-bar, c-bar or u-bar); their limits follow from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Number of subgroups in the phase-I baseline (default 25 when no fixed limits are given).
    #[serde(default)]
    pub baseline: Option<u32>,
    /// Drop baseline subgroups beyond the trial limits and recompute, until none is beyond.
    #[serde(default)]
    pub exclude_out_of_control: bool,
    #[serde(default, alias = "center")]
    pub centre: Option<f64>,
    #[serde(default)]
    pub sigma: Option<f64>,
    #[serde(default)]
    pub ucl: Option<f64>,
    #[serde(default)]
    pub lcl: Option<f64>,
}

/// EWMA: z_i = lambda x_i + (1 - lambda) z_{i-1}, limits mu0 +- L sigma_z,i.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwmaSpec {
    /// Weight of the newest point, 0 < lambda <= 1 (default 0.2).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Width of the limits in standard deviations of z (default 3).
    #[serde(default = "default_l", rename = "l")]
    pub l: f64,
}

fn default_lambda() -> f64 {
    0.2
}
fn default_l() -> f64 {
    3.0
}

impl Default for EwmaSpec {
    fn default() -> Self {
        EwmaSpec {
            lambda: default_lambda(),
            l: default_l(),
        }
    }
}

/// Tabular CUSUM on standardized values: C+_i = max(0, y_i - k + C+_{i-1}),
/// C-_i = max(0, -y_i - k + C-_{i-1}), y_i = (xbar_i - mu0) / (sigma / sqrt n_i); signal when
/// C > h. All three parameters are in standard deviations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CusumSpec {
    /// Reference value (allowance), usually half the shift to detect (default 0.5).
    #[serde(default = "default_k")]
    pub k: f64,
    /// Decision interval (default 5).
    #[serde(default = "default_h")]
    pub h: f64,
    /// Fast initial response: starting value of both sums, 0 <= head_start < h (default 0;
    /// h/2 is the usual choice).
    #[serde(default)]
    pub head_start: f64,
    /// Start a sum again (at `head_start`) after it signalled, the textbook practice once the
    /// cause has been dealt with; without it a sum stays above h for as long as the shift lasts.
    #[serde(default)]
    pub reset_after_signal: bool,
}

fn default_k() -> f64 {
    0.5
}
fn default_h() -> f64 {
    5.0
}

impl Default for CusumSpec {
    fn default() -> Self {
        CusumSpec {
            k: default_k(),
            h: default_h(),
            head_start: 0.0,
            reset_after_signal: false,
        }
    }
}

pub use crate::issue::SpecIssue;

/// Default capability window (subgroups).
pub const DEFAULT_CAPABILITY_WINDOW: u32 = 100;
/// Default number of baseline subgroups.
pub const DEFAULT_BASELINE: u32 = 25;
/// Largest accepted baseline and capability window (memory is bounded by these per chart).
pub const MAX_WINDOW: u32 = 100_000;
/// Largest number of context keys.
pub const MAX_CONTEXT_KEYS: usize = 16;

impl CharacteristicSpec {
    /// K of an enabled rule (points in the run, trend, ... or K of K+1); None if it is not enabled.
    pub fn rule_points(&self, rule: crate::rules::Rule) -> Option<u32> {
        crate::rules::active_rules(self.rules, &self.rule)
            .iter()
            .find(|r| r.rule == rule)
            .map(|r| r.k)
    }

    /// Every semantic problem of this spec (empty when it is valid).
    pub fn validate(&self) -> Vec<SpecIssue> {
        let mut v = Vec::new();
        if self.name.trim().is_empty() {
            v.push(SpecIssue::new("name", "must not be empty"));
        }
        check_source(&mut v, "source", &self.source);
        self.validate_subgroups(&mut v);
        self.validate_spec_limits(&mut v);
        self.validate_limits(&mut v);
        crate::rules::validate(self.rules, &self.rule, &mut v);
        self.validate_params(&mut v);
        self.validate_context(&mut v);
        self.validate_attribute(&mut v);
        if let Some(w) = self.capability_window
            && !(2..=MAX_WINDOW).contains(&w)
        {
            v.push(SpecIssue::new(
                "capability_window",
                format!("must be in 2..={MAX_WINDOW}"),
            ));
        }
        v
    }

    fn validate_subgroups(&self, v: &mut Vec<SpecIssue>) {
        let max = constants::MAX_N as u32;
        match self.chart {
            ChartType::XbarR | ChartType::XbarS => match self.subgroup_size {
                None => v.push(SpecIssue::new(
                    "subgroup_size",
                    format!("required for chart \"{}\" (2..={max})", self.chart),
                )),
                Some(n) if !(2..=max).contains(&n) => v.push(SpecIssue::new(
                    "subgroup_size",
                    format!("must be in 2..={max}"),
                )),
                Some(_) => {}
            },
            ChartType::Ewma | ChartType::Cusum => {
                if let Some(n) = self.subgroup_size
                    && !(1..=max).contains(&n)
                {
                    v.push(SpecIssue::new(
                        "subgroup_size",
                        format!("must be in 1..={max}"),
                    ));
                }
            }
            ChartType::IMr | ChartType::P | ChartType::Np | ChartType::C | ChartType::U => {
                if let Some(n) = self.subgroup_size
                    && n != 1
                {
                    v.push(SpecIssue::new(
                        "subgroup_size",
                        format!(
                            "chart \"{}\" plots one value per observation; remove subgroup_size",
                            self.chart
                        ),
                    ));
                }
            }
        }
        if let Some(w) = &self.subgroup_window {
            match parse_duration_micros(w) {
                Err(e) => v.push(SpecIssue::new("subgroup_window", e)),
                Ok(_)
                    if !matches!(
                        self.chart,
                        ChartType::XbarR | ChartType::XbarS | ChartType::Ewma | ChartType::Cusum
                    ) =>
                {
                    v.push(SpecIssue::new(
                        "subgroup_window",
                        format!("chart \"{}\" has no subgroups", self.chart),
                    ))
                }
                Ok(_) if self.subgroup_size.unwrap_or(1) < 2 => v.push(SpecIssue::new(
                    "subgroup_window",
                    "needs subgroup_size >= 2 (the largest subgroup)",
                )),
                Ok(_) => {}
            }
        }
    }

    fn validate_spec_limits(&self, v: &mut Vec<SpecIssue>) {
        for (path, x) in [
            ("usl", self.usl),
            ("lsl", self.lsl),
            ("target", self.target),
        ] {
            if let Some(x) = x {
                if !x.is_finite() {
                    v.push(SpecIssue::new(path, "must be a finite number"));
                } else if self.chart.is_attribute() {
                    v.push(SpecIssue::new(
                        path,
                        "specification limits apply to measured values, not to attribute charts",
                    ));
                }
            }
        }
        if let (Some(u), Some(l)) = (self.usl, self.lsl)
            && u <= l
        {
            v.push(SpecIssue::new("usl", "must be greater than lsl"));
        }
        if let Some(t) = self.target
            && (self.usl.is_some_and(|u| t > u) || self.lsl.is_some_and(|l| t < l))
        {
            v.push(SpecIssue::new("target", "must lie between lsl and usl"));
        }
    }

    fn validate_limits(&self, v: &mut Vec<SpecIssue>) {
        let l = &self.limits;
        let fixed = l.centre.is_some() || l.sigma.is_some() || l.ucl.is_some() || l.lcl.is_some();
        for (path, x) in [
            ("limits.centre", l.centre),
            ("limits.sigma", l.sigma),
            ("limits.ucl", l.ucl),
            ("limits.lcl", l.lcl),
        ] {
            if x.is_some_and(|x| !x.is_finite()) {
                v.push(SpecIssue::new(path, "must be a finite number"));
            }
        }
        if let Some(b) = l.baseline {
            if fixed {
                v.push(SpecIssue::new(
                    "limits.baseline",
                    "give either a baseline or fixed limits (centre/sigma/ucl/lcl), not both",
                ));
            }
            if !(2..=MAX_WINDOW).contains(&b) {
                v.push(SpecIssue::new(
                    "limits.baseline",
                    format!("must be in 2..={MAX_WINDOW}"),
                ));
            }
        }
        if fixed && l.exclude_out_of_control {
            v.push(SpecIssue::new(
                "limits.exclude_out_of_control",
                "applies to a computed baseline, not to fixed limits",
            ));
        }
        if !fixed {
            return;
        }
        if self.chart.is_attribute() {
            for (path, x) in [
                ("limits.sigma", l.sigma),
                ("limits.ucl", l.ucl),
                ("limits.lcl", l.lcl),
            ] {
                if x.is_some() {
                    v.push(SpecIssue::new(
                        path,
                        "attribute charts take only limits.centre; their limits follow from it",
                    ));
                }
            }
            match (self.chart, l.centre) {
                (_, None) => v.push(SpecIssue::new("limits.centre", "required for fixed limits")),
                (ChartType::P, Some(c)) if !(c > 0.0 && c < 1.0) => {
                    v.push(SpecIssue::new("limits.centre", "p-bar must be in (0, 1)"))
                }
                (ChartType::Np, Some(c))
                    if !(c > 0.0) || self.sample_size.is_some_and(|n| c >= n) =>
                {
                    v.push(SpecIssue::new(
                        "limits.centre",
                        "np-bar must be in (0, sample_size)",
                    ))
                }
                (ChartType::Np, Some(_)) => {}
                (_, Some(c)) if !(c > 0.0) => {
                    v.push(SpecIssue::new("limits.centre", "must be greater than 0"))
                }
                _ => {}
            }
            return;
        }
        let by_sigma = l.sigma.is_some();
        let by_limits = l.ucl.is_some() || l.lcl.is_some();
        if matches!(self.chart, ChartType::Ewma | ChartType::Cusum) && by_limits {
            v.push(SpecIssue::new(
                if l.ucl.is_some() {
                    "limits.ucl"
                } else {
                    "limits.lcl"
                },
                format!(
                    "chart \"{}\" takes fixed limits as centre and sigma",
                    self.chart
                ),
            ));
            return;
        }
        if by_sigma && by_limits {
            v.push(SpecIssue::new(
                "limits.sigma",
                "give either centre and sigma, or ucl and lcl (optionally with centre)",
            ));
            return;
        }
        if by_sigma {
            if l.centre.is_none() {
                v.push(SpecIssue::new(
                    "limits.centre",
                    "required with limits.sigma",
                ));
            }
            if l.sigma.is_some_and(|s| !(s > 0.0)) {
                v.push(SpecIssue::new("limits.sigma", "must be greater than 0"));
            }
        } else if by_limits {
            match (l.ucl, l.lcl) {
                (Some(u), Some(lo)) => {
                    if u <= lo {
                        v.push(SpecIssue::new(
                            "limits.ucl",
                            "must be greater than limits.lcl",
                        ));
                    } else if let Some(c) = l.centre
                        && !(c > lo && c < u)
                    {
                        v.push(SpecIssue::new(
                            "limits.centre",
                            "must lie strictly between limits.lcl and limits.ucl",
                        ));
                    }
                }
                (None, _) => v.push(SpecIssue::new("limits.ucl", "required with limits.lcl")),
                (_, None) => v.push(SpecIssue::new("limits.lcl", "required with limits.ucl")),
            }
        } else {
            v.push(SpecIssue::new(
                "limits.sigma",
                "fixed limits need sigma (with centre) or ucl and lcl",
            ));
        }
    }

    fn validate_params(&self, v: &mut Vec<SpecIssue>) {
        if let Some(e) = &self.ewma {
            if self.chart != ChartType::Ewma {
                v.push(SpecIssue::new("ewma", "only for chart = \"ewma\""));
            }
            if !(e.lambda > 0.0 && e.lambda <= 1.0) {
                v.push(SpecIssue::new("ewma.lambda", "must be in (0, 1]"));
            }
            if !(e.l > 0.0 && e.l.is_finite()) {
                v.push(SpecIssue::new("ewma.l", "must be greater than 0"));
            }
        }
        if let Some(c) = &self.cusum {
            if self.chart != ChartType::Cusum {
                v.push(SpecIssue::new("cusum", "only for chart = \"cusum\""));
            }
            if !(c.k >= 0.0 && c.k.is_finite()) {
                v.push(SpecIssue::new("cusum.k", "must be 0 or greater"));
            }
            if !(c.h > 0.0 && c.h.is_finite()) {
                v.push(SpecIssue::new("cusum.h", "must be greater than 0"));
            }
            if !(c.head_start >= 0.0 && c.head_start < c.h) {
                v.push(SpecIssue::new("cusum.head_start", "must be in [0, h)"));
            }
        }
    }

    fn validate_context(&self, v: &mut Vec<SpecIssue>) {
        if self.context.len() > MAX_CONTEXT_KEYS {
            v.push(SpecIssue::new(
                "context",
                format!("at most {MAX_CONTEXT_KEYS} keys"),
            ));
        }
        for (i, k) in self.context.iter().enumerate() {
            if k.trim().is_empty() {
                v.push(SpecIssue::new(format!("context[{i}]"), "must not be empty"));
            } else if self.context[..i].contains(k) {
                v.push(SpecIssue::new(
                    format!("context[{i}]"),
                    format!("duplicate key \"{k}\""),
                ));
            }
        }
        if let Some(p) = &self.chart_per
            && !self.context.contains(p)
        {
            v.push(SpecIssue::new(
                "chart_per",
                format!("\"{p}\" must be one of the context keys"),
            ));
        }
    }

    fn validate_attribute(&self, v: &mut Vec<SpecIssue>) {
        if let Some(s) = &self.sample_size_source {
            check_source(v, "sample_size_source", s);
        }
        if let Some(n) = self.sample_size
            && !(n > 0.0 && n.is_finite())
        {
            v.push(SpecIssue::new("sample_size", "must be greater than 0"));
        }
        match self.chart {
            ChartType::P | ChartType::U => {
                if self.sample_size.is_none() && self.sample_size_source.is_none() {
                    v.push(SpecIssue::new(
                        "sample_size",
                        format!(
                            "chart \"{}\" needs sample_size or sample_size_source",
                            self.chart
                        ),
                    ));
                }
            }
            ChartType::Np => {
                if self.sample_size.is_none() {
                    v.push(SpecIssue::new(
                        "sample_size",
                        "chart \"np\" needs a fixed sample_size (use \"p\" for varying sizes)",
                    ));
                }
                if self.sample_size_source.is_some() {
                    v.push(SpecIssue::new(
                        "sample_size_source",
                        "chart \"np\" needs a fixed sample_size (use \"p\" for varying sizes)",
                    ));
                }
                if self.sample_size.is_some_and(|n| n.fract() != 0.0) {
                    v.push(SpecIssue::new(
                        "sample_size",
                        "must be a whole number for \"np\"",
                    ));
                }
            }
            ChartType::C => {
                for (path, set) in [
                    ("sample_size", self.sample_size.is_some()),
                    ("sample_size_source", self.sample_size_source.is_some()),
                ] {
                    if set {
                        v.push(SpecIssue::new(
                            path,
                            "chart \"c\" counts per constant inspection unit; use \"u\" for sizes",
                        ));
                    }
                }
            }
            _ => {
                for (path, set) in [
                    ("sample_size", self.sample_size.is_some()),
                    ("sample_size_source", self.sample_size_source.is_some()),
                ] {
                    if set {
                        v.push(SpecIssue::new(
                            path,
                            "only for attribute charts p, np and u",
                        ));
                    }
                }
            }
        }
        if self.chart == ChartType::P
            && let Some(n) = self.sample_size
            && n.fract() != 0.0
        {
            v.push(SpecIssue::new(
                "sample_size",
                "must be a whole number for \"p\"",
            ));
        }
    }
}

fn check_source(v: &mut Vec<SpecIssue>, path: &str, s: &str) {
    match s.split_once('/') {
        Some((d, t)) if !d.is_empty() && !t.is_empty() => {}
        _ => v.push(SpecIssue::new(path, "must be \"device/tag\"")),
    }
}

/// Parse a duration like "500ms", "10s", "5m", "1h30m" or "1d" into microseconds (> 0).
pub fn parse_duration_micros(s: &str) -> Result<i64, String> {
    let err = || format!("invalid duration \"{s}\" (use e.g. \"500ms\", \"10s\", \"5m\", \"1h\")");
    let mut total: i64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err());
        }
        let num: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let scale: i64 = match unit {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" | "min" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            _ => return Err(err()),
        };
        total = num
            .checked_mul(scale)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(err)?;
    }
    if total <= 0 {
        return Err(format!("duration \"{s}\" must be greater than 0"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_micros("500ms"), Ok(500_000));
        assert_eq!(parse_duration_micros("10s"), Ok(10_000_000));
        assert_eq!(parse_duration_micros("1h30m"), Ok(5_400_000_000));
        assert_eq!(parse_duration_micros("2min"), Ok(120_000_000));
        assert!(parse_duration_micros("").is_err());
        assert!(parse_duration_micros("10").is_err());
        assert!(parse_duration_micros("0s").is_err());
        assert!(parse_duration_micros("s").is_err());
        assert!(parse_duration_micros("5 parsecs").is_err());
    }
}
