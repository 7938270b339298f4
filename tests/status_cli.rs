//! `lineside status` (the real binary) against an agent running in-process with `metrics_listen`: it
//! prints the devices, the backlog and the broker connection; `--json` gives the status document; a config
//! that no longer validates still finds the agent; and it exits 1 once the agent is gone, 2 when the config
//! names no metrics address. With a Modbus device whose merged read hits a refused register (pymodbus
//! peer), it prints the driver's isolation notes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

async fn status(config: &Path, json: bool) -> Output {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lineside"));
        cmd.arg("status").arg("--config").arg(&config);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_running_agent() {
    let broker = rumqttd().await;
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let text = sim_config(dir.path(), broker, 2, 2, "50ms", "").replace(
        "[agent]\n",
        &format!("[agent]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let cfg = load(&text, dir.path());
    let config: PathBuf = dir.path().join("lineside.toml");
    let (stop, task) = spawn_agent(cfg);

    // Wait (generously: a loaded 2-core machine) until readings are committed and forwarded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let out = status(&config, true).await;
        if out.status.success() {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("--json is not JSON: {e}\n{}", show(&out)));
            if doc["forwarder"]["connected"] == true
                && doc["forwarder"]["forwarded"].as_u64().unwrap_or(0) > 0
            {
                break doc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never reported forwarded readings:\n{}",
            show(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev0", "dev1"]);

    let out = status(&config, false).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text.contains(&format!("agent      127.0.0.1:{metrics_port}")),
        "{text}"
    );
    assert!(text.contains("store      backlog "), "{text}");
    assert!(text.contains("oldest unforwarded "), "{text}");
    assert!(text.contains("forwarder  connected"), "{text}");
    assert!(text.contains("devices    2"), "{text}");
    for dev in ["dev0", "dev1"] {
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(dev))
            .unwrap_or_else(|| panic!("no row for {dev}:\n{text}"));
        assert!(row.contains("sim"), "{row}");
    }
    assert!(
        text.contains("NAME") && text.contains("LAST ERROR"),
        "{text}"
    );

    // Mid-edit, the file no longer validates: status still finds the agent, and says why it warns.
    let edited = std::fs::read_to_string(&config).unwrap().replacen(
        "[store]\n",
        "[store]\nbatch_sise = 10\n",
        1,
    );
    std::fs::write(&config, edited).unwrap();
    let out = status(&config, false).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error(s)"),
        "{}",
        show(&out)
    );

    stop.cancel();
    task.await.unwrap().unwrap();

    // The agent is gone: exit code 1 and a hint.
    let out = status(&config, false).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{}",
        show(&out)
    );
}

#[tokio::test]
async fn a_config_without_metrics_listen_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = sim_config(dir.path(), free_port(), 1, 1, "1s", "");
    let _ = load(&text, dir.path());
    let out = status(&dir.path().join("lineside.toml"), false).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no agent.metrics_listen"), "{err}");
    assert!(err.contains("metrics_listen = \"127.0.0.1:9464\""), "{err}");
}

/// The pymodbus peer of tests/interop (its holding register 205 is a hole between 200..=204 and
/// 206..=209); killed when dropped.
struct ModbusPeer {
    child: std::process::Child,
    port: u16,
}

impl Drop for ModbusPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn modbus_peer() -> ModbusPeer {
    use std::io::BufRead;
    let python = std::env::var("LINESIDE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/modbus_server.py"
    );
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .arg("tcp")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} {script}: {e}"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("the pymodbus peer printed {line:?} (is pymodbus installed for {python}?)")
    });
    ModbusPeer { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pymodbus; run by scripts/test"]
async fn status_prints_the_modbus_isolation_notes() {
    let broker = rumqttd().await;
    let peer = modbus_peer();
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // 204 and 206 merge into one read of 204..=206 across the hole at 205: refused, split, isolated.
    let text = format!(
        "[agent]\nid = \"test-gw\"\nstate_dir = {state:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n\
         [store]\nflush_interval = \"20ms\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\n\n\
         [[device]]\nname = \"plc\"\ndriver = \"modbus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
         poll_interval = \"200ms\"\nmax_gap = 4\n\
         [[device.tag]]\nname = \"r204\"\naddress = 204\n\
         [[device.tag]]\nname = \"r206\"\naddress = 206\n",
        state = dir.path().display().to_string(),
        port = peer.port,
    );
    let cfg = load(&text, dir.path());
    let config: PathBuf = dir.path().join("lineside.toml");
    let (stop, task) = spawn_agent(cfg);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = status(&config, true).await;
        if out.status.success() {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let notes = &doc["devices"][0]["notes"];
            if notes.as_array().is_some_and(|n| !n.is_empty()) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the device never reported a split:\n{}",
            show(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = status(&config, false).await;
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let note = text
        .lines()
        .find(|l| l.starts_with("notes "))
        .unwrap_or_else(|| panic!("no notes line:\n{text}"));
    assert!(
        note.contains("plc: read requests split after exceptions")
            && note.contains("holding-register 204..=204")
            && note.contains("holding-register 206..=206"),
        "{note}"
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}
