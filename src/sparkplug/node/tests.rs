use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lineside_drivers::{Quality, Reading, Value};
use prost::Message as _;

use super::*;
use crate::sparkplug::catalog::TagSpec;

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
}

fn node() -> EdgeNode {
    let tags = [("press", "force"), ("press", "count"), ("oven", "temp")]
        .iter()
        .map(|(d, t)| TagSpec {
            device: d.to_string(),
            tag: t.to_string(),
            unit: None,
            datatype: DataType::Double,
        })
        .collect::<Vec<_>>();
    EdgeNode::new(
        NodeTopics::new("g", "n").unwrap(),
        Catalog::new(&tags),
        Duration::from_secs(5),
    )
}

fn sr(seq: u64, device: &str, tag: &str, value: Option<Value>, quality: Quality) -> StoredReading {
    StoredReading {
        seq,
        reading: Reading {
            device: Arc::from(device),
            tag: Arc::from(tag),
            ts: ts(seq as i64),
            value,
            quality,
            unit: None,
        },
    }
}

fn good(seq: u64, device: &str, tag: &str, v: f64) -> StoredReading {
    sr(seq, device, tag, Some(Value::F64(v)), Quality::Good)
}

fn decode(m: &Message) -> proto::Payload {
    proto::Payload::decode(&m.payload[..]).unwrap()
}

const LIMITS: PackLimits = PackLimits {
    max_metrics: 1000,
    max_bytes: 64 * 1024,
    max_messages: 100,
};

#[test]
fn will_and_birth_carry_the_same_bd_seq_and_the_birth_starts_at_seq_zero() {
    let mut n = node();
    let will = n.connect(7, ts(0));
    assert_eq!(will.kind, MessageType::NDeath);
    assert_eq!(will.topic, "spBv1.0/g/NDEATH/n");
    let w = decode(&will);
    assert_eq!(w.seq, None, "NDEATH carries no seq");
    assert_eq!(w.metrics[0].name.as_deref(), Some("bdSeq"));
    assert_eq!(w.metrics[0].datatype, Some(DataType::Int64.code()));
    assert_eq!(w.metrics[0].value, Some(proto::metric::Value::LongValue(7)));

    let node_metrics = vec![("Status/Readings Forwarded".to_string(), Value::I64(0))];
    let msgs = n.birth(ts(1), &node_metrics, 0, Instant::now());
    let kinds: Vec<_> = msgs.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MessageType::NBirth,
            MessageType::DBirth,
            MessageType::DBirth
        ]
    );
    let seqs: Vec<_> = msgs.iter().map(|m| m.seq.unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2]);
    let nb = decode(&msgs[0]);
    assert_eq!(nb.seq, Some(0));
    let bd = nb
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .unwrap();
    assert_eq!(bd.value, Some(proto::metric::Value::LongValue(7)));
    let rebirth = nb
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some(REBIRTH))
        .unwrap();
    assert_eq!(rebirth.alias, None, "the rebirth metric is never aliased");
    assert_eq!(rebirth.datatype, Some(DataType::Boolean.code()));
    assert_eq!(
        rebirth.value,
        Some(proto::metric::Value::BooleanValue(false))
    );
    assert!(nb.metrics.iter().all(|m| m.timestamp.is_some()));
    assert_eq!(msgs[1].topic, "spBv1.0/g/DBIRTH/n/oven");
    let db = decode(&msgs[2]);
    assert_eq!(db.metrics.len(), 2);
    assert!(db.metrics.iter().all(|m| m.name.is_some()
        && m.alias.is_some()
        && m.datatype.is_some()
        && m.is_null == Some(true)));
}

#[test]
fn data_goes_by_alias_and_backlog_is_historical_with_original_timestamps() {
    let mut n = node();
    n.connect(0, ts(0));
    n.remember_latest(&[good(2, "press", "force", 1.5)]);
    let births = n.birth(ts(10), &[], 2, Instant::now());
    let press_birth = decode(births.iter().find(|m| m.topic.ends_with("/press")).unwrap());
    let force = press_birth
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("force"))
        .unwrap();
    assert_eq!(
        force.value,
        Some(proto::metric::Value::DoubleValue(1.5)),
        "current value"
    );
    assert_eq!(force.timestamp, Some(ts(2).timestamp_millis() as u64));

    let readings = [
        good(1, "press", "force", 1.0),
        good(2, "press", "force", 1.5),
        good(3, "press", "force", 2.0),
        sr(
            4,
            "press",
            "count",
            None,
            Quality::Bad(Arc::from("timeout")),
        ),
        good(5, "oven", "temp", 180.0),
    ];
    let p = n.pack(&readings, ts(20), LIMITS);
    assert_eq!(p.taken, 5);
    assert_eq!(p.skipped, 0);
    let kinds: Vec<_> = p
        .messages
        .iter()
        .map(|m| (m.kind, m.seq.unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [(MessageType::DData, 3), (MessageType::DData, 4)],
        "seq continues after the births"
    );
    let d = decode(&p.messages[0]);
    assert_eq!(d.metrics.len(), 4);
    assert!(
        d.metrics
            .iter()
            .all(|m| m.name.is_none() && m.datatype.is_none())
    );
    assert_eq!(d.metrics[0].alias, force.alias);
    let hist: Vec<_> = d
        .metrics
        .iter()
        .map(|m| m.is_historical == Some(true))
        .collect();
    assert_eq!(hist, [true, true, false, false]);
    assert_eq!(
        d.metrics[0].timestamp,
        Some(ts(1).timestamp_millis() as u64)
    );
    let bad = &d.metrics[3];
    assert_eq!(bad.is_null, Some(true));
    assert_eq!(
        bad.properties.as_ref().unwrap().keys,
        ["Quality", "Quality Reason"]
    );
}

#[test]
fn a_new_tag_or_type_gets_a_device_birth_before_its_data() {
    let mut n = node();
    n.connect(0, ts(0));
    n.birth(ts(0), &[], 0, Instant::now());
    let readings = [
        good(1, "press", "force", 1.0),
        sr(
            2,
            "press",
            "mode",
            Some(Value::Str(Arc::from("auto"))),
            Quality::Good,
        ),
        sr(
            3,
            "press",
            "count",
            Some(Value::Str(Arc::from("n/a"))),
            Quality::Good,
        ),
        good(4, "oven", "temp", 1.0),
    ];
    let p = n.pack(&readings, ts(5), LIMITS);
    let kinds: Vec<_> = p
        .messages
        .iter()
        .map(|m| (m.kind, m.device.as_deref().unwrap().to_string()))
        .collect();
    use MessageType::*;
    assert_eq!(
        kinds,
        [
            (DData, "press".into()),
            (DBirth, "press".into()),
            (DData, "press".into()),
            (DBirth, "press".into()),
            (DData, "press".into()),
            (DData, "oven".into()),
        ]
    );
    let seqs: Vec<u8> = p.messages.iter().map(|m| m.seq.unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5, 6, 7, 8]);
    let second_birth = decode(&p.messages[3]);
    let count = second_birth
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("count"))
        .unwrap();
    assert_eq!(count.datatype, Some(DataType::String.code()));
    let mode = second_birth
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("mode"))
        .unwrap();
    assert_eq!(
        mode.value,
        Some(proto::metric::Value::StringValue("auto".into()))
    );
}

#[test]
fn seq_wraps_after_255_across_every_message_type() {
    let mut n = node();
    n.connect(0, ts(0));
    let mut seqs: Vec<u8> = n
        .birth(ts(0), &[], 0, Instant::now())
        .iter()
        .map(|m| m.seq.unwrap())
        .collect();
    let one_per_message = PackLimits {
        max_metrics: 1,
        ..LIMITS
    };
    for seq in 1..=600u64 {
        let dev = if seq % 2 == 0 { "press" } else { "oven" };
        let tag = if dev == "press" { "force" } else { "temp" };
        let p = n.pack(&[good(seq, dev, tag, seq as f64)], ts(0), one_per_message);
        seqs.extend(p.messages.iter().map(|m| m.seq.unwrap()));
        if seq == 300 {
            let d = n.device_down(&Arc::from("oven"), ts(0)).unwrap();
            assert_eq!(d.kind, MessageType::DDeath);
            seqs.push(d.seq.unwrap());
        }
    }
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "gap-free modulo 256");
    }
    assert!(seqs.len() > 600);
}

#[test]
fn a_dead_device_skips_bad_readings_and_comes_back_with_a_birth() {
    let mut n = node();
    n.connect(0, ts(0));
    n.birth(ts(0), &[], 0, Instant::now());
    let oven = Arc::from("oven");
    assert!(n.device_down(&oven, ts(1)).is_some());
    assert!(n.device_down(&oven, ts(1)).is_none(), "once");
    let p = n.pack(
        &[sr(
            1,
            "oven",
            "temp",
            None,
            Quality::Bad(Arc::from("timeout")),
        )],
        ts(2),
        LIMITS,
    );
    assert_eq!((p.taken, p.skipped, p.messages.len()), (1, 1, 0));
    let p = n.pack(&[good(2, "oven", "temp", 3.0)], ts(3), LIMITS);
    let kinds: Vec<_> = p.messages.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MessageType::DBirth, MessageType::DData]);
    // A rebirth while a device is down leaves it out; device_up brings it back.
    n.device_down(&oven, ts(4));
    let births = n.birth(ts(5), &[], 2, Instant::now());
    assert_eq!(births.len(), 2, "NBIRTH and the press only");
    assert_eq!(n.device_up(&oven, ts(6)).unwrap().kind, MessageType::DBirth);
}

#[test]
fn message_limit_stops_packing_and_leaves_the_rest() {
    let mut n = node();
    n.connect(0, ts(0));
    n.birth(ts(0), &[], 0, Instant::now());
    let readings: Vec<_> = (1..=10)
        .map(|s| good(s, "press", "force", s as f64))
        .collect();
    let limits = PackLimits {
        max_metrics: 3,
        max_bytes: 64 * 1024,
        max_messages: 2,
    };
    let p = n.pack(&readings, ts(1), limits);
    assert_eq!(p.taken, 6);
    assert_eq!(p.messages.len(), 2);
    let p = n.pack(&readings[6..], ts(1), limits);
    assert_eq!(p.taken, 4);
    let small = PackLimits {
        max_metrics: 1000,
        max_bytes: 200,
        max_messages: 100,
    };
    let p = n.pack(&readings, ts(1), small);
    assert!(p.messages.len() > 1);
    assert!(p.messages.iter().all(|m| m.payload.len() <= 200 + 40));
}

#[test]
fn rebirth_requests_are_rate_limited_not_lost() {
    let mut n = node();
    n.connect(3, ts(0));
    let t0 = Instant::now();
    n.birth(ts(0), &[], 0, t0);
    let cmd = proto::Payload {
        timestamp: Some(1),
        metrics: vec![proto::Metric {
            name: Some(REBIRTH.into()),
            datatype: Some(DataType::Boolean.code()),
            value: Some(proto::metric::Value::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(
        n.command(&cmd, t0 + Duration::from_secs(1)),
        NodeCommand::RebirthDeferred
    );
    assert_eq!(n.rebirth_due(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(
        n.command(&cmd, t0 + Duration::from_secs(6)),
        NodeCommand::Rebirth
    );
    let births = n.birth(ts(1), &[], 0, t0 + Duration::from_secs(6));
    assert_eq!(births[0].seq, Some(0));
    let nb = decode(&births[0]);
    assert_eq!(
        nb.metrics[0].value,
        Some(proto::metric::Value::LongValue(3)),
        "same bdSeq"
    );
    assert_eq!(n.rebirth_due(), None);
    assert_eq!(n.command(b"\xff\xff", t0), NodeCommand::Ignored);
}

#[test]
fn node_data_sends_changed_node_metrics_only() {
    let mut n = node();
    n.connect(0, ts(0));
    let m1 = vec![
        ("Status/A".to_string(), Value::I64(1)),
        ("Status/B".to_string(), Value::Str(Arc::from("x"))),
    ];
    n.birth(ts(0), &m1, 0, Instant::now());
    assert!(n.node_data(ts(1), &m1).is_none());
    let m2 = vec![
        ("Status/A".to_string(), Value::I64(2)),
        ("Status/B".to_string(), Value::Str(Arc::from("x"))),
        ("Status/New".to_string(), Value::I64(2)),
    ];
    let nd = n.node_data(ts(2), &m2).unwrap();
    assert_eq!(nd.kind, MessageType::NData);
    let p = decode(&nd);
    assert_eq!(p.metrics.len(), 1);
    assert!(p.metrics[0].alias.is_some() && p.metrics[0].name.is_none());
}
