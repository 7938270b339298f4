//! The command line: `lineside run | check | status | demo` and the commissioning tools per protocol.

mod check;
#[cfg(feature = "embedded-broker")]
mod demo;
mod man;
#[cfg(feature = "modbus")]
mod modbus;
#[cfg(feature = "opcua")]
mod opcua;
#[cfg(feature = "serial")]
mod serial;
mod status;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lineside",
    version,
    about = "Edge data collection for the shop floor: instruments and PLCs → SQLite → SPC → MQTT"
)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text (overrides agent.log_format).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent with a config file (and `conf.d/*.toml` next to it). SIGHUP re-reads them.
    Run {
        #[arg(long, short, default_value = "/etc/lineside/lineside.toml")]
        config: PathBuf,
    },
    /// Validate a config file (merged with `conf.d/*.toml` next to it) without touching any device; exit
    /// code 2 when it has errors.
    Check {
        config: PathBuf,
        /// Also print each device's request plan.
        #[arg(long)]
        plan: bool,
    },
    /// Show the running agent's devices, backlog and alarms.
    Status(status::Args),
    /// Run a simulated line with an in-process broker and print what arrives upstream. Needs no files and
    /// no hardware.
    Demo {
        /// Stop after this long ("30s", "5m"); runs until Ctrl-C when absent.
        #[arg(long)]
        duration: Option<String>,
    },
    /// Manage the operator station's users: `lineside user add NAME --role operator`.
    #[command(subcommand)]
    User(user::Command),
    /// Modbus commissioning: read registers once and decode them every way.
    #[cfg(feature = "modbus")]
    #[command(subcommand)]
    Modbus(modbus::Command),
    /// OPC UA commissioning: endpoints, browse, trust a server certificate.
    #[cfg(feature = "opcua")]
    #[command(subcommand)]
    Opcua(opcua::Command),
    /// Serial commissioning: list ports, listen to an instrument.
    #[cfg(feature = "serial")]
    #[command(subcommand)]
    Serial(serial::Command),
    /// Write the manual pages (one per command, from this definition) into a directory. Used by
    /// scripts/package.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, plan } => check::run(&config, plan),
        Command::Run { config } => {
            let cfg = match crate::config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{} error(s); lineside did not start", errors.0.len());
                    return ExitCode::from(2);
                }
            };
            let json = cli.log_json || cfg.agent.log_format == crate::config::LogFormat::Json;
            crate::logging::init(&cfg.agent.log_level, json);
            run_agent(cfg, config)
        }
        Command::Status(args) => status::run(args),
        Command::User(cmd) => user::run(cmd),
        #[cfg(feature = "embedded-broker")]
        Command::Demo { duration } => {
            crate::logging::init("info", cli.log_json);
            demo::run(duration.as_deref())
        }
        #[cfg(not(feature = "embedded-broker"))]
        Command::Demo { .. } => {
            eprintln!(
                "this build has no embedded broker (cargo feature `embedded-broker`); use `lineside run`"
            );
            ExitCode::FAILURE
        }
        #[cfg(feature = "modbus")]
        Command::Modbus(cmd) => tool(cli.log_json, modbus::run(cmd)),
        #[cfg(feature = "opcua")]
        Command::Opcua(cmd) => tool(cli.log_json, opcua::run(cmd)),
        #[cfg(feature = "serial")]
        Command::Serial(cmd) => tool(cli.log_json, serial::run(cmd)),
        Command::Man { out } => {
            match man::write_pages(<Cli as clap::CommandFactory>::command(), &out) {
                Ok(pages) => {
                    for page in pages {
                        println!("{}", page.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot write the manual pages to {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a commissioning command on its own runtime; errors are printed, not panicked.
#[allow(dead_code)] // unused when no protocol feature is enabled
fn tool(
    log_json: bool,
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    crate::logging::init("warn", log_json);
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
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the agent on a multi-threaded runtime until SIGTERM or SIGINT; SIGHUP re-reads `config_path`.
pub fn run_agent(cfg: crate::config::Config, config_path: PathBuf) -> ExitCode {
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
    let code = runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (control, reload) =
            crate::agent::AgentControl::with_reload(shutdown.clone(), config_path);
        tokio::spawn(handle_signals(shutdown, Some(reload)));
        match crate::agent::run(cfg, control).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "lineside stopped with an error");
                ExitCode::FAILURE
            }
        }
    });
    // A task or blocking call left behind by a shutdown phase that overran must not hold the process:
    // dropping the runtime would wait for it without bound.
    runtime.shutdown_timeout(std::time::Duration::from_millis(300));
    code
}

/// Cancels `shutdown` on SIGTERM or SIGINT. SIGHUP is ignored (with a log line): there is no config
/// file to re-read.
pub async fn stop_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    handle_signals(shutdown, None).await
}

/// Cancels `shutdown` on SIGTERM or SIGINT; SIGHUP asks the agent to re-read its config.
pub async fn handle_signals(
    shutdown: tokio_util::sync::CancellationToken,
    reload: Option<crate::agent::ReloadHandle>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                break;
            }
            _ = hup.recv() => match &reload {
                Some(r) => {
                    tracing::info!("SIGHUP received: reloading the config");
                    if !r.request() {
                        tracing::warn!("the agent is not running; SIGHUP ignored");
                    }
                }
                None => tracing::warn!("SIGHUP received: this agent has no config file to re-read; ignored"),
            },
        }
    }
    shutdown.cancel();
}
