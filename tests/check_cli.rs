//! `lineside check` on broken configs: every problem with file:line and the key, exit code 2; and every
//! shipped config passes.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lineside"))
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn broken(name: &str) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs/broken")
        .join(name);
    let (code, text) = check(&path);
    assert_eq!(code, 2, "{name}: exit code {code}\n{text}");
    (path.display().to_string(), text)
}

#[test]
fn a_typo_names_the_line_the_key_and_the_fix() {
    let (file, text) = broken("typo_key.toml");
    assert!(
        text.contains(&format!(
            "{file}:6:1: mqtt.usrname: unknown field `usrname`"
        )),
        "{text}"
    );
    assert!(text.contains("did you mean `username`?"), "{text}");
}

#[test]
fn a_wrong_type() {
    let (file, text) = broken("wrong_type.toml");
    assert!(
        text.contains(&format!(
            "{file}:5:1: store.batch_size: invalid type: string \"many\", expected usize"
        )),
        "{text}"
    );
}

#[test]
fn a_bad_duration() {
    let (file, text) = broken("bad_duration.toml");
    assert!(
        text.contains(&format!(
            "{file}:10:1: device[0].interval: invalid duration \"fast\""
        )),
        "{text}"
    );
}

#[test]
fn a_missing_section() {
    let (file, text) = broken("missing_section.toml");
    assert!(
        text.contains(&format!("{file}: mqtt: missing section [mqtt]")),
        "{text}"
    );
}

#[test]
fn a_duplicate_device_name() {
    let (file, text) = broken("duplicate_device.toml");
    assert!(
        text.contains(&format!(
            "{file}:15:1: device[1].name: duplicate device name `gauge` (also device[0])"
        )),
        "{text}"
    );
}

#[test]
fn every_problem_in_one_run() {
    let (file, text) = broken("several_problems.toml");
    for expected in [
        format!("{file}:2:1: agent.id: must be"),
        format!("{file}:3:1: agent.log_levl: unknown field `log_levl`"),
        format!("{file}:6:1: store.max_size: unknown size unit"),
        format!("{file}:9:1: mqtt.url: plain mqtt://"),
        format!("{file}:17:1: device[0].tag[0].sigma: invalid type: string \"wide\""),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.contains("did you mean `log_level`?"));
    assert!(text.contains("5 error(s)"), "{text}");
}

#[test]
fn every_shipped_config_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("config/lineside.toml"),
        root.join("config/demo.toml"),
        root.join("config/installed.toml"),
    ];
    if let Ok(dir) = std::fs::read_dir(root.join("config/examples")) {
        files.extend(
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml")),
        );
    }
    let compiled = |driver: &str| match driver {
        "modbus" => cfg!(feature = "modbus"),
        "opcua" => cfg!(feature = "opcua"),
        "serial" => cfg!(feature = "serial"),
        _ => true,
    };
    for f in files {
        let body = std::fs::read_to_string(&f).unwrap();
        let missing: Vec<&str> = ["modbus", "opcua", "serial"]
            .into_iter()
            .filter(|d| body.contains(&format!("driver = \"{d}\"")) && !compiled(d))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "skipping {}: driver(s) {missing:?} not in this build",
                f.display()
            );
            continue;
        }
        let (code, text) = check(&f);
        assert_eq!(code, 0, "{}:\n{text}", f.display());
    }
}
