//! The independent Sparkplug host used by the Sparkplug tests: tests/interop/sparkplug_host.py on
//! pysparkplug (installed by scripts/test into the venv that `LINESIDE_PYTHON` points to).
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;

pub fn python() -> String {
    std::env::var("LINESIDE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sparkplug_host.py")
}

/// Decodes (topic, payload) pairs with pysparkplug, in order (aliases resolve against the births
/// seen earlier in the same call).
pub fn decode_all(messages: &[(String, Vec<u8>)]) -> Vec<Json> {
    let mut child = Command::new(python())
        .arg(script())
        .arg("decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the Sparkplug decoder (python with pysparkplug)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for (topic, payload) in messages {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(stdin, "{topic}\t{hex}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "decoder failed: {:?}", out.status);
    let lines: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), messages.len(), "one decoded line per message");
    lines
}

/// A running host (`sparkplug_host.py host`): every message it receives, decoded, in arrival order.
pub struct Host {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    pub seen: Arc<Mutex<Vec<Json>>>,
}

impl Host {
    /// Connects to the broker on 127.0.0.1:`port`, subscribed to the group; with `host_id`, announces
    /// itself online as that primary host. Returns once subscribed.
    pub async fn start(port: u16, group: &str, host_id: Option<&str>) -> Host {
        Self::start_with(port, group, host_id, None).await
    }

    /// With `persistent_id`, a persistent session under that client id (QoS 1): the broker keeps what
    /// arrives while the host is disconnected, as a historian would configure it.
    pub async fn start_with(
        port: u16,
        group: &str,
        host_id: Option<&str>,
        persistent_id: Option<&str>,
    ) -> Host {
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .args(["host", "--port", &port.to_string(), "--group", group]);
        if let Some(h) = host_id {
            cmd.args(["--host-id", h]);
        }
        if let Some(id) = persistent_id {
            cmd.args(["--client-id", id, "--persistent"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the Sparkplug host (python with pysparkplug)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Json>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let host = Host { child, stdin, seen };
        assert!(
            host.wait_until(Duration::from_secs(20), |s| s
                .iter()
                .any(|m| m["event"] == "ready"))
                .await,
            "the Sparkplug host did not connect"
        );
        host
    }

    pub fn send(&mut self, cmd: Json) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn rebirth(&mut self, node: &str) {
        self.send(serde_json::json!({"cmd": "rebirth", "node": node}));
    }

    pub fn set_online(&mut self, online: bool) {
        self.send(serde_json::json!({"cmd": "state", "online": online}));
    }

    /// Decoded Sparkplug messages so far (events left out).
    pub fn messages(&self) -> Vec<Json> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.get("type").is_some())
            .cloned()
            .collect()
    }

    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&[Json]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.seen.lock().unwrap()) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
