//! `lineside modbus ...`: commissioning Modbus devices. Thin glue over `lineside_drivers::modbus::commission`,
//! where the logic and its tests live.
//!
//! ```text
//! lineside modbus read --address 10.20.1.10:502 --unit 1 --register 100 --count 4
//! lineside modbus read --port /dev/ttyUSB0 --baud 19200 --parity even --unit 11 --area input-register \
//!     --register 0 --type f32,i32
//! ```

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use lineside_drivers::modbus::{self, Area, DataType, Endpoint, Parity, ReadOnce, SerialSettings};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read registers (or bits) once and print them raw and decoded as every type in every byte order, to
    /// find the address, type and byte order of a value on a new device.
    Read(ReadArgs),
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Modbus TCP device or gateway as "host:port" (port defaults to 502).
    #[arg(long, conflicts_with = "port", required_unless_present = "port")]
    address: Option<String>,
    /// Use RTU framing over the TCP connection (serial-to-Ethernet converters in raw mode).
    #[arg(long, requires = "address")]
    rtu_over_tcp: bool,
    /// Serial port for Modbus RTU, e.g. /dev/ttyUSB0.
    #[arg(long)]
    port: Option<String>,
    /// Serial baud rate (RTU).
    #[arg(long, default_value_t = 19200)]
    baud: u32,
    /// Serial parity (RTU): none, even or odd.
    #[arg(long, default_value = "even")]
    parity: String,
    /// Serial data bits (RTU).
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    /// Serial stop bits (RTU).
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Unit id ("slave id").
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// First address to read (zero-based protocol address: "40001" in a manual is 0).
    #[arg(long)]
    register: u16,
    /// coil, discrete-input, input-register or holding-register.
    #[arg(long, default_value = "holding-register")]
    area: String,
    /// Types to decode: "all", or a comma-separated list of u16,i16,u32,i32,u64,i64,f32,f64,string.
    #[arg(long = "type", default_value = "all")]
    types: String,
    /// Registers (or bits) to read; default: enough for the widest type asked for (16 bits for bit areas).
    #[arg(long)]
    count: Option<u16>,
    /// Reply timeout, e.g. "1s", "500ms".
    #[arg(long, default_value = "1s")]
    timeout: String,
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Read(args) => read(args).await,
    }
}

async fn read(a: ReadArgs) -> anyhow::Result<ExitCode> {
    let endpoint = endpoint(&a)?;
    let area = Area::parse(&a.area).ok_or_else(|| {
        anyhow!(
            "unknown area {:?}: coil, discrete-input, input-register or holding-register",
            a.area
        )
    })?;
    let types: Vec<DataType> = if a.types == "all" {
        DataType::ALL.to_vec()
    } else {
        a.types
            .split(',')
            .map(|t| DataType::parse(t.trim()).ok_or_else(|| anyhow!("unknown type {t:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    let count = a.count.unwrap_or_else(|| {
        if !area.is_register() {
            16
        } else {
            types
                .iter()
                .map(|t| t.fixed_registers().unwrap_or(8))
                .max()
                .unwrap_or(1)
        }
    });
    let timeout = lineside_drivers::config::parse_duration(&a.timeout).map_err(|e| anyhow!(e))?;
    let req = ReadOnce {
        endpoint,
        unit_id: a.unit,
        area,
        address: a.register,
        count,
        timeout,
    };
    match modbus::read_once(&req).await {
        Ok(data) => {
            print!("{}", modbus::render(&req, &data, &types));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn endpoint(a: &ReadArgs) -> anyhow::Result<Endpoint> {
    if let Some(address) = &a.address {
        let (host, port) = modbus::config::parse_host_port(address).map_err(|e| anyhow!(e))?;
        return Ok(if a.rtu_over_tcp {
            Endpoint::RtuOverTcp { host, port }
        } else {
            Endpoint::Tcp { host, port }
        });
    }
    let Some(path) = &a.port else {
        bail!("give --address HOST:PORT (Modbus TCP) or --port PATH (Modbus RTU)");
    };
    let parity = match a.parity.as_str() {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => bail!("unknown parity {other:?}: none, even or odd"),
    };
    if !(5..=8).contains(&a.data_bits) || !(1..=2).contains(&a.stop_bits) {
        bail!("data bits must be 5..=8 and stop bits 1 or 2");
    }
    Ok(Endpoint::Rtu(SerialSettings {
        path: path.clone(),
        baud: a.baud,
        data_bits: a.data_bits,
        parity,
        stop_bits: a.stop_bits,
    }))
}
