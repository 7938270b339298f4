//! Recovery: a server that is not there when the driver starts, and a server stopped and started again on
//! the same port. After each reconnect every monitored item must deliver again, without restarting the
//! driver (the classic failures are items reading "unknown" after a server restart, or subscriptions
//! that are never restored).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "opcua")]

mod opcua_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use lineside_drivers::{DeviceState, Value};
use opcua_support::*;

fn has(r: &[lineside_drivers::Reading], tag: &str, v: Value) -> bool {
    r.iter()
        .any(|x| &*x.tag == tag && x.value == Some(v.clone()) && x.quality.is_good())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_survives_absent_and_restarted_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().await;
    let dev = device(&format!(
        "endpoint = \"opc.tcp://127.0.0.1:{port}/\"\npublishing_interval = \"100ms\"\n\
         reconnect_initial = \"200ms\"\nreconnect_max = \"1s\"\nrequest_timeout = \"5s\"\n\
         keep_alive_interval = \"1s\"\n\
         [[tag]]\nname = \"bore\"\nnode = \"nsu={NS_URI};s=Bore\"\n\
         [[tag]]\nname = \"count\"\nnode = \"nsu={NS_URI};s=Count\"\n"
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));

    // 1. Nothing listens yet: the driver reports the outage once per tag and keeps retrying.
    let seen = collect_until(&rx, Duration::from_secs(30), |r| {
        r.iter().filter(|x| !x.quality.is_good()).count() >= 2
    })
    .await;
    assert!(
        seen.iter()
            .all(|x| x.quality.reason().unwrap_or("").contains("not connected")),
        "{seen:?}"
    );
    assert_eq!(metrics.state(), DeviceState::Disconnected);
    let err = metrics.last_error().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    // 2. The server comes up on that port: values flow without touching the driver.
    let server = TestServer::start_on_port(
        dir.path(),
        port,
        vec![Var::f64("Bore", 1.0), Var::i32("Count", 0)],
    )
    .await;
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        has(r, "bore", Value::F64(1.0)) && has(r, "count", Value::I64(0))
    })
    .await;
    assert!(has(&seen, "bore", Value::F64(1.0)), "{seen:?}");
    assert_eq!(metrics.state(), DeviceState::Connected);
    server.set("Count", 1);
    collect_until(&rx, Duration::from_secs(30), |r| {
        has(r, "count", Value::I64(1))
    })
    .await;

    // 3. Server restart on the same port: a new server process has no sessions and no subscriptions.
    let server = server.restart().await;
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        has(r, "bore", Value::F64(1.0)) && has(r, "count", Value::I64(0))
    })
    .await;
    assert!(
        seen.iter().any(|x| x
            .quality
            .reason()
            .is_some_and(|r| r.contains("connection lost")
                || r.contains("session")
                || r.contains("not connected"))),
        "the outage is visible as bad readings: {seen:?}"
    );
    assert!(
        has(&seen, "count", Value::I64(0)),
        "items re-created after the restart: {seen:?}"
    );
    assert!(metrics.reconnects.load(Ordering::Relaxed) >= 1);

    // Every item delivers changes again.
    for k in 2..=5 {
        server.set("Count", k);
        server.set("Bore", 1.0 + f64::from(k));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = collect_until(&rx, Duration::from_secs(30), |r| {
        has(r, "count", Value::I64(5)) && has(r, "bore", Value::F64(6.0))
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
    assert_eq!(counts, [2, 3, 4, 5]);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(metrics.state(), DeviceState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_mode_resumes_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), vec![Var::f64("Temp", 20.0)]).await;
    let dev = device(&format!(
        "endpoint = \"{}\"\nmode = \"poll\"\npoll_interval = \"200ms\"\nrequest_timeout = \"3s\"\n\
         reconnect_initial = \"200ms\"\nreconnect_max = \"1s\"\nkeep_alive_interval = \"1s\"\n\
         [[tag]]\nname = \"temp\"\nnode = \"nsu={NS_URI};s=Temp\"\n",
        server.endpoint()
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    collect_until(&rx, Duration::from_secs(60), |r| {
        has(r, "temp", Value::F64(20.0))
    })
    .await;

    let server = server.restart().await;
    server.set("Temp", 25.5);
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        has(r, "temp", Value::F64(25.5))
    })
    .await;
    assert!(has(&seen, "temp", Value::F64(25.5)), "{seen:?}");
    assert!(
        seen.iter().any(|x| !x.quality.is_good()),
        "the outage shows as bad readings"
    );
    assert_eq!(metrics.state(), DeviceState::Connected);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_without_fin_is_detected_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), vec![Var::i32("Count", 0)]).await;
    let relay = Relay::start(server.port).await;
    let dev = device(&format!(
        "endpoint = \"opc.tcp://127.0.0.1:{}/\"\npublishing_interval = \"100ms\"\n\
         request_timeout = \"2s\"\nkeep_alive_interval = \"1s\"\n\
         reconnect_initial = \"200ms\"\nreconnect_max = \"1s\"\n\
         [[tag]]\nname = \"count\"\nnode = \"nsu={NS_URI};s=Count\"\n",
        relay.port
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    collect_until(&rx, Duration::from_secs(60), |r| {
        has(r, "count", Value::I64(0))
    })
    .await;
    assert_eq!(metrics.state(), DeviceState::Connected);

    relay.cut();
    server.set("Count", 1); // lost on the wire
    let seen = collect_until(&rx, Duration::from_secs(90), |r| {
        r.iter().any(|x| !x.quality.is_good())
    })
    .await;
    assert!(
        seen.iter().any(|x| !x.quality.is_good()),
        "the cut is detected: {seen:?}"
    );
    assert_eq!(metrics.state(), DeviceState::Disconnected);

    relay.heal();
    // After the cable is back: a new session, the current value, then changes again.
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        has(r, "count", Value::I64(1))
    })
    .await;
    assert!(has(&seen, "count", Value::I64(1)), "{seen:?}");
    server.set("Count", 2);
    collect_until(&rx, Duration::from_secs(30), |r| {
        has(r, "count", Value::I64(2))
    })
    .await;
    assert_eq!(metrics.state(), DeviceState::Connected);
    assert!(metrics.reconnects.load(Ordering::Relaxed) >= 1);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}
