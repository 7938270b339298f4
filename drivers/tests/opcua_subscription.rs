//! OPC UA driver against an in-process async-opcua server: subscriptions deliver every change, polled
//! mode reads, and a node id that does not exist is reported per tag while the others keep flowing.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "opcua")]

mod opcua_support;

use std::time::Duration;

use lineside_drivers::{DeviceState, Quality, Value};
use opcua_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_delivers_every_change_and_reports_missing_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        vec![Var::f64("Bore", 10.0), Var::i32("Count", 0)],
    )
    .await;
    let dev = device(&format!(
        "endpoint = \"{}\"\nauto_trust = false\npublishing_interval = \"100ms\"\nretry_failed_items = \"1s\"\n\
         [[tag]]\nname = \"bore\"\nnode = \"nsu={NS_URI};s=Bore\"\nunit = \"mm\"\nsampling_interval = \"50ms\"\n\
         [[tag]]\nname = \"count\"\nnode = \"ns={};s=Count\"\n\
         [[tag]]\nname = \"ghost\"\nnode = \"ns={};s=DoesNotExist\"\n",
        server.endpoint(),
        server.ns,
        server.ns
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));

    // Initial values, and the missing node reported with the server's reason.
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        r.iter()
            .any(|x| &*x.tag == "bore" && x.value == Some(Value::F64(10.0)))
            && r.iter()
                .any(|x| &*x.tag == "count" && x.value == Some(Value::I64(0)))
            && r.iter().any(|x| &*x.tag == "ghost")
    })
    .await;
    let ghost = seen
        .iter()
        .find(|x| &*x.tag == "ghost")
        .expect("ghost reported");
    match &ghost.quality {
        Quality::Bad(reason) => assert!(reason.contains("BadNodeIdUnknown"), "{reason}"),
        q => panic!("ghost should be bad, got {q:?}"),
    }
    assert_eq!(metrics.state(), DeviceState::Connected);
    let bore = seen.iter().find(|x| &*x.tag == "bore").unwrap();
    assert_eq!(bore.unit.as_deref(), Some("mm"));

    // Every change arrives, in order, while the missing node keeps being retried.
    for k in 1..=20 {
        server.set("Bore", 10.0 + f64::from(k) / 1000.0);
        server.set("Count", k);
        // Pace changes slower than the sampling interval so none is merged on the server.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        r.iter()
            .any(|x| &*x.tag == "count" && x.value == Some(Value::I64(20)))
            && r.iter()
                .any(|x| &*x.tag == "bore" && x.value == Some(Value::F64(10.020)))
    })
    .await;
    let counts: Vec<i64> = seen
        .iter()
        .filter(|x| &*x.tag == "count")
        .filter_map(|x| match x.value {
            Some(Value::I64(v)) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(
        counts,
        (1..=20).collect::<Vec<_>>(),
        "every change, once, in order"
    );
    let bores: Vec<f64> = seen
        .iter()
        .filter(|x| &*x.tag == "bore")
        .filter_map(|x| x.value.as_ref().and_then(|v| v.as_f64()))
        .collect();
    assert_eq!(bores.len(), 20, "{bores:?}");
    assert!(
        seen.iter()
            .filter(|x| &*x.tag != "ghost")
            .all(|x| x.quality.is_good())
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(metrics.state(), DeviceState::Stopped);
    assert!(
        metrics
            .exceptions
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_mode_reads_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), vec![Var::f64("Temp", 21.5)]).await;
    let dev = device(&format!(
        "endpoint = \"{}\"\nmode = \"poll\"\npoll_interval = \"200ms\"\n\
         [[tag]]\nname = \"temp\"\nnode = \"nsu={NS_URI};s=Temp\"\n\
         [[tag]]\nname = \"missing\"\nnode = \"nsu=urn:not-there;s=Temp\"\n",
        server.endpoint()
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));

    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        r.iter()
            .filter(|x| &*x.tag == "temp" && x.value == Some(Value::F64(21.5)))
            .count()
            >= 3
    })
    .await;
    assert!(seen.iter().filter(|x| &*x.tag == "temp").count() >= 3);
    let missing = seen
        .iter()
        .find(|x| &*x.tag == "missing")
        .expect("missing reported");
    assert!(
        missing.quality.reason().unwrap().contains("urn:not-there"),
        "{:?}",
        missing.quality
    );
    server.set("Temp", 22.25);
    let seen = collect_until(&rx, Duration::from_secs(30), |r| {
        r.iter()
            .any(|x| &*x.tag == "temp" && x.value == Some(Value::F64(22.25)))
    })
    .await;
    let changed = seen
        .iter()
        .find(|x| x.value == Some(Value::F64(22.25)))
        .expect("new value read");
    assert!(changed.quality.is_good());
    assert!(metrics.requests.load(std::sync::atomic::Ordering::Relaxed) >= 4);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}
