//! Interop with a different OPC UA implementation: Python's asyncua server (tests/interop/opcua_server.py).
//! Needs `pip install asyncua`; python is taken from $LINESIDE_PYTHON (default `python3`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "opcua")]

mod opcua_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lineside_drivers::opcua::pki;
use lineside_drivers::{DeviceState, Value};
use opcua_support::*;

const NS: &str = "urn:lineside:interop";

/// The Python server; killed when dropped.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    async fn start(args: &[&str]) -> Peer {
        let python = std::env::var("LINESIDE_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/interop/opcua_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python OPC UA server");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line)
            .await
            .expect("the Python server printed its port")
            .unwrap()
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a port: {line:?}"));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counts(r: &[lineside_drivers::Reading]) -> Vec<i64> {
    r.iter()
        .filter(|x| &*x.tag == "count")
        .filter_map(|x| match x.value {
            Some(Value::I64(v)) => Some(v),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python asyncua; run by scripts/test"]
async fn asyncua_anonymous_none_subscription_and_poll() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(&["--security", "none"]).await;
    let dev = device(&format!(
        "endpoint = \"opc.tcp://127.0.0.1:{}/lineside/\"\npublishing_interval = \"100ms\"\nsampling_interval = \"50ms\"\n\
         [[tag]]\nname = \"count\"\nnode = \"nsu={NS};s=Count\"\n\
         [[tag]]\nname = \"bore\"\nnode = \"nsu={NS};s=Bore\"\nunit = \"mm\"\n\
         [[tag]]\nname = \"program\"\nnode = \"nsu={NS};s=Program\"\nkind = \"string\"\n\
         [[tag]]\nname = \"temps\"\nnode = \"nsu={NS};s=Temps\"\narray_elements = 3\n\
         [[tag]]\nname = \"ghost\"\nnode = \"nsu={NS};s=Nope\"\n",
        peer.port
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    let seen = collect_until(&rx, Duration::from_secs(60), |r| counts(r).len() >= 20).await;
    let c = counts(&seen);
    assert!(c.len() >= 20, "{seen:?}");
    assert!(
        c.windows(2).all(|w| w[1] == w[0] + 1),
        "every change, in order: {c:?}"
    );
    assert!(
        seen.iter()
            .any(|x| &*x.tag == "program" && x.value == Some(Value::Str("O1234".into())))
    );
    assert!(
        seen.iter()
            .any(|x| &*x.tag == "temps[2]" && x.value == Some(Value::F64(22.25)))
    );
    let ghost = seen
        .iter()
        .find(|x| &*x.tag == "ghost")
        .expect("missing node reported");
    assert!(
        ghost.quality.reason().unwrap().contains("BadNodeIdUnknown"),
        "{ghost:?}"
    );
    assert_eq!(metrics.state(), DeviceState::Connected);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();

    // Polled reads against the same server.
    let dev = device(&format!(
        "endpoint = \"opc.tcp://127.0.0.1:{}/lineside/\"\nmode = \"poll\"\npoll_interval = \"200ms\"\n\
         [[tag]]\nname = \"count\"\nnode = \"nsu={NS};s=Count\"\n",
        peer.port
    ));
    let (ctx, rx) = context(dir.path());
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    let seen = collect_until(&rx, Duration::from_secs(60), |r| counts(r).len() >= 5).await;
    let c = counts(&seen);
    assert!(c.len() >= 5 && c.windows(2).all(|w| w[1] >= w[0]), "{c:?}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python asyncua; run by scripts/test"]
async fn asyncua_basic256sha256_sign_and_encrypt_with_username() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(&[
        "--security",
        "basic256sha256",
        "--user",
        "lineside",
        "--password",
        "s3cret pw",
    ])
    .await;
    std::fs::write(dir.path().join("pw"), "s3cret pw\n").unwrap();
    let dev = device(&format!(
        "endpoint = \"opc.tcp://127.0.0.1:{}/lineside/\"\nsecurity_policy = \"Basic256Sha256\"\n\
         security_mode = \"SignAndEncrypt\"\npublishing_interval = \"100ms\"\n\
         reconnect_initial = \"200ms\"\nreconnect_max = \"1s\"\n\
         [identity]\nkind = \"username\"\nuser = \"lineside\"\npassword_file = \"pw\"\n\
         [[tag]]\nname = \"count\"\nnode = \"nsu={NS};s=Count\"\n",
        peer.port
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));

    // Unknown server certificate: refused and saved in rejected/ until trusted.
    let seen = collect_until(&rx, Duration::from_secs(60), |r| !r.is_empty()).await;
    assert!(
        seen[0].quality.reason().unwrap().contains("not trusted"),
        "{seen:?}"
    );
    let pki_dir = dir.path().join("opcua-pki");
    let rejected = pki::list(&pki_dir).unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    pki::trust(&pki_dir, &rejected[0].thumbprint).unwrap();

    let seen = collect_until(&rx, Duration::from_secs(60), |r| counts(r).len() >= 10).await;
    let c = counts(&seen);
    assert!(
        c.len() >= 10 && c.windows(2).all(|w| w[1] == w[0] + 1),
        "{c:?}"
    );
    assert_eq!(metrics.state(), DeviceState::Connected);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}
