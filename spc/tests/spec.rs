//! `[[characteristic]]` parsing and validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lineside_spc::{
    Characteristic, CharacteristicSpec, ChartType, RulePreset, Severity, SpecIssue,
};

const FULL: &str = r#"
name = "bore-diameter"
source = "cmm/bore"
chart = "xbar-r"
subgroup_size = 5
subgroup_window = "10m"
usl = 74.05
lsl = 73.95
target = 74.0
rules = "nelson"
context = ["part", "lot", "operator"]
chart_per = "part"
capability_window = 50
limits = { baseline = 20, exclude_out_of_control = true }

[rule.2]
points = 8
severity = "warning"

[rule.7]
enabled = false
"#;

fn issues(text: &str) -> Vec<SpecIssue> {
    let spec: CharacteristicSpec = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    spec.validate()
}

fn paths(text: &str) -> Vec<String> {
    issues(text).into_iter().map(|i| i.path).collect()
}

#[test]
fn full_example_parses_and_validates() {
    let spec: CharacteristicSpec = toml::from_str(FULL).unwrap();
    assert_eq!(spec.chart, ChartType::XbarR);
    assert_eq!(spec.rules, RulePreset::Nelson);
    assert_eq!(spec.rule["2"].severity, Some(Severity::Warning));
    assert_eq!(spec.limits.baseline, Some(20));
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    assert!(Characteristic::new(spec).is_ok());
}

#[test]
fn every_chart_type_name_parses() {
    for (name, extra) in [
        ("i-mr", ""),
        ("xbar-r", "subgroup_size = 4"),
        ("xbar-s", "subgroup_size = 10"),
        ("ewma", "ewma = { lambda = 0.1, l = 2.7 }"),
        ("cusum", "cusum = { k = 0.5, h = 4.0, head_start = 2.0 }"),
        ("p", "sample_size = 50"),
        ("np", "sample_size = 50"),
        ("c", ""),
        ("u", "sample_size_source = \"line/units\""),
    ] {
        let text = format!("name = \"x\"\nsource = \"d/t\"\nchart = \"{name}\"\n{extra}");
        assert!(issues(&text).is_empty(), "{name}: {:?}", issues(&text));
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let bad = "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nsubgroup_sise = 5";
    assert!(toml::from_str::<CharacteristicSpec>(bad).is_err());
    let bad =
        "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\nlimits = { baseline = 5, sigmas = 1 }";
    assert!(toml::from_str::<CharacteristicSpec>(bad).is_err());
    let bad = "name = \"x\"\nsource = \"d/t\"\nchart = \"i-mr\"\n[rule.2]\npoint = 5";
    assert!(toml::from_str::<CharacteristicSpec>(bad).is_err());
    let bad = "name = \"x\"\nsource = \"d/t\"\nchart = \"xbar\"";
    assert!(toml::from_str::<CharacteristicSpec>(bad).is_err());
}

#[test]
fn semantic_issues_carry_paths() {
    let text = r#"
name = ""
source = "no-slash"
chart = "xbar-r"
subgroup_size = 30
subgroup_window = "soon"
usl = 1.0
lsl = 2.0
context = ["part", "part"]
chart_per = "shift"
capability_window = 1
limits = { baseline = 20, sigma = 1.0 }
[rule.2]
points = 1
[rule.9]
enabled = true
[rule.1]
points = 3
"#;
    let got = paths(text);
    for want in [
        "name",
        "source",
        "subgroup_size",
        "subgroup_window",
        "usl",
        "context[1]",
        "chart_per",
        "capability_window",
        "limits.baseline",
        "rule.2.points",
        "rule.9",
        "rule.1.points",
    ] {
        assert!(got.iter().any(|p| p == want), "missing {want} in {got:?}");
    }
    assert!(Characteristic::new(toml::from_str(text).unwrap()).is_err());
}

#[test]
fn chart_specific_checks() {
    let base = "name = \"x\"\nsource = \"d/t\"\n";
    let p = |extra: &str| paths(&format!("{base}{extra}"));
    assert_eq!(p("chart = \"xbar-r\""), vec!["subgroup_size"]);
    assert_eq!(
        p("chart = \"i-mr\"\nsubgroup_size = 5"),
        vec!["subgroup_size"]
    );
    assert_eq!(p("chart = \"p\""), vec!["sample_size"]);
    assert_eq!(
        p("chart = \"np\"\nsample_size_source = \"a/b\""),
        vec!["sample_size", "sample_size_source"]
    );
    assert_eq!(p("chart = \"c\"\nsample_size = 5"), vec!["sample_size"]);
    assert_eq!(p("chart = \"p\"\nsample_size = 50\nusl = 0.1"), vec!["usl"]);
    assert_eq!(
        p("chart = \"p\"\nsample_size = 50\nlimits = { centre = 1.5 }"),
        vec!["limits.centre"]
    );
    assert_eq!(
        p("chart = \"c\"\nlimits = { centre = 4.0, sigma = 2.0 }"),
        vec!["limits.sigma"]
    );
    assert_eq!(
        p("chart = \"ewma\"\newma = { lambda = 0.0 }"),
        vec!["ewma.lambda"]
    );
    assert_eq!(
        p("chart = \"ewma\"\nlimits = { ucl = 1.0, lcl = 0.0 }"),
        vec!["limits.ucl"]
    );
    assert_eq!(
        p("chart = \"cusum\"\ncusum = { h = 4.0, head_start = 4.0 }"),
        vec!["cusum.head_start"]
    );
    assert_eq!(p("chart = \"i-mr\"\ncusum = { h = 4.0 }"), vec!["cusum"]);
    assert_eq!(
        p("chart = \"i-mr\"\nlimits = { sigma = 1.0 }"),
        vec!["limits.centre"]
    );
    assert_eq!(
        p("chart = \"i-mr\"\nlimits = { ucl = 1.0 }"),
        vec!["limits.lcl"]
    );
    assert_eq!(
        p("chart = \"i-mr\"\nlimits = { ucl = 1.0, lcl = 0.0, centre = 2.0 }"),
        vec!["limits.centre"]
    );
    assert_eq!(
        p(
            "chart = \"i-mr\"\nlimits = { centre = 1.0, sigma = 1.0, exclude_out_of_control = true }"
        ),
        vec!["limits.exclude_out_of_control"]
    );
    assert_eq!(
        p("chart = \"i-mr\"\nsubgroup_window = \"1m\""),
        vec!["subgroup_window"]
    );
    assert_eq!(
        p("chart = \"ewma\"\nsubgroup_window = \"1m\""),
        vec!["subgroup_window"]
    );
    assert!(p("chart = \"ewma\"\nsubgroup_size = 4\nsubgroup_window = \"1m\"").is_empty());
    assert_eq!(
        p("rules = \"western-electric\"\nchart = \"i-mr\"\n[rule.5]\nenabled = false"),
        vec!["rule.5"]
    );
    assert!(p("chart = \"i-mr\"\nlimits = { center = 1.0, sigma = 0.5 }").is_empty());
    assert_eq!(
        p("chart = \"i-mr\"\n[rule.02]\npoints = 5"),
        vec!["rule.02"]
    );
}

#[test]
fn issue_display() {
    let i = &issues("name = \"x\"\nsource = \"d\"\nchart = \"i-mr\"")[0];
    assert_eq!(i.to_string(), "source: must be \"device/tag\"");
}
