//! The exact integers of issue 11, end to end: 64-bit extremes held by independent servers (pymodbus and
//! Python asyncua, tests/interop) travel through the Modbus and OPC UA drivers, the store and the forwarder
//! to a real broker (mosquitto), and the JSON payload a subscriber receives carries every digit. The payload
//! is checked as text and through serde_json's integer forms (u64/i64), never through an f64.
//!
//! Needs mosquitto and the Python venv with pymodbus and asyncua (`LINESIDE_MOSQUITTO`, `LINESIDE_PYTHON`;
//! scripts/test installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// A Python peer from tests/interop; killed when dropped.
struct Peer {
    child: Child,
    /// The script's first stdout line: the TCP port it bound.
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer(script: &str, args: &[&str]) -> Peer {
    let python = std::env::var("LINESIDE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(&python)
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} {path}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("{script} printed {line:?}, not a port (are pymodbus and asyncua installed for {python}?)")
    });
    Peer { child, port }
}

/// (device, tag, the value as JSON text).
const EXPECTED: [(&str, &str, &str); 8] = [
    ("plc", "u64_max", "18446744073709551615"),
    ("plc", "i64_min", "-9223372036854775808"),
    ("plc", "i64_max", "9223372036854775807"),
    ("plc", "u64_big", "12345678901234567890"),
    ("cnc", "umax", "18446744073709551615"),
    ("cnc", "big", "12345678901234567890"),
    ("cnc", "imin", "-9223372036854775808"),
    ("cnc", "imax", "9223372036854775807"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto, pymodbus and asyncua; run by scripts/test"]
async fn sixty_four_bit_extremes_reach_the_mqtt_payload_exactly() {
    let broker = Mosquitto::start().await;
    let modbus = peer("modbus_server.py", &["tcp"]);
    let opcua = peer("opcua_server.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[agent]\nid = \"test-gw\"\nstate_dir = {state:?}\n\n\
         [store]\nflush_interval = \"20ms\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt}\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\n\
         [[device]]\nname = \"plc\"\ndriver = \"modbus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{mb}\"\n\
         poll_interval = \"200ms\"\norder = \"abcd\"\n\
         [[device.tag]]\nname = \"u64_max\"\naddress = 300\ntype = \"u64\"\n\
         [[device.tag]]\nname = \"i64_min\"\naddress = 304\ntype = \"i64\"\n\
         [[device.tag]]\nname = \"i64_max\"\naddress = 308\ntype = \"i64\"\n\
         [[device.tag]]\nname = \"u64_big\"\naddress = 312\ntype = \"u64\"\n\n\
         [[device]]\nname = \"cnc\"\ndriver = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{ua}/lineside/\"\n\
         mode = \"subscription\"\npublishing_interval = \"200ms\"\n\
         [[device.tag]]\nname = \"umax\"\nnode = \"nsu=urn:lineside:interop;s=UMax\"\n\
         [[device.tag]]\nname = \"big\"\nnode = \"nsu=urn:lineside:interop;s=Big\"\n\
         [[device.tag]]\nname = \"imin\"\nnode = \"nsu=urn:lineside:interop;s=IMin\"\n\
         [[device.tag]]\nname = \"imax\"\nnode = \"nsu=urn:lineside:interop;s=IMax\"\n",
        state = dir.path().display().to_string(),
        mqtt = broker.port,
        mb = modbus.port,
        ua = opcua.port,
    );
    let cfg = load(&text, dir.path());

    // A subscriber that keeps every data payload as the broker delivered it (bytes → text, nothing parsed).
    let payloads: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut opts = MqttOptions::new("exact-int-sub", "127.0.0.1", broker.port);
    opts.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let sink = payloads.clone();
    let sub_task = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        while let Ok(ev) = eventloop.poll().await {
            match ev {
                Event::Incoming(Packet::ConnAck(_)) => {
                    let _ = client.subscribe("#", QoS::AtLeastOnce).await;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) if p.topic.contains("/data") => {
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), subscribed_rx)
        .await
        .expect("the subscriber did not subscribe")
        .unwrap();

    let (stop, task) = spawn_agent(cfg);

    // First good value of every (device, tag), as the raw JSON text of its `value` and as serde_json's
    // exact integer. Generous deadline: a loaded 2-core machine and an OPC UA session set-up.
    let deadline = Instant::now() + Duration::from_secs(90);
    let found = loop {
        let found = first_values(&payloads.lock().unwrap());
        if EXPECTED
            .iter()
            .all(|(d, t, _)| found.contains_key(&(d.to_string(), t.to_string())))
        {
            break found;
        }
        if Instant::now() > deadline {
            let seen = payloads.lock().unwrap().join("\n");
            panic!("not every tag arrived with a good value; found {found:?}; payloads:\n{seen}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (device, tag, want) in EXPECTED {
        let (raw, parsed) = &found[&(device.to_string(), tag.to_string())];
        assert_eq!(raw, want, "{device}/{tag}: the payload text of the value");
        let exact = parsed
            .as_u64()
            .map(|v| v.to_string())
            .or_else(|| parsed.as_i64().map(|v| v.to_string()));
        assert_eq!(
            exact.as_deref(),
            Some(want),
            "{device}/{tag}: not an exact integer in the payload ({parsed})"
        );
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the agent did not stop")
        .unwrap()
        .unwrap();
    sub_task.abort();
}

/// For every (device, tag) with a good reading in `payloads`: the raw text of its first value and that
/// value parsed by serde_json (which keeps integers as u64/i64, exactly).
fn first_values(payloads: &[String]) -> HashMap<(String, String), (String, serde_json::Value)> {
    let mut out = HashMap::new();
    for text in payloads {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
            continue;
        };
        let Some(readings) = doc["readings"].as_array() else {
            continue;
        };
        for r in readings {
            if r["quality"] != "good" {
                continue;
            }
            // The raw text of this reading's value: the first `"value":` after its (unique) `"seq":N`.
            let Some(seq) = r["seq"].as_u64() else {
                continue;
            };
            let marker = format!("\"seq\":{seq},");
            let Some(from) = text.find(&marker) else {
                continue;
            };
            let rest = &text[from..];
            let Some(at) = rest.find("\"value\":") else {
                continue;
            };
            let value = &rest[at + "\"value\":".len()..];
            let raw = value[..value.find([',', '}']).unwrap_or(value.len())].trim();
            let device = r["device"]
                .as_str()
                .or_else(|| doc["device"].as_str())
                .unwrap_or_default()
                .to_string();
            let tag = r["tag"].as_str().unwrap_or_default().to_string();
            out.entry((device, tag))
                .or_insert_with(|| (raw.to_string(), r["value"].clone()));
        }
    }
    out
}
