//! Supervision and shutdown of the real binary (issue 10, items 9 and 10):
//! - a long-lived task that panics makes `lineside run` log which task and why and exit non-zero
//!   promptly, so systemd restarts it (fault injected with the test-only `LINESIDE_FAULT_PANIC`);
//! - SIGTERM under load with the broker down ends the process within 5 s, and what was committed is
//!   still there after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod shipped;

/// A port nothing listens on: bound, then released.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn config(dir: &Path, devices: usize, tags: usize, interval: &str) -> PathBuf {
    let mut text = format!(
        "[agent]\nid = \"sup\"\nstate_dir = {:?}\n\n[store]\nflush_interval = \"20ms\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
        dir.join("state").display().to_string(),
        dead_port()
    );
    for d in 0..devices {
        text.push_str(&format!(
            "\n[[device]]\nname = \"dev{d}\"\ndriver = \"sim\"\ninterval = \"{interval}\"\nseed = {d}\n"
        ));
        for t in 0..tags {
            text.push_str(&format!(
                "[[device.tag]]\nname = \"t{t}\"\nmean = 10.0\nsigma = 0.1\n"
            ));
        }
    }
    text.push_str("\n[[characteristic]]\nname = \"c0\"\nsource = \"dev0/t0\"\nchart = \"i-mr\"\n");
    let path = dir.join("lineside.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path, env: &[(&str, &str)]) -> Agent {
        let log = config.with_extension(format!("log{}", fastrand::u32(..)));
        let mut cmd = Command::new(shipped::bin());
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the agent exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(start.elapsed() < limit, "no {needle:?} in\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end; the exit code and how long it took. Kills it after `limit`.
    fn wait(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the agent did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn a_panicking_task_stops_the_agent(task: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, 2, "50ms");
    let mut agent = Agent::start(&cfg, &[("LINESIDE_FAULT_PANIC", &format!("{task}@300"))]);
    let (code, _) = agent.wait(Duration::from_secs(20));
    let log = agent.log();
    assert_eq!(code, Some(1), "exit code\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("a supervised task died"))
        .unwrap_or_else(|| panic!("no line names the dead task:\n{log}"));
    assert!(
        line.contains(&format!("task={task}")) || line.contains(&format!("task=\"{task}\"")),
        "{line}"
    );
    assert!(
        line.contains("panicked: fault injected by LINESIDE_FAULT_PANIC"),
        "{line}"
    );
    assert!(log.contains("lineside stopped with an error"), "{log}");
}

#[test]
fn a_panicking_spc_task_stops_the_agent_with_an_error() {
    a_panicking_task_stops_the_agent("spc");
}

#[test]
fn a_panicking_forwarder_stops_the_agent_with_an_error() {
    a_panicking_task_stops_the_agent("forwarder");
}

#[test]
fn a_panicking_device_stops_the_agent_with_an_error() {
    a_panicking_task_stops_the_agent("device dev0");
}

fn committed(db: &Path) -> (i64, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM readings",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// SIGTERM under load with the broker down: the process is gone within 5 s (exit 0), nothing committed
/// is lost, and a restart resumes from the same last seq.
#[test]
fn sigterm_under_load_with_the_broker_down_ends_within_5_s_and_keeps_what_was_committed() {
    sigterm_under_load(&[]);
}

/// The same with a shutdown phase that never ends (SPC stuck): the phase is cut off and logged, the
/// process still ends within 5 s, and nothing committed is lost.
#[test]
fn sigterm_ends_within_5_s_even_when_a_shutdown_phase_hangs() {
    let log = sigterm_under_load(&[("LINESIDE_FAULT_STUCK", "spc")]);
    assert!(
        log.lines()
            .any(|l| l.contains("shutdown phase overran its time") && l.contains("phase=\"spc\"")),
        "{log}"
    );
}

/// Runs the agent under load, stops it with SIGTERM, checks the bound and the store, restarts it once.
/// Returns the first run's log.
fn sigterm_under_load(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 5, 40, "10ms");
    let db = dir.path().join("state/lineside.db");
    let mut agent = Agent::start(&cfg, env);
    agent.wait_for_log("lineside running", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let (before, _) = committed(&db);
    assert!(before > 1000, "the load did not reach the store: {before}");
    agent.sigterm();
    let (code, took) = agent.wait(Duration::from_secs(30));
    let first_log = agent.log();
    let log = first_log.clone();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} (bound 5 s)\n{log}"
    );
    println!("SIGTERM to exit: {took:?}; {before} readings committed before the signal");
    let (last, count) = committed(&db);
    assert!(
        last >= before,
        "committed readings vanished: {last} < {before}"
    );
    assert_eq!(count, last, "gaps in the committed sequence");

    let mut again = Agent::start(&cfg, &[]);
    again.wait_for_log("lineside running", Duration::from_secs(30));
    let log = again.log();
    assert!(
        log.contains(&format!("last_seq={last}")),
        "the restart did not resume from {last}:\n{log}"
    );
    again.sigterm();
    let (code, took) = again.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", again.log());
    assert!(took < Duration::from_secs(5), "second stop took {took:?}");
    let (last2, count2) = committed(&db);
    assert!(last2 >= last);
    assert_eq!(count2, last2);
    first_log
}
