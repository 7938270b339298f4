//! mosquitto on a fixed loopback port, restartable on the same port (the drain case stops it for a
//! minute). Persistence keeps the subscriber's session and its queue across a clean restart, so no
//! message published while the subscriber reconnects is lost to the measurement.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    bin: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn mosquitto_bin() -> String {
    std::env::var("LINESIDE_MOSQUITTO")
        .ok()
        .or_else(|| {
            ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|s| s.to_string())
        })
        .expect("mosquitto not found: install it (scripts/test does) or set LINESIDE_MOSQUITTO")
}

impl Mosquitto {
    pub fn start(port: u16) -> Mosquitto {
        let mut m = Mosquitto {
            bin: mosquitto_bin(),
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        m.restart();
        m
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn conf(&self) -> PathBuf {
        let conf = self.dir.path().join("m.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n\
                 persistence true\npersistence_location {}/\nautosave_interval 0\n",
                self.port,
                self.dir.path().display()
            ),
        )
        .unwrap();
        conf
    }

    /// Starts mosquitto (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.conf())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "mosquitto did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (mosquitto saves its sessions), then wait until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
