//! Helpers for the end-to-end tests: real brokers (in-process rumqttd, external mosquitto), a subscriber
//! that checks sequence numbers, a TCP proxy that can cut the network, and config builders.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::{TcpListener, TcpStream};

mod identities;
#[allow(unused_imports)]
pub use identities::{Identities, subscribe_identities};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An in-process rumqttd on a fresh port (it cannot be stopped; each test gets its own).
pub async fn rumqttd() -> u16 {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    lineside::broker::start(addr).unwrap();
    lineside::broker::wait_ready(addr).await.unwrap();
    port
}

/// A mosquitto process on a fresh port with persistence (so persistent sessions survive a restart).
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

pub fn mosquitto_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LINESIDE_MOSQUITTO") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl Mosquitto {
    pub async fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
        };
        m.restart().await;
        m
    }

    /// Starts mosquitto with a config written by `config(dir, port)`.
    pub async fn start_with(config: impl FnOnce(&Path, u16) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
        };
        std::fs::write(m.config_path(), config(m.dir.path(), m.port)).unwrap();
        m.restart().await;
        m
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the default config unless the test wrote its own.
    fn ensure_config(&self) {
        let path = self.config_path();
        if !path.exists() {
            std::fs::write(
                &path,
                format!(
                    "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\nmessage_size_limit 0\n",
                    self.port,
                    self.dir.path().display()
                ),
            )
            .unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.ensure_config();
        // Started as root, mosquitto drops to user `mosquitto`, which cannot use the test's private
        // directory (persistence, log, certificates): keep it as the current user.
        let conf = std::fs::read_to_string(self.config_path()).unwrap();
        if !conf.starts_with("user ") {
            std::fs::write(
                self.config_path(),
                format!("user {}\n{conf}", current_user()),
            )
            .unwrap();
        }
        let bin =
            mosquitto_bin().expect("mosquitto not found: run scripts/test, which installs it");
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the broker gracefully (SIGTERM, so it saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a subscriber saw of the readings stream.
#[derive(Default)]
pub struct Seen {
    /// seq → (device, tag), first arrival only.
    pub readings: BTreeMap<u64, (String, String)>,
    pub duplicates: u64,
    /// First-arrival seqs that were not greater than the tag's previous first-arrival seq.
    pub order_violations: Vec<(String, u64)>,
    last_per_tag: HashMap<String, u64>,
    pub alarms: Vec<serde_json::Value>,
    pub status: Vec<serde_json::Value>,
    pub other: Vec<(String, serde_json::Value)>,
}

impl Seen {
    /// Sequence numbers missing between 1 and `upto`: for an agent that always stopped cleanly (its
    /// seqs have no gaps). After a kill -9 the agent skips the seqs it had reserved: use
    /// [`Seen::missing`] with the seqs in the database.
    pub fn gaps(&self, upto: u64) -> Vec<u64> {
        (1..=upto)
            .filter(|s| !self.readings.contains_key(s))
            .collect()
    }

    /// The seqs of `stored` (see [`db_seqs`]) that did not arrive.
    pub fn missing(&self, stored: &[u64]) -> Vec<u64> {
        stored
            .iter()
            .copied()
            .filter(|s| !self.readings.contains_key(s))
            .collect()
    }
}

/// Every reading seq in the database up to `upto`, in order.
pub fn db_seqs(db: &Path, upto: u64) -> Vec<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT seq FROM readings WHERE seq <= ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([upto as i64], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|s| s.unwrap() as u64)
        .collect()
}

/// A subscriber to `<base>/#`. With `persistent`, its session survives broker restarts.
pub struct Subscriber {
    pub seen: Arc<Mutex<Seen>>,
    pub connected: Arc<AtomicBool>,
    pub messages: Arc<AtomicU64>,
}

impl Subscriber {
    pub async fn start(port: u16, base: &str, persistent: bool) -> Subscriber {
        let id = format!("test-sub-{}", free_port());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(!persistent);
        opts.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
        let sub = Self::spawn(opts, base);
        sub.wait_connected().await;
        sub
    }

    fn spawn(opts: MqttOptions, base: &str) -> Subscriber {
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let connected = Arc::new(AtomicBool::new(false));
        let messages = Arc::new(AtomicU64::new(0));
        let filter = format!("{base}/#");
        let (s, c, m) = (seen.clone(), connected.clone(), messages.clone());
        let base = base.to_string();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => c.store(true, Relaxed),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.fetch_add(1, Relaxed);
                        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        else {
                            continue;
                        };
                        let rel = p
                            .topic
                            .strip_prefix(&base)
                            .unwrap_or(&p.topic)
                            .trim_start_matches('/')
                            .to_string();
                        let mut seen = s.lock().unwrap();
                        if rel.starts_with("data/") {
                            for r in body["readings"].as_array().unwrap() {
                                let seq = r["seq"].as_u64().unwrap();
                                let key = (
                                    r["device"].as_str().unwrap().to_string(),
                                    r["tag"].as_str().unwrap().to_string(),
                                );
                                if seen.readings.contains_key(&seq) {
                                    seen.duplicates += 1;
                                    continue;
                                }
                                let tag = format!("{}/{}", key.0, key.1);
                                let last = seen.last_per_tag.get(&tag).copied().unwrap_or(0);
                                if seq <= last {
                                    seen.order_violations.push((tag.clone(), seq));
                                }
                                seen.last_per_tag.insert(tag, seq);
                                seen.readings.insert(seq, key);
                            }
                        } else if rel == "alarms" {
                            seen.alarms.push(body);
                        } else if rel == "status" {
                            seen.status.push(body);
                        } else {
                            seen.other.push((rel, body));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        c.store(false, Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Subscriber {
            seen,
            connected,
            messages,
        }
    }

    pub async fn wait_connected(&self) {
        wait_for(Duration::from_secs(20), || self.connected.load(Relaxed)).await;
    }

    /// Waits until every seq in 1..=upto has arrived (or the timeout passes).
    pub async fn wait_for_all(&self, upto: u64, timeout: Duration) -> bool {
        wait_for(timeout, || self.seen.lock().unwrap().gaps(upto).is_empty()).await
    }

    /// Waits until every seq of `stored` (see [`db_seqs`]) has arrived.
    pub async fn wait_for_stored(&self, stored: &[u64], timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.seen.lock().unwrap().missing(stored).is_empty()
        })
        .await
    }

    pub fn max_seq(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .readings
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy between the agent and a broker that can cut the connection like a network outage.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (u, g) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !u.load(Relaxed) {
                    drop(inbound);
                    continue;
                }
                let my_gen = g.load(Relaxed);
                let g = g.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while g.load(Relaxed) == my_gen {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
            }
        });
        Proxy {
            port,
            up,
            generation,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Relaxed);
        self.generation.fetch_add(1, Relaxed);
    }

    pub fn restore(&self) {
        self.up.store(true, Relaxed);
    }
}

/// A config for a fast simulated line: `devices` devices × `tags` tags at `interval`.
pub fn sim_config(
    state_dir: &Path,
    broker_port: u16,
    devices: usize,
    tags: usize,
    interval: &str,
    extra_store: &str,
) -> String {
    let mut text = format!(
        "[agent]\nid = \"test-gw\"\nstate_dir = {:?}\n\n[store]\nflush_interval = \"20ms\"\nmaintenance_interval = \"200ms\"\n{extra_store}\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\nkeep_alive = \"5s\"\n\
         max_readings_per_message = 200\n",
        state_dir.display().to_string()
    );
    for d in 0..devices {
        text.push_str(&format!("\n[[device]]\nname = \"dev{d}\"\ndriver = \"sim\"\ninterval = \"{interval}\"\nseed = {d}\n"));
        for t in 0..tags {
            text.push_str(&format!(
                "[[device.tag]]\nname = \"t{t}\"\nunit = \"mm\"\nmean = 10.0\nsigma = 0.1\n"
            ));
        }
    }
    text
}

pub fn load(text: &str, dir: &Path) -> lineside::config::Config {
    let path = dir.join("lineside.toml");
    std::fs::write(&path, text).unwrap();
    match lineside::config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}"),
    }
}

/// Runs the agent in-process until the returned token is cancelled.
pub fn spawn_agent(
    cfg: lineside::config::Config,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(lineside::agent::run(cfg, stop.clone()));
    (stop, task)
}

/// Highest committed reading seq in a database (opened read-only).
pub fn db_max_seq(db: &Path) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT ifnull(max(seq), 0) FROM readings", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

/// Highest committed reading seq; 0 while the database or its schema does not exist (yet, or any more:
/// the schema was in a lost WAL).
pub fn db_max_seq_or_zero(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row("SELECT ifnull(max(seq), 0) FROM readings", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map_or(0, |s| s as u64)
}

/// The persisted forwarding cursor of the readings stream.
pub fn db_cursor(db: &Path) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT ifnull(max(value), 0) FROM meta WHERE key = 'cursor_readings'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
