//! Security and commissioning against the in-process server: an unknown server certificate is rejected
//! (and saved in rejected/) until it is trusted, then SignAndEncrypt with a user name works; a wrong
//! password is reported without the password; endpoints and browse show what a config needs.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "opcua")]

mod opcua_support;

use std::time::Duration;

use lineside_drivers::opcua::commission::{self, Target};
use lineside_drivers::opcua::pki::{self, CertState};
use lineside_drivers::opcua::security::{Identity, Mode, Policy};
use lineside_drivers::{DeviceState, Value};
use opcua_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_rejected_until_trusted_then_sign_and_encrypt_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), vec![Var::f64("Bore", 12.5)]).await;
    std::fs::write(dir.path().join("cnc.password"), format!("{PASSWORD}\n")).unwrap();
    let dev = device(&format!(
        "endpoint = \"{}\"\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\n\
         reconnect_initial = \"200ms\"\nreconnect_max = \"1s\"\npublishing_interval = \"100ms\"\n\
         [identity]\nkind = \"username\"\nuser = \"{USER}\"\npassword_file = \"cnc.password\"\n\
         [[tag]]\nname = \"bore\"\nnode = \"nsu={NS_URI};s=Bore\"\n",
        server.endpoint()
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));

    // Refused: the certificate is unknown. The reason tells the operator what to do.
    let seen = collect_until(&rx, Duration::from_secs(60), |r| !r.is_empty()).await;
    let reason = seen[0].quality.reason().unwrap().to_string();
    assert!(
        reason.contains("not trusted") && reason.contains("lineside opcua trust"),
        "{reason}"
    );
    assert_eq!(metrics.state(), DeviceState::Disconnected);
    let pki_dir = dir.path().join("opcua-pki");
    let certs = pki::list(&pki_dir).unwrap();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(certs[0].state, CertState::Rejected);
    assert!(certs[0].path.starts_with(pki_dir.join("rejected")));

    // Still refused a few attempts later: rejection is not a one-off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metrics.state(), DeviceState::Disconnected);
    assert!(rx.drain().flatten().all(|r| !r.quality.is_good()));

    // The operator trusts it: the running driver connects at its next attempt.
    pki::trust(&pki_dir, &certs[0].thumbprint[..12]).unwrap();
    let seen = collect_until(&rx, Duration::from_secs(60), |r| {
        r.iter()
            .any(|x| x.value == Some(Value::F64(12.5)) && x.quality.is_good())
    })
    .await;
    assert!(
        seen.iter().any(|x| x.value == Some(Value::F64(12.5))),
        "{seen:?}"
    );
    assert_eq!(metrics.state(), DeviceState::Connected);
    server.set("Bore", 12.75);
    let seen = collect_until(&rx, Duration::from_secs(30), |r| {
        r.iter().any(|x| x.value == Some(Value::F64(12.75)))
    })
    .await;
    assert!(!seen.is_empty());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), vec![Var::f64("Bore", 1.0)]).await;
    std::fs::write(dir.path().join("pw"), "Tr0ub4dor&3\n").unwrap();
    let dev = device(&format!(
        "endpoint = \"{}\"\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\n\
         auto_trust = true\nreconnect_initial = \"200ms\"\nreconnect_max = \"1s\"\n\
         [identity]\nkind = \"username\"\nuser = \"{USER}\"\npassword_file = \"pw\"\n\
         [[tag]]\nname = \"bore\"\nnode = \"nsu={NS_URI};s=Bore\"\n",
        server.endpoint()
    ));
    let (ctx, rx) = context(dir.path());
    let metrics = ctx.metrics.clone();
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    let seen = collect_until(&rx, Duration::from_secs(60), |r| !r.is_empty()).await;
    let reason = seen[0].quality.reason().unwrap().to_string();
    assert!(reason.contains("refused the identity"), "{reason}");
    assert!(
        !reason.contains("Tr0ub4dor"),
        "the password never appears: {reason}"
    );
    assert!(!metrics.last_error().unwrap().contains("Tr0ub4dor"));
    // auto_trust put the server certificate straight into trusted/.
    let certs = pki::list(&dir.path().join("opcua-pki")).unwrap();
    assert!(certs.iter().all(|c| c.state == CertState::Trusted) && !certs.is_empty());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_browse_show_what_a_config_needs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        vec![Var::f64("Bore", 10.0), Var::i32("Count", 3)],
    )
    .await;
    let mut target = Target::new(server.endpoint(), dir.path().join("pki"));

    let eps = commission::endpoints(&target).await.unwrap();
    assert_eq!(eps.len(), 2, "{eps:?}");
    let secure = eps
        .iter()
        .find(|e| e.security_policy == "Basic256Sha256")
        .unwrap();
    assert_eq!(secure.security_mode, "SignAndEncrypt");
    assert_eq!(secure.user_tokens, ["UserName"]);
    assert!(secure.supported && secure.server_certificate_thumbprint.is_some());

    let all = commission::browse(&target, None, 2, 2000).await.unwrap();
    let line = all
        .iter()
        .find(|e| e.browse_name.ends_with(":Line1"))
        .expect("Line1 folder");
    assert_eq!(line.depth, 1);
    assert_eq!(line.node_class, "Object");
    let bore = all
        .iter()
        .find(|e| e.display_name == "Bore")
        .expect("Bore at depth 2");
    assert_eq!(bore.depth, 2);
    assert_eq!(bore.data_type.as_deref(), Some("Double"));
    assert_eq!(bore.value.as_deref(), Some("10"));
    assert_eq!(
        bore.node_id_nsu.as_deref(),
        Some(&*format!("nsu={NS_URI};s=Bore"))
    );

    // Start below a node, over an encrypted session (auto-trust: the commissioning opt-in).
    target.policy = Policy::Basic256Sha256;
    target.mode = Mode::SignAndEncrypt;
    target.auto_trust = true;
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    target.identity = Identity::Username {
        user: USER.into(),
        password_file: Some(dir.path().join("pw")),
        password_env: None,
    };
    let below = commission::browse(&target, Some(&format!("nsu={NS_URI};s=Line1")), 1, 100)
        .await
        .unwrap();
    // The server decides the order of browse results; compare as a set.
    let mut names: Vec<_> = below.iter().map(|e| e.display_name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["Bore", "Count"]);
    let count = below.iter().find(|e| e.display_name == "Count").unwrap();
    assert_eq!(count.value.as_deref(), Some("3"));
    assert_eq!(count.data_type.as_deref(), Some("Int32"));

    let err = commission::browse(&target, Some("ns=2;s"), 1, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(err, commission::CommissionError::NodeId(_)),
        "{err}"
    );
    assert!(err.to_string().contains("identifier"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_trust_lineside_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_untrusting(dir.path(), vec![Var::f64("Bore", 1.0)]).await;
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let dev = device(&format!(
        "endpoint = \"{}\"\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\n\
         auto_trust = true\n\
         [identity]\nkind = \"username\"\nuser = \"{USER}\"\npassword_file = \"pw\"\n\
         [[tag]]\nname = \"bore\"\nnode = \"nsu={NS_URI};s=Bore\"\n",
        server.endpoint()
    ));
    let (ctx, rx) = context(dir.path());
    let stop = ctx.shutdown.clone();
    let task = tokio::spawn(dev.run(ctx));
    let seen = collect_until(&rx, Duration::from_secs(60), |r| !r.is_empty()).await;
    let reason = seen[0].quality.reason().unwrap().to_string();
    assert!(
        reason.contains("does not trust lineside's certificate") && reason.contains("own"),
        "{reason}"
    );
    // The server parked our certificate in its own rejected/ directory.
    assert!(
        std::fs::read_dir(server.pki_dir.join("rejected"))
            .unwrap()
            .count()
            >= 1
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
}
