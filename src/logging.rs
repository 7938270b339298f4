//! tracing set-up: human-readable by default, JSON lines on request; `RUST_LOG` overrides the level.

use std::io::IsTerminal;
use std::sync::OnceLock;

type SetFilter = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the installed subscriber's filter (set by `init`), for a config reload.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// The filter for a configured level: the embedded broker logs every connection at info, so it is kept
/// to warnings unless the level names it. The OPC UA client library warns "Endpoint config contains no
/// endpoints" on every connect (its config check; lineside picks endpoints itself): its config module is
/// kept to errors unless the level names it.
fn filter_for(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let mut directives = level.to_string();
    if !level.contains("rumqttd") {
        directives.push_str(",rumqttd=warn");
    }
    if !level.contains("opcua_client") {
        directives.push_str(",opcua_client::config=error");
    }
    tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())
}

pub fn init(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| filter_for(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let (result, set): (_, SetFilter) = if json {
        let builder = builder.json().flatten_event(true).with_filter_reloading();
        let handle = builder.reload_handle();
        let set = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
        (builder.try_init(), set)
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        let set = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
        (builder.try_init(), set)
    };
    if result.is_ok() {
        let _ = SET_FILTER.set(set);
    }
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Changes the log level of the running process (`agent.log_level` on reload). Ok(false) when it
/// cannot apply: `RUST_LOG` is set (it overrides the config), or logging was not set up by `init`.
pub fn set_level(level: &str) -> Result<bool, String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(false);
    }
    let Some(set) = SET_FILTER.get() else {
        return Ok(false);
    };
    set(filter_for(level)?)?;
    Ok(true)
}
