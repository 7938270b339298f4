//! Plain-language text of the run rules, in English and Chinese, for alarms an operator reads.
//! The wording follows `RULES.md` (K is the configured number of points).

use serde::{Deserialize, Serialize};

use crate::rules::{Kind, Rule, kind_of};

/// A rule's description in the languages lineside ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleText {
    pub en: String,
    pub zh: String,
}

/// The text of `rule` with K = `k` points (the preset's default K when `None`).
pub fn rule_text(rule: Rule, k: Option<u32>) -> RuleText {
    let (kind, default_k) = kind_of(rule);
    let k = k.unwrap_or(default_k);
    let (en, zh) = match kind {
        Kind::Beyond => (
            "1 point beyond a control limit".to_string(),
            "1点落在控制限以外".to_string(),
        ),
        Kind::Run => (
            format!("{k} points in a row on the same side of the centre line"),
            format!("连续{k}点落在中心线同一侧"),
        ),
        Kind::Trend => (
            format!("{k} points in a row steadily increasing or decreasing"),
            format!("连续{k}点递增或递减"),
        ),
        Kind::Alternate => (
            format!("{k} points in a row alternating up and down"),
            format!("连续{k}点中相邻点交替上下"),
        ),
        Kind::Zone2 => (
            format!(
                "{k} of {} points in a row beyond 2σ on the same side of the centre line",
                k + 1
            ),
            format!("连续{}点中有{k}点落在中心线同一侧2σ以外", k + 1),
        ),
        Kind::Zone1 => (
            format!(
                "{k} of {} points in a row beyond 1σ on the same side of the centre line",
                k + 1
            ),
            format!("连续{}点中有{k}点落在中心线同一侧1σ以外", k + 1),
        ),
        Kind::Stratification => (
            format!("{k} points in a row within 1σ of the centre line (either side)"),
            format!("连续{k}点落在中心线两侧1σ以内"),
        ),
        Kind::Mixture => (
            format!("{k} points in a row beyond 1σ of the centre line (either side)"),
            format!("连续{k}点落在中心线两侧且无一点在1σ以内"),
        ),
    };
    RuleText { en, zh }
}

/// How many points make up the pattern of `rule` with K = `k`: the points an alarm lists.
pub fn pattern_points(rule: Rule, k: Option<u32>) -> u32 {
    let (kind, default_k) = kind_of(rule);
    let k = k.unwrap_or(default_k);
    match kind {
        Kind::Beyond => 1,
        Kind::Zone1 | Kind::Zone2 => k + 1,
        _ => k,
    }
}

/// Whether the rule's pattern is a trend (its direction is up/down rather than above/below).
pub fn is_trend(rule: Rule) -> bool {
    kind_of(rule).0 == Kind::Trend
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_text_in_both_languages() {
        for n in 1..=8 {
            let t = rule_text(Rule::Nelson(n), None);
            assert!(!t.en.is_empty() && !t.zh.is_empty());
        }
        for n in 1..=4 {
            let t = rule_text(Rule::WesternElectric(n), None);
            assert!(!t.en.is_empty() && !t.zh.is_empty());
        }
        let t = rule_text(Rule::Nelson(2), None);
        assert_eq!(
            t.en,
            "9 points in a row on the same side of the centre line"
        );
        assert_eq!(t.zh, "连续9点落在中心线同一侧");
        assert_eq!(
            rule_text(Rule::WesternElectric(4), None).en,
            "8 points in a row on the same side of the centre line"
        );
        assert_eq!(
            rule_text(Rule::Nelson(5), None).en,
            "2 of 3 points in a row beyond 2σ on the same side of the centre line"
        );
        assert_eq!(
            rule_text(Rule::Nelson(2), Some(7)).zh,
            "连续7点落在中心线同一侧"
        );
        assert_eq!(pattern_points(Rule::Nelson(6), None), 5);
        assert_eq!(pattern_points(Rule::Nelson(1), None), 1);
    }
}
