//! The operator station over plain HTTP (no browser needed): the live stream catches up after a
//! reconnect from `Last-Event-ID`, and over TLS the session cookie is `Secure`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One sim gauge charted as I-MR with fixed limits (a point per reading, 50 a second), and the station.
fn config(dir: &std::path::Path, station: u16, tls: &str) -> String {
    let broker = free_port();
    format!(
        r#"
[agent]
id = "st"
state_dir = {dir:?}
[store]
flush_interval = "10ms"
[mqtt]
url = "mqtt://127.0.0.1:{broker}"
embedded_broker = true
[station]
listen = "127.0.0.1:{station}"
{tls}
[[device]]
name = "g"
driver = "sim"
interval = "20ms"
[[device.tag]]
name = "d"
mean = 1.0
sigma = 0.1
[[characteristic]]
name = "d"
source = "g/d"
chart = "i-mr"
limits = {{ centre = 1.0, sigma = 0.1 }}
"#,
        dir = dir.display().to_string()
    )
}

/// Reads server-sent events for `duration`: (id, event) pairs.
async fn read_events<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
    duration: Duration,
) -> (String, Vec<(u64, String)>) {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut events = Vec::new();
    let (mut id, mut kind) = (0u64, String::new());
    for line in body.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = v.trim().to_string();
        } else if line.starts_with("data: ") {
            events.push((id, kind.clone()));
        }
    }
    (head.to_string(), events)
}

fn stream_request(port: u16, last: Option<u64>) -> String {
    let last = last
        .map(|l| format!("Last-Event-ID: {l}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /api/stream?ch=d HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{last}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_stream_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (stop, _task) = spawn_agent(load(&config(dir.path(), port, ""), dir.path()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (head, first) =
        read_events(s, &stream_request(port, None), Duration::from_millis(1500)).await;
    assert!(head.contains("text/event-stream"), "{head}");
    let points: Vec<u64> = first
        .iter()
        .filter(|(_, k)| k == "point")
        .map(|(i, _)| *i)
        .collect();
    assert!(points.len() >= 10, "live points: {first:?}");
    let last = *points.last().unwrap();
    // Away for a second; then the browser reconnects with the last id it saw.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (_, second) = read_events(
        s,
        &stream_request(port, Some(last)),
        Duration::from_millis(500),
    )
    .await;
    let ids: Vec<u64> = second.iter().map(|(i, _)| *i).filter(|i| *i > 0).collect();
    assert!(
        ids.len() >= 40,
        "a second's worth of missed events: {ids:?}"
    );
    assert_eq!(ids[0], last + 1, "continues right after the last one seen");
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no duplicate: {ids:?}"
    );
    // An id the agent never gave (e.g. from before a restart): start over from a snapshot.
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (_, third) = read_events(
        s,
        &stream_request(port, Some(u64::MAX / 2)),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        third.first().map(|e| e.1.as_str()),
        Some("reset"),
        "{third:?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_session_cookie_is_secure() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "station test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.path().join("station.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("station.key"), key.serialize_pem()).unwrap();
    let port = free_port();
    let tls = format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        dir.path().join("station.crt").display().to_string(),
        dir.path().join("station.key").display().to_string()
    );
    let cfg = load(&config(dir.path(), port, &tls), dir.path());
    let mut users = lineside::station::users::Users::default();
    users
        .set("op", lineside::station::users::Role::Operator, "password1")
        .unwrap();
    users.save(&cfg.station.users_file).unwrap();
    let (stop, _task) = spawn_agent(cfg);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let deadline = Instant::now() + Duration::from_secs(20);
    let tcp = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let body = r#"{"user":"op","password":"password1"}"#;
    let req = format!(
        "POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut resp)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let cookie = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    stop.cancel();
}

/// GET of a JSON document from the station.
async fn get_json(port: u16, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let (_, body) = resp.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_chart_opens_with_its_history_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config(dir.path(), port, "");
    let (stop, task) = spawn_agent(load(&text, dir.path()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let stored = db_max_seq(&dir.path().join("lineside.db"));
    assert!(stored >= 20, "{stored} readings stored");

    // Same store, a new agent: the points marked `history` were charted from the stored readings.
    let port = free_port();
    let (stop, _t) = spawn_agent(load(&config(dir.path(), port, ""), dir.path()));
    check_history(port, stored).await;
    stop.cancel();
}

async fn check_history(port: u16, stored: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = get_json(port, "/api/ch/d").await;
    let charts = snap["charts"].as_array().unwrap();
    let i = charts
        .iter()
        .find(|c| c["chart"] == "i")
        .expect("the I chart");
    let history: Vec<&serde_json::Value> = i["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["history"] == true)
        .collect();
    assert!(history.len() >= 20, "{} history points", history.len());
    assert!(history.len() as u64 <= stored);
    let p = history.last().unwrap();
    assert_eq!(
        p["limits"]["centre"], 1.0,
        "charted with the configured limits: {p}"
    );
    assert_eq!(p["phase"], "monitoring");
    assert!(
        snap["values"].as_array().unwrap().len() >= 20,
        "the histogram's values"
    );
}
