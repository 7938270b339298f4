//! `lineside serial ...`: commissioning serial gauges. Thin glue over `lineside_drivers::serial::commission`,
//! where the logic and its tests live.
//!
//! ```text
//! lineside serial ports
//! lineside serial listen --port /dev/serial/by-id/usb-Mitutoyo_USB-ITN_A12345-if00 --baud 9600
//! lineside serial listen --port /dev/ttyUSB0 --baud 4800 --data-bits 7 --parity even --stop-bits 2 \
//!     --request "?\r"
//! ```

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use lineside_drivers::serial::commission::{self, Heard, ListenOptions};
use lineside_drivers::serial::framing::{Terminator, unescape};
use lineside_drivers::serial::protocols::LineProtocol;
use lineside_drivers::serial::{FlowControl, Parity, PortSettings};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List serial ports with their USB vendor/product/serial numbers and stable /dev/serial/by-id names.
    Ports {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Open a port, print every frame the instrument sends, and what each protocol parser (mitutoyo,
    /// mitutoyo-id, sylvac, mahr, and `line` with --pattern) makes of it, to pick the protocol.
    Listen(Box<ListenArgs>),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Serial port, e.g. /dev/serial/by-id/usb-... or /dev/ttyUSB0.
    #[arg(long)]
    port: String,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// 7 or 8.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    data_bits: u8,
    #[arg(long, default_value = "none", value_parser = ["none", "even", "odd"])]
    parity: String,
    /// 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    stop_bits: u8,
    #[arg(long, default_value = "none", value_parser = ["none", "software", "hardware"])]
    flow_control: String,
    /// Hold DTR at this level (true/false); some gauge cables are powered from it.
    #[arg(long)]
    dtr: Option<bool>,
    /// Hold RTS at this level (true/false).
    #[arg(long)]
    rts: Option<bool>,
    /// Request to send every --interval, with escapes: "?\r", "GA01\r\n", "\x05".
    #[arg(long)]
    request: Option<String>,
    /// Time between requests.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Line terminator with escapes (e.g. "\r\n" or "="); default: CR or LF.
    #[arg(long)]
    terminator: Option<String>,
    /// Longest line accepted, in bytes.
    #[arg(long, default_value_t = 256)]
    max_line: usize,
    /// Also try the `line` protocol with this regular expression (named captures value, unit, channel,
    /// status).
    #[arg(long)]
    pattern: Option<String>,
    /// With --pattern: lines matching this are instrument errors (optional capture `code`).
    #[arg(long, requires = "pattern")]
    error_pattern: Option<String>,
    /// With --pattern: the value uses a decimal comma.
    #[arg(long, requires = "pattern")]
    decimal_comma: bool,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long ("30s", "5m"); runs until Ctrl-C otherwise.
    #[arg(long)]
    duration: Option<String>,
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Ports { json } => ports(json),
        Command::Listen(args) => listen(*args).await,
    }
}

fn ports(json: bool) -> anyhow::Result<ExitCode> {
    let ports = commission::list_ports().map_err(|e| anyhow!(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ports)?);
    } else if ports.is_empty() {
        println!("no serial ports found");
    } else {
        for p in &ports {
            println!("{p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn duration(text: &str, what: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .with_context(|| format!("--{what} {text:?}: write e.g. \"500ms\", \"2s\", \"5m\""))
}

async fn listen(a: ListenArgs) -> anyhow::Result<ExitCode> {
    let mut port = PortSettings::new(a.port.clone());
    port.baud = a.baud;
    port.data_bits = a.data_bits;
    port.parity = match a.parity.as_str() {
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        _ => Parity::None,
    };
    port.stop_bits = a.stop_bits;
    port.flow_control = match a.flow_control.as_str() {
        "software" => FlowControl::Software,
        "hardware" => FlowControl::Hardware,
        _ => FlowControl::None,
    };
    port.dtr = a.dtr;
    port.rts = a.rts;
    let mut opts = ListenOptions::new(port);
    opts.request = a
        .request
        .as_deref()
        .map(unescape)
        .transpose()
        .map_err(|e| anyhow!("--request: {e}"))?;
    opts.interval = duration(&a.interval, "interval")?;
    if opts.interval.is_zero() {
        bail!("--interval must be greater than zero");
    }
    if let Some(t) = &a.terminator {
        let bytes = unescape(t).map_err(|e| anyhow!("--terminator: {e}"))?;
        if bytes.is_empty() {
            bail!("--terminator must not be empty");
        }
        opts.terminator = Terminator::Bytes(bytes);
    }
    if a.max_line == 0 {
        bail!("--max-line must be at least 1");
    }
    opts.max_line = a.max_line;
    if let Some(p) = &a.pattern {
        opts.line = Some(
            LineProtocol::new(p, a.error_pattern.as_deref(), a.decimal_comma)
                .map_err(|(key, e)| anyhow!("--{}: {e}", key.replace('_', "-")))?,
        );
    }
    let stop_after = a
        .duration
        .as_deref()
        .map(|d| duration(d, "duration"))
        .transpose()?;

    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            match stop_after {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            stop.cancel();
        });
    }

    eprintln!(
        "opening {} at {}; listening until Ctrl-C",
        opts.port.path,
        opts.port.describe()
    );
    let mut frames = 0u64;
    let mut partials = 0u64;
    let limit = a.count;
    commission::listen(opts, stop, |heard| {
        let now = chrono::Local::now().format("%H:%M:%S%.3f");
        println!("{now} {heard}");
        match heard {
            Heard::Frame { .. } => frames += 1,
            Heard::Partial(_) | Heard::TooLong(_) => partials += 1,
            Heard::Sent(_) => {}
        }
        limit.is_none_or(|n| frames < n)
    })
    .await
    .map_err(|e| anyhow!(e))?;
    if frames == 0 {
        eprintln!(
            "no complete frame heard{}. Check the cable and the instrument's send button or output \
             setting; {}",
            if partials > 0 {
                " (only bytes without a terminator or over-long lines)"
            } else {
                ""
            },
            if partials > 0 {
                "try another --terminator, --baud, --parity or --data-bits"
            } else {
                "instruments that must be asked need --request (e.g. \"?\\r\" for Sylvac and Mahr)"
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
