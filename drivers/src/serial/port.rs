//! Opening a serial port with its settings, and the small interface the trigger loops need from it
//! (bytes in, bytes out, DTR/RTS), so the loops can also run over an in-memory port in unit tests.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::config::{FlowControl, Parity, PortSettings};

/// What the trigger loops use of a port.
pub trait LinePort: AsyncRead + AsyncWrite + Unpin + Send {
    fn set_dtr(&mut self, level: bool) -> io::Result<()>;
    fn set_rts(&mut self, level: bool) -> io::Result<()>;
}

impl LinePort for SerialStream {
    fn set_dtr(&mut self, level: bool) -> io::Result<()> {
        self.write_data_terminal_ready(level)
            .map_err(io::Error::from)
    }

    fn set_rts(&mut self, level: bool) -> io::Result<()> {
        self.write_request_to_send(level).map_err(io::Error::from)
    }
}

fn builder(settings: &PortSettings) -> tokio_serial::SerialPortBuilder {
    let data_bits = match settings.data_bits {
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = match settings.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let flow = match settings.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    let b = tokio_serial::new(settings.path.as_str(), settings.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow)
        // Only used by blocking reads, which the async stream never does; set anyway (the default is 0).
        .timeout(Duration::from_millis(100));
    #[cfg(unix)]
    let b = b.exclusive(settings.exclusive);
    b
}

/// Opens the port and sets the configured DTR/RTS levels. Returns the port and warnings for levels that
/// could not be set (pseudo-terminals and some adapters have no modem lines; that is not fatal).
/// Runs on the blocking pool: opening a USB adapter can take a while and must not stall other devices.
pub async fn open(settings: &PortSettings) -> Result<(SerialStream, Vec<String>), String> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || open_blocking(&settings))
        .await
        .map_err(|e| format!("cannot open the port: the opening task failed ({e})"))?
}

fn open_blocking(settings: &PortSettings) -> Result<(SerialStream, Vec<String>), String> {
    let mut port = builder(settings)
        .open_native_async()
        .map_err(|e| format!("cannot open {}: {}", settings.path, e.description))?;
    let mut warnings = Vec::new();
    if let Some(level) = settings.dtr
        && let Err(e) = port.set_dtr(level)
    {
        warnings.push(format!("cannot set DTR {}: {e}", level_name(level)));
    }
    if let Some(level) = settings.rts
        && let Err(e) = port.set_rts(level)
    {
        warnings.push(format!("cannot set RTS {}: {e}", level_name(level)));
    }
    Ok((port, warnings))
}

pub fn level_name(level: bool) -> &'static str {
    if level { "high" } else { "low" }
}
