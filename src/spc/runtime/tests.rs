//! The SPC task against a real store (no broker): ordering, gaps, restarts, commands.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lineside_drivers::{Quality, Reading, Value};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::bus::{Command, CommandSender, SidePublish};
use crate::config::{Config, StoreConfig};
use crate::spc::SpcTopics;

const DEVICE: &str = r#"
[[device]]
name = "g"
driver = "sim"
interval = "1s"
[[device.tag]]
name = "od"
[[device.tag]]
name = "part"
kind = "cycle"
values = ["a"]
[[device.tag]]
name = "inspected"
kind = "count"
[[device.tag]]
name = "rejects"
kind = "count"
"#;

fn config(dir: &std::path::Path, characteristic: &str) -> Config {
    let text = format!(
        "[agent]\nid = \"t\"\nstate_dir = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{DEVICE}{characteristic}",
        dir.display().to_string()
    );
    crate::config::load_str(&dir.join("t.toml"), &text).unwrap()
}

fn open_store(dir: &std::path::Path) -> Arc<Store> {
    let cfg = StoreConfig {
        path: dir.join("t.db"),
        flush_interval: Duration::from_millis(5),
        ..StoreConfig::default()
    };
    Arc::new(Store::open(&cfg, 64).unwrap())
}

fn reading(tag: &str, value: Value) -> Reading {
    Reading {
        device: Arc::from("g"),
        tag: Arc::from(tag),
        ts: Utc::now(),
        value: Some(value),
        quality: Quality::Good,
        unit: None,
    }
}

/// Commits one batch (one store transaction).
async fn commit(store: &Store, batch: Vec<Reading>) {
    store.sink().send(batch).await.unwrap();
    store.flush().await.unwrap();
}

struct Harness {
    side: mpsc::Receiver<SidePublish>,
    commands: CommandSender,
    spc: Spc,
}

fn harness(cfg: Config, store: &Arc<Store>, dir: &std::path::Path) -> Harness {
    let (side_tx, side) = mpsc::channel(100_000);
    let (commands, commands_rx) = crate::bus::command_channel();
    let spc = Spc::new(
        cfg.characteristics,
        store.clone(),
        side_tx,
        commands_rx,
        SpcTopics::new("ls", "t"),
        dir,
    )
    .with_policy(cfg.spc);
    Harness {
        side,
        commands,
        spc,
    }
}

/// Whether an episode event lists `rule` among the rules broken so far.
fn has_rule(v: &Json, rule: &str) -> bool {
    v["rules"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["rule"] == rule))
}

/// Everything published on `topic` so far.
fn drain(side: &mut mpsc::Receiver<SidePublish>, topic: &str) -> Vec<Json> {
    let mut out = Vec::new();
    while let Ok(m) = side.try_recv() {
        if m.topic == topic {
            out.push(serde_json::from_slice(&m.payload).unwrap_or(Json::Null));
        }
    }
    out
}

fn events(store: &Store, kind: &str) -> Vec<Json> {
    store
        .reader()
        .unwrap()
        .events_of_kind(kind)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.body)
        .collect()
}

const IMR: &str = r#"
[[characteristic]]
name = "od"
source = "g/od"
chart = "i-mr"
limits = { centre = 10.0, sigma = 1.0 }
context = { part = "g/part" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_and_overlapping_batches_process_every_reading_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut h = harness(config(dir.path(), IMR), &store, dir.path());
    for b in 0..10 {
        let batch = (0..5)
            .map(|i| {
                if i == 2 {
                    reading("part", Value::Str(Arc::from(format!("P{b}").as_str())))
                } else {
                    reading("od", Value::F64(10.0 + f64::from(i)))
                }
            })
            .collect();
        commit(&store, batch).await;
    }
    let reader = store.reader().unwrap();
    let mut rt = Runtime::start(&h.spc, reader).await.unwrap();
    rt.finish_replay().await;
    let mut batches = Vec::new();
    while let Ok(b) = h.spc.batches.try_recv() {
        batches.push(b);
    }
    assert_eq!(batches.len(), 10);
    // Batch 1, then a gap (2-5 lost as in a lagged broadcast), then an old one again, then the rest.
    rt.on_batch(&batches[0]).await;
    rt.on_batch(&batches[5]).await;
    rt.on_batch(&batches[2]).await;
    for b in &batches[6..] {
        rt.on_batch(b).await;
    }
    let points: Vec<Json> = drain(&mut h.side, "ls/t/spc/od/points")
        .into_iter()
        .filter(|p| p["chart"] == "i")
        .collect();
    let seqs: Vec<u64> = points.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=50).filter(|s| s % 5 != 3).collect();
    assert_eq!(seqs, want, "every od reading once, in order");
    // The context of a point is the latest part number before it in store order.
    assert_eq!(points[0]["context"], json!({}));
    assert_eq!(points[2]["context"], json!({"part": "P0"}));
    assert_eq!(
        points[4]["context"],
        json!({"part": "P0"}),
        "seq 6: before P1"
    );
    assert_eq!(points[6]["context"], json!({"part": "P1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_and_text_readings_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut h = harness(config(dir.path(), IMR), &store, dir.path());
    let mut bad = reading("od", Value::F64(99.0));
    bad.quality = Quality::Bad(Arc::from("timeout"));
    let mut uncertain = reading("od", Value::F64(99.0));
    uncertain.quality = Quality::Uncertain(Arc::from("overrange"));
    let batch = vec![
        reading("od", Value::F64(10.0)),
        bad,
        uncertain,
        reading("od", Value::Str(Arc::from("n/a"))),
        reading("od", Value::I64(11)),
    ];
    commit(&store, batch).await;
    let reader = store.reader().unwrap();
    let mut rt = Runtime::start(&h.spc, reader).await.unwrap();
    rt.catch_up(5, None).await.unwrap();
    assert_eq!(
        (
            rt.outputs.stats.pushed,
            rt.outputs.stats.skipped_quality,
            rt.outputs.stats.skipped_not_numeric
        ),
        (2, 2, 1)
    );
    let points = drain(&mut h.side, "ls/t/spc/od/points");
    assert!(points.iter().all(|p| p["value"] != 99.0));
    assert!(
        events(&store, "spc.alarm").is_empty(),
        "the faulty 99.0 raised nothing"
    );
}

/// A running SPC task.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    side: mpsc::Receiver<SidePublish>,
    commands: CommandSender,
    seen: Vec<SidePublish>,
    control: SpcControl,
    kpis: Arc<SpcKpis>,
}

fn start(cfg: Config, store: &Arc<Store>, dir: &std::path::Path) -> Running {
    let h = harness(cfg, store, dir);
    let control = h.spc.control();
    let kpis = h.spc.kpis();
    let stop = CancellationToken::new();
    let task = tokio::spawn(h.spc.run(stop.clone()));
    Running {
        stop,
        task,
        side: h.side,
        commands: h.commands,
        seen: Vec::new(),
        control,
        kpis,
    }
}

impl Running {
    /// Waits until something matching `cond` was published.
    async fn wait(&mut self, mut cond: impl FnMut(&str, &Json) -> bool) -> Json {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            for m in &self.seen {
                let body = serde_json::from_slice(&m.payload).unwrap_or(Json::Null);
                if cond(&m.topic, &body) {
                    return body;
                }
            }
            self.seen.clear();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.side.recv()).await {
                Ok(Some(m)) => self.seen.push(m),
                _ => panic!("timed out waiting for a message"),
            }
        }
    }

    async fn wait_point(&mut self, seq: u64) {
        self.wait(|t, b| t.ends_with("/points") && b["seq"].as_u64() >= Some(seq))
            .await;
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Deterministic values around 10 with sigma about 0.3.
fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| 10.0 + (0..12).map(|_| rng.f64()).sum::<f64>() * 0.3 - 1.8)
        .collect()
}

async fn feed(store: &Store, xs: &[f64]) -> u64 {
    commit(
        store,
        xs.iter().map(|x| reading("od", Value::F64(*x))).collect(),
    )
    .await;
    store.watch_committed().borrow().readings
}

const BASELINE: &str = r#"
[[characteristic]]
name = "od"
source = "g/od"
chart = "i-mr"
limits = { baseline = 20 }
rules = "limits-only"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_spec_rebuilds_silently_and_keeps_the_computed_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut run = start(config(dir.path(), BASELINE), &store, dir.path());
    let mut xs = values(1, 30);
    xs[25] = 20.0; // far beyond any limit
    let last = feed(&store, &xs).await;
    run.wait_point(last).await;
    run.stop().await;
    let limits = events(&store, "spc.limits");
    assert_eq!(limits.len(), 1, "{limits:?}");
    let before: Vec<Json> = events(&store, "spc.alarm");
    assert!(
        before
            .iter()
            .any(|v| v["last"]["seq"] == 26 && has_rule(v, "nelson-1"))
    );

    // Other rules: the snapshot no longer fits, the limits still do.
    let changed = BASELINE.replace("limits-only", "western-electric");
    let mut run = start(config(dir.path(), &changed), &store, dir.path());
    let retained = run
        .wait(|t, b| t.ends_with("/limits") && b["charts"][0]["limits"].is_object())
        .await;
    assert_eq!(retained["charts"][0]["limits"], limits[0]["limits"]);
    assert_eq!(retained["charts"][0]["origin"], "computed");
    let last = feed(&store, &[10.0, 25.0]).await;
    run.wait(|t, b| t.ends_with("/points") && b["seq"] == last && b["chart"] == "i")
        .await;
    run.stop().await;
    assert_eq!(events(&store, "spc.limits").len(), 1, "no new baseline");
    let after = events(&store, "spc.alarm");
    let new: Vec<&Json> = after.iter().skip(before.len()).collect();
    assert!(!new.is_empty());
    assert!(
        new.iter().all(|v| v["last"]["seq"].as_u64() > Some(30)),
        "history is not alarmed again: {new:?}"
    );
    assert!(
        new.iter()
            .any(|v| v["last"]["seq"] == last && has_rule(v, "western-electric-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recalculation_is_repeated_at_its_position_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let state = persist::state_path(dir.path());
    let mut run = start(config(dir.path(), BASELINE), &store, dir.path());
    let last = feed(&store, &values(2, 25)).await;
    run.wait_point(last).await;
    run.stop().await;
    let stale = std::fs::read(&state).unwrap();

    // A shifted process, then a recalculation on request, then more readings.
    let mut run = start(config(dir.path(), BASELINE), &store, dir.path());
    let shifted: Vec<f64> = values(3, 25).iter().map(|x| x + 1.0).collect();
    let at = feed(&store, &shifted).await;
    run.wait_point(at).await;
    run.commands
        .try_send(Command {
            body: json!({"cmd": "recalculate", "characteristic": "od", "by": "qe", "id": 1}),
            via: crate::bus::Via::Mqtt,
            received: chrono::Utc::now(),
        })
        .unwrap();
    let recalculated = run
        .wait(|t, b| t.ends_with("/limits") && b["charts"][0]["computed"]["seq_last"] == at)
        .await;
    let last = feed(&store, &values(4, 10)).await;
    run.wait_point(last).await;
    run.stop().await;
    let recalcs = events(&store, "spc.recalculate");
    assert_eq!(recalcs.len(), 1);
    assert_eq!(
        (recalcs[0]["at_seq"].as_u64(), recalcs[0]["by"].as_str()),
        (Some(at), Some("qe"))
    );
    let limits = events(&store, "spc.limits");
    assert_eq!(limits.len(), 2);
    assert_eq!(limits[1]["reason"], "recalculate");
    let violations = events(&store, "spc.alarm").len();

    // From the older state: the replay repeats the recalculation at the same point, so it ends with
    // the same limits, and stores nothing twice.
    std::fs::write(&state, stale).unwrap();
    let mut run = start(config(dir.path(), BASELINE), &store, dir.path());
    let retained = run
        .wait(|t, b| t.ends_with("/limits") && b["charts"][0]["computed"].is_object())
        .await;
    assert_eq!(
        retained["charts"][0]["limits"],
        recalculated["charts"][0]["limits"]
    );
    run.stop().await;
    assert_eq!(events(&store, "spc.limits").len(), 2);
    assert_eq!(events(&store, "spc.recalculate").len(), 1);
    assert_eq!(events(&store, "spc.alarm").len(), violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_cannot_be_carried_out_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut run = start(config(dir.path(), IMR), &store, dir.path());
    run.wait(|t, _| t.ends_with("/alarms/active/od")).await;
    for body in [
        json!({"cmd": "recalculate", "characteristic": "od", "by": "qe", "id": "fixed"}),
        json!({"cmd": "capability", "id": "empty"}),
        json!({"cmd": "ack", "characteristic": "od", "alarm_seq": "all", "by": "x", "id": "none"}),
        json!("not an object"),
    ] {
        run.commands
            .try_send(Command {
                body,
                via: crate::bus::Via::Mqtt,
                received: chrono::Utc::now(),
            })
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events(&store, "agent.command_rejected").len() < 4 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await;
    let rejected = events(&store, "agent.command_rejected");
    let reason = |id: &str| {
        rejected.iter().find(|r| r["id"] == id).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("fixed").contains("fixed limits"),
        "{}",
        reason("fixed")
    );
    assert!(reason("empty").contains("not enough data"));
    assert!(reason("none").contains("no open episode"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p_chart_takes_each_sample_size_from_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let p_chart = r#"
[[characteristic]]
name = "reject-rate"
source = "g/rejects"
chart = "p"
sample_size_source = "g/inspected"
limits = { centre = 0.1 }
rules = "limits-only"
"#;
    let mut run = start(config(dir.path(), p_chart), &store, dir.path());
    let batch = vec![
        reading("inspected", Value::I64(50)),
        reading("rejects", Value::I64(4)),
        reading("inspected", Value::I64(200)),
        reading("rejects", Value::I64(30)),
        reading("rejects", Value::I64(36)),
    ];
    commit(&store, batch).await;
    let mut points = Vec::new();
    for seq in [2, 4, 5] {
        points.push(
            run.wait(|t, b| t.ends_with("/points") && b["seq"] == seq)
                .await,
        );
    }
    run.stop().await;
    assert_eq!(points[0]["sample_size"], 50.0);
    assert_eq!(points[0]["value"], 0.08);
    assert_eq!(points[1]["value"], 0.15);
    assert_eq!(
        points[2]["sample_size"], 200.0,
        "the latest size stays in force"
    );
    // UCL at n = 200: 0.1 + 3 sqrt(0.1 * 0.9 / 200) = 0.1636: 36/200 = 0.18 is beyond, 0.15 is not.
    let v = events(&store, "spc.alarm");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (v[0]["last"]["seq"].as_u64(), v[0]["chart"].as_str()),
        (Some(5), Some("p"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconfiguration_adds_rebuilds_and_removes_characteristics_while_running() {
    const FIXED: &str = r#"
[[characteristic]]
name = "NAME"
source = "g/od"
chart = "i-mr"
limits = { centre = 10.0, sigma = 1.0 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let before_cfg = format!("{BASELINE}{}", FIXED.replace("NAME", "gone"));
    let mut run = start(config(dir.path(), &before_cfg), &store, dir.path());
    let mut xs = values(1, 30);
    xs[25] = 20.0; // beyond every limit: an alarm for each characteristic that sees it live
    let last = feed(&store, &xs).await;
    run.wait_point(last).await;
    // Alarms are stored once their batch is processed, after its points are published.
    let alarmed = |ch: &str| {
        events(&store, "spc.alarm")
            .iter()
            .any(|v| v["characteristic"] == ch && v["last"]["seq"] == 26)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(alarmed("od") && alarmed("gone")) {
        assert!(tokio::time::Instant::now() < deadline, "no alarm at seq 26");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = events(&store, "spc.alarm");

    // od: other rules (rebuilt, keeps its computed limits); gone: removed; new: added.
    let after_cfg = format!(
        "{}{}",
        BASELINE.replace("limits-only", "western-electric"),
        FIXED.replace("NAME", "new")
    );
    let chars = config(dir.path(), &after_cfg).characteristics;
    let changes = run.control.reconfigure(chars).await.unwrap();
    assert_eq!(changes.added, ["new"]);
    assert_eq!(changes.removed, ["gone"]);
    assert_eq!(changes.rebuilt, ["od"]);
    assert!(changes.updated.is_empty() && changes.failed.is_empty());
    // Published in this order: the retained state of the rebuilt one, then the removed one's cleared.
    let retained = run
        .wait(|t, b| t == "ls/t/spc/od/limits" && b["charts"][0]["limits"].is_object())
        .await;
    assert_eq!(retained["charts"][0]["origin"], "computed");
    run.wait(|t, b| t == "ls/t/alarms/active/gone" && b.is_null())
        .await;

    let last = feed(&store, &[10.0, 25.0]).await;
    // In config order: od, then new.
    run.wait(|t, b| t == "ls/t/spc/od/points" && b["seq"] == last)
        .await;
    run.wait(|t, b| t == "ls/t/spc/new/points" && b["seq"] == last)
        .await;
    run.stop().await;
    assert_eq!(events(&store, "spc.limits").len(), 1, "no new baseline");
    let after = events(&store, "spc.alarm");
    let new: Vec<&Json> = after.iter().skip(before.len()).collect();
    assert!(
        new.iter()
            .all(|v| v["last"]["seq"].as_u64() > Some(30) && v["characteristic"] != "gone"),
        "history is not alarmed again, the removed one is silent: {new:?}"
    );
    for ch in ["od", "new"] {
        assert!(
            new.iter().any(|v| v["characteristic"] == ch),
            "{ch}: {new:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_characteristic_added_later_knows_the_context_stored_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut run = start(config(dir.path(), ""), &store, dir.path());
    commit(
        &store,
        vec![
            reading("part", Value::Str(Arc::from("P7"))),
            reading("od", Value::F64(10.0)),
        ],
    )
    .await;
    // Nothing charts yet; a reconfiguration goes through the task's loop, so it follows the batch.
    let changes = run
        .control
        .reconfigure(config(dir.path(), IMR).characteristics)
        .await
        .unwrap();
    assert_eq!(changes.added, ["od"]);
    let last = feed(&store, &[10.5]).await;
    let point = run
        .wait(|t, b| t == "ls/t/spc/od/points" && b["seq"] == last)
        .await;
    assert_eq!(point["context"], json!({"part": "P7"}), "{point}");
    run.stop().await;
}

/// Stops the task and returns every message published on `topic`, in order.
async fn stop_and_collect(mut run: Running, topic: &str) -> Vec<Json> {
    run.stop.cancel();
    run.task.await.unwrap().unwrap();
    let mut out: Vec<Json> = run
        .seen
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| serde_json::from_slice(&m.payload).unwrap_or(Json::Null))
        .collect();
    out.extend(drain(&mut run.side, topic));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_baseline_point_is_published_once_numbered_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let run = start(config(dir.path(), BASELINE), &store, dir.path());
    feed(&store, &values(1, 30)).await;
    // Wait until the last point went out, without consuming what came before.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.watch_committed().borrow().readings < 30 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let points = stop_and_collect(run, "ls/t/spc/od/points").await;
    for (chart, n) in [("i", 30u64), ("mr", 29)] {
        let mine: Vec<&Json> = points.iter().filter(|p| p["chart"] == chart).collect();
        let subgroups: Vec<u64> = mine.iter().filter_map(|p| p["subgroup"].as_u64()).collect();
        assert_eq!(
            subgroups,
            (1..=n).collect::<Vec<_>>(),
            "{chart}: once each, in order"
        );
        let seqs: std::collections::BTreeSet<u64> =
            mine.iter().filter_map(|p| p["seq"].as_u64()).collect();
        assert_eq!(seqs.len() as u64, n, "{chart}: no point twice");
        // The first 20 readings are the baseline (the MR chart's 19 of them); then monitoring.
        let baseline = mine.iter().filter(|p| p["phase"] == "baseline").count() as u64;
        assert_eq!(baseline, n - 10, "{chart}");
        for p in &mine {
            assert_eq!(
                p["phase"] == "monitoring",
                p["limits"].is_object(),
                "monitoring points carry their limits: {p}"
            );
            // No float noise: the value prints in at most 12 significant digits.
            let text = p["value"].to_string();
            assert!(text.trim_start_matches("0.").len() <= 14, "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cusum_points_are_in_sigma_units_and_reset_after_a_signal() {
    const CUSUM: &str = r#"
[[characteristic]]
name = "od"
source = "g/od"
chart = "cusum"
limits = { centre = 10.0, sigma = 1.0 }
cusum = { k = 0.5, h = 4.0, reset_after_signal = true }
resolution = 0.001
"#;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[agent]\nid = \"t\"\nstate_dir = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{}{CUSUM}",
        dir.path().display().to_string(),
        DEVICE.replace("name = \"od\"\n", "name = \"od\"\nunit = \"mm\"\n")
    );
    let cfg = crate::config::load_str(&dir.path().join("t.toml"), &text).unwrap();
    let store = open_store(dir.path());
    let run = start(cfg, &store, dir.path());
    // +1.5σ for 8 readings: C+ grows by 1.0 per reading, signals beyond h = 4 at the 5th, resets.
    feed(&store, &[11.5; 8]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.watch_committed().borrow().readings < 8 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let points = stop_and_collect(run, "ls/t/spc/od/points").await;
    let upper: Vec<&Json> = points
        .iter()
        .filter(|p| p["chart"] == "cusum-upper")
        .collect();
    assert_eq!(upper.len(), 8);
    for p in &upper {
        assert_eq!(p["unit"], "σ", "{p}");
        assert_eq!(p["source_unit"], "mm", "{p}");
        assert_eq!(p["limits"]["ucl"], 4.0);
    }
    let c: Vec<f64> = upper.iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(
        c,
        [1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0],
        "reset after the signal at 5"
    );
    assert_eq!(upper[4]["rules"], json!(["nelson-1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgement_shelving_and_the_allow_list_over_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let policy = "[spc]\ncauses = [\"tool-wear\", \"material\"]\n[spc.allow]\nack = [\"alice\"]\n";
    let mut run = start(
        config(dir.path(), &format!("{IMR}{policy}")),
        &store,
        dir.path(),
    );
    feed(&store, &[10.0, 10.0, 10.0, 13.5]).await;
    let active = run
        .wait(|t, b| t == "ls/t/alarms/active/od" && b["count"] == 1)
        .await;
    let episode = active["episodes"][0]["episode"].as_u64().unwrap();
    assert_eq!(active["episodes"][0]["state"], "active-unacked");
    let send = |body: Json| {
        run.commands
            .try_send(Command {
                body,
                via: crate::bus::Via::Mqtt,
                received: chrono::Utc::now(),
            })
            .unwrap()
    };
    send(
        json!({"cmd": "ack", "characteristic": "od", "episode": episode, "by": "mallory", "id": "m"}),
    );
    send(
        json!({"cmd": "ack", "characteristic": "od", "episode": episode, "by": "alice", "cause": "gremlins", "id": "g"}),
    );
    let huge = "x".repeat(140_000);
    send(
        json!({"cmd": "ack", "characteristic": "od", "episode": episode, "by": "alice",
        "cause": "tool-wear", "action": "insert changed", "id": huge}),
    );
    run.commands
        .try_send(super::super::commands::station_command(
            "alice",
            json!({"cmd": "shelve", "characteristic": "od", "for": "1s", "by": "mallory"}),
        ))
        .unwrap();
    let acked = run
        .wait(|t, b| t == "ls/t/alarms/active/od" && b["episodes"][0]["state"] == "active-acked")
        .await;
    assert_eq!(acked["episodes"][0]["ack"]["cause"], "tool-wear", "{acked}");
    // The shelving expires on its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !events(&store, "spc.suppression")
        .iter()
        .any(|e| e["transition"] == "unshelved" && e["reason"] == "expired")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shelving did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The KPIs (refreshed every second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let k = run.kpis.json();
    assert_eq!(k["raised_total"], 1, "{k}");
    assert_eq!(k["raised_last_10min"], 1, "{k}");
    assert_eq!(k["standing"], 1, "{k}");
    assert_eq!(k["acknowledged_total"], 1, "{k}");
    assert!(
        k["mean_time_to_ack_s"].as_f64().is_some_and(|s| s >= 0.0),
        "{k}"
    );
    assert!(
        run.kpis
            .prometheus_text()
            .contains("lineside_spc_alarms_raised_total 1")
    );
    run.stop().await;
    let rejected = events(&store, "agent.command_rejected");
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("may not ack")
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("configured causes")
    );
    let audit = events(&store, "agent.command");
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(
        (audit[0]["cmd"].as_str(), audit[0]["by"].as_str()),
        (Some("ack"), Some("alice"))
    );
    assert!(
        audit[0].to_string().len() < 1000,
        "the huge id is not echoed whole"
    );
    assert_eq!(audit[0]["episodes"], json!([episode]));
    assert_eq!(
        (
            audit[1]["cmd"].as_str(),
            audit[1]["by"].as_str(),
            audit[1]["via"].as_str()
        ),
        (Some("shelve"), Some("alice"), Some("station"))
    );
    let transitions: Vec<String> = events(&store, "spc.alarm")
        .iter()
        .map(|e| e["transition"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(transitions, ["raised", "acknowledged"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_stores_no_transition_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let state = persist::state_path(dir.path());
    let mut run = start(config(dir.path(), IMR), &store, dir.path());
    let last = feed(&store, &[10.0; 3]).await;
    run.wait_point(last).await;
    run.stop().await;
    let early = std::fs::read(&state).unwrap();
    // A shift (one episode, updated by new rules), then back to normal.
    let mut run = start(config(dir.path(), IMR), &store, dir.path());
    let shift = [11.3, 12.8, 11.9, 12.4, 11.2, 12.9, 12.0, 11.6, 12.7, 11.4];
    feed(&store, &shift).await;
    let last = feed(&store, &[10.0; 9]).await;
    run.wait_point(last).await;
    run.stop().await;
    let stored = events(&store, "spc.alarm");
    let raised = stored
        .iter()
        .filter(|e| e["transition"] == "raised")
        .count();
    assert_eq!(raised, 1, "{stored:?}");
    assert_eq!(stored.last().unwrap()["transition"], "returned");
    // As after a crash: the state from before the shift; the replay regenerates every transition.
    std::fs::write(&state, early).unwrap();
    let mut run = start(config(dir.path(), IMR), &store, dir.path());
    run.wait(|t, b| t == "ls/t/alarms/active/od" && b["episodes"][0]["state"] == "rtn-unacked")
        .await;
    run.stop().await;
    assert_eq!(events(&store, "spc.alarm"), stored, "nothing stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_commands_is_answered_only_up_to_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut run = start(config(dir.path(), IMR), &store, dir.path());
    run.wait(|t, _| t.ends_with("/alarms/active/od")).await;
    let huge = "y".repeat(140_000);
    for i in 0..30 {
        run.commands
            .try_send(Command {
                body: json!({"cmd": "ack", "characteristic": "od", "episode": "all", "by": "x", "id": format!("{i}{huge}")}),
                via: crate::bus::Via::Mqtt,
                received: chrono::Utc::now(),
            })
            .unwrap();
    }
    // The commands are taken in order; a capability request after them shows they were handled.
    let last = feed(&store, &[10.0, 10.1]).await;
    run.wait_point(last).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let rejected = events(&store, "agent.command_rejected");
    assert_eq!(rejected.len(), 20);
    for r in &rejected {
        assert!(
            r.to_string().len() < 1000,
            "bounded: {}",
            r.to_string().len()
        );
    }
}
