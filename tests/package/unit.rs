//! A systemd service unit run the way systemd runs it, without systemd (CI has no systemd as PID 1): its
//! Exec lines, as its User/Group/SupplementaryGroups, with its UMask, WorkingDirectory, capability
//! bounding set and no-new-privileges, in the environment systemd gives a service (a clean one: PATH,
//! HOME, USER, LOGNAME, SHELL, INVOCATION_ID, STATE_DIRECTORY, CONFIGURATION_DIRECTORY, Environment=, and
//! for the main process of a Type=notify unit NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID). The
//! namespace sandboxing (ProtectSystem=, PrivateTmp=, the syscall filter) is not reproduced. One thing
//! systemd does not do: the service gets SIGKILL when the test process dies, so none is left running.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Unit {
    /// (key, value) of the [Service] section, in file order.
    service: Vec<(String, String)>,
}

impl Unit {
    pub fn load(path: &Path) -> Unit {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut section = String::new();
        let mut service = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "continuation lines are not handled: {line}"
            );
            if section == "[Service]"
                && let Some((k, v)) = line.split_once('=')
            {
                service.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Unit { service }
    }

    /// The last value of `key` (systemd's rule for single-valued settings).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.service
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The command lines of `key` (ExecStartPre, ExecStart), split into words.
    pub fn exec(&self, key: &str) -> Vec<Vec<String>> {
        self.all(key)
            .into_iter()
            .map(|line| {
                assert!(
                    !line.starts_with(['-', '@', '+', '!', ':'])
                        && !line.contains(['"', '\'', '$']),
                    "{key}={line}: prefixes, quoting and variables are not handled here"
                );
                line.split_whitespace().map(str::to_string).collect()
            })
            .collect()
    }

    pub fn user(&self) -> &str {
        self.get("User").expect("the unit names no User=")
    }

    fn seconds(&self, key: &str) -> Option<u64> {
        self.get(key).map(|v| {
            v.trim_end_matches('s')
                .parse()
                .unwrap_or_else(|_| panic!("{key}={v}: only plain seconds are handled"))
        })
    }

    pub fn watchdog(&self) -> Option<Duration> {
        self.seconds("WatchdogSec").map(Duration::from_secs)
    }

    pub fn timeout_stop(&self) -> Duration {
        Duration::from_secs(self.seconds("TimeoutStopSec").unwrap_or(90))
    }

    /// `argv` as the unit would run it. `notify`: the main process of a Type=notify unit.
    pub fn command(&self, argv: &[String], notify: Option<&Notify>) -> Command {
        let user = self.user();
        let passwd = getent("passwd", user);
        let fields: Vec<&str> = passwd.split(':').collect();
        let (home, shell) = (fields[5], fields[6]);
        let group = self.get("Group").unwrap_or(user);

        let mut setpriv = vec![
            "setpriv".to_string(),
            format!("--reuid={user}"),
            format!("--regid={group}"),
        ];
        let groups: Vec<&str> = self
            .all("SupplementaryGroups")
            .into_iter()
            .flat_map(str::split_whitespace)
            .collect();
        if groups.is_empty() {
            setpriv.push("--clear-groups".into());
        } else {
            setpriv.push(format!("--groups={}", groups.join(",")));
        }
        if self.get("NoNewPrivileges") == Some("yes") {
            setpriv.push("--no-new-privs".into());
        }
        if self.get("CapabilityBoundingSet") == Some("") {
            setpriv.push("--bounding-set=-all".into());
        }
        setpriv.push("--inh-caps=-all".into());
        // Not systemd's: a service the test started dies with the test process, however that ends.
        setpriv.push("--pdeathsig=SIGKILL".into());
        setpriv.push("--".into());
        setpriv.extend(argv.iter().cloned());

        // sh sets the umask and WATCHDOG_PID (the pid that execs into the service), then execs setpriv,
        // which execs the command: the pid stays the service's main pid.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"umask "$1"; if [ -n "${WATCHDOG_USEC:-}" ]; then WATCHDOG_PID=$$; export WATCHDOG_PID; fi; shift; exec "$@""#)
            .arg("sh")
            .arg(self.get("UMask").unwrap_or("0022"))
            .args(&setpriv);
        cmd.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
            .env("HOME", home)
            .env("USER", user)
            .env("LOGNAME", user)
            .env("SHELL", shell)
            .env("INVOCATION_ID", format!("{:032x}", fastrand::u128(..)));
        if let Some(dir) = self.get("StateDirectory") {
            cmd.env("STATE_DIRECTORY", format!("/var/lib/{dir}"));
        }
        if let Some(dir) = self.get("ConfigurationDirectory") {
            cmd.env("CONFIGURATION_DIRECTORY", format!("/etc/{dir}"));
        }
        for assignment in self.all("Environment") {
            for pair in assignment.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("Environment=KEY=VALUE");
                cmd.env(k, v);
            }
        }
        if let Some(notify) = notify {
            cmd.env("NOTIFY_SOCKET", &notify.path);
            if let Some(w) = self.watchdog() {
                cmd.env("WATCHDOG_USEC", w.as_micros().to_string());
            }
        }
        cmd.current_dir(self.get("WorkingDirectory").unwrap_or("/"));
        cmd
    }
}

/// `getent DATABASE KEY`, the line.
pub fn getent(database: &str, key: &str) -> String {
    let out = Command::new("getent")
        .arg(database)
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "getent {database} {key}: not found");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The service manager's end of NOTIFY_SOCKET: collects what the service says (READY=1, WATCHDOG=1, ...).
pub struct Notify {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    /// A datagram socket the service user can write to.
    pub fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        mode(&path, 0o777);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        Notify {
            _dir: dir,
            path,
            messages,
        }
    }

    /// Whether a message containing `line` (e.g. "READY=1") arrived after `since`, waiting up to `timeout`.
    pub fn wait_for(&self, line: &str, since: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .messages
                .lock()
                .unwrap()
                .iter()
                .any(|(at, m)| *at >= since && m.lines().any(|l| l == line))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
}
