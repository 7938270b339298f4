//! Config reload: the device set and the characteristics change under load with a broker watching, an
//! invalid config is rejected while the old one keeps running, conf.d files merge (and their errors name
//! their own file and line), and MQTT changes restart the forwarder without a gap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use lineside::agent::{AgentControl, ReloadError, ReloadHandle};
use tokio_util::sync::CancellationToken;

const BASE: &str = "lineside/test-gw";
const LONG: Duration = Duration::from_secs(30);

/// A sim device at 5 ms with the given tags (all gauges around `mean`).
fn device(name: &str, tags: &[&str], mean: f64) -> String {
    let mut text = format!(
        "\n[[device]]\nname = \"{name}\"\ndriver = \"sim\"\ninterval = \"5ms\"\nseed = {}\n",
        name.len()
    );
    for t in tags {
        text.push_str(&format!(
            "[[device.tag]]\nname = \"{t}\"\nunit = \"mm\"\nmean = {mean:.1}\nsigma = 0.1\n"
        ));
    }
    text
}

/// The sections of `common::sim_config` without its devices, plus `extra_agent` keys.
fn sections(dir: &Path, port: u16, extra_agent: &str) -> String {
    sim_config(dir, port, 0, 0, "5ms", "").replacen(
        "\n\n[store]",
        &format!("\n{extra_agent}\n\n[store]"),
        1,
    )
}

/// Replaces a file at once, so the agent never reads half of it.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// seq → (device, tag) of every committed reading (read-only; the agent may be running).
fn db_rows(db: &Path) -> BTreeMap<u64, (String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT r.seq, t.device, t.tag FROM readings r JOIN tags t ON t.id = r.tag_id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, (r.get(1)?, r.get(2)?)))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// Lowest and highest seq of a device's (optionally one tag's) readings as the subscriber saw them.
fn seq_range(sub: &Subscriber, dev: &str, tag: Option<&str>) -> Option<(u64, u64)> {
    let seen = sub.seen.lock().unwrap();
    let mut it = seen
        .readings
        .iter()
        .filter(|(_, (d, t))| d == dev && tag.is_none_or(|x| x == t))
        .map(|(s, _)| *s);
    let first = it.next()?;
    Some((first, it.next_back().unwrap_or(first)))
}

fn sees(sub: &Subscriber, dev: &str, tag: &str) -> bool {
    sub.seen
        .lock()
        .unwrap()
        .readings
        .values()
        .any(|(d, t)| d == dev && t == tag)
}

/// Every committed reading arrived, in order per tag, with the (device, tag) the store gave its seq.
fn assert_delivered(sub: &Subscriber, db: &Path) {
    let rows = db_rows(db);
    let seen = sub.seen.lock().unwrap();
    let upto = rows.keys().next_back().copied().unwrap_or(0);
    let gaps = seen.gaps(upto);
    assert!(
        gaps.is_empty(),
        "{} of {upto} readings missing, first {:?}",
        gaps.len(),
        &gaps[..gaps.len().min(10)]
    );
    assert_eq!(rows.len() as u64, upto, "the store's seqs are contiguous");
    assert_eq!(
        seen.readings.len() as u64,
        upto,
        "de-duplicated count = committed"
    );
    assert!(
        seen.order_violations.is_empty(),
        "out of order per tag: {:?}",
        &seen.order_violations[..seen.order_violations.len().min(10)]
    );
    let mismatched: Vec<u64> = rows
        .iter()
        .filter(|(seq, key)| seen.readings.get(seq) != Some(key))
        .map(|(s, _)| *s)
        .take(10)
        .collect();
    assert!(
        mismatched.is_empty(),
        "seqs delivered with another (device, tag) than stored: {mismatched:?}"
    );
}

/// GET /status from the agent's metrics port.
fn http_status(addr: &str) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

fn device_names(status: &serde_json::Value) -> Vec<String> {
    status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

/// The lineside binary running a config, its log in a file.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path, log: PathBuf) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_lineside"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str, after: usize) -> bool {
        wait_for(LONG, || self.log().matches(needle).count() > after).await
    }

    /// SIGTERM and wait for a clean exit.
    async fn stop(mut self) {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}\n{}", self.log());
                return;
            }
            assert!(std::time::Instant::now() < deadline, "agent did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (1) The real binary under load: SIGHUP adds a device, removes one and changes one while readings
/// flow; the broker sees every reading once, no gap. Then an invalid config: every error is logged with
/// file:line:key and the running devices keep producing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_the_device_set_under_load_without_a_gap_or_a_duplicate() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let head = sections(dir.path(), port, &format!("metrics_listen = \"{metrics}\""));
    let config = dir.path().join("lineside.toml");
    let db = dir.path().join("lineside.db");
    write_atomic(
        &config,
        &format!(
            "{head}{}{}{}",
            device("dev0", &["t0", "t1"], 10.0),
            device("dev1", &["t0", "t1"], 10.0),
            device("dev2", &["t0", "t1"], 10.0)
        ),
    );
    let agent = Agent::start(&config, dir.path().join("agent.log"));
    assert!(
        wait_for(LONG, || sees(&sub, "dev2", "t1") && sub.max_seq() > 3000).await,
        "data flows before the reload\n{}",
        agent.log()
    );

    // dev0 unchanged, dev1 removed, dev2 changed (other tags and mean), dev3 added.
    write_atomic(
        &config,
        &format!(
            "{head}{}{}{}",
            device("dev0", &["t0", "t1"], 10.0),
            device("dev2", &["u0", "u1"], 50.0),
            device("dev3", &["t0"], 10.0)
        ),
    );
    agent.signal("HUP");
    assert!(
        agent.wait_log("config reloaded", 0).await,
        "reload applied\n{}",
        agent.log()
    );
    assert!(
        wait_for(LONG, || sees(&sub, "dev3", "t0")
            && sees(&sub, "dev2", "u1"))
        .await,
        "the added and the changed device produce\n{}",
        agent.log()
    );
    let reloaded_at = sub.max_seq();
    assert!(
        wait_for(LONG, || sub.max_seq() > reloaded_at + 2000).await,
        "data flows after the reload"
    );
    let status = http_status(&metrics);
    assert_eq!(device_names(&status), ["dev0", "dev2", "dev3"], "{status}");

    // An invalid config: rejected with every error, the running devices go on.
    let broken = format!(
        "{head}{}{}",
        device("dev0", &["t0"], 10.0).replace("interval = \"5ms\"", "interval = \"soon\""),
        device("dev4", &["t0"], 10.0).replace("mean =", "maen =")
    );
    write_atomic(&config, &broken);
    let before = sub.max_seq();
    agent.signal("HUP");
    assert!(
        agent.wait_log("config reload rejected", 0).await,
        "{}",
        agent.log()
    );
    let log = agent.log();
    let file = config.display().to_string();
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for expected in [
        format!(
            "{file}:{}:1: device[0].interval: invalid duration",
            line_of("\"soon\"")
        ),
        format!(
            "{file}:{}:1: device[1].tag[0].maen: unknown field",
            line_of("maen")
        ),
    ] {
        assert!(log.contains(&expected), "{expected:?} not logged:\n{log}");
    }
    assert!(
        wait_for(LONG, || sub.max_seq() > before + 1000).await,
        "the running config keeps producing"
    );
    let (_, dev3_last) = seq_range(&sub, "dev3", None).unwrap();
    assert!(
        dev3_last > before,
        "dev3 still runs after the rejected reload"
    );
    agent.stop().await;

    assert!(
        sub.wait_for_all(db_max_seq(&db), LONG).await,
        "everything committed arrives"
    );
    assert_delivered(&sub, &db);
    let seen = sub.seen.lock().unwrap();
    assert_eq!(
        seen.duplicates, 0,
        "the forwarder never restarted: nothing twice"
    );
    drop(seen);
    // The removed device stopped before its successors started; the changed one restarted once.
    let (_, dev1_last) = seq_range(&sub, "dev1", None).unwrap();
    let (dev3_first, _) = seq_range(&sub, "dev3", None).unwrap();
    let (_, old_dev2_last) = seq_range(&sub, "dev2", Some("t0")).unwrap();
    let (new_dev2_first, _) = seq_range(&sub, "dev2", Some("u0")).unwrap();
    assert!(dev1_last < dev3_first, "{dev1_last} < {dev3_first}");
    assert!(old_dev2_last < new_dev2_first);
    let (_, dev0_last) = seq_range(&sub, "dev0", None).unwrap();
    assert!(dev0_last > dev3_first, "the unchanged device went on");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    let starts = |d: &str| {
        log.lines()
            .filter(|l| l.contains("starting device") && l.contains(&format!("device={d} ")))
            .count()
    };
    assert_eq!(
        (
            starts("dev0"),
            starts("dev1"),
            starts("dev2"),
            starts("dev3")
        ),
        (1, 1, 2, 1),
        "{log}"
    );
}

/// An agent in this process with reloads from `config`.
fn spawn_reloadable(
    config: &Path,
) -> (
    CancellationToken,
    ReloadHandle,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let cfg = match lineside::config::load(config) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}"),
    };
    let stop = CancellationToken::new();
    let (control, reload) = AgentControl::with_reload(stop.clone(), config);
    let task = tokio::spawn(lineside::agent::run(cfg, control));
    (stop, reload, task)
}

async fn stop_agent(stop: CancellationToken, task: tokio::task::JoinHandle<anyhow::Result<()>>) {
    stop.cancel();
    tokio::time::timeout(LONG, task)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

/// (2) An invalid config on reload: every error comes back (and is logged), nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_old_devices_keep_producing() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lineside.toml");
    let head = sections(dir.path(), port, "");
    let good = format!("{head}{}", device("dev0", &["t0"], 10.0));
    write_atomic(&config, &good);
    let (stop, reload, task) = spawn_reloadable(&config);
    assert!(wait_for(LONG, || sub.max_seq() > 200).await);

    let broken = format!(
        "{}{}",
        good.replace("keep_alive = \"5s\"", "keep_alive = \"fast\""),
        device("dev1", &["t0"], 10.0).replace("driver = \"sim\"", "driver = \"smi\"")
    );
    write_atomic(&config, &broken);
    let errors = match reload.reload().await {
        Err(ReloadError::Invalid(e)) => e.0,
        other => panic!("expected a rejection, got {other:?}"),
    };
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["mqtt.keep_alive", "device[1].driver"], "{errors:?}");
    assert!(errors.iter().all(|e| e.file == config && e.line > 0));
    assert!(errors[1].message.contains("did you mean `sim`"));

    let before = sub.max_seq();
    assert!(
        wait_for(LONG, || sub.max_seq() > before + 500).await,
        "dev0 keeps producing"
    );
    assert!(!sees(&sub, "dev1", "t0"));

    // Fixed: the next reload applies.
    write_atomic(&config, &format!("{good}{}", device("dev1", &["t0"], 10.0)));
    let outcome = reload.reload().await.unwrap();
    assert_eq!(outcome.devices.added, ["dev1"]);
    assert_eq!(outcome.devices.unchanged, 1);
    assert!(wait_for(LONG, || sees(&sub, "dev1", "t0")).await);
    stop_agent(stop, task).await;
    let db = dir.path().join("lineside.db");
    assert!(sub.wait_for_all(db_max_seq(&db), LONG).await);
    assert_delivered(&sub, &db);
}

/// (3) conf.d: files merge in name order; an error in one names that file and its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conf_d_files_merge_and_their_errors_name_their_file() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lineside.toml");
    let conf_d = dir.path().join(lineside::config::CONF_D);
    std::fs::create_dir(&conf_d).unwrap();
    write_atomic(
        &config,
        &format!(
            "{}{}",
            sections(dir.path(), port, ""),
            device("dev0", &["t0"], 10.0)
        ),
    );
    write_atomic(
        &conf_d.join("10-line2.toml"),
        &device("line2", &["t0"], 10.0),
    );
    let (stop, reload, task) = spawn_reloadable(&config);
    assert!(
        wait_for(LONG, || sees(&sub, "dev0", "t0")
            && sees(&sub, "line2", "t0"))
        .await,
        "the conf.d device runs"
    );

    // A second file with a mistake on its fourth line and a key the main file sets already.
    let bad = "[agent]\nlog_level = \"debug\"\n[mqtt]\nkeep_alive = \"1s\"\n".to_string()
        + &device("line3", &["t0"], 10.0).replace("seed =", "sead =");
    write_atomic(&conf_d.join("20-line3.toml"), &bad);
    let errors = match reload.reload().await {
        Err(ReloadError::Invalid(e)) => e.0,
        other => panic!("expected a rejection, got {other:?}"),
    };
    let bad_file = conf_d.join("20-line3.toml");
    let sead_line = bad.lines().position(|l| l.starts_with("sead")).unwrap() + 1;
    let found: Vec<(PathBuf, usize, &str)> = errors
        .iter()
        .map(|e| (e.file.clone(), e.line, e.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (bad_file.clone(), 4, "mqtt.keep_alive"),
            (bad_file.clone(), sead_line, "device[2].sead"),
        ],
        "{errors:?}"
    );
    assert!(
        errors[0]
            .message
            .contains(&format!("{}:", config.display())),
        "names the main file too: {}",
        errors[0].message
    );

    // `lineside check` reports the same and lists the files it read.
    let out = Command::new(env!("CARGO_BIN_EXE_lineside"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text.contains(&format!(
            "{}:{sead_line}:1: device[2].sead:",
            bad_file.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("10-line2.toml") && text.contains("files read:"),
        "{text}"
    );

    let fixed = bad
        .replace("sead =", "seed =")
        .replace("[mqtt]\nkeep_alive = \"1s\"\n", "");
    write_atomic(&bad_file, &fixed);
    let outcome = reload.reload().await.unwrap();
    assert_eq!(outcome.devices.added, ["line3"]);
    assert_eq!(outcome.devices.unchanged, 2);
    assert!(wait_for(LONG, || sees(&sub, "line3", "t0")).await);
    let out = Command::new(env!("CARGO_BIN_EXE_lineside"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for f in ["lineside.toml", "10-line2.toml", "20-line3.toml"] {
        assert!(text.contains(f), "check lists {f}: {text}");
    }
    stop_agent(stop, task).await;
}

/// (4) A characteristic added by a reload starts charting the readings that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_characteristic_added_by_reload_starts_charting() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lineside.toml");
    let base = format!(
        "{}{}",
        sections(dir.path(), port, ""),
        device("dev0", &["t0"], 10.0)
    );
    write_atomic(&config, &base);
    let (stop, reload, task) = spawn_reloadable(&config);
    assert!(wait_for(LONG, || sub.max_seq() > 200).await);

    let chart = "\n[[characteristic]]\nname = \"bore\"\nsource = \"dev0/t0\"\nchart = \"i-mr\"\n\
                 limits = { centre = 10.0, sigma = 0.1 }\n";
    write_atomic(&config, &format!("{base}{chart}"));
    let at_reload = sub.max_seq();
    let outcome = reload.reload().await.unwrap();
    let changes = outcome.characteristics.expect("SPC confirmed");
    assert_eq!(changes.added, ["bore"]);
    assert_eq!(outcome.devices.unchanged, 1);
    let points = |sub: &Subscriber| -> Vec<u64> {
        sub.seen
            .lock()
            .unwrap()
            .other
            .iter()
            .filter(|(topic, _)| topic == "spc/bore/points")
            .filter_map(|(_, b)| b["seq"].as_u64())
            .collect()
    };
    assert!(
        wait_for(LONG, || points(&sub).len() > 20).await,
        "points of the new characteristic arrive"
    );
    assert!(
        points(&sub).iter().all(|&s| s > at_reload),
        "the history before the reload is not published as points"
    );
    stop_agent(stop, task).await;
}

/// MQTT settings restart the forwarder (at-least-once: no gap, nothing delivered under another seq);
/// restart-only keys are reported and keep their running values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_changes_restart_the_forwarder_and_store_changes_wait_for_a_restart() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lineside.toml");
    let text = format!(
        "{}{}{}",
        sections(dir.path(), port, ""),
        device("dev0", &["t0", "t1"], 10.0),
        device("dev1", &["t0", "t1"], 10.0)
    );
    write_atomic(&config, &text);
    let (stop, reload, task) = spawn_reloadable(&config);
    assert!(wait_for(LONG, || sub.max_seq() > 500).await);

    write_atomic(
        &config,
        &text
            .replace(
                "max_readings_per_message = 200",
                "max_readings_per_message = 50",
            )
            .replace("flush_interval = \"20ms\"", "flush_interval = \"30ms\""),
    );
    let outcome = reload.reload().await.unwrap();
    assert_eq!(outcome.applied, ["mqtt (forwarder restarted)"]);
    assert_eq!(outcome.needs_restart, ["store.flush_interval"]);
    assert_eq!(outcome.devices.unchanged, 2);
    let before = sub.max_seq();
    assert!(
        wait_for(LONG, || sub.max_seq() > before + 1000).await,
        "data flows through the new forwarder"
    );
    stop_agent(stop, task).await;
    let db = dir.path().join("lineside.db");
    assert!(sub.wait_for_all(db_max_seq(&db), LONG).await);
    assert_delivered(&sub, &db);
    let seen = sub.seen.lock().unwrap();
    assert!(
        seen.status
            .iter()
            .any(|s| s["config_pending_restart"][0] == "store.flush_interval"),
        "the status says what waits for a restart"
    );
}
