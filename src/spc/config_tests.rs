//! `[[characteristic]]` in the config: the agent's keys, the engine's spec, and every mistake with its
//! line and key.

use std::path::Path;
use std::time::Duration;

use crate::config::{ConfigError, TagRef, load_str};

const HEAD: &str = r#"[agent]
id = "gw"
state_dir = "/tmp/x"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[device]]
name = "gauge"
driver = "sim"
interval = "1s"
[[device.tag]]
name = "od"
unit = "mm"
[[device.tag]]
name = "part_number"
kind = "cycle"
values = ["a"]
[[device]]
name = "spare"
driver = "sim"
interval = "1s"
enabled = false
[[device.tag]]
name = "x"
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    load_str(Path::new("t.toml"), &format!("{HEAD}{text}"))
        .err()
        .map(|e| e.0)
        .unwrap_or_default()
}

/// (line, key, message) of each error; lines counted in `text` (after HEAD).
fn located(text: &str) -> Vec<(usize, String, String)> {
    let head = HEAD.lines().count();
    errors(text)
        .into_iter()
        .map(|e| (e.line.saturating_sub(head), e.key, e.message))
        .collect()
}

#[test]
fn a_characteristic_with_context_sources() {
    let text = r#"
[[characteristic]]
name = "bore"
source = "gauge/od"
chart = "xbar-r"
subgroup_size = 5
context = { part = "gauge/part_number", lot = "spare/x" }
chart_per = "part"
capability_interval = "5m"
"#;
    let cfg = load_str(Path::new("t.toml"), &format!("{HEAD}{text}")).unwrap();
    let c = &cfg.characteristics[0];
    assert_eq!(c.spec.context, ["lot", "part"]);
    assert_eq!(
        c.context_sources,
        [
            TagRef {
                device: "spare".into(),
                tag: "x".into()
            },
            TagRef {
                device: "gauge".into(),
                tag: "part_number".into()
            },
        ],
        "in the order of spec.context; a disabled device's tags are accepted"
    );
    assert_eq!(c.source.to_string(), "gauge/od");
    assert_eq!(c.unit.as_deref(), Some("mm"));
    assert_eq!(c.capability_interval, Duration::from_secs(300));
    assert!(c.publish_points);
    assert_eq!(c.spec.chart_per.as_deref(), Some("part"));
}

#[test]
fn every_mistake_has_its_line_and_key() {
    let text = r#"
[[characteristic]]
name = "a"
source = "gauge/diameter"
chart = "i-mr"
context = { part = "gauge/part_numbr", op = "press/operator" }

[[characteristic]]
name = "b"
source = "gauge/part_number"
chart = "i-mr"
limits = { centre = 10.0, sigma = -1.0 }
capability_interval = "10ms"

[[characteristic]]
name = "c/d"
source = "gaug/od"
chart = "xbar-r"
subgroup_size = 5
[characteristic.rule.2]
points = 1
"#;
    let errs = located(text);
    let find = |key: &str| {
        errs.iter()
            .find(|e| e.1 == key)
            .unwrap_or_else(|| panic!("no error for {key}: {errs:#?}"))
            .clone()
    };
    let e = find("characteristic[0].source");
    assert_eq!(e.0, 4);
    assert!(
        e.2.contains("device `gauge` has no tag `diameter`"),
        "{}",
        e.2
    );
    let e = find("characteristic[0].context.part");
    assert_eq!(e.0, 6);
    assert!(e.2.contains("did you mean `part_number`"), "{}", e.2);
    assert!(
        find("characteristic[0].context.op")
            .2
            .contains("no device `press`")
    );
    let e = find("characteristic[1].limits.sigma");
    assert_eq!(e.0, 12);
    assert!(e.2.contains("greater than 0"), "{}", e.2);
    assert!(
        find("characteristic[1].capability_interval")
            .2
            .contains("must be between 1s and")
    );
    assert!(find("characteristic[1].source").2.contains("not numeric"));
    assert!(find("characteristic[2].name").2.contains("MQTT topics"));
    assert!(
        find("characteristic[2].source")
            .2
            .contains("did you mean `gauge`")
    );
    let e = find("characteristic[2].rule.2.points");
    assert_eq!(e.0, 21);
    assert_eq!(errs.len(), 9, "{errs:#?}");
}

#[test]
fn typos_and_the_old_context_list() {
    let text = r#"
[[characteristic]]
name = "a"
source = "gauge/od"
chrat = "i-mr"
context = ["part"]
publish_points = "yes"
"#;
    let errs = located(text);
    let keys: Vec<&str> = errs.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        keys,
        [
            "characteristic[0]",
            "characteristic[0].chrat",
            "characteristic[0].context",
            "characteristic[0].publish_points",
        ],
        "{errs:#?}"
    );
    assert!(errs[0].2.contains("missing field `chart`"), "{}", errs[0].2);
    assert!(errs[1].2.contains("did you mean `chart`"), "{}", errs[1].2);
    assert!(
        errs[2].2.contains("context = { part = \"device/tag\""),
        "{}",
        errs[2].2
    );
}

#[test]
fn the_shipped_configs_have_valid_characteristics() {
    for file in ["config/demo.toml", "config/lineside.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = load_str(&path, &text).unwrap_or_else(|e| panic!("{file}:\n{e}"));
        assert!(!cfg.characteristics.is_empty(), "{file} shows SPC");
    }
}

#[test]
fn alarm_keys_and_the_spc_section() {
    let ok = load_str(
        Path::new("t.toml"),
        &format!(
            "{HEAD}{}",
            r#"
[[characteristic]]
name = "bore"
source = "gauge/od"
chart = "i-mr"
resolution = 0.001
return_to_normal = 5
max_alarms_per_10min = 2
reaction_plan = ["Stop", "Measure"]
reaction_plan_rule."nelson-2" = ["Check the tool"]
reaction_plan_rule."out-of-spec" = ["Red box"]
[spc]
max_alarms_per_10min = 8
causes = ["tool-wear"]
[spc.allow]
ack = ["alice"]
out-of-service = ["qe"]
"#
        ),
    )
    .unwrap();
    let a = &ok.characteristics[0].alarm;
    assert_eq!(
        (a.resolution, a.return_to_normal, a.max_alarms_per_10min),
        (Some(0.001), 5, 2)
    );
    assert_eq!(a.reaction_plan_rule["nelson-2"], ["Check the tool"]);
    assert_eq!(ok.spc.max_alarms_per_10min, 8);
    assert_eq!(ok.spc.allow.ack, Some(vec!["alice".to_string()]));
    assert_eq!(ok.spc.allow.out_of_service, Some(vec!["qe".to_string()]));
    assert_eq!(ok.spc.max_shelve, Duration::from_secs(8 * 3600));

    let bad = located(
        r#"
[[characteristic]]
name = "bore"
source = "gauge/od"
chart = "i-mr"
resolution = -1.0
return_to_normal = 0
reaction_plan_rule."nelson-9" = ["x"]
[spc]
max_shelve = "30d"
[spc.allow]
akc = ["alice"]
"#,
    );
    let keys: Vec<&str> = bad.iter().map(|(_, k, _)| k.as_str()).collect();
    for key in [
        "characteristic[0].resolution",
        "characteristic[0].return_to_normal",
        "characteristic[0].reaction_plan_rule.nelson-9",
    ] {
        assert!(keys.contains(&key), "{key} in {bad:?}");
    }
    assert!(
        bad.iter()
            .any(|(_, k, m)| k.starts_with("spc") && m.contains("akc")),
        "{bad:?}"
    );
}
