//! The original wedge of issue 10, item 1, reproduced: a publish lost inside the MQTT client.
//!
//! 0.1.0 polled rumqttc's `EventLoop::poll` inside a `select!` with other branches (commits, ticks).
//! rumqttc 0.25's `poll` is not cancel-safe: it takes a publish from the request channel, gives it a
//! packet id, and then waits to write it (`Framed::feed` flushes first when more than 8 KiB are
//! buffered). Cancelled there, the publish is dropped unsent. Its readings never reach the broker while
//! the connection lasts, the cursor cannot pass them, and once the id comes round again rumqttc's
//! collision state stops all sending.
//!
//! The cancellation needs a write that waits, so this test puts a throttling TCP proxy between the
//! agent and the broker: for a while the agent→broker direction carries only a trickle, the agent's
//! socket buffer fills and every flush waits (as on a slow uplink), with large messages. Then the
//! throttle is lifted and every reading committed up to then must arrive, while the agent keeps running
//! (no restart re-sends anything), and delivery must never stand still for long. On 0.1.0 this fails
//! every time: one message goes missing while later ones arrive, and then nothing moves, on the one
//! connection. (`tests/forward_stall.rs` passes on 0.1.0 too: it checks only what the broker
//! acknowledged, or lets a restart re-send what was lost.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BASE: &str = "lineside/test-gw";

/// A TCP proxy whose agent→broker direction can be throttled to `RATE` bytes per second.
struct Throttle {
    port: u16,
    throttled: Arc<AtomicBool>,
    /// Connections accepted (a reconnect would re-send what a lost publish held back).
    connections: Arc<AtomicU64>,
}

/// Bytes per second agent→broker while throttled.
const RATE: u64 = 128 * 1024;
const CHUNK: usize = 4096;

impl Throttle {
    async fn start(target: u16) -> Throttle {
        let socket = TcpSocket::new_v4().unwrap();
        // A small receive buffer on the proxy side, so the agent's writes wait soon.
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let port = listener.local_addr().unwrap().port();
        let throttled = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (t, c) = (throttled.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Relaxed);
                let t = t.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = outbound.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                    });
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        let n = match in_r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if out_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if t.load(Relaxed) {
                            let pause = Duration::from_micros(n as u64 * 1_000_000 / RATE);
                            tokio::time::sleep(pause).await;
                        }
                    }
                    down.abort();
                });
            }
        });
        Throttle {
            port,
            throttled,
            connections,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_slow_uplink_never_loses_a_publish_inside_the_client() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let throttled_secs = env("LINESIDE_WEDGE_THROTTLE_SECS", 12);
    // The default window: with 64 messages of ≈ 240 kB in flight the agent's socket buffer is full
    // for most of the throttled time (with 32 or fewer, 0.1.0 passed: the kernel took it all).
    let inflight = env("LINESIDE_WEDGE_INFLIGHT", 64);
    let per_message = env("LINESIDE_WEDGE_READINGS_PER_MESSAGE", 3000);
    // The client's own warnings ("Collision on packet id") and the agent's connection log, for the
    // record when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,rumqttc=warn,lineside::forward=info")
        .with_test_writer()
        .try_init();
    let broker = Mosquitto::start().await;
    let proxy = Throttle::start(broker.port).await;
    let sub = Subscriber::start(broker.port, BASE, false).await;
    let dir = tempfile::tempdir().unwrap();
    // 2 devices × 500 tags every 50 ms (20,000 readings/s): one device's readings are contiguous, so
    // even a message packed into one freed slot is large (up to `per_message` readings, ≈ 80 B each:
    // far over the 8 KiB at which the client's writer flushes before taking a packet). 0.1.0 used the
    // in-flight window as the packet id range: ids wrap every `inflight` publishes.
    let text = sim_config(dir.path(), proxy.port, 2, 500, "50ms", "")
        .replace(
            "max_readings_per_message = 200\n",
            &format!("max_readings_per_message = {per_message}\ninflight = {inflight}\n"),
        )
        .replace("keep_alive = \"5s\"", "keep_alive = \"60s\"");
    let cfg = load(&text, dir.path());
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    assert!(
        wait_for(Duration::from_secs(30), || sub.max_seq() > 2_000).await,
        "delivery starts"
    );

    // A slow uplink for a while: writes wait, commits and ticks keep coming.
    proxy.throttled.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs(throttled_secs)).await;
    proxy.throttled.store(false, Relaxed);
    let target = db_max_seq(&db);
    eprintln!(
        "throttled for {throttled_secs} s; {target} readings committed, {} arrived so far",
        sub.max_seq()
    );

    // Everything committed up to now arrives over the same connection, and delivery never stands
    // still for long on the way.
    let mut last = 0;
    let mut moved = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let complete = loop {
        let (gaps, first) = {
            let seen = sub.seen.lock().unwrap();
            let gaps = seen.gaps(target);
            (gaps.len(), gaps.first().copied())
        };
        if gaps == 0 {
            break true;
        }
        let now = sub.max_seq();
        if now > last {
            last = now;
            moved = Instant::now();
        }
        if moved.elapsed() > Duration::from_secs(30) || Instant::now() > deadline {
            eprintln!(
                "{gaps} of {target} readings missing (first {first:?}); highest arrived {now}, \
                 cursor {}, connections {}",
                db_cursor(&db),
                proxy.connections.load(Relaxed)
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let connections = proxy.connections.load(Relaxed);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    assert!(
        complete,
        "readings committed before the throttle was lifted never arrived"
    );
    // Reconnects are allowed (rumqttc gives up on a flush that waits longer than its 5 s network
    // timeout and the agent re-sends from the cursor); what 0.1.0 did was lose a publish and stand
    // still on one connection.
    eprintln!("connections: {connections}");
    let seen = sub.seen.lock().unwrap();
    assert!(
        seen.order_violations.is_empty(),
        "{} per-tag order violations",
        seen.order_violations.len()
    );
}
