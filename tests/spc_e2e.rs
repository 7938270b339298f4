//! End to end: sim with a scheduled mean shift → store → SPC → MQTT. The expected alarms are computed
//! here by hand from the readings the store committed (never guessed), and compared with what the
//! agent stored and published.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use lineside::store::StoreReader;
use lineside_drivers::Value;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

const BASE: &str = "lineside/test-gw";

/// The agent's config: one sim gauge `gauge/od` (mean 10, sigma 0.1, a shift of `shift` sigmas from
/// sample `start` for `length` samples) with a cycling lot number, and one I-MR characteristic with
/// fixed limits (centre 10, sigma 0.1) and rule 1 (beyond 3 sigma) and rule 2 (`run` in a row).
fn config(dir: &Path, port: u16, interval: &str, shift: &str, rule1: bool, run: u32) -> String {
    format!(
        r#"
[agent]
id = "test-gw"
state_dir = {dir:?}

[store]
flush_interval = "20ms"

[mqtt]
url = "mqtt://127.0.0.1:{port}"
reconnect_min = "100ms"
reconnect_max = "1s"
keep_alive = "5s"

[[device]]
name = "gauge"
driver = "sim"
interval = "{interval}"
seed = 11

[[device.tag]]
name = "od"
unit = "mm"
mean = 10.0
sigma = 0.1
[[device.tag.disturbance]]
kind = "shift"
{shift}

[[device.tag]]
name = "lot"
kind = "cycle"
values = ["L1", "L2", "L3"]
every = 30

[[characteristic]]
name = "od"
source = "gauge/od"
chart = "i-mr"
usl = 10.7
lsl = 9.3
target = 10.0
limits = {{ centre = 10.0, sigma = 0.1 }}
rules = "limits-only"
context = {{ lot = "gauge/lot" }}
capability_interval = "1s"
[characteristic.rule.1]
enabled = {rule1}
[characteristic.rule.2]
enabled = true
points = {run}
"#,
        dir = dir.display().to_string(),
    )
}

/// A stored reading of the sim gauge.
struct Obs {
    seq: u64,
    value: f64,
    /// The lot in force: the latest lot reading before it in store order.
    lot: Option<String>,
}

/// Every `gauge/od` reading in the store, in seq order, with its context.
fn observations(db: &Path) -> Vec<Obs> {
    let mut reader = StoreReader::open(db).unwrap();
    let mut lot = None;
    let mut out = Vec::new();
    for r in reader.readings_after(0, 1_000_000).unwrap() {
        match (&*r.reading.tag, &r.reading.value) {
            ("lot", Some(Value::Str(s))) => lot = Some(s.to_string()),
            ("od", Some(v)) if r.reading.quality.is_good() => out.push(Obs {
                seq: r.seq,
                value: v.as_f64().unwrap(),
                lot: lot.clone(),
            }),
            _ => {}
        }
    }
    out
}

/// The individuals-chart alarms the rules give, by hand: rule 1 beyond centre ± 3 sigma (strict),
/// rule 2 `run` points in a row strictly on one side (a point on the centre line breaks the run),
/// flagged on completion and on every further point of the run. (point seq → rules)
fn expected(obs: &[Obs], rule1: bool, run: u32) -> BTreeMap<u64, BTreeSet<String>> {
    let (centre, sigma) = (10.0_f64, 0.1_f64);
    let (ucl, lcl) = (centre + 3.0 * sigma, centre - 3.0 * sigma);
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let (mut side, mut len) = (0i8, 0u32);
    for o in obs {
        if rule1 && (o.value > ucl || o.value < lcl) {
            out.entry(o.seq).or_default().insert("nelson-1".into());
        }
        let s = if o.value > centre {
            1
        } else if o.value < centre {
            -1
        } else {
            0
        };
        len = if s != 0 && s == side {
            len + 1
        } else {
            u32::from(s != 0)
        };
        side = s;
        if len >= run {
            out.entry(o.seq).or_default().insert("nelson-2".into());
        }
    }
    out
}

/// Stored SPC events of a kind.
fn events(db: &Path, kind: &str) -> Vec<(u64, serde_json::Value)> {
    let mut reader = StoreReader::open(db).unwrap();
    reader
        .events_of_kind(kind)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| (e.seq, e.body))
        .collect()
}

/// Individuals-chart violations as (point seq → rules), asserting each (point, rule) once.
fn by_point<'a>(
    alarms: impl Iterator<Item = &'a serde_json::Value>,
) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in alarms.filter(|a| a["chart"] == "i") {
        let seq = a["point_seq"].as_u64().unwrap();
        let rule = a["rule"].as_str().unwrap().to_string();
        assert!(
            out.entry(seq).or_default().insert(rule.clone()),
            "alarm {rule} at point {seq} raised twice"
        );
    }
    out
}

/// MQTT alarms of one kind, de-duplicated on the event seq (delivery is at least once).
fn mqtt_events(sub: &Subscriber, kind: &str) -> Vec<serde_json::Value> {
    let seen = sub.seen.lock().unwrap();
    let mut by_seq = BTreeMap::new();
    for a in seen.alarms.iter().filter(|a| a["kind"] == kind) {
        by_seq.insert(a["seq"].as_u64().unwrap(), a.clone());
    }
    by_seq.into_values().collect()
}

fn od_count(sub: &Subscriber) -> usize {
    let seen = sub.seen.lock().unwrap();
    seen.readings.values().filter(|(_, t)| t == "od").count()
}

/// Messages under `<base>/<rel>`, in arrival order.
fn messages(sub: &Subscriber, rel: &str) -> Vec<serde_json::Value> {
    let seen = sub.seen.lock().unwrap();
    seen.other
        .iter()
        .filter(|(t, _)| t == rel)
        .map(|(_, b)| b.clone())
        .collect()
}

async fn stop_agent(
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the agent stops within 20 s")
        .unwrap()
        .unwrap();
}

/// A client that sends commands to the agent.
async fn commander(port: u16) -> AsyncClient {
    let mut opts = MqttOptions::new(format!("test-cmd-{}", free_port()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

async fn send(client: &AsyncClient, body: serde_json::Value) {
    client
        .publish(
            format!("{BASE}/cmd"),
            QoS::AtLeastOnce,
            false,
            body.to_string(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mean_shift_raises_the_run_rule_alarm_with_its_context() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        port,
        "5ms",
        "start = 100\nlength = 40\nmagnitude = 3.0",
        true,
        9,
    );
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(30), || {
            !mqtt_events(&sub, "spc.violation").is_empty() && od_count(&sub) >= 220
        })
        .await,
        "no alarm within 30 s"
    );
    stop_agent(stop, task).await;

    let obs = observations(&db);
    let want = expected(&obs, true, 9);
    let stored = events(&db, "spc.violation");
    assert_eq!(
        by_point(stored.iter().map(|(_, b)| b)),
        want,
        "the stored alarms are exactly the hand-computed ones"
    );
    // The shift (samples 100..140, +3 sigma) completes a run of 9 above the centre line.
    let first_shifted = obs[100].seq;
    let (&point, _) = want
        .iter()
        .find(|(s, r)| **s > first_shifted && r.contains("nelson-2"))
        .expect("the shift completes a run of 9");
    assert!(point <= obs[140].seq + 9);
    assert!(
        wait_for(Duration::from_secs(10), || {
            mqtt_events(&sub, "spc.violation")
                .iter()
                .any(|a| a["point_seq"] == point && a["rule"] == "nelson-2")
        })
        .await
    );
    let alarms = mqtt_events(&sub, "spc.violation");
    let got = by_point(alarms.iter());
    for (seq, rules) in &got {
        assert_eq!(want.get(seq), Some(rules), "published alarm at {seq}");
    }
    let a = alarms
        .iter()
        .find(|a| a["point_seq"] == point && a["rule"] == "nelson-2")
        .unwrap();
    let o = obs.iter().find(|o| o.seq == point).unwrap();
    assert_eq!(a["characteristic"], "od");
    assert_eq!(a["agent"], "test-gw");
    assert_eq!(a["severity"], "violation");
    assert_eq!(a["value"].as_f64(), Some(o.value));
    assert_eq!(a["context"], json!({"lot": o.lot}), "context of the point");
    assert_eq!(a["limits"]["centre"].as_f64(), Some(10.0));
    assert_eq!(a["unit"], "mm");

    // Every point is published with its limits and the rules it broke.
    let points = messages(&sub, "spc/od/points");
    let p = points
        .iter()
        .find(|p| p["chart"] == "i" && p["seq"] == point)
        .expect("the alarming point was published");
    assert!(
        p["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "nelson-2")
    );
    assert_eq!(p["value"].as_f64(), Some(o.value));
    assert!(points.iter().any(|p| p["chart"] == "mr"));
    // The open alarms are published retained, and capability periodically.
    assert!(
        messages(&sub, "alarms/active/od")
            .iter()
            .any(|m| m["count"].as_u64() > Some(0))
    );
    assert!(
        messages(&sub, "spc/od/capability")
            .iter()
            .any(|m| m["cpk"].is_number())
    );
    let limits = messages(&sub, "spc/od/limits");
    assert_eq!(limits.last().unwrap()["charts"][0]["origin"], "fixed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_clears_the_alarm() {
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        port,
        "5ms",
        "start = 100\nlength = 40\nmagnitude = 3.0",
        false,
        9,
    );
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    let client = commander(port).await;
    // Past the shift and its runs.
    assert!(
        wait_for(Duration::from_secs(30), || {
            mqtt_events(&sub, "spc.violation").len() >= 2 && od_count(&sub) >= 200
        })
        .await,
        "no alarms within 30 s"
    );
    let first = mqtt_events(&sub, "spc.violation")[0]["seq"]
        .as_u64()
        .unwrap();

    send(
        &client,
        json!({"cmd": "ack", "characteristic": "od", "alarm_seq": first, "by": "j.doe",
               "cause": "worn insert", "action": "insert replaced", "id": "t-1"}),
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(10), || {
            mqtt_events(&sub, "spc.ack")
                .iter()
                .any(|a| a["id"] == "t-1")
        })
        .await,
        "the acknowledgement is echoed as an event"
    );
    let ack = mqtt_events(&sub, "spc.ack")
        .into_iter()
        .find(|a| a["id"] == "t-1")
        .unwrap();
    assert_eq!(ack["alarms"], json!([first]));
    assert_eq!(
        (ack["by"].as_str(), ack["cause"].as_str()),
        (Some("j.doe"), Some("worn insert"))
    );
    assert_eq!(ack["action"], "insert replaced");
    let not_listed = |m: &serde_json::Value, seq: u64| {
        m["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["alarm_seq"] != seq)
    };
    assert!(
        wait_for(Duration::from_secs(10), || {
            messages(&sub, "alarms/active/od")
                .last()
                .is_some_and(|m| not_listed(m, first))
        })
        .await,
        "the retained active alarms no longer list it"
    );

    // The same alarm again, and an unknown characteristic: rejected with a reason.
    send(&client, json!({"cmd": "ack", "characteristic": "od", "alarm_seq": first, "by": "j.doe", "id": "t-2"})).await;
    send(&client, json!({"cmd": "ack", "characteristic": "nope", "alarm_seq": "all", "by": "j.doe", "id": "t-3"})).await;
    send(&client, json!({"cmd": "frobnicate", "id": "t-4"})).await;
    assert!(
        wait_for(Duration::from_secs(10), || mqtt_events(
            &sub,
            "agent.command_rejected"
        )
        .len()
            >= 3)
        .await,
        "invalid commands are answered"
    );
    let rejected = mqtt_events(&sub, "agent.command_rejected");
    let reason = |id: &str| {
        rejected.iter().find(|r| r["id"] == id).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("t-2").contains("not an active alarm"),
        "{}",
        reason("t-2")
    );
    assert!(
        reason("t-3").contains("unknown characteristic"),
        "{}",
        reason("t-3")
    );
    assert!(
        reason("t-4").contains("unknown command"),
        "{}",
        reason("t-4")
    );

    // Acknowledge everything open; a subscriber arriving later sees none of it as open.
    send(&client, json!({"cmd": "ack", "characteristic": "od", "alarm_seq": "all", "by": "j.doe", "cause": "shift", "action": "reset", "id": "t-5"})).await;
    assert!(
        wait_for(Duration::from_secs(10), || {
            mqtt_events(&sub, "spc.ack")
                .iter()
                .any(|a| a["id"] == "t-5")
        })
        .await
    );
    let acked: Vec<u64> = mqtt_events(&sub, "spc.ack")
        .iter()
        .flat_map(|a| {
            a["alarms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
        })
        .collect();
    let late = Subscriber::start(port, BASE, false).await;
    assert!(
        wait_for(Duration::from_secs(10), || !messages(
            &late,
            "alarms/active/od"
        )
        .is_empty())
        .await,
        "the active alarms are retained"
    );
    let retained = messages(&late, "alarms/active/od").last().cloned().unwrap();
    assert!(
        acked.iter().all(|s| not_listed(&retained, *s)),
        "{retained}"
    );

    // Capability on request.
    let before = messages(&sub, "spc/od/capability").len();
    send(
        &client,
        json!({"cmd": "capability", "characteristic": "od"}),
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(10), || messages(
            &sub,
            "spc/od/capability"
        )
        .len()
            > before)
        .await
    );
    let cap = messages(&sub, "spc/od/capability").last().cloned().unwrap();
    for k in ["cp", "cpk", "pp", "ppk", "cpm"] {
        assert!(cap[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {cap}");
    }
    stop_agent(stop, task).await;

    // The acknowledgements are stored, every raised alarm was acknowledged once at most.
    let stored_acks = events(&db, "spc.ack");
    assert_eq!(stored_acks.len(), 2);
    let mut all: Vec<u64> = stored_acks
        .iter()
        .flat_map(|(_, b)| {
            b["alarms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
        })
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no alarm acknowledged twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_a_developing_run_alarms_at_the_right_point_once() {
    const RUN: u32 = 60;
    let port = rumqttd().await;
    let sub = Subscriber::start(port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    // Shifted from the first sample on: a run above the centre line develops at once, and the sim
    // starts from sample 0 again on every start, so the run goes on across restarts.
    let text = config(
        dir.path(),
        port,
        "10ms",
        "start = 0\nmagnitude = 3.0",
        false,
        RUN,
    );
    let state = lineside::spc::state_path(dir.path());

    // 1: stop after a part of the run.
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(wait_for(Duration::from_secs(20), || od_count(&sub) >= 15).await);
    stop_agent(stop, task).await;
    let first_run = observations(&db);
    assert!(
        first_run.len() < RUN as usize && expected(&first_run, false, RUN).is_empty(),
        "the test needs the first run to stop before the rule fires ({} points)",
        first_run.len()
    );
    assert!(events(&db, "spc.violation").is_empty());
    let stale_state = std::fs::read(&state).expect("the SPC state is saved at shutdown");

    // 2: the run continues and completes.
    let (stop, task) = spawn_agent(load(&text, dir.path()));
    assert!(
        wait_for(Duration::from_secs(30), || !mqtt_events(
            &sub,
            "spc.violation"
        )
        .is_empty())
        .await,
        "no alarm after the restart"
    );
    let target = od_count(&sub) + 20;
    assert!(wait_for(Duration::from_secs(20), || od_count(&sub) >= target).await);
    stop_agent(stop, task).await;
    let obs = observations(&db);
    let want = expected(&obs, false, RUN);
    let (&first_alarm, _) = want.iter().next().expect("the run completed");
    let mqtt_first = mqtt_events(&sub, "spc.violation")
        .iter()
        .filter(|a| a["chart"] == "i")
        .map(|a| a["point_seq"].as_u64().unwrap())
        .min();
    assert_eq!(
        mqtt_first,
        Some(first_alarm),
        "the first alarm is at the {RUN}th point of the run, counting the points before the restart"
    );

    // 3: a crash-like restart from the older state: the readings of run 2 are replayed, and their
    // alarms, already stored, are not raised again.
    std::fs::write(&state, &stale_state).unwrap();
    let (stop, task) = spawn_agent(load(&text, dir.path()));
    let target = od_count(&sub) + 20;
    assert!(wait_for(Duration::from_secs(20), || od_count(&sub) >= target).await);
    stop_agent(stop, task).await;

    let obs = observations(&db);
    let want = expected(&obs, false, RUN);
    let stored = events(&db, "spc.violation");
    assert_eq!(
        by_point(stored.iter().map(|(_, b)| b)),
        want,
        "every alarm exactly once, at the hand-computed points"
    );
    // Published (the last few may still wait in the store for the next start): only those, and no
    // point alarmed under two different event seqs.
    let published = by_point(mqtt_events(&sub, "spc.violation").iter());
    assert!(published.len() >= 20);
    for (seq, rules) in &published {
        assert_eq!(want.get(seq), Some(rules), "published alarm at {seq}");
    }
}

/// The demo (`lineside demo`, config/demo.toml) must show a real alarm from its scheduled disturbances,
/// within about a minute, and no alarm before them. The sim is deterministic by sample index, so the
/// demo is run here 100 times faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_alarms_on_its_scheduled_disturbances_only() {
    let port = rumqttd().await;
    let dir = tempfile::tempdir().unwrap();
    let demo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap();
    let mut text = String::new();
    for line in demo.lines() {
        let line = match line.split_once('#').map_or(line, |(l, _)| l).trim() {
            l if l.starts_with("state_dir") => {
                format!("state_dir = {:?}", dir.path().display().to_string())
            }
            l if l.starts_with("url") => format!("url = \"mqtt://127.0.0.1:{port}\""),
            l if l.starts_with("embedded_broker") || l.starts_with("echo") => String::new(),
            "interval = \"200ms\"" => "interval = \"2ms\"".into(),
            "interval = \"500ms\"" => "interval = \"5ms\"".into(),
            "interval = \"250ms\"" => "interval = \"2500us\"".into(),
            _ => line.to_string(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    // 330 press strokes: past the start of the drift (300) and its detection.
    assert!(
        wait_for(Duration::from_secs(60), || {
            StoreReader::open(&db).is_ok_and(|mut r| {
                r.tag_readings("press-3", "press_force", 0, 400)
                    .is_ok_and(|v| v.len() >= 330)
            })
        })
        .await
    );
    stop_agent(stop, task).await;

    // Sample index of each reading of its tag.
    let mut reader = StoreReader::open(&db).unwrap();
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reader.readings_after(0, 1_000_000).unwrap() {
        let n = counts
            .entry(format!("{}/{}", r.reading.device, r.reading.tag))
            .or_default();
        index.insert(r.seq, *n);
        *n += 1;
    }
    let first = |ch: &str| {
        events(&db, "spc.violation")
            .iter()
            .filter(|(_, b)| b["characteristic"] == ch)
            .map(|(_, b)| index[&b["point_seq"].as_u64().unwrap()])
            .min()
    };
    // Bore: shift at sample 150 (30 s); 5 samples a second.
    let bore = first("bore-diameter").expect("the bore shift alarms");
    assert!(
        (150..300).contains(&bore),
        "first bore alarm at sample {bore}"
    );
    // Press: drift from stroke 300 (150 s).
    let press = first("press-force").expect("the press drift alarms");
    assert!(
        (300..330).contains(&press),
        "first press alarm at stroke {press}"
    );
    assert_eq!(
        events(&db, "spc.limits").len(),
        1,
        "the bore baseline froze once"
    );
}
