//! `lineside check` on broken configs: every problem with file:line and the key, exit code 2; and every
//! shipped config passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

mod shipped;

fn check(path: &Path) -> (i32, String) {
    let out = Command::new(shipped::bin())
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

/// Every shipped config passes once the files it names exist (as on a commissioned gateway); without
/// them `check` names the missing password file, because `run` could not start.
#[test]
fn every_shipped_config_passes() {
    for f in shipped::configs() {
        let dir = tempfile::tempdir().unwrap();
        let copy = shipped::materialise(&f, dir.path());
        let (code, text) = check(&copy);
        assert_eq!(code, 0, "{}:\n{text}", f.display());
    }
    let (code, text) = check(&shipped::root().join("config/lineside.toml"));
    if !Path::new("/etc/lineside/mqtt.password").exists() {
        assert_eq!(code, 2, "{text}");
        assert!(
            text.contains("mqtt.password_file: /etc/lineside/mqtt.password cannot read the file"),
            "{text}"
        );
    }
}

/// Runs `lineside check` and kills it after `limit`: `None` means it hung.
fn check_within(path: &Path, limit: std::time::Duration) -> Option<(i32, String)> {
    let mut child = Command::new(shipped::bin())
        .arg("check")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            return Some((status.code().unwrap_or(-1), text));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

const MINIMAL: &str =
    "[agent]\nid = \"gw\"\nstate_dir = \"state\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";

fn refused(text: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineside.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 2, "{text}\n{out}");
    let expected = format!("{}:{expected}", path.display());
    assert!(out.contains(&expected), "missing {expected:?} in\n{out}");
}

/// Values `run` cannot handle (issue 10, item 8) are refused with file:line:col, key and range.
#[test]
fn values_run_cannot_handle_are_refused_with_their_range() {
    refused(
        &MINIMAL.replace("[mqtt]\n", "[mqtt]\nstatus_interval = \"0s\"\n"),
        "6:1: mqtt.status_interval: must be between 1s and 1day (it is 0s)",
    );
    refused(
        &format!("{MINIMAL}[store]\nmax_age = \"100000000d\"\n"),
        "8:1: store.max_age: must be between 1m and 100years",
    );
    for key in ["flush_interval", "maintenance_interval"] {
        refused(
            &format!("{MINIMAL}[store]\n{key} = \"99999999d\"\n"),
            &format!("8:1: store.{key}: must be between"),
        );
    }
    refused(
        &format!(
            "{MINIMAL}[[device]]\nname = \"g\"\ndriver = \"sim\"\ninterval = \"1s\"\n[[device.tag]]\nname = \"d\"\n\
             [[characteristic]]\nname = \"c\"\nsource = \"g/d\"\nchart = \"i-mr\"\ncapability_interval = \"9999999d\"\n"
        ),
        "17:1: characteristic[0].capability_interval: must be between 1s and 1day",
    );
    refused(
        &MINIMAL.replace("[mqtt]\n", "[mqtt]\nstall_timeout = \"0s\"\n"),
        "6:1: mqtt.stall_timeout: must be between 1s and 1day (it is 0s)",
    );
    refused(
        &MINIMAL.replace("[mqtt]\n", "[mqtt]\nmax_command_size = \"64PiB\"\n"),
        "6:1: mqtt.max_command_size: must be between 256B and 4MiB",
    );
    // Device tables of every driver: poll intervals, timeouts, heartbeats, backoff.
    let device = |driver_keys: &str| {
        format!("{MINIMAL}[[device]]\nname = \"g\"\n{driver_keys}\n[[device.tag]]\nname = \"d\"\n")
    };
    refused(
        &device("driver = \"sim\"\ninterval = \"0s\""),
        "10:1: device[0].interval: must be between 1ms and 1day (it is 0s)",
    );
    refused(
        &device("driver = \"sim\"\ninterval = \"1s\"\nbad_heartbeat = \"99999999d\""),
        "11:1: device[0].bad_heartbeat: must be between 0s and 1day",
    );
    refused(
        &device(
            "driver = \"modbus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\npoll_interval = \"99999999d\"",
        ),
        "12:1: device[0].poll_interval: must be between 1ms and 1day",
    );
    refused(
        &device(
            "driver = \"modbus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nreconnect_max = \"99999999d\"",
        ),
        "12:1: device[0].reconnect_max: must be between 1ms and 1h",
    );
    refused(
        &device(
            "driver = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:4840\"\nrequest_timeout = \"0s\"",
        ),
        "11:1: device[0].request_timeout: must be between 1ms and 1h (it is 0s)",
    );
    refused(
        &device("driver = \"serial\"\nport = \"/dev/null\"\ntimeout = \"99999999d\""),
        "11:1: device[0].timeout: must be between 1ms and 1h",
    );
}

#[test]
fn a_misspelt_log_level_is_refused_with_a_hint() {
    let text = MINIMAL.replace("[agent]\n", "[agent]\nlog_level = \"infoo\"\n");
    refused(
        &text,
        "2:1: agent.log_level: \"infoo\" is not a log level (did you mean `info`?)",
    );
    let text = MINIMAL.replace(
        "[agent]\n",
        "[agent]\nlog_level = \"info,lineside_driver=debug\"\n",
    );
    refused(
        &text,
        "2:1: agent.log_level: unknown log target `lineside_driver`",
    );
}

/// A FIFO, a symlink to /dev/zero, a directory or an unreadable entry in conf.d is refused at once:
/// `check` neither hangs nor reads without end.
#[test]
fn special_files_in_conf_d_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineside.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let d = dir.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("10-fifo.toml"))
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/dev/zero", d.join("20-zero.toml")).unwrap();
    std::fs::create_dir(d.join("30-dir.toml")).unwrap();
    std::fs::write(d.join("40-big.toml"), vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let (code, text) = check_within(&path, std::time::Duration::from_secs(10))
        .expect("check hung on a special file in conf.d");
    assert_eq!(code, 2, "{text}");
    for (file, why) in [
        ("10-fifo.toml", "is a FIFO, not a regular file"),
        ("20-zero.toml", "is a device, not a regular file"),
        ("30-dir.toml", "is a directory, not a regular file"),
        ("40-big.toml", "more than the 1048576 bytes allowed"),
    ] {
        let expected = format!("{}: ", d.join(file).display());
        assert!(
            text.lines()
                .any(|l| l.starts_with(&expected) && l.contains(why)),
            "missing {file}: {why} in\n{text}"
        );
    }
}

#[test]
fn a_missing_password_file_is_an_error_and_a_world_readable_one_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt.password");
    let text = MINIMAL.replace(
        "[mqtt]\n",
        &format!(
            "[mqtt]\nusername = \"u\"\npassword_file = {:?}\n",
            pw.display().to_string()
        ),
    );
    refused(
        &text,
        &format!(
            "7:1: mqtt.password_file: {} cannot read the file",
            pw.display()
        ),
    );
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.path().join("lineside.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, out) = check(&path);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "warning: {}:7:1: mqtt.password_file: {} is readable by every user",
            path.display(),
            pw.display()
        )),
        "{out}"
    );
}
