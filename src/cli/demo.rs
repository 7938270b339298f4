//! `lineside demo`: the built-in simulated line (config/demo.toml, compiled in) with an in-process
//! broker on a free loopback port and a temporary state directory.

use std::process::ExitCode;

const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "lineside-demo";

const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

pub fn run(duration: Option<&str>) -> ExitCode {
    let limit = match duration
        .map(lineside_drivers::config::parse_duration)
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("--duration: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match tempfile::Builder::new().prefix("lineside-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temporary state directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = match crate::broker::free_port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let station_port = match crate::broker::free_port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let text = demo_config(state.path(), port).replace(
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"127.0.0.1:{station_port}\""),
    );
    let cfg = match crate::config::load_str(std::path::Path::new("<built-in demo config>"), &text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the built-in demo config is invalid (a bug):\n{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "lineside demo: simulated line → SQLite ({}) → embedded MQTT broker on 127.0.0.1:{port}",
        cfg.store.path.display()
    );
    println!(
        "subscribe with: mosquitto_sub -h 127.0.0.1 -p {port} -t 'lineside/#' -v      (Ctrl-C stops)"
    );
    // A throw-away user for the demo's station, in the temporary state directory.
    let mut users = crate::station::users::Users::default();
    let added = users
        .set(
            DEMO_USER,
            crate::station::users::Role::Engineer,
            DEMO_PASSWORD,
        )
        .map_err(|e| e.to_string())
        .and_then(|_| {
            users
                .save(&cfg.station.users_file)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = added {
        eprintln!("cannot write the demo's station users: {e}");
    }
    if let Some(addr) = cfg.station.listen {
        println!(
            "operator station: http://{addr}/   (log in as {DEMO_USER} / {DEMO_PASSWORD} to acknowledge)\n"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(super::stop_on_signal(shutdown.clone()));
        if let Some(limit) = limit {
            let s = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                s.cancel();
            });
        }
        match crate::agent::run(cfg, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The demo config with its state directory and broker port filled in.
pub fn demo_config(state_dir: &std::path::Path, port: u16) -> String {
    DEMO_CONFIG
        .replace(
            "state_dir = \"/tmp/lineside-demo\"",
            &format!("state_dir = {:?}", state_dir.display().to_string()),
        )
        .replace("127.0.0.1:1883", &format!("127.0.0.1:{port}"))
}
