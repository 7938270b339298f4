//! The cases of the end-to-end bench. Each run starts its own mosquitto, its own subscriber and the
//! agent from a build's binary on a fresh state dir; figures are taken over a window after a warm-up.

use std::path::Path;
use std::time::{Duration, Instant};

use super::agent::{Agent, Build};
use super::broker::Mosquitto;
use super::config::{self, AGENT_ID, Json};
use super::subscriber::{self, Latency, Subscriber};
use crate::support::{cpu_seconds, free_port};

/// A build and the data format it runs with.
#[derive(Clone, Debug)]
pub struct Variant {
    pub build: Build,
    pub json: Json,
}

impl Variant {
    pub fn label(&self) -> String {
        match self.json {
            Json::Default if self.build.current => format!("{} (default JSON)", self.build.label),
            Json::Default => self.build.label.clone(),
            Json::Compact => format!("{} (compact JSON)", self.build.label),
        }
    }
}

/// Settings every case shares.
pub struct Settings {
    pub seconds: u64,
    pub warmup: u64,
    pub sync: String,
}

/// What one measured run found.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub label: String,
    pub offered: f64,
    /// Readings committed per second over the window (the store's max seq).
    pub committed: f64,
    pub delivered: f64,
    /// Committed up to the window's end and not delivered when the run ended.
    pub missing: u64,
    pub duplicates: u64,
    pub latency: Latency,
    pub agent_cpu_ms_per_1k: f64,
    pub agent_cpu_pct: f64,
    pub agent_peak_rss_kib: u64,
    pub sub_cpu_pct: f64,
    pub wire_bytes_per_reading: f64,
    pub readings_per_message: f64,
    pub disk_bytes_per_reading: f64,
    pub load: String,
    pub window: f64,
}

impl Run {
    /// Held: everything delivered, at the offered rate, with p99 < 250 ms.
    pub fn held(&self) -> bool {
        self.missing == 0 && self.latency.p99 < 250.0 && self.delivered >= 0.97 * self.offered
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The highest seq the store has committed (0 before the first).
pub fn committed_seq(db: &Path) -> u64 {
    // Read-only: a read-write connection closing last (after the agent stopped) would checkpoint the WAL.
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, flags) else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    conn.query_row("SELECT coalesce(max(seq), 0) FROM readings", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap_or(0) as u64
}

fn disk_bytes(db: &Path) -> u64 {
    let size = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    };
    size("") + size("-wal")
}

/// A prepared run: state dir, broker, subscriber, config checked by the build.
pub struct Rig {
    pub state: tempfile::TempDir,
    pub broker: Mosquitto,
    pub sub: Subscriber,
    pub config: std::path::PathBuf,
    pub db: std::path::PathBuf,
}

impl Rig {
    /// `devices` appends the `[[device]]` tables for a config whose header is given.
    pub async fn new(
        v: &Variant,
        s: &Settings,
        sample_every: u64,
        devices: impl FnOnce(&mut String),
    ) -> Rig {
        let state = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(free_port());
        let mut text = config::header(state.path(), broker.port(), &s.sync, v.json);
        devices(&mut text);
        let config = state.path().join("lineside.toml");
        std::fs::write(&config, text).unwrap();
        v.build.check(&config).unwrap_or_else(|e| panic!("{e}"));
        let sub = subscriber::start(broker.port(), AGENT_ID, sample_every).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let db = state.path().join("lineside.db");
        Rig {
            state,
            broker,
            sub,
            config,
            db,
        }
    }

    pub fn start_agent(&self, v: &Variant) -> Agent {
        Agent::start(&v.build, &self.config, &self.state.path().join("agent.log"))
    }

    /// Waits until the first data arrives (the agent connected and publishes).
    pub async fn wait_first_data(&self, agent: &mut Agent) {
        let t = Instant::now();
        while self.sub.counters().unique == 0 {
            agent.assert_running();
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no data arrived within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every seq up to `last` arrived, at most `limit`.
    pub async fn wait_prefix(&self, last: u64, limit: Duration) {
        let t = Instant::now();
        while self.sub.counters().prefix <= last && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One steady-load run: warm-up, then a window of `s.seconds`, then up to `drain_limit` for everything
/// committed in the window to arrive.
pub async fn steady(
    v: &Variant,
    s: &Settings,
    offered: f64,
    devices: impl FnOnce(&mut String),
) -> Run {
    let sample_every = ((offered / 5_000.0) as u64).max(1);
    let rig = Rig::new(v, s, sample_every, devices).await;
    let load = load_average();
    let mut agent = rig.start_agent(v);
    rig.wait_first_data(&mut agent).await;
    tokio::time::sleep(Duration::from_secs(s.warmup)).await;

    let (c0, a0, me0, seq0, t0, us0) = (
        rig.sub.counters(),
        agent.cpu_seconds(),
        cpu_seconds(),
        committed_seq(&rig.db),
        Instant::now(),
        chrono::Utc::now().timestamp_micros(),
    );
    for _ in 0..s.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        agent.assert_running();
    }
    let (c1, a1, me1, seq1, window, us1) = (
        rig.sub.counters(),
        agent.cpu_seconds(),
        cpu_seconds(),
        committed_seq(&rig.db),
        t0.elapsed().as_secs_f64(),
        chrono::Utc::now().timestamp_micros(),
    );
    let peak = agent.status_kib("VmHWM:");
    rig.wait_prefix(seq1, Duration::from_secs(30)).await;
    agent.stop();
    let disk = disk_bytes(&rig.db);
    let stored = committed_seq(&rig.db);
    let st = rig.sub.stats.lock().unwrap();
    let delivered = (c1.unique - c0.unique) as f64;
    Run {
        label: v.label(),
        offered,
        committed: (seq1 - seq0) as f64 / window,
        delivered: delivered / window,
        missing: st.missing_up_to(seq1),
        duplicates: st.duplicates,
        latency: st.latency_ms(us0, us1),
        agent_cpu_ms_per_1k: (a1 - a0) * 1000.0 / (delivered / 1000.0).max(1e-9),
        agent_cpu_pct: 100.0 * (a1 - a0) / window,
        agent_peak_rss_kib: peak,
        sub_cpu_pct: 100.0 * (me1 - me0) / window,
        wire_bytes_per_reading: (c1.payload_bytes - c0.payload_bytes) as f64
            / ((c1.readings - c0.readings) as f64).max(1.0),
        readings_per_message: (c1.readings - c0.readings) as f64
            / ((c1.messages - c0.messages) as f64).max(1.0),
        disk_bytes_per_reading: disk as f64 / (stored as f64).max(1.0),
        load,
        window,
    }
}

/// The Modbus workload: `devices` units × `registers` registers every `interval` from one pymodbus
/// server, for each variant in turn (each with its own mosquitto).
pub async fn modbus(
    variants: &[Variant],
    s: &Settings,
    devices: usize,
    registers: usize,
    interval: &str,
) -> Vec<Run> {
    let server = ModbusServer::start(devices, registers);
    let period = lineside_drivers::config::parse_duration(interval)
        .unwrap()
        .as_secs_f64();
    let offered = (devices * registers) as f64 / period;
    let mut runs = Vec::new();
    for v in variants {
        let port = server.port;
        runs.push(
            steady(v, s, offered, |t| {
                config::modbus_devices(t, port, devices, registers, interval)
            })
            .await,
        );
        print_progress(runs.last().unwrap());
    }
    runs
}

pub fn print_progress(r: &Run) {
    println!(
        "  .. {}: offered {:.0}/s delivered {:.0}/s over {:.1} s, missing {}, p99 {:.1} ms ({} samples), agent CPU {:.2} ms/1k (load {})",
        r.label,
        r.offered,
        r.delivered,
        r.window,
        r.missing,
        r.latency.p99,
        r.latency.samples,
        r.agent_cpu_ms_per_1k,
        r.load
    );
}

/// The pymodbus server of the Modbus workload (benches/support/modbus_load_server.py).
struct ModbusServer {
    child: std::process::Child,
    port: u16,
}

impl ModbusServer {
    fn start(units: usize, registers: usize) -> ModbusServer {
        use std::io::BufRead;
        let python = std::env::var("LINESIDE_PYTHON").unwrap_or_else(|_| {
            let venv = format!(
                "{}/.cache/lineside-venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            );
            if Path::new(&venv).exists() {
                venv
            } else {
                "python3".into()
            }
        });
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/modbus_load_server.py");
        let mut child = std::process::Command::new(&python)
            .arg(&script)
            .arg(units.to_string())
            .arg(registers.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e} (pymodbus: see scripts/test)"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pymodbus server said {line:?}"));
        ModbusServer { child, port }
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the drain case found.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    pub label: String,
    pub rate: f64,
    pub outage: f64,
    /// Readings committed and not yet delivered when the broker came back.
    pub backlog: u64,
    /// False when the backlog was not gone within the time limit (the drain figures are then empty).
    pub drained: bool,
    /// Whether any message arrived after the restart.
    pub first_message: bool,
    /// Broker restart → first message.
    pub reconnect: f64,
    /// First message → zero backlog.
    pub drain_time: f64,
    /// Broker restart → zero backlog (reconnect included).
    pub total_time: f64,
    /// Readings delivered (in order) per second while draining, fresh ingest included.
    pub delivered_rate: f64,
    /// The backlog at the restart divided by the drain time.
    pub backlog_rate: f64,
    pub agent_cpu_pct: f64,
    pub missing: u64,
    pub duplicates: u64,
    pub agent_peak_rss_kib: u64,
    pub load: String,
}

/// Backlog drain: `rate` readings/s (10 sim devices every 10 ms), the broker stopped for `outage` and
/// restarted on the same port; then the time until everything committed more than 100 ms earlier has
/// arrived, while ingest continues.
/// Gives up (`drained` false) when the backlog is not gone `limit` after the restart.
pub async fn drain(
    v: &Variant,
    s: &Settings,
    rate: f64,
    outage: Duration,
    limit: Duration,
) -> Drain {
    let tags = ((rate / 1000.0).round() as usize).max(1);
    let mut rig = Rig::new(v, s, 1_000, |t| config::sim_devices(t, 10, tags, "10ms")).await;
    let load = load_average();
    let mut agent = rig.start_agent(v);
    rig.wait_first_data(&mut agent).await;
    tokio::time::sleep(Duration::from_secs(s.warmup)).await;

    rig.broker.stop();
    tokio::time::sleep(outage).await;
    agent.assert_running();
    let at_restart = rig.sub.counters();
    let committed_at_restart = committed_seq(&rig.db);
    let backlog = committed_at_restart.saturating_sub(at_restart.prefix - 1);
    rig.broker.restart();
    let t_restart = Instant::now();
    let cpu0 = agent.cpu_seconds();
    // (time, committed seq) history, to compare the prefix against what was committed 100 ms ago.
    let mut history: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let (mut t_first, mut prefix_first) = (None, 0);
    let (t_done, drained) = loop {
        let now = Instant::now();
        let c = rig.sub.counters();
        if t_first.is_none() && c.unique > at_restart.unique {
            t_first = Some(now);
            prefix_first = at_restart.prefix;
        }
        history.push_back((now, committed_seq(&rig.db)));
        while history.len() > 1 && now.duration_since(history[1].0) >= Duration::from_millis(100) {
            history.pop_front();
        }
        let target = history.front().map(|h| h.1).unwrap_or(0);
        if t_first.is_some()
            && now.duration_since(history[0].0) >= Duration::from_millis(100)
            && c.prefix > target
        {
            break (now, true);
        }
        if t_restart.elapsed() > limit {
            break (now, false);
        }
        agent.assert_running();
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let first_message = t_first.is_some();
    let t_first = t_first.unwrap_or(t_restart);
    let drain_time = t_done.duration_since(t_first).as_secs_f64();
    let prefix_done = rig.sub.counters().prefix;
    let cpu = agent.cpu_seconds() - cpu0;
    let peak = agent.status_kib("VmHWM:");
    let last = committed_seq(&rig.db);
    rig.wait_prefix(last, Duration::from_secs(if drained { 30 } else { 5 }))
        .await;
    agent.stop();
    let st = rig.sub.stats.lock().unwrap();
    Drain {
        label: v.label(),
        drained,
        first_message,
        rate,
        outage: outage.as_secs_f64(),
        backlog,
        reconnect: t_first.duration_since(t_restart).as_secs_f64(),
        drain_time,
        total_time: t_done.duration_since(t_restart).as_secs_f64(),
        delivered_rate: (prefix_done - prefix_first) as f64 / drain_time.max(1e-9),
        backlog_rate: backlog as f64 / drain_time.max(1e-9),
        agent_cpu_pct: 100.0 * cpu / t_done.duration_since(t_restart).as_secs_f64(),
        missing: st.missing_up_to(last),
        duplicates: st.duplicates,
        agent_peak_rss_kib: peak,
        load,
    }
}

/// Idle memory: `tags` sim tags (10 devices) polled every 10 s, RSS after `settle`.
pub async fn idle(v: &Variant, s: &Settings, tags: usize, settle: Duration) -> (u64, u64, String) {
    let rig = Rig::new(v, s, 1, |t| config::sim_devices(t, 10, tags / 10, "10s")).await;
    let load = load_average();
    let mut agent = rig.start_agent(v);
    rig.wait_first_data(&mut agent).await;
    tokio::time::sleep(settle).await;
    agent.assert_running();
    let (rss, peak) = (agent.status_kib("VmRSS:"), agent.status_kib("VmHWM:"));
    agent.stop();
    (rss, peak, load)
}
