//! Opening a serial port with its settings, and the small interface the trigger loops need from it
//! (bytes in, bytes out, DTR/RTS), so the loops can also run over an in-memory port in unit tests.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::config::PortSettings;

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
    let b = settings.format().builder(&settings.path);
    #[cfg(unix)]
    let b = b.exclusive(settings.exclusive);
    b
}

/// Opens the port and sets the configured DTR/RTS levels. Returns the port and warnings for levels that
/// could not be set (pseudo-terminals and some adapters have no modem lines; that is not fatal).
/// Runs on the blocking pool: opening a USB adapter can take a while and must not stall other devices.
pub async fn open(settings: &PortSettings) -> Result<(SerialStream, Vec<String>), PortOpenError> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || open_blocking(&settings)).await?
}

/// A port that could not be opened; the text is the reason of the device's bad readings.
#[derive(Debug, thiserror::Error)]
pub enum PortOpenError {
    #[error("cannot open {path}: {}", source.description)]
    Open {
        path: String,
        source: tokio_serial::Error,
    },
    #[error("cannot open the port: the opening task failed ({0})")]
    Task(#[from] tokio::task::JoinError),
}

/// Why an open port is gone; the text is the reason of the readings that follow and of the log line.
#[derive(Debug, thiserror::Error)]
pub enum PortLost {
    #[error("the port closed (device unplugged?)")]
    Closed,
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
}

fn open_blocking(settings: &PortSettings) -> Result<(SerialStream, Vec<String>), PortOpenError> {
    let mut port = builder(settings)
        .open_native_async()
        .map_err(|source| PortOpenError::Open {
            path: settings.path.clone(),
            source,
        })?;
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
