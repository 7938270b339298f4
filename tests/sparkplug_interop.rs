//! Sparkplug payloads lineside encodes, decoded by an independent implementation (pysparkplug, whose
//! protobuf code comes from Google's protoc and the Sparkplug schema): every message type decodes,
//! aliases resolve against the births, values and datatypes round-trip, `seq` is gap-free modulo 256
//! and the NDEATH's bdSeq matches the NBIRTH's. Needs python with pysparkplug (`scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sparkplug_host;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lineside::sparkplug::{
    Catalog, DataType, EdgeNode, MessageType, NodeTopics, PackLimits, TagSpec,
};
use lineside::store::StoredReading;
use lineside_drivers::{Quality, Reading, Value};
use serde_json::{Value as Json, json};

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_764_000_000_000 + ms).unwrap()
}

fn reading(
    seq: u64,
    device: &str,
    tag: &str,
    value: Option<Value>,
    quality: Quality,
) -> StoredReading {
    StoredReading {
        seq,
        reading: Reading {
            device: Arc::from(device),
            tag: Arc::from(tag),
            ts: ts(seq as i64 * 10),
            value,
            quality,
            unit: Some(Arc::from("mm")),
        },
    }
}

fn tag(device: &str, tag: &str, datatype: DataType) -> TagSpec {
    TagSpec {
        device: device.into(),
        tag: tag.into(),
        unit: Some("mm".into()),
        datatype,
    }
}

/// (topic, payload) of every message, in publish order.
fn wire(msgs: &[lineside::sparkplug::Message]) -> Vec<(String, Vec<u8>)> {
    msgs.iter()
        .map(|m| (m.topic.clone(), m.payload.clone()))
        .collect()
}

#[test]
#[ignore = "needs python with pysparkplug (scripts/test installs it)"]
fn every_message_type_decodes_and_values_round_trip() {
    let catalog = Catalog::new(&[
        tag("press", "force", DataType::Double),
        tag("press", "count", DataType::Int64),
        tag("press", "running", DataType::Boolean),
        tag("press", "recipe", DataType::String),
        tag("press", "energy", DataType::UInt64),
        tag("oven", "temp", DataType::Double),
    ]);
    let mut node = EdgeNode::new(
        NodeTopics::new("Plant A", "line-3").unwrap(),
        catalog,
        Duration::from_secs(5),
    );
    let mut sent = Vec::new();
    sent.push(node.connect(42, ts(0)));
    let node_metrics = vec![
        (
            "Status/Readings Forwarded".to_string(),
            Value::I64(i64::MAX),
        ),
        ("Status/Offset".to_string(), Value::I64(i64::MIN)),
        (
            "Properties/Version".to_string(),
            Value::Str(Arc::from("0.1.0")),
        ),
    ];
    let backlog = [
        reading(1, "press", "force", Some(Value::F64(12.5)), Quality::Good),
        reading(
            2,
            "press",
            "count",
            Some(Value::I64(i64::MIN)),
            Quality::Good,
        ),
    ];
    node.remember_latest(&backlog[1..]);
    sent.extend(node.birth(ts(100), &node_metrics, 2, Instant::now()));
    let readings = vec![
        backlog[0].clone(),
        backlog[1].clone(),
        reading(
            3,
            "press",
            "count",
            Some(Value::I64(i64::MAX)),
            Quality::Good,
        ),
        reading(4, "press", "count", Some(Value::I64(-1)), Quality::Good),
        reading(
            5,
            "press",
            "running",
            Some(Value::Bool(true)),
            Quality::Good,
        ),
        reading(
            6,
            "press",
            "recipe",
            Some(Value::Str(Arc::from("Stahl 1.4301 – ø12"))),
            Quality::Good,
        ),
        reading(
            7,
            "press",
            "force",
            Some(Value::F64(f64::MIN_POSITIVE)),
            Quality::Good,
        ),
        reading(
            8,
            "press",
            "force",
            Some(Value::F64(-1.0e308)),
            Quality::Good,
        ),
        reading(
            9,
            "press",
            "force",
            None,
            Quality::Bad(Arc::from("timeout")),
        ),
        reading(
            10,
            "press",
            "force",
            Some(Value::F64(3.0)),
            Quality::Uncertain(Arc::from("sensor clamped")),
        ),
        reading(11, "oven", "temp", Some(Value::F64(180.25)), Quality::Good),
        // A tag the configuration did not list: the press is born again before this reading.
        reading(
            12,
            "press",
            "mode",
            Some(Value::Str(Arc::from("auto"))),
            Quality::Good,
        ),
        reading(
            13,
            "press",
            "recipe",
            Some(Value::Str(Arc::from(""))),
            Quality::Good,
        ),
    ];
    let limits = PackLimits {
        max_metrics: 4,
        max_bytes: 64 * 1024,
        max_messages: 100,
    };
    let packed = node.pack(&readings, ts(200), limits);
    assert_eq!(packed.taken, readings.len());
    sent.extend(packed.messages);
    let status = vec![
        ("Status/Readings Forwarded".to_string(), Value::I64(15)),
        ("Status/Offset".to_string(), Value::I64(i64::MIN)),
        (
            "Properties/Version".to_string(),
            Value::Str(Arc::from("0.1.0")),
        ),
    ];
    sent.extend(node.node_data(ts(300), &status));
    sent.extend(node.device_down(&Arc::from("oven"), ts(400)));
    sent.extend(node.device_up(&Arc::from("oven"), ts(500)));
    sent.extend(
        node.pack(
            &[reading(
                14,
                "oven",
                "temp",
                Some(Value::F64(181.0)),
                Quality::Good,
            )],
            ts(600),
            limits,
        )
        .messages,
    );
    sent.push(node.death(ts(700)));

    let decoded = sparkplug_host::decode_all(&wire(&sent));
    for d in &decoded {
        assert!(d.get("error").is_none(), "decoder error: {d}");
    }
    let types: std::collections::BTreeSet<&str> = decoded
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    for t in ["NDEATH", "NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDEATH"] {
        assert!(types.contains(t), "{t} decoded");
    }

    // seq: NBIRTH 0, then +1 per message (mod 256) over everything but NDEATH.
    let seqs: Vec<u64> = decoded
        .iter()
        .filter(|d| d["type"] != "NDEATH")
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs[0], 0);
    for w in seqs.windows(2) {
        assert_eq!(w[1], (w[0] + 1) % 256, "gap-free: {seqs:?}");
    }
    // bdSeq: the will and the NBIRTH agree, Int64.
    let bd = |d: &Json| {
        d["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "bdSeq")
            .cloned()
            .unwrap()
    };
    let nbirth = decoded.iter().find(|d| d["type"] == "NBIRTH").unwrap();
    assert_eq!(bd(&decoded[0])["value"], 42);
    assert_eq!(bd(nbirth)["value"], 42);
    assert_eq!(bd(nbirth)["datatype"], "INT64");
    assert_eq!(bd(decoded.last().unwrap())["value"], 42);
    let rebirth = nbirth["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Node Control/Rebirth")
        .unwrap();
    assert_eq!(rebirth["value"], false);
    assert_eq!(rebirth["datatype"], "BOOLEAN");
    assert!(rebirth["alias"].is_null());
    let node_metric = |name: &str| {
        nbirth["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        node_metric("Status/Readings Forwarded")["value"],
        json!(i64::MAX)
    );
    assert_eq!(node_metric("Status/Offset")["value"], json!(i64::MIN));
    assert_eq!(node_metric("Status/Offset")["datatype"], "INT64");

    // The press's first DBIRTH: every configured tag, current value or null, unit as a property.
    let press_birth = decoded
        .iter()
        .find(|d| d["type"] == "DBIRTH" && d["device"] == "press")
        .unwrap();
    let bm = press_birth["metrics"].as_array().unwrap();
    assert_eq!(bm.len(), 5);
    let count = bm.iter().find(|m| m["name"] == "count").unwrap();
    assert_eq!(count["value"], json!(i64::MIN));
    assert_eq!(count["datatype"], "INT64");
    assert_eq!(count["properties"]["engUnit"], "mm");
    let force = bm.iter().find(|m| m["name"] == "force").unwrap();
    assert_eq!(force["is_null"], true);
    assert_eq!(force["datatype"], "DOUBLE");

    // Every reading arrives once in DDATA, by name after alias resolution, with its own timestamp.
    let data: Vec<(String, Json)> = decoded
        .iter()
        .filter(|d| d["type"] == "DDATA")
        .flat_map(|d| {
            let dev = d["device"].as_str().unwrap().to_string();
            d["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |m| (dev.clone(), m.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(data.len(), readings.len() + 1);
    for (i, r) in readings.iter().enumerate() {
        let (dev, m) = &data[i];
        let rd = &r.reading;
        assert_eq!(dev, &*rd.device);
        assert_eq!(m["name"], &*rd.tag, "alias resolved to the name");
        assert!(m["alias"].is_u64());
        assert_eq!(
            m["timestamp"],
            rd.ts.timestamp_millis(),
            "original timestamp"
        );
        assert_eq!(m["is_historical"], r.seq <= 2, "backlog flagged");
        let expected = match &rd.value {
            None => Json::Null,
            Some(Value::F64(x)) => json!(x),
            Some(Value::I64(x)) => json!(x),
            Some(Value::U64(x)) => json!(x),
            Some(Value::Bool(b)) => json!(b),
            Some(Value::Str(s)) => json!(&**s),
        };
        assert_eq!(m["value"], expected, "value of reading {}", r.seq);
        let dt = match &rd.value {
            Some(Value::I64(_)) => "INT64",
            Some(Value::U64(_)) => "UINT64",
            Some(Value::Bool(_)) => "BOOLEAN",
            Some(Value::Str(_)) => "STRING",
            _ => "DOUBLE",
        };
        assert_eq!(m["datatype"], dt, "datatype of reading {}", r.seq);
        match &rd.quality {
            Quality::Good => assert!(m.get("properties").is_none()),
            Quality::Bad(reason) => {
                assert_eq!(m["is_null"], true);
                assert_eq!(m["properties"]["Quality"], 0);
                assert_eq!(m["properties"]["Quality Reason"], &**reason);
            }
            Quality::Uncertain(reason) => {
                assert_eq!(m["properties"]["Quality"], 500);
                assert_eq!(m["properties"]["Quality Reason"], &**reason);
            }
        }
    }

    // The DBIRTH for the new tag precedes its data and carries the values sent before it.
    let idx = |pred: &dyn Fn(&Json) -> bool| decoded.iter().position(pred).unwrap();
    let second_birth = idx(&|d| {
        d["type"] == "DBIRTH"
            && d["device"] == "press"
            && d["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "mode")
    });
    let mode_data = idx(&|d| {
        d["type"] == "DDATA"
            && d["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "mode")
    });
    assert!(second_birth < mode_data);
    let nd = decoded.iter().find(|d| d["type"] == "NDATA").unwrap();
    assert_eq!(nd["metrics"][0]["name"], "Status/Readings Forwarded");
    assert_eq!(nd["metrics"][0]["value"], 15);
    let ddeath = idx(&|d| d["type"] == "DDEATH");
    assert_eq!(decoded[ddeath]["device"], "oven");
    assert_eq!(decoded[ddeath + 1]["type"], "DBIRTH", "back up: born again");
    assert_eq!(
        sent.iter()
            .filter(|m| m.kind == MessageType::NDeath)
            .count(),
        2
    );
}
