//! The package installed on this machine with dpkg, run as its unit would run it: healthy with the shipped
//! config, delivering readings with a simulated device and a local broker, an unreadable password file
//! caught by ExecStartPre; then `dpkg -r` keeps the edited config and `dpkg -P` removes it.
//!
//! Needs root and dpkg (CI runs as root on a throwaway machine); skips with a message otherwise, and when
//! a lineside package is already installed here. Everything it installs is purged at the end, also when
//! it fails (the `lineside` system user stays, as after any purge).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::common;
use crate::unit::{Notify, Unit, getent};
use crate::{deb, run, text};

const UNIT: &str = "/usr/lib/systemd/system/lineside.service";
const CONFIG: &str = "/etc/lineside/lineside.toml";
const PASSWORD: &str = "/etc/lineside/mqtt.password";
const STATE: &str = "/var/lib/lineside";

fn cannot_install() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: installing a package needs root (CI runs as root)".into());
    }
    if Command::new("dpkg").arg("--version").output().is_err() {
        return Some("no dpkg on this machine".into());
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", "lineside"])
        .output()
        .ok()?;
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    if !status.is_empty() && status != "not-installed" {
        return Some(format!(
            "a lineside package is already on this machine ({status}); not touching it (dpkg -P lineside to run this test)"
        ));
    }
    None
}

/// Purges the package (and the password file the test wrote) however the test ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PASSWORD);
        let _ = Command::new("dpkg").args(["-P", "lineside"]).output();
        let _ = std::fs::remove_dir(Path::new(CONFIG).parent().unwrap());
    }
}

/// The agent started as the unit starts it; killed if the test ends without stopping it.
struct Agent<'u> {
    unit: &'u Unit,
    child: Option<Child>,
    notify: Notify,
    started: Instant,
}

impl<'u> Agent<'u> {
    /// ExecStartPre (each must succeed), then ExecStart as the main process.
    fn start(unit: &'u Unit) -> Agent<'u> {
        for argv in unit.exec("ExecStartPre") {
            let out = run(&mut unit.command(&argv, None));
            assert!(
                out.status.success(),
                "ExecStartPre {argv:?} failed:\n{}",
                text(&out)
            );
        }
        let main = unit.exec("ExecStart");
        assert_eq!(main.len(), 1, "one ExecStart");
        let notify = Notify::new();
        let started = Instant::now();
        let child = unit
            .command(&main[0], Some(&notify))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start ExecStart");
        Agent {
            unit,
            child: Some(child),
            notify,
            started,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the agent exited ({status}) {what}");
        }
    }

    /// READY=1 from the main process (Type=notify), and it runs as the unit's user.
    fn wait_ready(&mut self) {
        assert!(
            self.notify
                .wait_for("READY=1", self.started, Duration::from_secs(20)),
            "no READY=1 within 20 s; notifications: {:?}",
            self.notify.all()
        );
        self.assert_running("after READY=1");
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let uid = getent("passwd", self.unit.user())
            .split(':')
            .nth(2)
            .unwrap()
            .to_string();
        let uids = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string();
        assert!(
            uids.split_whitespace().skip(1).all(|u| u == uid),
            "the agent runs as {uids}, not {} ({uid})",
            self.unit.user()
        );
    }

    /// `systemctl stop`: SIGTERM, then it must exit cleanly within TimeoutStopSec.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + self.unit.timeout_stop();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the agent stopped with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not stop within TimeoutStopSec");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mode_owner(path: &str) -> (u32, String) {
    let out = run(Command::new("stat").args(["-c", "%a %U:%G", path]));
    assert!(out.status.success(), "stat {path}: {}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (mode, owner) = s.split_once(' ').unwrap();
    (u32::from_str_radix(mode, 8).unwrap(), owner.to_string())
}

/// `dpkg -i`, with the man pages and docs kept even where a slim image's dpkg.cfg.d excludes them.
fn dpkg_install(deb: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg("--path-include=/usr/share/man/man1/lineside*")
        .arg("--path-include=/usr/share/doc/lineside/*")
        .arg("-i")
        .arg(deb)
        .stdin(Stdio::null());
    cmd
}

fn sh(script: &str) {
    let out = run(Command::new("sh").arg("-ec").arg(script));
    assert!(out.status.success(), "{script}: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "installs the package (root, dpkg); run by scripts/test"]
async fn installed_it_runs_as_the_unit_would_and_remove_keeps_the_config_purge_deletes_it() {
    if let Some(why) = cannot_install() {
        eprintln!("skipped: {why}");
        return;
    }
    let deb = deb();
    let _cleanup = Cleanup;

    // Install. The postinst starts the agent; without systemd as PID 1 it can only enable the unit.
    let systemd = Path::new("/run/systemd/system").is_dir();
    let out = run(&mut dpkg_install(deb));
    let said = text(&out);
    assert!(out.status.success(), "dpkg -i:\n{said}");
    let expected = if systemd {
        "lineside is installed and running."
    } else {
        "lineside is installed and enabled; it starts at the next boot"
    };
    assert!(said.contains(expected), "{said}");
    assert!(said.contains("root:lineside, mode 0640"), "{said}");
    getent("passwd", "lineside");
    assert_eq!(mode_owner("/etc/lineside"), (0o750, "root:lineside".into()));
    assert_eq!(mode_owner(STATE), (0o750, "lineside:lineside".into()));
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/lineside.service").exists(),
        "the unit is not enabled"
    );
    let verify = run(Command::new("dpkg").args(["--verify", "lineside"]));
    assert!(
        verify.status.success() && verify.stdout.is_empty(),
        "dpkg --verify: {}",
        text(&verify)
    );

    // The installed unit: valid (the binary and the man pages it names exist), and as hardened as the
    // README says (`systemd-analyze security` rates 1.5 OK).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
        assert!(
            verify.status.success() && !text(&verify).contains("lineside"),
            "systemd-analyze verify: {}",
            text(&verify)
        );
        let security =
            run(Command::new("systemd-analyze").args(["security", "--offline=true", UNIT]));
        let rating = text(&security);
        let exposure: f64 = rating
            .lines()
            .find_map(|l| {
                l.split("Overall exposure level for lineside.service: ")
                    .nth(1)
            })
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("systemd-analyze security:\n{rating}"));
        assert!(exposure <= 2.0, "exposure {exposure}:\n{rating}");
    } else {
        eprintln!("no systemd-analyze (systemd not installed): unit not verified");
    }

    // The manual pages, through man-db.
    for (page, says) in [
        ("lineside", "lineside-check(1)"),
        ("lineside-check", "Validate a config file"),
        ("lineside-run", "--config"),
    ] {
        let out = run(Command::new("man")
            .args(["-P", "cat", page])
            .env("MANWIDTH", "100"));
        let shown = String::from_utf8_lossy(&out.stdout).replace('\u{2010}', "-");
        assert!(out.status.success(), "man {page}: {}", text(&out));
        assert!(shown.contains(says), "man {page} lacks {says:?}:\n{shown}");
    }

    if systemd {
        // A booted systemd started it on install: that is the real thing. Stop it for the runs below.
        let active = run(Command::new("systemctl").args(["is-active", "lineside"]));
        assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "active");
        sh("systemctl stop lineside");
    }
    let unit = Unit::load(Path::new(UNIT));

    // 1. The shipped config: up and healthy for 10 s (no devices, no broker on 127.0.0.1:1883 needed).
    assert!(
        std::net::TcpListener::bind("127.0.0.1:9464").is_ok(),
        "port 9464 (the shipped config's metrics_listen) is taken on this machine"
    );
    let mut agent = Agent::start(&unit);
    agent.wait_ready();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        agent.assert_running("within 10 s of READY=1 with the shipped config");
    }
    let after_ten_seconds = Instant::now();
    let status = run(&mut unit.command(&["/usr/bin/lineside".into(), "status".into()], None));
    assert!(
        status.status.success(),
        "lineside status (as the service user):\n{}",
        text(&status)
    );
    // The watchdog is still fed (every WatchdogSec/2) while the store is healthy, broker or not: a ping
    // after those 10 s, within one WatchdogSec.
    let watchdog = unit.watchdog().expect("WatchdogSec");
    assert!(
        agent
            .notify
            .wait_for("WATCHDOG=1", after_ten_seconds, watchdog),
        "no WATCHDOG=1 within WatchdogSec after the first 10 s; notifications: {:?}",
        agent.notify.all()
    );
    agent.assert_running("after a watchdog ping");
    agent.stop();

    // 2. Edited: a simulated gauge and a broker on this machine; readings arrive upstream.
    let port = common::rumqttd().await;
    let sub = common::Subscriber::start(port, "lineside/pkg-test", false).await;
    let edited = format!(
        "[agent]\nid = \"pkg-test\"\nstate_dir = \"{STATE}\"\nmetrics_listen = \"127.0.0.1:9464\"\n\n\
         [store]\nflush_interval = \"20ms\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\n\
         [[device]]\nname = \"gauge\"\ndriver = \"sim\"\ninterval = \"100ms\"\n\
         [[device.tag]]\nname = \"bore\"\nunit = \"mm\"\nmean = 74.0\nsigma = 0.005\n"
    );
    std::fs::write(CONFIG, &edited).unwrap();
    let mut agent = Agent::start(&unit);
    agent.wait_ready();
    let delivered = common::wait_for(Duration::from_secs(30), || {
        sub.seen.lock().unwrap().readings.len() >= 20
    })
    .await;
    assert!(
        delivered,
        "{} readings arrived in 30 s ({} messages)",
        sub.seen.lock().unwrap().readings.len(),
        sub.messages.load(Relaxed)
    );
    assert!(
        sub.seen
            .lock()
            .unwrap()
            .readings
            .values()
            .all(|(d, t)| d == "gauge" && t == "bore")
    );
    agent.assert_running("while delivering");
    agent.stop();

    // 3. A password file the service user cannot read (root-only 0600) is caught by ExecStartPre, which
    //    runs `lineside check` as that user; 0640 root:lineside passes.
    std::fs::write(PASSWORD, "secret\n").unwrap();
    sh(&format!(
        "chown root:root {PASSWORD}; chmod 0600 {PASSWORD}"
    ));
    let with_password = edited.replace(
        "reconnect_min",
        &format!("username = \"pkg-test\"\npassword_file = \"{PASSWORD}\"\nreconnect_min"),
    );
    std::fs::write(CONFIG, &with_password).unwrap();
    let pre = &unit.exec("ExecStartPre")[0];
    let out = run(&mut unit.command(pre, None));
    assert!(
        !out.status.success(),
        "ExecStartPre passed with a password file the service user cannot read:\n{}",
        text(&out)
    );
    assert!(text(&out).contains(PASSWORD), "{}", text(&out));
    sh(&format!("chgrp lineside {PASSWORD}; chmod 0640 {PASSWORD}"));
    let out = run(&mut unit.command(pre, None));
    assert!(
        out.status.success(),
        "ExecStartPre with the password file 0640 root:lineside:\n{}",
        text(&out)
    );

    // 4. Upgrade (the same package again): the edited config stays without a question, and the
    //    postinst, which checks the kept config as the service user, has nothing to warn about.
    let out = run(&mut dpkg_install(deb));
    let said = text(&out);
    assert!(out.status.success(), "dpkg -i again:\n{said}");
    assert!(!said.contains("warning"), "{said}");
    assert!(
        !said.contains("lineside is installed"),
        "not a first install:\n{said}"
    );
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), with_password);

    // 5. Remove: the binary goes, the edited config and the state stay.
    let out = run(Command::new("dpkg").args(["-r", "lineside"]));
    assert!(out.status.success(), "dpkg -r:\n{}", text(&out));
    assert!(!Path::new("/usr/bin/lineside").exists());
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), with_password);
    assert!(Path::new(STATE).join("lineside.db").exists());

    // 6. Purge: the config, the state and the enablement go; the admin's password file stays.
    let out = run(Command::new("dpkg").args(["-P", "lineside"]));
    assert!(out.status.success(), "dpkg -P:\n{}", text(&out));
    assert!(!Path::new(CONFIG).exists(), "purge left {CONFIG}");
    assert!(!Path::new(STATE).exists(), "purge left {STATE}");
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/lineside.service").exists());
    assert!(Path::new(PASSWORD).exists());
    let status =
        run(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Status}", "lineside"]));
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.is_empty() || status == "not-installed", "{status}");
}
