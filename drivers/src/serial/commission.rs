//! Commissioning helpers behind `lineside serial ports` and `lineside serial listen`: which ports exist
//! (with USB vendor/product/serial and their stable `/dev/serial/by-id` names), and what every protocol
//! parser makes of the frames an unknown instrument sends, so an engineer can pick the right protocol.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::config::PortSettings;
use super::framing::{FrameError, FrameEvent, Framer, Terminator, decode, escape};
use super::port::PortLost;
use super::protocols::{Fault, LineProtocol, Measurement, Protocol};

/// A serial port found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortInfo {
    pub path: String,
    /// `usb`, `pci`, `bluetooth` or `unknown`.
    pub kind: &'static str,
    pub vid: Option<u16>,
    pub pid: Option<u16>,
    pub serial_number: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// Stable names under /dev/serial/by-id that point to this port: use these in the config, since
    /// `/dev/ttyUSB0` may become `/dev/ttyUSB1` after a replug.
    pub by_id: Vec<String>,
}

impl fmt::Display for PortInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  ({}", self.path, self.kind)?;
        if let (Some(v), Some(p)) = (self.vid, self.pid) {
            write!(f, " {v:04x}:{p:04x}")?;
        }
        for (label, value) in [
            ("manufacturer", &self.manufacturer),
            ("product", &self.product),
            ("serial", &self.serial_number),
        ] {
            if let Some(v) = value {
                write!(f, ", {label} {v}")?;
            }
        }
        f.write_str(")")?;
        for link in &self.by_id {
            write!(f, "\n    {link}")?;
        }
        Ok(())
    }
}

/// The OS would not list its serial ports.
#[derive(Debug, thiserror::Error)]
#[error("cannot list ports: {0}")]
pub struct ListPortsError(pub tokio_serial::Error);

/// Lists the serial ports the OS knows. Without libudev the USB details come from sysfs.
pub fn list_ports() -> Result<Vec<PortInfo>, ListPortsError> {
    // serialport's sysfs scan panics when /sys/class/tty is missing (some containers): no ports then.
    #[cfg(target_os = "linux")]
    if !Path::new("/sys/class/tty").is_dir() {
        return Ok(Vec::new());
    }
    let found = tokio_serial::available_ports().map_err(ListPortsError)?;
    let links = by_id_links(Path::new("/dev/serial/by-id"));
    let mut ports: Vec<PortInfo> = found
        .into_iter()
        .map(|p| {
            let target = std::fs::canonicalize(&p.port_name).ok();
            let by_id = links
                .iter()
                .filter(|(_, t)| Some(t) == target.as_ref())
                .map(|(l, _)| l.display().to_string())
                .collect();
            let mut info = PortInfo {
                path: p.port_name,
                kind: "unknown",
                vid: None,
                pid: None,
                serial_number: None,
                manufacturer: None,
                product: None,
                by_id,
            };
            match p.port_type {
                tokio_serial::SerialPortType::UsbPort(u) => {
                    info.kind = "usb";
                    info.vid = Some(u.vid);
                    info.pid = Some(u.pid);
                    info.serial_number = u.serial_number;
                    info.manufacturer = u.manufacturer;
                    info.product = u.product;
                }
                tokio_serial::SerialPortType::PciPort => info.kind = "pci",
                tokio_serial::SerialPortType::BluetoothPort => info.kind = "bluetooth",
                tokio_serial::SerialPortType::Unknown => {}
            }
            info
        })
        .collect();
    ports.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ports)
}

/// The symlinks in `dir` with the device each resolves to (broken links are skipped).
pub fn by_id_links(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Vec<(PathBuf, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let link = e.path();
            std::fs::canonicalize(&link).ok().map(|t| (link, t))
        })
        .collect();
    links.sort();
    links
}

/// What `listen` does.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub port: PortSettings,
    /// Sent every `interval` when set (e.g. `?\r`); without it, `listen` only listens.
    pub request: Option<Vec<u8>>,
    pub interval: Duration,
    pub terminator: Terminator,
    pub max_line: usize,
    /// Bytes that stop without a terminator are shown as a partial frame after this long: the usual sign
    /// of a wrong terminator or baud rate.
    pub idle: Duration,
    /// A `line` pattern to try alongside the built-in protocols.
    pub line: Option<LineProtocol>,
}

impl ListenOptions {
    pub fn new(port: PortSettings) -> Self {
        ListenOptions {
            port,
            request: None,
            interval: Duration::from_secs(1),
            terminator: Terminator::CrOrLf,
            max_line: 256,
            idle: Duration::from_millis(500),
            line: None,
        }
    }
}

/// One protocol's reading of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpretation {
    pub protocol: &'static str,
    pub result: Result<Vec<Measurement>, Fault>,
}

/// Something `listen` saw or did.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// A request was sent.
    Sent(Vec<u8>),
    /// A complete frame and what each protocol makes of it (`Err` when the bytes are not text at all).
    Frame {
        raw: Vec<u8>,
        interpretations: Result<Vec<Interpretation>, FrameError>,
    },
    /// Bytes that were not ended by a terminator within the idle time.
    Partial(Vec<u8>),
    /// A line over the length cap.
    TooLong(FrameError),
}

impl fmt::Display for Heard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Heard::Sent(b) => write!(f, "→ sent \"{}\"", escape(b)),
            Heard::Partial(b) => write!(
                f,
                "← partial \"{}\" ({} bytes and no terminator: wrong terminator, baud rate or parity?)",
                escape(b),
                b.len()
            ),
            Heard::TooLong(e) => write!(f, "← {e}"),
            Heard::Frame {
                raw,
                interpretations,
            } => {
                write!(f, "← \"{}\"", escape(raw))?;
                match interpretations {
                    Err(e) => write!(f, "\n    {e}"),
                    Ok(list) => {
                        for i in list {
                            write!(f, "\n    {:<12} ", i.protocol)?;
                            match &i.result {
                                Ok(ms) if ms.is_empty() => {
                                    f.write_str("ignored (not a reading)")?
                                }
                                Ok(ms) => {
                                    let shown: Vec<String> =
                                        ms.iter().map(|m| m.to_string()).collect();
                                    write!(f, "ok: {}", shown.join("; "))?;
                                }
                                Err(e) => write!(f, "no: {e}")?,
                            }
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Runs every protocol parser (and `line` when given) over one frame.
pub fn interpret(
    raw: &[u8],
    seven_bit: bool,
    line: Option<&LineProtocol>,
) -> Result<Vec<Interpretation>, FrameError> {
    let text = decode(raw, seven_bit)?;
    let mut protocols = vec![
        Protocol::Mitutoyo,
        Protocol::MitutoyoId,
        Protocol::Sylvac,
        Protocol::Mahr,
    ];
    if let Some(l) = line {
        protocols.push(Protocol::Line(l.clone()));
    }
    Ok(protocols
        .iter()
        .map(|p| Interpretation {
            protocol: p.name(),
            result: p.parse(&text),
        })
        .collect())
}

/// Why `listen` stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Open(#[from] super::port::PortOpenError),
    #[error(transparent)]
    Lost(#[from] PortLost),
}

/// Opens the port and reports everything heard to `on` until `stop` is cancelled or `on` returns false.
pub async fn listen(
    opts: ListenOptions,
    stop: CancellationToken,
    mut on: impl FnMut(Heard) -> bool,
) -> Result<(), ListenError> {
    let (mut port, warnings) = super::port::open(&opts.port).await?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let seven_bit = opts.port.data_bits == 7;
    let mut framer = Framer::new(opts.terminator.clone(), opts.max_line);
    let mut events = Vec::new();
    let mut buf = vec![0u8; 512];
    let mut next_request = Instant::now();
    let mut last_byte = Instant::now();
    loop {
        let partial = framer.pending() > 0;
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = sleep_until(next_request), if opts.request.is_some() => {
                next_request += opts.interval.max(Duration::from_millis(10));
                if let Some(req) = &opts.request {
                    port.write_all(req).await.map_err(PortLost::Write)?;
                    if !on(Heard::Sent(req.clone())) {
                        return Ok(());
                    }
                }
            }
            _ = sleep_until(last_byte + opts.idle), if partial => {
                if let Some(bytes) = framer.discard_partial()
                    && !on(Heard::Partial(bytes))
                {
                    return Ok(());
                }
            }
            n = port.read(&mut buf) => {
                let n = n.map_err(PortLost::Read)?;
                if n == 0 {
                    return Err(PortLost::Closed.into());
                }
                last_byte = Instant::now();
                framer.push(buf.get(..n).unwrap_or_default(), &mut events);
                for ev in events.drain(..) {
                    let heard = match ev {
                        FrameEvent::Frame(raw) => Heard::Frame {
                            interpretations: interpret(&raw, seven_bit, opts.line.as_ref()),
                            raw,
                        },
                        FrameEvent::Error(e) => Heard::TooLong(e),
                    };
                    if !on(heard) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_gets_a_say() {
        let list = interpret(b"01A+0000.123", false, None).unwrap();
        let names: Vec<_> = list.iter().map(|i| i.protocol).collect();
        assert_eq!(names, ["mitutoyo", "mitutoyo-id", "sylvac", "mahr"]);
        assert!(list[0].result.is_ok());
        assert!(list[1].result.is_err());
        let shown = Heard::Frame {
            raw: b"01A+0000.123".to_vec(),
            interpretations: Ok(list),
        }
        .to_string();
        assert!(
            shown.contains("mitutoyo     ok: channel 1: 0.123"),
            "{shown}"
        );
        assert!(interpret(b"\x01\x02", false, None).is_err());
    }

    #[test]
    fn listing_ports_never_fails_on_this_machine() {
        // Whatever the machine has (often nothing in a container), listing must not error or panic.
        let ports = list_ports().unwrap();
        for p in ports {
            assert!(!p.path.is_empty());
        }
    }

    #[cfg(unix)]
    #[test]
    fn by_id_links_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ttyFAKE0");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("usb-Gauge_123-if00")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("broken")).unwrap();
        let links = by_id_links(dir.path());
        let names: Vec<_> = links
            .iter()
            .map(|(l, _)| l.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert!(names.contains(&"usb-Gauge_123-if00".to_string()));
        assert!(!names.contains(&"broken".to_string()));
        assert!(by_id_links(Path::new("/nonexistent/dir")).is_empty());
    }
}
