//! What the engine produces: plotted points, rule violations, out-of-specification readings,
//! frozen limits and ignored input. Everything is `Serialize` so the agent can publish it as is.

use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::rules::{Rule, RuleSet, Severity};

/// The context values in force for a point (e.g. part, lot, operator), shared between outputs:
/// cloning is one reference-count increment, and a new one is built only when a value changes.
/// Serializes as a map from key to value, leaving out keys without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context(Arc<ContextInner>);

#[derive(Debug, PartialEq, Eq)]
struct ContextInner {
    keys: Arc<[String]>,
    values: Box<[Option<Box<str>>]>,
    partition: Option<usize>,
}

impl Context {
    pub(crate) fn new(
        keys: Arc<[String]>,
        values: &[Option<&str>],
        partition: Option<usize>,
    ) -> Self {
        let values = (0..keys.len())
            .map(|i| values.get(i).copied().flatten().map(Box::from))
            .collect();
        Context(Arc::new(ContextInner {
            keys,
            values,
            partition,
        }))
    }

    /// Whether these are the values of `values` (missing trailing values count as `None`).
    pub(crate) fn matches(&self, values: &[Option<&str>]) -> bool {
        self.0
            .values
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_deref() == values.get(i).copied().flatten())
    }

    /// The values, in the order of the keys (for snapshots).
    pub(crate) fn values(&self) -> Vec<Option<String>> {
        self.0
            .values
            .iter()
            .map(|v| v.as_deref().map(str::to_string))
            .collect()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.keys.iter().position(|k| k == key)?;
        self.0.values.get(i)?.as_deref()
    }

    /// (key, value) pairs with a value, in the order of the spec's `context`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .keys
            .iter()
            .zip(self.0.values.iter())
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
    }

    /// The value of the `chart_per` key: which chart of the characteristic this is (None when the
    /// characteristic has one chart, or the observation had no value for the key).
    pub fn partition(&self) -> Option<&str> {
        self.0.values.get(self.0.partition?)?.as_deref()
    }
}

impl Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Which chart of a characteristic a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChartId {
    /// Individuals (I-MR).
    #[serde(rename = "i")]
    Individuals,
    /// Moving range of two (I-MR).
    #[serde(rename = "mr")]
    MovingRange,
    /// Subgroup means (X-bar-R, X-bar-S).
    Xbar,
    /// Subgroup ranges.
    #[serde(rename = "r")]
    Range,
    /// Subgroup standard deviations.
    #[serde(rename = "s")]
    StdDev,
    Ewma,
    /// Upper tabular CUSUM C+ (standardized).
    CusumUpper,
    /// Lower tabular CUSUM C- (standardized, plotted as a positive sum).
    CusumLower,
    P,
    Np,
    C,
    U,
}

impl ChartId {
    pub fn as_str(self) -> &'static str {
        match self {
            ChartId::Individuals => "i",
            ChartId::MovingRange => "mr",
            ChartId::Xbar => "xbar",
            ChartId::Range => "r",
            ChartId::StdDev => "s",
            ChartId::Ewma => "ewma",
            ChartId::CusumUpper => "cusum-upper",
            ChartId::CusumLower => "cusum-lower",
            ChartId::P => "p",
            ChartId::Np => "np",
            ChartId::C => "c",
            ChartId::U => "u",
        }
    }
}

/// Control limits of one plotted point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointLimits {
    pub centre: f64,
    pub ucl: f64,
    /// None where the chart has no lower limit (CUSUM).
    pub lcl: Option<f64>,
}

/// One plotted point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub chart: ChartId,
    /// Sequence numbers of the first and last observation of the subgroup (equal for individuals).
    pub seq_first: u64,
    pub seq: u64,
    /// Timestamp of the last observation (Unix microseconds).
    pub ts_micros: i64,
    /// Observations in the subgroup.
    pub n: u32,
    /// Attribute charts: the sample size (p, np) or inspection units (u) of this sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_size: Option<f64>,
    /// The plotted statistic.
    pub value: f64,
    /// None while the baseline is being collected (provisional point); the point is emitted again
    /// with its limits and rules when the limits freeze.
    pub limits: Option<PointLimits>,
    /// Rules this point broke.
    pub rules: RuleSet,
    pub context: Context,
}

/// A rule broken by a point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub rule: Rule,
    pub severity: Severity,
    pub chart: ChartId,
    pub seq_first: u64,
    /// The point's sequence number (its last observation): with the characteristic, the chart, the
    /// partition and the rule, the de-duplication key of the alarm.
    pub seq: u64,
    pub ts_micros: i64,
    pub value: f64,
    pub limits: PointLimits,
    pub context: Context,
}

/// Which specification limit an observation is beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpecSide {
    AboveUsl,
    BelowLsl,
}

/// An individual observation beyond a specification limit (strict), separate from out-of-control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutOfSpec {
    pub seq: u64,
    pub ts_micros: i64,
    pub value: f64,
    pub side: SpecSide,
    /// The limit it is beyond.
    pub limit: f64,
    pub context: Context,
}

/// Phase-II limits in a form that can be persisted and given back to
/// [`crate::Characteristic::restore_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Limits {
    /// Variables charts (I-MR, X-bar-R, X-bar-S, EWMA, CUSUM): the process mean and the standard
    /// deviation of individual observations, above and below the centre (equal unless fixed
    /// asymmetric limits were configured). Every chart's limits follow from these and n.
    Variables {
        centre: f64,
        sigma_upper: f64,
        sigma_lower: f64,
    },
    /// p and np charts: the fraction nonconforming p-bar.
    Proportion { p_bar: f64 },
    /// c and u charts: nonconformities per inspection unit (c-bar, u-bar).
    Rate { c_bar: f64 },
}

impl Limits {
    pub(crate) fn is_valid(&self) -> bool {
        match *self {
            Limits::Variables {
                centre,
                sigma_upper,
                sigma_lower,
            } => {
                centre.is_finite()
                    && sigma_upper.is_finite()
                    && sigma_lower.is_finite()
                    && sigma_upper > 0.0
                    && sigma_lower > 0.0
            }
            Limits::Proportion { p_bar } => p_bar > 0.0 && p_bar < 1.0,
            Limits::Rate { c_bar } => c_bar > 0.0 && c_bar.is_finite(),
        }
    }
}

/// Limits computed from a baseline (or recalculated): persist them to start in phase II next time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenLimits {
    /// The `chart_per` value of the chart these limits belong to.
    pub partition: Option<String>,
    pub limits: Limits,
    /// Subgroups the limits were computed from, and how many of the baseline were excluded.
    pub subgroups: u32,
    pub excluded: u32,
    /// Sequence numbers spanned by the baseline.
    pub seq_first: u64,
    pub seq_last: u64,
}

/// Why input was not charted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IgnoreReason {
    /// The value is NaN or infinite.
    NotFinite,
    /// An attribute chart's value is not a whole number >= 0.
    NotACount,
    /// p/u chart without a sample size (neither `Observation::size` nor `sample_size`).
    NoSampleSize,
    /// The sample size is not a finite number > 0 (or not whole for p).
    BadSampleSize,
    /// p chart: more nonconforming units than the sample size.
    CountExceedsSampleSize,
    /// An X-bar subgroup closed (time window or context change) with a single observation,
    /// which carries no information about the spread.
    SubgroupOfOne,
}

/// Input that was not charted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ignored {
    pub seq_first: u64,
    pub seq: u64,
    pub reason: IgnoreReason,
}

/// One result of [`crate::Characteristic::push`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Output {
    Point(Point),
    Violation(Violation),
    OutOfSpec(OutOfSpec),
    LimitsFrozen(FrozenLimits),
    Ignored(Ignored),
}
