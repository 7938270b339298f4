//! The command line: `lineside run | check | demo` and the commissioning tools per protocol.

mod check;
#[cfg(feature = "embedded-broker")]
mod demo;
#[cfg(feature = "modbus")]
mod modbus;
#[cfg(feature = "opcua")]
mod opcua;
#[cfg(feature = "serial")]
mod serial;

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
    /// Run the agent with a config file.
    Run {
        #[arg(long, short, default_value = "/etc/lineside/lineside.toml")]
        config: PathBuf,
    },
    /// Validate a config file without touching any device; exit code 2 when it has errors.
    Check {
        config: PathBuf,
        /// Also print each device's request plan.
        #[arg(long)]
        plan: bool,
    },
    /// Run a simulated line with an in-process broker and print what arrives upstream. Needs no files and
    /// no hardware.
    Demo {
        /// Stop after this long ("30s", "5m"); runs until Ctrl-C when absent.
        #[arg(long)]
        duration: Option<String>,
    },
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
            run_agent(cfg)
        }
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

/// Runs the agent on a multi-threaded runtime until SIGTERM or SIGINT.
pub fn run_agent(cfg: crate::config::Config) -> ExitCode {
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
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match crate::agent::run(cfg, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "lineside stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

pub async fn stop_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
