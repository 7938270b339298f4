//! Secure by default upstream: TLS (rustls, ring) with a private CA, a client certificate and a user
//! name/password against a real mosquitto; a wrong password is refused and never appears in the logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    // Distinct subject names: with rcgen's shared default name OpenSSL takes a leaf for self-issued.
    let params = |sans: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let mut ca_params = params(Vec::new(), "lineside test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = params(vec!["localhost".into()], "localhost")
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = params(vec!["line1-gw".into()], "line1-gw")
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// mosquitto with a mutual-TLS listener that also wants a password, and a plain loopback listener for the
/// test's own subscriber.
async fn secure_broker(dir_pki: &Path, pki: &Pki) -> (Mosquitto, u16) {
    for (name, body) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.server_cert),
        ("server.key", &pki.server_key),
    ] {
        std::fs::write(dir_pki.join(name), body).unwrap();
    }
    let passwd = dir_pki.join("passwd");
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwd)
        .args(["line1-gw", "s3cret-Pa55"])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "mosquitto_passwd failed (install mosquitto-clients / mosquitto)"
    );
    let plain = free_port();
    let d = dir_pki.to_path_buf();
    let broker = Mosquitto::start_with(move |dir, port| {
        format!(
            "per_listener_settings true\n\
             listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\nallow_anonymous false\npassword_file {d}/passwd\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             persistence false\nlog_dest file {dir}/mosquitto.log\n",
            d = d.display(),
            dir = dir.display(),
        )
    })
    .await;
    (broker, plain)
}

fn secure_config(state: &Path, port: u16, password_file: &Path) -> String {
    let mut text = sim_config(state, port, 1, 3, "20ms", "");
    text = text.replace(
        &format!("url = \"mqtt://127.0.0.1:{port}\""),
        &format!(
            "url = \"mqtts://localhost:{port}\"\nusername = \"line1-gw\"\npassword_file = {:?}\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
            password_file.display().to_string(),
            state.join("ca.pem").display().to_string(),
            state.join("client.pem").display().to_string(),
            state.join("client.key").display().to_string(),
        ),
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn tls_with_client_certificate_and_password() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (broker, plain) = secure_broker(pki_dir.path(), &pki).await;
    let sub = Subscriber::start(plain, "lineside/test-gw", false).await;

    let state = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("ca.pem", &pki.ca),
        ("client.pem", &pki.client_cert),
        ("client.key", &pki.client_key),
    ] {
        std::fs::write(state.path().join(name), body).unwrap();
    }
    let password = state.path().join("mqtt.password");
    std::fs::write(&password, "s3cret-Pa55\n").unwrap();
    let cfg = load(
        &secure_config(state.path(), broker.port, &password),
        state.path(),
    );
    let db = cfg.store.path.clone();
    let (stop, task) = spawn_agent(cfg);
    let arrived = wait_for(Duration::from_secs(20), || sub.max_seq() > 100).await;
    let log = std::fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap_or_default();
    assert!(
        arrived,
        "data arrives over TLS with authentication; broker log:\n{log}"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let committed = db_max_seq(&db);
    assert!(sub.wait_for_all(committed, Duration::from_secs(20)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto; run by scripts/test"]
async fn a_wrong_password_is_refused_and_never_logged() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (broker, _plain) = secure_broker(pki_dir.path(), &pki).await;
    let state = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("ca.pem", &pki.ca),
        ("client.pem", &pki.client_cert),
        ("client.key", &pki.client_key),
    ] {
        std::fs::write(state.path().join(name), body).unwrap();
    }
    let password = state.path().join("mqtt.password");
    std::fs::write(&password, "hunter2-WRONG\n").unwrap();
    let config = state.path().join("lineside.toml");
    std::fs::write(&config, secure_config(state.path(), broker.port, &password)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lineside"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let logs =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("broker connection failed"),
        "the refusal is logged:\n{}",
        &logs[..logs.len().min(3000)]
    );
    assert!(
        !logs.contains("hunter2"),
        "the password leaked into the logs"
    );
    // The readings are still collected while the broker refuses us.
    assert!(db_max_seq(&state.path().join("lineside.db")) > 0);
}
