//! lineside as a Sparkplug B edge node against mosquitto and an independent host (pysparkplug, see
//! tests/interop/sparkplug_host.py): births before data, seq gap-free modulo 256 per session, the
//! NDEATH's bdSeq matching the NBIRTH's, rebirth on request, aliases resolving; no loss through a
//! broker outage and a kill -9 (every reading exactly once after de-duplication, redeliveries flagged
//! historical); data held while the primary host is offline and delivered as historical after.
//! Needs mosquitto and python with pysparkplug (`scripts/test` installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sparkplug_host;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value as Json;
use sparkplug_host::Host;

const GROUP: &str = "lineside-test";
const NODE: &str = "test-gw";

fn sp_config(
    dir: &Path,
    port: u16,
    devices: usize,
    tags: usize,
    interval: &str,
    extra: &str,
) -> String {
    let text = sim_config(dir, port, devices, tags, interval, "");
    let text = text.replacen(
        "max_readings_per_message = 200\n",
        "max_readings_per_message = 200\nencoding = \"sparkplug\"\n",
        1,
    );
    format!("{text}\n[sparkplug]\ngroup_id = \"{GROUP}\"\nrebirth_min_interval = \"1s\"\n{extra}")
}

/// A reading's identity as a host sees it: device, metric, timestamp (ms) and value. Sparkplug carries
/// no store seq; two readings of a tag can share a millisecond, but not also the value (sim noise).
type Key = (String, String, i64, String);

/// The exact bits of a double value (the host reports them as `value_bits`).
fn value_key(bits: Option<u64>) -> String {
    bits.map_or_else(|| "null".to_string(), |b| format!("{b:016x}"))
}

/// Every reading in the store up to `upto`: key → seq.
fn db_readings(db: &Path, upto: u64) -> BTreeMap<Key, u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT r.seq, t.device, t.tag, r.ts, r.value FROM readings r \
             JOIN tags t ON t.id = r.tag_id WHERE r.seq <= ?1",
        )
        .unwrap();
    let rows = stmt
        .query_map([upto as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<f64>>(4)?,
            ))
        })
        .unwrap();
    let mut out = BTreeMap::new();
    for row in rows {
        let (seq, d, t, us, v) = row.unwrap();
        let prev = out.insert(
            (d, t, us.div_euclid(1000), value_key(v.map(f64::to_bits))),
            seq,
        );
        assert!(prev.is_none(), "two identical readings in the store");
    }
    out
}

/// Every DDATA metric received: key → is_historical of each arrival, in arrival order.
fn deliveries(msgs: &[Json]) -> HashMap<Key, Vec<bool>> {
    let mut out: HashMap<Key, Vec<bool>> = HashMap::new();
    // The broker's own QoS 1 redeliveries to a persistent host session are the same message again.
    let mut seen = std::collections::HashSet::new();
    for m in msgs
        .iter()
        .filter(|m| m["type"] == "DDATA" && m["node"] == NODE)
    {
        if !seen.insert((
            m["topic"].to_string(),
            m["timestamp"].to_string(),
            m["seq"].to_string(),
        )) {
            continue;
        }
        let device = m["device"].as_str().unwrap().to_string();
        for metric in m["metrics"].as_array().unwrap() {
            let key = (
                device.clone(),
                metric["name"].as_str().unwrap().to_string(),
                metric["timestamp"].as_i64().unwrap(),
                value_key(metric["value_bits"].as_u64()),
            );
            out.entry(key)
                .or_default()
                .push(metric["is_historical"] == true);
        }
    }
    out
}

fn bd_seq(m: &Json) -> i64 {
    m["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "bdSeq")
        .and_then(|x| x["value"].as_i64())
        .expect("bdSeq metric")
}

/// Checks the node's messages session by session (a session: NBIRTH … up to the next NBIRTH or the
/// NDEATH with its bdSeq): seq starts at 0 and grows by one modulo 256 with no gap, and a device's
/// DDATA comes after its DBIRTH. Returns (bdSeq, messages) per session.
fn sessions(msgs: &[Json]) -> Vec<(i64, Vec<Json>)> {
    for m in msgs {
        assert!(m.get("error").is_none(), "the host could not decode: {m}");
    }
    let mut out: Vec<(i64, Vec<Json>)> = Vec::new();
    let mut open = false;
    // A persistent host session gets QoS 1 messages again after a broker restart (MQTT redelivery,
    // not the node's doing): a message seen before (same topic, payload time and seq) is skipped.
    let mut seen = std::collections::HashSet::new();
    for m in msgs.iter().filter(|m| m["node"] == NODE) {
        if !seen.insert((
            m["topic"].to_string(),
            m["timestamp"].to_string(),
            m["seq"].to_string(),
        )) {
            continue;
        }
        match m["type"].as_str().unwrap() {
            "NBIRTH" => {
                assert_eq!(m["seq"], 0, "NBIRTH starts at seq 0");
                out.push((bd_seq(m), vec![m.clone()]));
                open = true;
            }
            "NDEATH" => {
                if let Some((bd, _)) = out.last()
                    && *bd == bd_seq(m)
                {
                    open = false;
                }
            }
            "NCMD" | "DCMD" => {}
            _ => {
                assert!(open, "a message outside a session: {m}");
                let (_, s) = out.last_mut().unwrap();
                let prev = s.last().unwrap()["seq"].as_u64().unwrap();
                assert_eq!(
                    m["seq"].as_u64().unwrap(),
                    (prev + 1) % 256,
                    "seq gap after {prev}: {m}"
                );
                if m["type"] == "DDATA" {
                    assert!(
                        s.iter()
                            .any(|b| b["type"] == "DBIRTH" && b["device"] == m["device"]),
                        "DDATA before its DBIRTH: {m}"
                    );
                }
                s.push(m.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and python with pysparkplug (scripts/test installs them)"]
async fn births_data_rebirth_and_death_as_a_host_sees_them() {
    let broker = Mosquitto::start().await;
    let mut host = Host::start(broker.port, GROUP, None).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(
        &sp_config(dir.path(), broker.port, 2, 3, "20ms", ""),
        dir.path(),
    );
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);

    let ddata = |s: &[Json]| s.iter().filter(|m| m["type"] == "DDATA").count();
    assert!(
        host.wait_until(Duration::from_secs(20), |s| ddata(s) >= 20)
            .await,
        "DDATA arrives"
    );
    host.rebirth(NODE);
    assert!(
        host.wait_until(Duration::from_secs(10), |s| s
            .iter()
            .filter(|m| m["type"] == "NBIRTH")
            .count()
            >= 2)
            .await,
        "a rebirth request yields a new NBIRTH"
    );
    let before = host.messages().len();
    assert!(
        host.wait_until(Duration::from_secs(10), |s| s.len() > before + 20)
            .await
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(
        host.wait_until(Duration::from_secs(10), |s| s
            .iter()
            .any(|m| m["type"] == "NDEATH"))
            .await,
        "NDEATH on a clean stop"
    );

    let msgs = host.messages();
    let sessions = sessions(&msgs);
    assert_eq!(sessions.len(), 2, "the first birth and the rebirth");
    assert_eq!(sessions[0].0, sessions[1].0, "a rebirth keeps the bdSeq");
    let death = msgs.iter().find(|m| m["type"] == "NDEATH").unwrap();
    assert_eq!(
        bd_seq(death),
        sessions[0].0,
        "NDEATH's bdSeq matches the NBIRTH's"
    );
    assert!(death["seq"].is_null());
    for (_, s) in &sessions {
        let births: Vec<&str> = s
            .iter()
            .filter(|m| m["type"] == "DBIRTH")
            .map(|m| m["device"].as_str().unwrap())
            .collect();
        assert!(
            births.contains(&"dev0") && births.contains(&"dev1"),
            "{births:?}"
        );
        // Births first: the NBIRTH, then the DBIRTHs, then data.
        let first_data = s.iter().position(|m| m["type"] == "DDATA").unwrap();
        assert!(s[..first_data].iter().all(|m| m["type"] != "DDATA"));
        assert_eq!(s[1]["type"], "DBIRTH");
        let nb = &s[0];
        let rebirth = nb["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "Node Control/Rebirth")
            .unwrap();
        assert_eq!(rebirth["value"], false);
        assert!(
            nb["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "Properties/Version"),
            "node metrics from the status"
        );
    }
    // Every DBIRTH names every configured tag with its unit; data resolves to those names.
    let db_birth = msgs
        .iter()
        .find(|m| m["type"] == "DBIRTH" && m["device"] == "dev0")
        .unwrap();
    let names: Vec<&str> = db_birth["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t0", "t1", "t2"]);
    assert_eq!(db_birth["metrics"][0]["datatype"], "DOUBLE");
    assert_eq!(db_birth["metrics"][0]["properties"]["engUnit"], "mm");
    // All readings arrived (nothing was lost on a clean run), values as stored.
    let stored = db_readings(&db, db_max_seq(&db));
    let got = deliveries(&msgs);
    let missing: Vec<_> = stored
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(msgs.iter().all(|m| m["qos"] == 0 || m["type"] == "STATE"));
}

fn spawn_binary(config: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lineside"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start lineside")
}

/// Each reading arrived at least once; after the first arrival every further one is flagged
/// historical (a redelivery is backlog of a later session by definition).
fn check_exactly_once(
    stored: &BTreeMap<Key, u64>,
    got: &HashMap<Key, Vec<bool>>,
) -> (usize, usize) {
    let missing: Vec<_> = stored
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "readings that never arrived: {missing:?}"
    );
    let mut duplicates = 0;
    let mut historical = 0;
    for (k, arrivals) in got {
        if !stored.contains_key(k) {
            continue; // committed after the snapshot
        }
        duplicates += arrivals.len() - 1;
        historical += arrivals.iter().filter(|h| **h).count();
        assert!(
            arrivals[1..].iter().all(|h| *h),
            "a redelivery not flagged historical: {k:?} {arrivals:?}"
        );
    }
    (duplicates, historical)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and python with pysparkplug (scripts/test installs them)"]
async fn broker_outage_and_kill_dash_nine_lose_nothing() {
    let mut broker = Mosquitto::start().await;
    let host = Host::start_with(broker.port, GROUP, None, Some("sparkplug-historian")).await;
    let dir = tempfile::tempdir().unwrap();
    // 2 devices × 5 tags every 10 ms: about 1,000 readings/s.
    let text = sp_config(dir.path(), broker.port, 2, 5, "10ms", "");
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let config_path = dir.path().join("lineside.toml");
    let mut agent = spawn_binary(&config_path);
    let count = |s: &[Json]| s.iter().filter(|m| m["type"] == "DDATA").count();
    assert!(
        host.wait_until(Duration::from_secs(20), |s| count(s) > 50)
            .await
    );

    // Broker outage under load.
    broker.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart().await;
    // Data of the node's NEW session: the persistent host session also gets old QoS 1 messages
    // redelivered by the restarted broker, which must not pass for the agent being back (it once did,
    // and the agent was then killed before its second session began).
    let new_session_data = |s: &[Json]| {
        sessions(s)
            .get(1)
            .is_some_and(|(_, m)| m.iter().filter(|m| m["type"] == "DDATA").count() > 50)
    };
    assert!(
        host.wait_until(Duration::from_secs(30), new_session_data)
            .await,
        "data flows again after the outage, in a new session"
    );

    // kill -9 under load, then start again.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let at_kill = db_max_seq(&db);
    let mut agent = spawn_binary(&config_path);
    let stored = db_readings(&db, at_kill);
    let ok = host
        .wait_until(Duration::from_secs(60), |s| {
            let got = deliveries(s);
            // Also the restarted agent's own session: everything may have arrived before the kill,
            // and a TERM before the new agent connected would leave no session to check.
            stored.keys().all(|k| got.contains_key(k)) && sessions(s).len() >= 3
        })
        .await;
    Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    agent.wait().unwrap();
    assert!(ok, "every reading committed before the kill arrives");
    let msgs = host.messages();
    let sessions = sessions(&msgs);
    assert!(
        sessions.len() >= 3,
        "a session per connection: {}",
        sessions.len()
    );
    let bds: Vec<i64> = sessions.iter().map(|(b, _)| *b).collect();
    for w in bds.windows(2) {
        // Every CONNECT takes the next number, also the attempts that failed while the broker was down.
        let step = (w[1] - w[0]).rem_euclid(256);
        assert!(
            (1..128).contains(&step),
            "bdSeq grows per connection, across the restart: {bds:?}"
        );
    }
    let (duplicates, historical) = check_exactly_once(&stored, &deliveries(&msgs));
    assert!(
        historical > 0,
        "the backlog after the restart is flagged historical"
    );
    eprintln!(
        "readings {} (up to seq {at_kill}), duplicates before de-duplication {duplicates}, historical {historical}, sessions {}",
        stored.len(),
        sessions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and python with pysparkplug (scripts/test installs them)"]
async fn data_is_held_while_the_primary_host_is_offline_and_sent_as_historical() {
    let broker = Mosquitto::start().await;
    let mut host = Host::start(broker.port, GROUP, Some("scada")).await;
    let dir = tempfile::tempdir().unwrap();
    let text = sp_config(
        dir.path(),
        broker.port,
        1,
        2,
        "20ms",
        "primary_host_id = \"scada\"\n",
    );
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    let ddata = |s: &[Json]| s.iter().filter(|m| m["type"] == "DDATA").count();
    assert!(
        host.wait_until(Duration::from_secs(20), |s| ddata(s) > 10)
            .await
    );

    host.set_online(false);
    assert!(
        host.wait_until(Duration::from_secs(10), |s| s
            .iter()
            .any(|m| m["type"] == "NDEATH"))
            .await,
        "the node ends its session when the primary host goes offline"
    );
    let at_offline = host.messages().len();
    let seq_offline = db_max_seq(&db);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<Json> = host.messages()[at_offline..].to_vec();
    assert!(
        during
            .iter()
            .all(|m| m["type"] != "DDATA" && m["type"] != "NBIRTH"),
        "nothing is published while the primary host is offline: {during:?}"
    );
    let held_upto = db_max_seq(&db);
    assert!(
        held_upto > seq_offline + 50,
        "readings keep being stored meanwhile"
    );

    host.set_online(true);
    let stored = db_readings(&db, held_upto);
    assert!(
        host.wait_until(Duration::from_secs(30), |s| {
            let got = deliveries(s);
            stored.keys().all(|k| got.contains_key(k))
        })
        .await,
        "the held readings arrive after the host is back"
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    let msgs = host.messages();
    let sessions = sessions(&msgs);
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        sessions[1].0,
        (sessions[0].0 + 1) % 256,
        "a new connection, a new bdSeq"
    );
    let got = deliveries(&msgs);
    let held: Vec<&Key> = stored
        .iter()
        .filter(|(_, seq)| **seq > seq_offline)
        .map(|(k, _)| k)
        .collect();
    assert!(held.len() > 50);
    for k in held {
        assert!(
            got[k].iter().all(|h| *h),
            "a reading held while the host was offline is historical: {k:?}"
        );
    }
    check_exactly_once(&stored, &got);
}
