//! One test per rule and convention, with hand-made sequences on an individuals chart with fixed
//! limits centre 0 and sigma 1 (zones at +-1, +-2, limits at +-3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lineside_spc::{
    Characteristic, CharacteristicSpec, ChartId, Observation, Output, Rule, Severity,
};

fn spec(extra: &str) -> CharacteristicSpec {
    let text = format!(
        "name = \"t\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = {{ centre = 0.0, sigma = 1.0 }}\n{extra}"
    );
    toml::from_str(&text).unwrap()
}

/// (seq, rule, severity) of the violations on `chart`; seq starts at 1.
fn violations(
    spec: CharacteristicSpec,
    values: &[f64],
    chart: ChartId,
) -> Vec<(u64, Rule, Severity)> {
    let mut c = Characteristic::new(spec).unwrap();
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        c.push(Observation::new(i as u64 + 1, 0, v), &mut out);
    }
    out.iter()
        .filter_map(|o| match o {
            Output::Violation(v) if v.chart == chart => Some((v.seq, v.rule, v.severity)),
            _ => None,
        })
        .collect()
}

/// Seqs at which `rule` fires on the individuals chart.
fn fired(extra: &str, values: &[f64], rule: Rule) -> Vec<u64> {
    violations(spec(extra), values, ChartId::Individuals)
        .into_iter()
        .filter(|v| v.1 == rule)
        .map(|v| v.0)
        .collect()
}

const N1: Rule = Rule::Nelson(1);

#[test]
fn beyond_a_limit_is_strict() {
    assert_eq!(fired("", &[3.0, -3.0, 3.000001, -3.5, 0.0], N1), vec![3, 4]);
}

#[test]
fn run_same_side_flags_at_k_and_each_further_point() {
    let v = [0.5; 11];
    assert_eq!(fired("", &v, Rule::Nelson(2)), vec![9, 10, 11]);
    // Negative side too.
    assert_eq!(fired("", &[-0.5; 9], Rule::Nelson(2)), vec![9]);
}

#[test]
fn a_point_on_the_centre_line_breaks_a_run() {
    let mut v = vec![0.5; 8];
    v.push(0.0);
    v.extend([0.5; 9]);
    // The run restarts after the centre-line point (seq 9): points 10..=18 are the new run.
    assert_eq!(fired("", &v, Rule::Nelson(2)), vec![18]);
    // A switch of side restarts the run as well.
    let mut v = vec![0.5; 8];
    v.push(-0.5);
    v.extend([0.5; 8]);
    assert!(fired("", &v, Rule::Nelson(2)).is_empty());
}

#[test]
fn trend_counts_points_not_steps() {
    // Six increasing points = five increases: flagged at the sixth, not the fifth.
    let v = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    assert_eq!(fired("", &v, Rule::Nelson(3)), vec![6, 7]);
    let v = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0];
    assert_eq!(fired("", &v, Rule::Nelson(3)), vec![6]);
    assert!(fired("", &v[..5], Rule::Nelson(3)).is_empty());
}

#[test]
fn a_tie_breaks_a_trend() {
    // 0.2 repeated: the trend restarts at the second 0.2 (seq 4).
    let v = [0.0, 0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
    assert_eq!(fired("", &v, Rule::Nelson(3)), vec![9]);
}

#[test]
fn alternation_counts_points_and_a_tie_breaks_it() {
    let alt: Vec<f64> = (0..15)
        .map(|i| if i % 2 == 0 { 0.1 } else { -0.1 })
        .collect();
    assert_eq!(fired("", &alt, Rule::Nelson(4)), vec![14, 15]);
    assert!(fired("", &alt[..13], Rule::Nelson(4)).is_empty());
    // Alternation need not cross the centre line.
    let alt: Vec<f64> = (0..14)
        .map(|i| if i % 2 == 0 { 0.5 } else { 0.4 })
        .collect();
    assert_eq!(fired("", &alt, Rule::Nelson(4)), vec![14]);
    // A tie at seq 8 (equal to seq 7) breaks it: the new sequence starts at seq 8.
    let mut v: Vec<f64> = (0..7)
        .map(|i| if i % 2 == 0 { 0.1 } else { -0.1 })
        .collect();
    v.push(0.1);
    v.extend((0..13).map(|i| if i % 2 == 0 { -0.1 } else { 0.1 }));
    // seq 8 starts the new sequence; 14 points later is seq 21.
    assert_eq!(fired("", &v, Rule::Nelson(4)), vec![21]);
}

#[test]
fn two_of_three_flags_only_a_point_in_the_zone() {
    let r = Rule::Nelson(5);
    assert_eq!(fired("", &[2.5, 0.0, 2.5], r), vec![3]);
    // 2 of the first 2: flagged at the second.
    assert_eq!(fired("", &[2.5, 2.5, 0.0], r), vec![2]);
    // The third point completes 2-of-3 in the window but is not itself beyond 2 sigma.
    assert_eq!(fired("", &[0.0, 2.5, 2.5, 0.0, 0.0], r), vec![3]);
    // Same side only; exactly 2 sigma is not beyond.
    assert!(fired("", &[2.5, -2.5, 0.0, 2.0, 2.5], r).is_empty());
    assert_eq!(fired("", &[-2.5, 0.0, -2.5], r), vec![3]);
    // Window is 3: points 1 and 4 are too far apart.
    assert!(fired("", &[2.5, 0.0, 0.0, 2.5], r).is_empty());
    // Beyond 3 sigma counts as beyond 2 sigma.
    assert_eq!(fired("", &[3.5, 2.5], r), vec![2]);
}

#[test]
fn four_of_five_flags_only_a_point_in_the_zone() {
    let r = Rule::Nelson(6);
    assert_eq!(fired("", &[1.5, 1.5, 0.0, 1.5, 1.5], r), vec![5]);
    assert_eq!(fired("", &[1.5, 1.5, 1.5, 1.5, 0.5, 1.5], r), vec![4, 6]);
    assert!(fired("", &[1.5, 1.5, 0.0, 1.5, 0.0, 1.5], r).is_empty());
    assert!(fired("", &[1.0, 1.5, 1.5, 1.5, 0.0], r).is_empty());
    assert_eq!(fired("", &[-1.5, -1.5, -1.5, -1.5], r), vec![4]);
}

#[test]
fn stratification_fifteen_within_one_sigma() {
    let r = Rule::Nelson(7);
    // Exactly 1 sigma is within; the centre line is within.
    let mut v = vec![1.0, -1.0, 0.0];
    v.extend([0.5; 12]);
    v.push(0.2);
    assert_eq!(fired("", &v, r), vec![15, 16]);
    let mut v = vec![0.5; 14];
    v.push(1.01);
    v.extend([0.5; 14]);
    assert!(fired("", &v, r).is_empty());
}

#[test]
fn mixture_eight_beyond_one_sigma_either_side() {
    let r = Rule::Nelson(8);
    let v: Vec<f64> = (0..9)
        .map(|i| if i % 2 == 0 { 1.5 } else { -1.5 })
        .collect();
    assert_eq!(fired("", &v, r), vec![8, 9]);
    // Exactly 1 sigma is not beyond it and breaks the sequence.
    let mut v: Vec<f64> = vec![1.5; 7];
    v.push(1.0);
    v.extend([-1.5; 7]);
    assert!(fired("", &v, r).is_empty());
}

#[test]
fn western_electric_rules() {
    let we = "rules = \"western-electric\"";
    assert_eq!(fired(we, &[3.1], Rule::WesternElectric(1)), vec![1]);
    assert_eq!(
        fired(we, &[2.5, 0.0, 2.5], Rule::WesternElectric(2)),
        vec![3]
    );
    assert_eq!(
        fired(we, &[1.5, 1.5, 0.0, 1.5, 1.5], Rule::WesternElectric(3)),
        vec![5]
    );
    assert_eq!(fired(we, &[0.5; 9], Rule::WesternElectric(4)), vec![8, 9]);
    // No Nelson rule fires under the Western Electric preset.
    let all = violations(
        spec(we),
        &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ChartId::Individuals,
    );
    assert!(all.iter().all(|v| matches!(v.1, Rule::WesternElectric(_))));
}

#[test]
fn limits_only_preset_and_overrides() {
    let v = [0.5; 10];
    assert!(fired("rules = \"limits-only\"", &v, Rule::Nelson(2)).is_empty());
    assert_eq!(fired("rules = \"limits-only\"", &[4.0], N1), vec![1]);
    let extra =
        "rules = \"limits-only\"\n[rule.2]\nenabled = true\npoints = 7\nseverity = \"warning\"";
    let got = violations(spec(extra), &v, ChartId::Individuals);
    assert_eq!(got.first(), Some(&(7, Rule::Nelson(2), Severity::Warning)));
    assert_eq!(got.len(), 4);
    let off = "[rule.1]\nenabled = false";
    assert!(fired(off, &[4.0], N1).is_empty());
    let k = "[rule.5]\npoints = 3";
    assert_eq!(fired(k, &[2.5, 2.5, 0.0, 2.5], Rule::Nelson(5)), vec![4]);
}

#[test]
fn dispersion_charts_get_rules_one_to_four_only() {
    // Moving ranges: alternate 0 / 2.5 -> MR = 2.5 every time (beyond 2 sigma of MR? irrelevant):
    // only rules 1-4 may appear on the MR chart.
    let v: Vec<f64> = (0..40)
        .map(|i| if i % 2 == 0 { 0.0 } else { 2.5 })
        .collect();
    let mr = violations(spec(""), &v, ChartId::MovingRange);
    assert!(!mr.is_empty());
    assert!(
        mr.iter().all(|v| matches!(v.1, Rule::Nelson(1..=4))),
        "{mr:?}"
    );
    // MR of 2.5 with sigma 1: centre d2 = 1.128, UCL = 3.686: above centre every time -> rule 2.
    assert!(mr.iter().any(|v| v.1 == Rule::Nelson(2)));
}

#[test]
fn every_rule_violation_is_reported_on_the_point() {
    let mut c = Characteristic::new(spec("")).unwrap();
    let mut out = Vec::new();
    for (i, v) in [2.5, 3.5].iter().enumerate() {
        c.push(Observation::new(i as u64 + 1, 0, *v), &mut out);
    }
    let last_point = out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Point(p) if p.chart == ChartId::Individuals => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let rules: Vec<Rule> = last_point.rules.iter().collect();
    assert_eq!(rules, vec![Rule::Nelson(1), Rule::Nelson(5)]);
    let json = serde_json::to_value(&last_point).unwrap();
    assert_eq!(json["rules"], serde_json::json!(["nelson-1", "nelson-5"]));
    assert_eq!(json["chart"], "i");
}
