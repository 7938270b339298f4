//! OPC UA values that must arrive exactly (64-bit integers at the ends of their ranges, a QualifiedName with
//! its namespace index), and several devices starting together on a fresh PKI directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "opcua")]

mod opcua_support;

use std::time::Duration;

use lineside_drivers::{Quality, Value};
use opcua::types::{DataTypeId, QualifiedName, Variant};
use opcua_support::*;

fn var(name: &str, value: Variant, data_type: DataTypeId) -> Var {
    Var {
        name: name.into(),
        value,
        data_type,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_bit_integers_and_qualified_names_arrive_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        vec![
            var(
                "Big",
                Variant::UInt64(12_345_678_901_234_567_890),
                DataTypeId::UInt64,
            ),
            var("Max", Variant::UInt64(u64::MAX), DataTypeId::UInt64),
            var("Min", Variant::Int64(i64::MIN), DataTypeId::Int64),
            var(
                "Part",
                Variant::QualifiedName(Box::new(QualifiedName::new(2, "PartNo"))),
                DataTypeId::QualifiedName,
            ),
        ],
    )
    .await;
    let mut text = format!(
        "endpoint = \"{}\"\npublishing_interval = \"100ms\"\n",
        server.endpoint()
    );
    for (tag, node) in [("big", "Big"), ("max", "Max"), ("min", "Min")] {
        text.push_str(&format!(
            "[[tag]]\nname = \"{tag}\"\nnode = \"nsu={NS_URI};s={node}\"\n"
        ));
    }
    // A QualifiedName is text: the tag says so.
    text.push_str(&format!(
        "[[tag]]\nname = \"part\"\nnode = \"nsu={NS_URI};s=Part\"\nkind = \"string\"\n"
    ));
    let dev = device(&text);
    let (ctx, rx) = context(dir.path());
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        ["big", "max", "min", "part"]
            .iter()
            .all(|t| r.iter().any(|x| &*x.tag == *t))
    })
    .await;
    let get = |t: &str| {
        let r = seen
            .iter()
            .find(|x| &*x.tag == t)
            .unwrap_or_else(|| panic!("{t} missing: {seen:#?}"));
        assert_eq!(r.quality, Quality::Good, "{r:?}");
        r.value.clone()
    };
    assert_eq!(get("big"), Some(Value::U64(12_345_678_901_234_567_890)));
    assert_eq!(get("max"), Some(Value::U64(u64::MAX)));
    assert_eq!(get("min"), Some(Value::I64(i64::MIN)));
    assert_eq!(get("part"), Some(Value::Str("2:PartNo".into())));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}

/// Four devices, one state directory, no PKI yet: they race to create the client certificate. Each must
/// connect on its first attempt (no failed connect, no bad reading before the first value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_devices_on_a_fresh_pki_all_connect_first_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), vec![Var::f64("Bore", 10.0)]).await;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut running = Vec::new();
    for _ in 0..4 {
        let dev = device(&format!(
            "endpoint = \"{}\"\npublishing_interval = \"100ms\"\n[[tag]]\nname = \"bore\"\nnode = \"nsu={NS_URI};s=Bore\"\n",
            server.endpoint()
        ));
        let (ctx, rx) = context(&state);
        let metrics = ctx.metrics.clone();
        let stop = ctx.shutdown.clone();
        running.push((tokio::spawn(dev.run(ctx)), rx, metrics, stop));
    }
    for (i, (_, rx, metrics, _)) in running.iter().enumerate() {
        let seen = collect_until(rx, Duration::from_secs(60), |r| {
            r.iter().any(|x| x.quality.is_good())
        })
        .await;
        let first = seen
            .first()
            .unwrap_or_else(|| panic!("device {i}: nothing"));
        assert_eq!(
            first.quality,
            Quality::Good,
            "device {i}: first reading {first:?}; last error {:?}",
            metrics.last_error()
        );
        assert_eq!(
            metrics.errors.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "device {i}: {:?}",
            metrics.last_error()
        );
    }
    assert!(state.join("opcua-pki/own/cert.der").exists());
    for (task, _, _, stop) in running {
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
    }
}
