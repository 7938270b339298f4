//! End to end: sim with a scheduled mean shift → store → SPC → MQTT. The expected alarms are computed
//! here by hand from the readings the store committed (never guessed), and compared with what the
//! agent stored and published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// The individuals-chart points published, as (point seq → rules broken), asserting each point
/// published once and numbered 1, 2, 3 ... in order.
fn flags(points: &[serde_json::Value]) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut expect_subgroup = None;
    for p in points.iter().filter(|p| p["chart"] == "i") {
        let seq = p["seq"].as_u64().unwrap();
        assert!(seen.insert(seq), "point {seq} published twice");
        let n = p["subgroup"].as_u64().unwrap();
        if let Some(e) = expect_subgroup {
            assert_eq!(n, e, "subgroups are numbered in order");
        }
        expect_subgroup = Some(n + 1);
        let rules: BTreeSet<String> = p["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        if !rules.is_empty() {
            out.insert(seq, rules);
        }
    }
    out
}

/// Stored episode transitions of the individuals chart: (transition, episode body).
fn i_transitions(db: &Path) -> Vec<(String, serde_json::Value)> {
    events(db, "spc.alarm")
        .into_iter()
        .filter(|(_, b)| b["chart"] == "i")
        .map(|(_, b)| (b["transition"].as_str().unwrap().to_string(), b))
        .collect()
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
            !mqtt_events(&sub, "spc.alarm").is_empty() && od_count(&sub) >= 220
        })
        .await,
        "no alarm within 30 s"
    );
    // The last points reach the subscriber shortly after the readings.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_agent(stop, task).await;

    let obs = observations(&db);
    let want = expected(&obs, true, 9);
    // Every point is published once, with the rules it broke: exactly the hand-computed flags.
    let points = messages(&sub, "spc/od/points");
    let got = flags(&points);
    let published: BTreeSet<u64> = points
        .iter()
        .filter(|p| p["chart"] == "i")
        .map(|p| p["seq"].as_u64().unwrap())
        .collect();
    let want_published: BTreeMap<u64, BTreeSet<String>> = want
        .iter()
        .filter(|(s, _)| published.contains(s))
        .map(|(s, r)| (*s, r.clone()))
        .collect();
    assert_eq!(
        got, want_published,
        "the flags are exactly the hand-computed ones"
    );
    // The shift (samples 100..140, +3 sigma) completes a run of 9 above the centre line.
    let first_shifted = obs[100].seq;
    let (&point, _) = want
        .iter()
        .find(|(s, r)| **s > first_shifted && r.contains("nelson-2"))
        .expect("the shift completes a run of 9");
    assert!(point <= obs[140].seq + 9);

    // One cause, one alarm: the individuals chart raised one episode (flags before the shift, if any,
    // and the shift share it: it was never acknowledged), at the first flagged point.
    let stored = i_transitions(&db);
    let raised: Vec<&serde_json::Value> = stored
        .iter()
        .filter(|(t, _)| t == "raised")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(raised.len(), 1, "{stored:?}");
    let (&first_flag, _) = want.iter().next().unwrap();
    assert_eq!(
        raised[0]["last"]["seq"].as_u64(),
        Some(first_flag),
        "{}",
        raised[0]
    );
    // The run joined the episode as a rule, with its text, the points of the pattern and the context.
    let with_run = stored
        .iter()
        .map(|(_, b)| b)
        .find(|b| {
            b["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule"] == "nelson-2")
        })
        .expect("an update names the run");
    let run = with_run["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "nelson-2")
        .unwrap();
    assert_eq!(
        run["text"]["en"],
        "9 points in a row on the same side of the centre line"
    );
    assert_eq!(run["text"]["zh"], "连续9点落在中心线同一侧");
    assert_eq!(run["direction"], "above");
    // It joined at the first run of 9 (before the shift if the noise made one, else in it).
    let (&first_run, _) = want.iter().find(|(_, r)| r.contains("nelson-2")).unwrap();
    assert_eq!(with_run["last"]["seq"].as_u64(), Some(first_run));
    let o = obs.iter().find(|o| o.seq == first_run).unwrap();
    assert!(
        with_run["points"].as_array().unwrap().len() >= 9,
        "the 9 points of the run are listed"
    );
    assert_eq!(with_run["characteristic"], "od");
    assert_eq!(
        with_run["context"],
        json!({"lot": o.lot}),
        "context of the point"
    );
    assert_eq!(with_run["limits"]["centre"].as_f64(), Some(10.0));
    assert_eq!(with_run["unit"], "mm");
    // The same events arrive over MQTT, with the agent's id.
    let mqtt = mqtt_events(&sub, "spc.alarm");
    let a = mqtt
        .iter()
        .find(|a| a["chart"] == "i" && a["transition"] == "raised")
        .expect("the raise is published");
    assert_eq!(a["agent"], "test-gw");
    assert_eq!(a["state"], "active-unacked");
    let o = obs.iter().find(|o| o.seq == point).unwrap();
    let p = points
        .iter()
        .find(|p| p["chart"] == "i" && p["seq"] == point)
        .expect("the alarming point was published");
    // Without a configured resolution the value is rounded to 12 significant digits (no float noise).
    assert!((p["value"].as_f64().unwrap() - o.value).abs() < 1e-9, "{p}");
    assert_eq!(p["phase"], "monitoring");
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
    let raised = |sub: &Subscriber| {
        mqtt_events(sub, "spc.alarm")
            .into_iter()
            .find(|a| a["chart"] == "i" && a["transition"] == "raised")
    };
    assert!(
        wait_for(Duration::from_secs(30), || {
            raised(&sub).is_some() && od_count(&sub) >= 200
        })
        .await,
        "no alarms within 30 s"
    );
    let episode = raised(&sub).unwrap()["episode"].as_u64().unwrap();

    send(
        &client,
        json!({"cmd": "ack", "characteristic": "od", "episode": episode, "by": "j.doe",
               "cause": "worn insert", "action": "insert replaced", "note": "see log", "id": "t-1"}),
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(10), || {
            mqtt_events(&sub, "spc.alarm")
                .iter()
                .any(|a| a["episode"] == episode && a["ack"]["by"] == "j.doe")
        })
        .await,
        "the acknowledgement is a transition of the episode"
    );
    let ack = mqtt_events(&sub, "spc.alarm")
        .into_iter()
        .find(|a| a["episode"] == episode && a["ack"]["by"] == "j.doe")
        .unwrap();
    assert!(
        ack["transition"] == "acknowledged" || ack["transition"] == "cleared",
        "{ack}"
    );
    assert_eq!(
        (ack["ack"]["cause"].as_str(), ack["ack"]["action"].as_str()),
        (Some("worn insert"), Some("insert replaced"))
    );
    assert_eq!(ack["ack"]["via"], "mqtt");
    assert!(
        wait_for(Duration::from_secs(10), || {
            mqtt_events(&sub, "agent.command").iter().any(|a| {
                a["id"] == "t-1" && a["by"] == "j.doe" && a["episodes"] == json!([episode])
            })
        })
        .await,
        "the command is audited"
    );
    let acked_or_gone = |m: &serde_json::Value| {
        m["episodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["episode"] != episode || e["state"] == "active-acked")
    };
    assert!(
        wait_for(Duration::from_secs(10), || {
            messages(&sub, "alarms/active/od")
                .last()
                .is_some_and(acked_or_gone)
        })
        .await,
        "the retained active set shows it acknowledged (or closed)"
    );

    // The same episode again, an unknown characteristic, an unknown command: rejected with a reason.
    send(&client, json!({"cmd": "ack", "characteristic": "od", "episode": episode, "by": "j.doe", "id": "t-2"})).await;
    send(&client, json!({"cmd": "ack", "characteristic": "nope", "episode": "all", "by": "j.doe", "id": "t-3"})).await;
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
        reason("t-2").contains("acknowledged already")
            || reason("t-2").contains("not an open episode"),
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
    // A subscriber arriving later sees the retained active set.
    let late = Subscriber::start(port, BASE, false).await;
    assert!(
        wait_for(Duration::from_secs(10), || !messages(
            &late,
            "alarms/active/od"
        )
        .is_empty())
        .await,
        "the active set is retained"
    );
    let retained = messages(&late, "alarms/active/od").last().cloned().unwrap();
    assert!(acked_or_gone(&retained), "{retained}");

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

    // The acknowledgement is stored once, with its audit event.
    let stored: Vec<serde_json::Value> = events(&db, "spc.alarm")
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| b["episode"] == episode && b["transition"] == "acknowledged")
        .collect();
    assert!(stored.len() <= 1, "{stored:?}");
    let audits = events(&db, "agent.command");
    assert_eq!(
        audits.iter().filter(|(_, b)| b["id"] == "t-1").count(),
        1,
        "{audits:?}"
    );
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
    assert!(events(&db, "spc.alarm").is_empty());
    let stale_state = std::fs::read(&state).expect("the SPC state is saved at shutdown");

    // 2: the run continues and completes.
    let (stop, task) = spawn_agent(load(&text, dir.path()));
    assert!(
        wait_for(Duration::from_secs(30), || !mqtt_events(&sub, "spc.alarm")
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
    let raised_at = |db: &Path| -> Vec<u64> {
        i_transitions(db)
            .iter()
            .filter(|(t, _)| t == "raised")
            .map(|(_, b)| b["last"]["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        raised_at(&db),
        [first_alarm],
        "one episode, raised at the {RUN}th point of the run, counting the points before the restart"
    );
    let before = i_transitions(&db);

    // 3: a crash-like restart from the older state: the readings of run 2 are replayed, and their
    // transitions, already stored, are not stored again.
    std::fs::write(&state, &stale_state).unwrap();
    let (stop, task) = spawn_agent(load(&text, dir.path()));
    let target = od_count(&sub) + 20;
    assert!(wait_for(Duration::from_secs(20), || od_count(&sub) >= target).await);
    stop_agent(stop, task).await;

    let obs = observations(&db);
    let want = expected(&obs, false, RUN);
    assert_eq!(raised_at(&db), [first_alarm], "still one episode");
    let after = i_transitions(&db);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "nothing stored before is changed"
    );
    let mut keys = BTreeSet::new();
    for (t, b) in &after {
        assert!(
            keys.insert((t.clone(), b["last"]["seq"].as_u64(), b["count"].as_u64())),
            "transition {t} at {} stored twice",
            b["last"]["seq"]
        );
    }
    // The run goes on: the episode counts every flagged point exactly once.
    let last = &after.last().unwrap().1;
    let flagged_upto = want
        .keys()
        .filter(|s| **s <= last["last"]["seq"].as_u64().unwrap())
        .count() as u64;
    assert_eq!(last["count"].as_u64(), Some(flagged_upto), "{last}");
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
    let raised = |ch: &str| -> Vec<(String, usize)> {
        events(&db, "spc.alarm")
            .iter()
            .filter(|(_, b)| b["characteristic"] == ch && b["transition"] == "raised")
            .map(|(_, b)| {
                (
                    format!("{}/{}", b["episode_kind"], b["chart"]),
                    index[&b["last"]["seq"].as_u64().unwrap()],
                )
            })
            .collect()
    };
    // Bore: shift at sample 150 (30 s); 5 samples a second. One cause, one alarm: nothing before the
    // shift, the X-bar chart raises one episode within seconds, and the 2 minutes after the shift
    // (600 samples) hold at most 3 episodes (X-bar, R and out of spec each at most once).
    let bore = raised("bore-diameter");
    assert!(bore.iter().all(|(_, at)| *at >= 150), "{bore:?}");
    let xbar: Vec<usize> = bore
        .iter()
        .filter(|(k, _)| k == "\"out-of-control\"/\"xbar\"")
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(xbar.len(), 1, "{bore:?}");
    assert!(xbar[0] < 300, "X-bar raised at sample {}", xbar[0]);
    let after_shift: Vec<&(String, usize)> = bore.iter().filter(|(_, at)| *at < 750).collect();
    assert!(after_shift.len() <= 3, "{bore:?}");
    let kinds: BTreeSet<&String> = after_shift.iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds.len(),
        after_shift.len(),
        "one episode per chart: {bore:?}"
    );
    // Press: drift from stroke 300 (150 s).
    let press = raised("press-force");
    assert_eq!(press.len(), 1, "{press:?}");
    assert!(
        (300..330).contains(&press[0].1),
        "press alarm at stroke {}",
        press[0].1
    );
    assert_eq!(
        events(&db, "spc.limits").len(),
        1,
        "the bore baseline froze once"
    );
}
