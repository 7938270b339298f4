//! The `[[device]]` table of a Modbus device: what the config file says (serde structs) and the validated
//! form the driver runs from ([`DeviceConfig`]). Every semantic problem is reported as a [`ConfigIssue`] with
//! the path of the offending key, so `lineside check` can point at file and line.
//!
//! Naming: `address` on the device is the network address (`host:port`) of a TCP device or gateway; `address`
//! on a tag is the zero-based Modbus data address (PDU address, as on the wire: holding register "40001" of a
//! manual is address 0). The Modbus unit id ("slave id") is `unit_id` (on the device, overridable per tag),
//! and the engineering unit of a value is `eng_unit`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::decode::{Area, ByteOrder, DataType};
use crate::config::{self, ConfigIssue};

/// How the device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// Modbus TCP (MBAP header, transaction ids), default port 502.
    Tcp,
    /// Modbus RTU on a local serial port (RS-485/RS-232).
    Rtu,
    /// Modbus RTU frames (with CRC) over a TCP connection: serial-to-Ethernet converters in "raw"/"transparent"
    /// mode.
    RtuOverTcp,
}

pub use crate::line::Parity;
use crate::line::{FlowControl, LineFormat};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    transport: TransportKind,
    /// `host:port` (tcp, rtu-over-tcp). The port defaults to 502.
    address: Option<String>,
    /// Serial device (rtu), e.g. `/dev/ttyUSB0` or a `/dev/serial/by-id/...` link.
    path: Option<String>,
    baud: Option<u32>,
    data_bits: Option<u8>,
    parity: Option<Parity>,
    stop_bits: Option<u8>,
    /// Default unit id for the tags of this device.
    unit_id: Option<u8>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    poll_interval: Option<Duration>,
    /// Time allowed for one request's reply.
    #[serde(default, deserialize_with = "config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    connect_timeout: Option<Duration>,
    /// Quiet time between two transactions on the line.
    #[serde(default, deserialize_with = "config::opt_duration")]
    inter_frame_delay: Option<Duration>,
    /// Unused registers/bits a request may read to merge two tags into one request.
    #[serde(default)]
    max_gap: u16,
    /// Cap per read request, for devices that accept less than the protocol's 125 registers / 2000 bits.
    max_registers: Option<u16>,
    max_bits: Option<u16>,
    /// Default byte order of the tags.
    #[serde(default)]
    order: ByteOrder,
    #[serde(default, deserialize_with = "config::opt_duration")]
    reconnect_min: Option<Duration>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    reconnect_max: Option<Duration>,
    #[serde(default)]
    tag: Vec<RawTag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    name: String,
    area: Option<Area>,
    address: u16,
    unit_id: Option<u8>,
    #[serde(rename = "type")]
    ty: Option<DataType>,
    bit: Option<u8>,
    /// Registers of a string.
    length: Option<u16>,
    order: Option<ByteOrder>,
    scale: Option<f64>,
    offset: Option<f64>,
    eng_unit: Option<String>,
    deadband: Option<f64>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    heartbeat: Option<Duration>,
    #[serde(default)]
    writable: bool,
}

/// Serial line settings of an RTU bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
}

impl SerialSettings {
    /// The character format (Modbus RTU uses no flow control).
    pub fn format(&self) -> LineFormat {
        LineFormat {
            baud: self.baud,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            flow_control: FlowControl::None,
        }
    }

    /// Bits on the line per character (start + data + parity + stop).
    pub fn bits_per_char(&self) -> u32 {
        self.format().bits_per_char()
    }

    /// The Modbus RTU silent interval t3.5: 3.5 character times, fixed at 1.75 ms above 19200 baud
    /// (Modbus over serial line v1.02, 2.5.1.1).
    pub fn t35(&self) -> Duration {
        if self.baud > 19_200 || self.baud == 0 {
            Duration::from_micros(1750)
        } else {
            Duration::from_secs_f64(3.5 * f64::from(self.bits_per_char()) / f64::from(self.baud))
        }
    }
}

impl fmt::Display for SerialSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.format().describe())
    }
}

/// Where the device is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Rtu(SerialSettings),
    RtuOverTcp { host: String, port: u16 },
}

impl Endpoint {
    /// True when requests are RTU frames: the link is a bus shared by every device that names it.
    pub fn is_bus(&self) -> bool {
        !matches!(self, Endpoint::Tcp { .. })
    }

    pub fn kind(&self) -> TransportKind {
        match self {
            Endpoint::Tcp { .. } => TransportKind::Tcp,
            Endpoint::Rtu(_) => TransportKind::Rtu,
            Endpoint::RtuOverTcp { .. } => TransportKind::RtuOverTcp,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp {host}:{port}"),
            Endpoint::Rtu(s) => write!(f, "rtu {s}"),
            Endpoint::RtuOverTcp { host, port } => write!(f, "rtu-over-tcp {host}:{port}"),
        }
    }
}

/// Timing and reconnect settings of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub inter_frame_delay: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// One validated tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagConfig {
    pub name: Arc<str>,
    pub area: Area,
    pub address: u16,
    pub unit_id: u8,
    pub ty: DataType,
    /// Bit number for [`DataType::Bit`].
    pub bit: u8,
    /// Registers (register areas) or bits (bit areas) the tag occupies.
    pub count: u16,
    pub order: ByteOrder,
    /// `(scale, offset)` when either is configured: the value becomes `raw * scale + offset` as f64.
    pub linear: Option<(f64, f64)>,
    pub eng_unit: Option<Arc<str>>,
    pub deadband: Option<f64>,
    pub heartbeat: Option<Duration>,
    pub writable: bool,
}

impl TagConfig {
    /// One past the last address the tag occupies (u32: a tag may end at 65536).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }

    /// True when the reading is a number (SPC can chart it).
    pub fn numeric(&self) -> bool {
        self.ty.is_numeric()
    }
}

/// A validated Modbus device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub endpoint: Endpoint,
    pub timing: Timing,
    pub max_gap: u16,
    pub max_registers: u16,
    pub max_bits: u16,
    pub tags: Vec<TagConfig>,
}

const DEFAULT_PORT: u16 = 502;

/// Parses and validates one `[[device]]` table (without `name`/`driver`).
pub fn parse(table: toml::Table) -> Result<DeviceConfig, Vec<ConfigIssue>> {
    let raw: RawDevice = config::from_table(table).map_err(|e| vec![e])?;
    let mut issues = Vec::new();
    let endpoint = endpoint(&raw, &mut issues);
    let is_tcp = raw.transport == TransportKind::Tcp;

    let default_unit = raw.unit_id.unwrap_or(1);
    check_unit_id(default_unit, is_tcp, "unit_id", &mut issues);

    let poll_interval = raw.poll_interval.unwrap_or(Duration::from_secs(1));
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(1));
    let connect_timeout = raw.connect_timeout.unwrap_or(Duration::from_secs(3));
    for (key, d) in [
        ("poll_interval", poll_interval),
        ("timeout", timeout),
        ("connect_timeout", connect_timeout),
    ] {
        if d.is_zero() {
            issues.push(ConfigIssue::new(key, "must be greater than zero"));
        }
    }
    let inter_frame_delay = match (&endpoint, raw.inter_frame_delay) {
        (_, Some(d)) => d,
        (Some(Endpoint::Rtu(s)), None) => s.t35(),
        _ => Duration::ZERO,
    };
    if inter_frame_delay > Duration::from_secs(1) {
        issues.push(ConfigIssue::new(
            "inter_frame_delay",
            "must be at most 1s (it is a pause between frames, typically a few milliseconds)",
        ));
    }
    let reconnect_min = raw.reconnect_min.unwrap_or(Duration::from_millis(500));
    let reconnect_max = raw.reconnect_max.unwrap_or(Duration::from_secs(30));
    if reconnect_min.is_zero() {
        issues.push(ConfigIssue::new(
            "reconnect_min",
            "must be greater than zero",
        ));
    }
    if reconnect_max < reconnect_min {
        issues.push(ConfigIssue::new(
            "reconnect_max",
            "must not be shorter than reconnect_min",
        ));
    }

    let max_registers = raw.max_registers.unwrap_or(125);
    if !(1..=125).contains(&max_registers) {
        issues.push(ConfigIssue::new(
            "max_registers",
            "must be between 1 and 125 (the Modbus limit per read request)",
        ));
    }
    let max_bits = raw.max_bits.unwrap_or(2000);
    if !(1..=2000).contains(&max_bits) {
        issues.push(ConfigIssue::new(
            "max_bits",
            "must be between 1 and 2000 (the Modbus limit per read request)",
        ));
    }

    if raw.tag.is_empty() {
        issues.push(ConfigIssue::new(
            "tag",
            "a modbus device needs at least one [[device.tag]]",
        ));
    }
    let mut tags = Vec::with_capacity(raw.tag.len());
    let mut seen = std::collections::HashSet::new();
    for (i, t) in raw.tag.iter().enumerate() {
        if !seen.insert(t.name.as_str()) {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].name"),
                format!("duplicate tag name `{}`", t.name),
            ));
        }
        if t.name.trim().is_empty() {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].name"),
                "must not be empty",
            ));
        }
        let cap = Caps {
            max_registers: max_registers.clamp(1, 125),
        };
        if let Some(tag) = tag_spec(i, t, default_unit, raw.order, is_tcp, cap, &mut issues) {
            tags.push(tag);
        }
    }

    match endpoint {
        Some(endpoint) if issues.is_empty() => Ok(DeviceConfig {
            endpoint,
            timing: Timing {
                poll_interval,
                timeout,
                connect_timeout,
                inter_frame_delay,
                reconnect_min,
                reconnect_max,
            },
            max_gap: raw.max_gap,
            max_registers,
            max_bits,
            tags,
        }),
        _ => Err(issues),
    }
}

#[derive(Clone, Copy)]
struct Caps {
    max_registers: u16,
}

fn endpoint(raw: &RawDevice, issues: &mut Vec<ConfigIssue>) -> Option<Endpoint> {
    let serial_keys = [
        ("path", raw.path.is_some()),
        ("baud", raw.baud.is_some()),
        ("data_bits", raw.data_bits.is_some()),
        ("parity", raw.parity.is_some()),
        ("stop_bits", raw.stop_bits.is_some()),
    ];
    match raw.transport {
        TransportKind::Tcp | TransportKind::RtuOverTcp => {
            for (key, set) in serial_keys {
                if set {
                    issues.push(ConfigIssue::new(
                        key,
                        "serial settings apply only to transport = \"rtu\"",
                    ));
                }
            }
            let Some(address) = &raw.address else {
                issues.push(ConfigIssue::new(
                    "address",
                    "required for this transport: the device's or gateway's \"host:port\"",
                ));
                return None;
            };
            match parse_host_port(address) {
                Ok((host, port)) => Some(if raw.transport == TransportKind::Tcp {
                    Endpoint::Tcp { host, port }
                } else {
                    Endpoint::RtuOverTcp { host, port }
                }),
                Err(message) => {
                    issues.push(ConfigIssue::new("address", message));
                    None
                }
            }
        }
        TransportKind::Rtu => {
            if raw.address.is_some() {
                issues.push(ConfigIssue::new(
                    "address",
                    "transport = \"rtu\" uses `path` (the serial port), not `address`",
                ));
            }
            let mut ok = true;
            let path = raw.path.clone().unwrap_or_default();
            if path.trim().is_empty() {
                issues.push(ConfigIssue::new(
                    "path",
                    "required for transport = \"rtu\": the serial port, e.g. \"/dev/ttyUSB0\"",
                ));
                ok = false;
            }
            let baud = raw.baud.unwrap_or(0);
            if raw.baud.is_none() {
                issues.push(ConfigIssue::new(
                    "baud",
                    "required for transport = \"rtu\" (e.g. 9600, 19200): it must match the devices",
                ));
                ok = false;
            } else if let Err(e) = crate::line::check_baud(baud) {
                issues.push(ConfigIssue::new("baud", e));
                ok = false;
            }
            let Some(parity) = raw.parity else {
                issues.push(ConfigIssue::new(
                    "parity",
                    "required for transport = \"rtu\": \"none\", \"even\" (the Modbus default) or \"odd\"",
                ));
                return None;
            };
            let data_bits = raw.data_bits.unwrap_or(8);
            if !(5..=8).contains(&data_bits) {
                issues.push(ConfigIssue::new("data_bits", "must be 5, 6, 7 or 8"));
                ok = false;
            }
            let stop_bits = raw.stop_bits.unwrap_or(1);
            if !(1..=2).contains(&stop_bits) {
                issues.push(ConfigIssue::new("stop_bits", "must be 1 or 2"));
                ok = false;
            }
            ok.then_some(Endpoint::Rtu(SerialSettings {
                path,
                baud,
                data_bits,
                parity,
                stop_bits,
            }))
        }
    }
}

/// An address that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    #[error("must not be empty; write \"host:port\", e.g. \"10.0.0.5:502\"")]
    Empty,
    #[error("invalid port {port:?} in {text:?}; write \"host:port\"")]
    Port { port: String, text: String },
    #[error("invalid host in {0:?}; write \"host:port\"")]
    Host(String),
    #[error("port 0 is not a valid device port")]
    Zero,
}

/// `host:port`, `host` (port 502), `[v6]:port`. The host is resolved at every connect, so a DNS change is
/// picked up after a reconnect.
pub fn parse_host_port(text: &str) -> Result<(String, u16), HostPortError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(HostPortError::Empty);
    }
    if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse::<u16>().map_err(|_| HostPortError::Port {
                port: p.to_string(),
                text: text.to_string(),
            })?;
            (h, port)
        }
        None => (text, DEFAULT_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(HostPortError::Host(text.to_string()));
    }
    if port == 0 {
        return Err(HostPortError::Zero);
    }
    Ok((host.to_string(), port))
}

fn check_unit_id(unit: u8, is_tcp: bool, path: &str, issues: &mut Vec<ConfigIssue>) {
    // On a serial line unit 0 is broadcast (never answered) and 248..=255 are reserved. Modbus TCP devices
    // addressed directly often expect 0 or 255, so TCP accepts the full range.
    if !is_tcp && !(1..=247).contains(&unit) {
        issues.push(ConfigIssue::new(
            path,
            format!("unit id {unit} is not valid on an RTU line (1..=247; 0 is broadcast)"),
        ));
    }
}

fn tag_spec(
    i: usize,
    t: &RawTag,
    default_unit: u8,
    default_order: ByteOrder,
    is_tcp: bool,
    caps: Caps,
    issues: &mut Vec<ConfigIssue>,
) -> Option<TagConfig> {
    let p = |key: &str| format!("tag[{i}].{key}");
    let before = issues.len();
    let area = t.area.unwrap_or(Area::HoldingRegister);
    let ty = t.ty.unwrap_or(if area.is_register() {
        DataType::U16
    } else {
        DataType::Bool
    });
    let unit_id = t.unit_id.unwrap_or(default_unit);
    if t.unit_id.is_some() {
        check_unit_id(unit_id, is_tcp, &p("unit_id"), issues);
    }

    if !area.is_register() && ty != DataType::Bool {
        issues.push(ConfigIssue::new(
            p("type"),
            format!("a {area} holds one bit: its type must be \"bool\" (found \"{ty}\")"),
        ));
    }
    let bit = match (ty, t.bit) {
        (DataType::Bit, Some(b)) if b <= 15 => b,
        (DataType::Bit, Some(_)) => {
            issues.push(ConfigIssue::new(
                p("bit"),
                "must be between 0 and 15 (0 = least significant)",
            ));
            0
        }
        (DataType::Bit, None) => {
            issues.push(ConfigIssue::new(
                p("bit"),
                "type = \"bit\" needs `bit = n` (0..=15)",
            ));
            0
        }
        (_, Some(_)) => {
            issues.push(ConfigIssue::new(p("bit"), "only used with type = \"bit\""));
            0
        }
        (_, None) => 0,
    };
    let count = match (ty, t.length) {
        (DataType::String, Some(n)) if n >= 1 && n <= caps.max_registers => n,
        (DataType::String, Some(_)) => {
            issues.push(ConfigIssue::new(
                p("length"),
                format!(
                    "a string's length in registers must be between 1 and {} (max_registers)",
                    caps.max_registers
                ),
            ));
            1
        }
        (DataType::String, None) => {
            issues.push(ConfigIssue::new(
                p("length"),
                "type = \"string\" needs `length` (registers, two characters each)",
            ));
            1
        }
        (_, Some(_)) => {
            issues.push(ConfigIssue::new(
                p("length"),
                "only used with type = \"string\"",
            ));
            1
        }
        (other, None) => other.fixed_registers().unwrap_or(1),
    };
    if area.is_register() && count > caps.max_registers {
        issues.push(ConfigIssue::new(
            p("type"),
            format!(
                "{ty} needs {count} registers, more than max_registers = {}",
                caps.max_registers
            ),
        ));
    }
    if u32::from(t.address) + u32::from(count) > 65_536 {
        issues.push(ConfigIssue::new(
            p("address"),
            format!(
                "the tag's {count} register(s) from address {} run past 65535",
                t.address
            ),
        ));
    }
    if t.order.is_some() && !ty.order_matters() {
        issues.push(ConfigIssue::new(
            p("order"),
            format!("has no effect on type \"{ty}\""),
        ));
    }
    let order = t.order.unwrap_or(default_order);

    let linear = match (t.scale, t.offset) {
        (None, None) => None,
        (scale, offset) => {
            if !ty.is_numeric() {
                issues.push(ConfigIssue::new(
                    p(if scale.is_some() { "scale" } else { "offset" }),
                    format!("scaling applies to numbers only, not to type \"{ty}\""),
                ));
            }
            let scale = scale.unwrap_or(1.0);
            let offset = offset.unwrap_or(0.0);
            if !scale.is_finite() || scale == 0.0 {
                issues.push(ConfigIssue::new(
                    p("scale"),
                    "must be a finite, non-zero number",
                ));
            }
            if !offset.is_finite() {
                issues.push(ConfigIssue::new(p("offset"), "must be a finite number"));
            }
            Some((scale, offset))
        }
    };
    if let Some(db) = t.deadband {
        if !ty.is_numeric() {
            issues.push(ConfigIssue::new(
                p("deadband"),
                format!(
                    "applies to numbers only; a \"{ty}\" tag is reported on change when `heartbeat` is set"
                ),
            ));
        } else if !(db.is_finite() && db >= 0.0) {
            issues.push(ConfigIssue::new(
                p("deadband"),
                "must be a finite number >= 0",
            ));
        }
    }
    if t.heartbeat.is_some_and(|h| h.is_zero()) {
        issues.push(ConfigIssue::new(
            p("heartbeat"),
            "must be greater than zero",
        ));
    }
    if t.writable && !matches!(area, Area::Coil | Area::HoldingRegister) {
        issues.push(ConfigIssue::new(
            p("writable"),
            format!(
                "a {area} is read-only in Modbus; only coils and holding registers can be written"
            ),
        ));
    }
    if issues.len() > before {
        return None;
    }
    Some(TagConfig {
        name: Arc::from(t.name.as_str()),
        area,
        address: t.address,
        unit_id,
        ty,
        bit,
        count,
        order,
        linear,
        eng_unit: t.eng_unit.as_deref().map(Arc::from),
        deadband: t.deadband,
        heartbeat: t.heartbeat,
        writable: t.writable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DeviceConfig, Vec<ConfigIssue>> {
        super::parse(toml::from_str(text).unwrap())
    }

    fn paths(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|i| i.path)
            .collect()
    }

    #[test]
    fn tcp_device_with_defaults() {
        let spec = parse(
            "transport = 'tcp'\naddress = '10.0.0.5'\n\
             [[tag]]\nname = 'speed'\naddress = 3\n\
             [[tag]]\nname = 'run'\narea = 'coil'\naddress = 0\n",
        )
        .unwrap();
        assert_eq!(
            spec.endpoint,
            Endpoint::Tcp {
                host: "10.0.0.5".into(),
                port: 502
            }
        );
        assert_eq!(spec.timing.poll_interval, Duration::from_secs(1));
        assert_eq!(spec.timing.inter_frame_delay, Duration::ZERO);
        assert_eq!(spec.tags[0].ty, DataType::U16);
        assert_eq!(spec.tags[0].area, Area::HoldingRegister);
        assert_eq!(spec.tags[0].unit_id, 1);
        assert_eq!(spec.tags[1].ty, DataType::Bool);
        assert!(!spec.tags[0].writable);
    }

    #[test]
    fn rtu_device_derives_the_silent_interval() {
        let spec = parse(
            "transport = 'rtu'\npath = '/dev/ttyUSB0'\nbaud = 9600\nparity = 'even'\n\
             [[tag]]\nname = 'a'\naddress = 0\ntype = 'f32'\norder = 'cdab'\nunit_id = 7\n",
        )
        .unwrap();
        let Endpoint::Rtu(s) = &spec.endpoint else {
            panic!()
        };
        assert_eq!(s.to_string(), "/dev/ttyUSB0 9600 8E1");
        // 3.5 chars of 11 bits at 9600 baud = 4.01 ms.
        let t = spec.timing.inter_frame_delay.as_micros();
        assert!((4000..4020).contains(&t), "{t}");
        assert_eq!(spec.tags[0].count, 2);
        assert_eq!(spec.tags[0].unit_id, 7);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("plc1:1502").unwrap(), ("plc1".into(), 1502));
        assert_eq!(parse_host_port("[::1]:502").unwrap(), ("::1".into(), 502));
        assert_eq!(parse_host_port("::1").unwrap(), ("::1".into(), 502));
        assert!(parse_host_port("plc:x").is_err());
        assert!(parse_host_port("").is_err());
        assert!(parse_host_port("plc:0").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let p = paths(
            "transport = 'rtu'\nbaud = 9600\nparity = 'none'\nunit_id = 0\nmax_registers = 200\n\
             [[tag]]\nname = 'a'\naddress = 0\ntype = 'bit'\n\
             [[tag]]\nname = 'a'\naddress = 0\narea = 'coil'\ntype = 'u16'\n\
             [[tag]]\nname = 'b'\naddress = 65535\ntype = 'u32'\n\
             [[tag]]\nname = 'c'\naddress = 1\ntype = 'string'\n\
             [[tag]]\nname = 'd'\naddress = 1\ntype = 'bool'\nscale = 2.0\n\
             [[tag]]\nname = 'e'\narea = 'input-register'\naddress = 1\nwritable = true\n\
             [[tag]]\nname = 'f'\naddress = 1\ndeadband = -1.0\nheartbeat = '0s'\n\
             [[tag]]\nname = 'g'\naddress = 1\nbit = 3\n",
        );
        assert_eq!(
            p,
            [
                "path",
                "unit_id",
                "max_registers",
                "tag[0].bit",
                "tag[1].name",
                "tag[1].type",
                "tag[2].address",
                "tag[3].length",
                "tag[4].scale",
                "tag[5].writable",
                "tag[6].deadband",
                "tag[6].heartbeat",
                "tag[7].bit",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_transport_mismatches() {
        assert_eq!(
            paths("transport = 'tcp'\naddress = 'a:1'\n[[tag]]\nname = 'a'\nadress = 1\n"),
            ["tag[0].adress"]
        );
        assert_eq!(
            paths(
                "transport = 'tcp'\naddress = 'a:1'\nbaud = 9600\n[[tag]]\nname = 'a'\naddress = 1\n"
            ),
            ["baud"]
        );
        assert_eq!(
            paths("transport = 'rtu-over-tcp'\n[[tag]]\nname = 'a'\naddress = 1\n"),
            ["address"]
        );
        assert_eq!(paths("transport = 'udp'\n"), ["transport"]);
        assert_eq!(
            paths("transport = 'tcp'\naddress = 'a:1'\ntag = []\n"),
            ["tag"]
        );
    }
}
