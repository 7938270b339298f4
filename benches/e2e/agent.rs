//! The agent under test, run from a release binary as a child process, so its CPU time and peak RSS are
//! its own (from /proc/<pid>) and two builds (this tree's and 0.1.0's) run the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{cpu_seconds_of, proc_status_of};

/// A build of lineside to measure: a label for the tables and the binary.
#[derive(Clone, Debug)]
pub struct Build {
    pub label: String,
    pub bin: PathBuf,
    /// This tree (knows `mqtt.json`); false for the baseline (0.1.0).
    pub current: bool,
}

impl Build {
    /// `lineside check CONFIG` with this build: the config must be one it accepts.
    pub fn check(&self, config: &Path) -> Result<(), String> {
        let out = Command::new(&self.bin)
            .arg("check")
            .arg(config)
            .output()
            .map_err(|e| format!("{}: {e}", self.bin.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} check {}: {}{}",
                self.label,
                config.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A running agent (`lineside run --config FILE`), stopped with SIGTERM when dropped.
pub struct Agent {
    child: Child,
    pid: String,
    log: PathBuf,
}

impl Agent {
    pub fn start(build: &Build, config: &Path, log: &Path) -> Agent {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(&build.bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", build.bin.display()));
        let pid = child.id().to_string();
        Agent {
            child,
            pid,
            log: log.to_path_buf(),
        }
    }

    /// utime + stime of the agent so far, all threads, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.pid)
    }

    /// A kB figure of the agent's /proc status: `VmHWM:` (peak RSS), `VmRSS:`.
    pub fn status_kib(&self, key: &str) -> u64 {
        proc_status_of(&self.pid, key)
    }

    /// Panics with the agent's log when it has exited (a bench figure of a dead agent is no figure).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the agent exited ({status}) during the run; its log:\n{log}");
        }
    }

    /// SIGTERM, then up to 20 s for a clean stop, then SIGKILL.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
