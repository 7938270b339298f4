//! `lineside check FILE --plan | head`: a reader that stops early must not make the command panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn plan_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("many.toml");
    // Enough devices that the plan is far longer than a pipe buffer (64 KiB).
    let mut text = format!(
        "[agent]\nid = \"gw\"\nstate_dir = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
        dir.path().display().to_string()
    );
    for d in 0..3000 {
        text.push_str(&format!(
            "[[device]]\nname = \"sim-device-with-a-long-name-{d}\"\ndriver = \"sim\"\ninterval = \"1s\"\n\
             [[device.tag]]\nname = \"t\"\nmean = 1.0\nsigma = 0.1\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineside"))
        .arg("check")
        .arg(&config)
        .arg("--plan")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close the pipe as `head` does.
    let mut first = [0u8; 512];
    let mut stdout = child.stdout.take().unwrap();
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}
