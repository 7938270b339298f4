//! Run rules (Nelson 1-8, Western Electric 1-4) evaluated point by point in constant time.
//!
//! The conventions are documented in `RULES.md`; in short: beyond a limit is strict; a point on the
//! centre line breaks a same-side run; runs, trends and alternations count points and a tie breaks
//! a trend or an alternation; a point is flagged when it completes a pattern and again for every
//! further point while the pattern continues; the K-of-K+1 zone rules flag only a point that is
//! itself in the zone, counting over the last K+1 points available.
//!
//! State is a handful of counters and four 64-bit histories: no allocation per point.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::issue::SpecIssue;

/// Rule preset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RulePreset {
    /// Nelson rules 1-8.
    #[default]
    Nelson,
    /// Western Electric rules 1-4.
    WesternElectric,
    /// Nelson numbering with only rule 1 (beyond a control limit) on.
    LimitsOnly,
}

/// Severity of a rule's alarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    #[default]
    Violation,
    Warning,
}

/// Per-rule override in `[characteristic.rule.N]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// K: points in the run/trend/alternation, or K of K+1 for the zone rules.
    #[serde(default)]
    pub points: Option<u32>,
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// A rule's identity: its family and number, e.g. "nelson-2" or "western-electric-4".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    Nelson(u8),
    WesternElectric(u8),
}

impl Rule {
    /// Stable small index (0..12) for bit sets.
    fn index(self) -> u32 {
        match self {
            Rule::Nelson(n) => u32::from(n.saturating_sub(1)).min(7),
            Rule::WesternElectric(n) => 8 + u32::from(n.saturating_sub(1)).min(3),
        }
    }

    fn from_index(i: u32) -> Rule {
        if i < 8 {
            Rule::Nelson(i as u8 + 1)
        } else {
            Rule::WesternElectric((i - 8) as u8 + 1)
        }
    }

    pub fn name(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Nelson(n) => write!(f, "nelson-{n}"),
            Rule::WesternElectric(n) => write!(f, "western-electric-{n}"),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parse = |p: &str, max: u8| -> Option<u8> {
            s.strip_prefix(p)
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=max).contains(n))
        };
        if let Some(n) = parse("nelson-", 8) {
            Ok(Rule::Nelson(n))
        } else if let Some(n) = parse("western-electric-", 4) {
            Ok(Rule::WesternElectric(n))
        } else {
            Err(serde::de::Error::custom(format!("unknown rule \"{s}\"")))
        }
    }
}

/// The set of rules a point broke (no allocation); serializes as a list of rule names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RuleSet(u16);

impl RuleSet {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, r: Rule) -> bool {
        self.0 & (1 << r.index()) != 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub(crate) fn insert(&mut self, r: Rule) {
        self.0 |= 1 << r.index();
    }
    /// The rules in order (Nelson 1-8, then Western Electric 1-4).
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        (0..12u32)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(Rule::from_index)
    }
}

impl Serialize for RuleSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RuleSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Rule>::deserialize(d)?;
        let mut set = RuleSet::default();
        for r in v {
            set.insert(r);
        }
        Ok(set)
    }
}

/// What a rule tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One point beyond a control limit (strict).
    Beyond,
    /// K points in a row on the same side of the centre line.
    Run,
    /// K points in a row, each strictly greater (or each strictly smaller) than the one before.
    Trend,
    /// K points in a row alternating up and down.
    Alternate,
    /// K of the last K+1 points beyond 2 sigma on the same side; the point itself among them.
    Zone2,
    /// K of the last K+1 points beyond 1 sigma on the same side; the point itself among them.
    Zone1,
    /// K points in a row within 1 sigma of the centre line (either side).
    Stratification,
    /// K points in a row beyond 1 sigma (either side).
    Mixture,
}

impl Kind {
    /// Rules that apply to range, moving-range and standard-deviation charts.
    fn for_dispersion(self) -> bool {
        matches!(
            self,
            Kind::Beyond | Kind::Run | Kind::Trend | Kind::Alternate
        )
    }
}

/// One enabled rule with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ActiveRule {
    pub rule: Rule,
    pub kind: Kind,
    pub k: u32,
    pub severity: Severity,
}

/// Rule definitions of a preset: (number, kind, default K).
fn preset_table(p: RulePreset) -> &'static [(u8, Kind, u32)] {
    const NELSON: [(u8, Kind, u32); 8] = [
        (1, Kind::Beyond, 1),
        (2, Kind::Run, 9),
        (3, Kind::Trend, 6),
        (4, Kind::Alternate, 14),
        (5, Kind::Zone2, 2),
        (6, Kind::Zone1, 4),
        (7, Kind::Stratification, 15),
        (8, Kind::Mixture, 8),
    ];
    const WE: [(u8, Kind, u32); 4] = [
        (1, Kind::Beyond, 1),
        (2, Kind::Zone2, 2),
        (3, Kind::Zone1, 4),
        (4, Kind::Run, 8),
    ];
    match p {
        RulePreset::Nelson | RulePreset::LimitsOnly => &NELSON,
        RulePreset::WesternElectric => &WE,
    }
}

/// What a rule tests and its default K.
pub(crate) fn kind_of(rule: Rule) -> (Kind, u32) {
    let (preset, n) = match rule {
        Rule::Nelson(n) => (RulePreset::Nelson, n),
        Rule::WesternElectric(n) => (RulePreset::WesternElectric, n),
    };
    preset_table(preset)
        .iter()
        .find(|r| r.0 == n)
        .map_or((Kind::Beyond, 1), |r| (r.1, r.2))
}

/// Validate the overrides against the preset.
pub(crate) fn validate(
    preset: RulePreset,
    overrides: &BTreeMap<String, RuleSpec>,
    v: &mut Vec<SpecIssue>,
) {
    let table = preset_table(preset);
    for (key, o) in overrides {
        let Some(&(_, kind, _)) = key
            .parse::<u8>()
            .ok()
            // Only the plain number ("2", not "02") is looked up later.
            .filter(|n| n.to_string() == *key)
            .and_then(|n| table.iter().find(|r| r.0 == n))
        else {
            v.push(SpecIssue::new(
                format!("rule.{key}"),
                format!("the preset's rules are numbered 1 to {}", table.len()),
            ));
            continue;
        };
        if let Some(k) = o.points {
            let path = format!("rule.{key}.points");
            match kind {
                Kind::Beyond => v.push(SpecIssue::new(path, "this rule has no points parameter")),
                Kind::Zone1 | Kind::Zone2 if !(1..=62).contains(&k) => {
                    v.push(SpecIssue::new(path, "K (of K+1) must be in 1..=62"))
                }
                Kind::Run
                | Kind::Trend
                | Kind::Alternate
                | Kind::Stratification
                | Kind::Mixture
                    if !(2..=1000).contains(&k) =>
                {
                    v.push(SpecIssue::new(path, "must be in 2..=1000"))
                }
                _ => {}
            }
        }
    }
}

/// The enabled rules of a spec (assumed validated).
pub(crate) fn active_rules(
    preset: RulePreset,
    overrides: &BTreeMap<String, RuleSpec>,
) -> Vec<ActiveRule> {
    let mut out = Vec::new();
    for &(num, kind, k) in preset_table(preset) {
        let o = overrides.get(&num.to_string());
        let default_on = preset != RulePreset::LimitsOnly || num == 1;
        if !o.and_then(|o| o.enabled).unwrap_or(default_on) {
            continue;
        }
        let rule = match preset {
            RulePreset::WesternElectric => Rule::WesternElectric(num),
            _ => Rule::Nelson(num),
        };
        out.push(ActiveRule {
            rule,
            kind,
            k: o.and_then(|o| o.points).unwrap_or(k),
            severity: o.and_then(|o| o.severity).unwrap_or_default(),
        });
    }
    out
}

/// Which rules a chart gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    /// Range/MR/S charts: beyond limit, run, trend, alternation.
    Dispersion,
    /// EWMA and CUSUM: beyond limit only.
    BeyondOnly,
}

pub(crate) fn scoped(rules: &[ActiveRule], scope: Scope) -> Vec<ActiveRule> {
    rules
        .iter()
        .copied()
        .filter(|r| match scope {
            Scope::All => true,
            Scope::Dispersion => r.kind.for_dispersion(),
            Scope::BeyondOnly => r.kind == Kind::Beyond,
        })
        .collect()
}

/// Limits of one plotted point as the rules see them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Zones {
    pub centre: f64,
    pub ucl: f64,
    pub lcl: Option<f64>,
    /// One standard deviation of the plotted statistic above and below the centre line.
    pub sigma_hi: f64,
    pub sigma_lo: f64,
}

/// Per-chart rule state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleState {
    #[serde(with = "crate::float_bits::opt_bits")]
    last: Option<f64>,
    /// Sign of the last step (+1 up, -1 down, 0 tie or none).
    last_dir: i8,
    run_side: i8,
    run_len: u32,
    up_len: u32,
    down_len: u32,
    alt_len: u32,
    within_len: u32,
    beyond1_len: u32,
    h2_hi: u64,
    h2_lo: u64,
    h1_hi: u64,
    h1_lo: u64,
}

impl RuleState {
    /// Feed one point; returns the rules it breaks.
    pub(crate) fn push(&mut self, x: f64, z: &Zones, rules: &[ActiveRule]) -> RuleSet {
        let a = x - z.centre;
        let side: i8 = if a > 0.0 {
            1
        } else if a < 0.0 {
            -1
        } else {
            0
        };
        // Same-side run: the centre line breaks it.
        if side == 0 {
            self.run_side = 0;
            self.run_len = 0;
        } else if side == self.run_side {
            self.run_len = self.run_len.saturating_add(1);
        } else {
            self.run_side = side;
            self.run_len = 1;
        }
        // Trend and alternation count points; a tie breaks both.
        match self.last {
            None => {
                self.up_len = 1;
                self.down_len = 1;
                self.alt_len = 1;
                self.last_dir = 0;
            }
            Some(prev) => {
                let dir: i8 = if x > prev {
                    1
                } else if x < prev {
                    -1
                } else {
                    0
                };
                match dir {
                    1 => {
                        self.up_len = self.up_len.saturating_add(1);
                        self.down_len = 1;
                    }
                    -1 => {
                        self.down_len = self.down_len.saturating_add(1);
                        self.up_len = 1;
                    }
                    _ => {
                        self.up_len = 1;
                        self.down_len = 1;
                    }
                }
                self.alt_len = if dir == 0 {
                    1
                } else if self.last_dir == -dir {
                    self.alt_len.saturating_add(1)
                } else {
                    2
                };
                self.last_dir = dir;
            }
        }
        self.last = Some(x);
        // Zones (strict: "beyond").
        let hi2 = a > 2.0 * z.sigma_hi;
        let lo2 = -a > 2.0 * z.sigma_lo;
        let hi1 = a > z.sigma_hi;
        let lo1 = -a > z.sigma_lo;
        self.h2_hi = (self.h2_hi << 1) | u64::from(hi2);
        self.h2_lo = (self.h2_lo << 1) | u64::from(lo2);
        self.h1_hi = (self.h1_hi << 1) | u64::from(hi1);
        self.h1_lo = (self.h1_lo << 1) | u64::from(lo1);
        if hi1 || lo1 {
            self.within_len = 0;
            self.beyond1_len = self.beyond1_len.saturating_add(1);
        } else {
            self.within_len = self.within_len.saturating_add(1);
            self.beyond1_len = 0;
        }

        let mut broken = RuleSet::default();
        for r in rules {
            let hit = match r.kind {
                Kind::Beyond => x > z.ucl || z.lcl.is_some_and(|l| x < l),
                Kind::Run => self.run_len >= r.k,
                Kind::Trend => self.up_len >= r.k || self.down_len >= r.k,
                Kind::Alternate => self.alt_len >= r.k,
                Kind::Zone2 => k_of(hi2, self.h2_hi, r.k) || k_of(lo2, self.h2_lo, r.k),
                Kind::Zone1 => k_of(hi1, self.h1_hi, r.k) || k_of(lo1, self.h1_lo, r.k),
                Kind::Stratification => self.within_len >= r.k,
                Kind::Mixture => self.beyond1_len >= r.k,
            };
            if hit {
                broken.insert(r.rule);
            }
        }
        broken
    }
}

/// K of the last K+1 points (bit 0 = this point) are in the zone, and this point is.
fn k_of(this: bool, history: u64, k: u32) -> bool {
    if !this {
        return false;
    }
    let window = k + 1; // <= 63 by validation
    let mask = if window >= 64 {
        u64::MAX
    } else {
        (1u64 << window) - 1
    };
    (history & mask).count_ones() >= k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_round_trip() {
        for i in 0..12 {
            let r = Rule::from_index(i);
            assert_eq!(r.index(), i);
        }
        assert_eq!(Rule::Nelson(2).to_string(), "nelson-2");
        assert_eq!(Rule::WesternElectric(4).to_string(), "western-electric-4");
    }

    #[test]
    fn presets() {
        let none = BTreeMap::new();
        assert_eq!(active_rules(RulePreset::Nelson, &none).len(), 8);
        assert_eq!(active_rules(RulePreset::WesternElectric, &none).len(), 4);
        let lo = active_rules(RulePreset::LimitsOnly, &none);
        assert_eq!(lo.len(), 1);
        assert_eq!(lo[0].rule, Rule::Nelson(1));
        let mut o = BTreeMap::new();
        o.insert(
            "2".to_string(),
            RuleSpec {
                enabled: Some(true),
                points: Some(7),
                severity: Some(Severity::Warning),
            },
        );
        let lo = active_rules(RulePreset::LimitsOnly, &o);
        assert_eq!(lo.len(), 2);
        assert_eq!((lo[1].k, lo[1].severity), (7, Severity::Warning));
        let d = scoped(
            &active_rules(RulePreset::WesternElectric, &none),
            Scope::Dispersion,
        );
        let ids: Vec<_> = d.iter().map(|r| r.rule).collect();
        assert_eq!(
            ids,
            vec![Rule::WesternElectric(1), Rule::WesternElectric(4)]
        );
    }
}
