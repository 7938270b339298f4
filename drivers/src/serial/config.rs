//! The `[[device]]` table of a serial gauge: raw serde structs, then semantic checks into a
//! [`DeviceConfig`] the driver can run without further validation.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::framing::{Terminator, escape};
use super::protocols::{Field, LineProtocol, Protocol, mitutoyo_id, normalize_channel};
use super::units::Unit;
use crate::config::{self, ConfigIssue};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    port: String,
    protocol: ProtocolName,
    baud: Option<u32>,
    data_bits: Option<u8>,
    parity: Option<Parity>,
    stop_bits: Option<u8>,
    #[serde(default)]
    flow_control: FlowControl,
    dtr: Option<bool>,
    rts: Option<bool>,
    #[serde(default = "yes")]
    exclusive: bool,
    trigger: Option<TriggerName>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    pulse: Option<Duration>,
    request: Option<String>,
    terminator: Option<String>,
    #[serde(default = "default_max_line")]
    max_line: usize,
    instrument_unit: Option<String>,
    pattern: Option<String>,
    error_pattern: Option<String>,
    #[serde(default)]
    decimal_comma: bool,
    #[serde(default, deserialize_with = "config::opt_duration")]
    reconnect_min: Option<Duration>,
    #[serde(default, deserialize_with = "config::opt_duration")]
    reconnect_max: Option<Duration>,
    #[serde(default)]
    tag: Vec<RawTag>,
}

fn yes() -> bool {
    true
}

fn default_max_line() -> usize {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    name: String,
    channel: Option<Channel>,
    #[serde(default)]
    field: TagField,
    unit: Option<String>,
}

/// A channel may be written `1` or `"01"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Channel {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ProtocolName {
    Mitutoyo,
    MitutoyoId,
    Sylvac,
    Mahr,
    Line,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TriggerName {
    Poll,
    Stream,
    DtrPulse,
}

/// What a tag takes from a measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagField {
    /// The current value.
    #[default]
    Value,
    /// Mitutoyo ID-H peak-hold values.
    Max,
    Min,
    Tir,
    /// The tolerance mark (Sylvac: `below`/`within`/`above`) or the `status` capture (`line`), as text.
    Status,
}

impl TagField {
    pub fn name(self) -> &'static str {
        match self {
            TagField::Value => "value",
            TagField::Max => "max",
            TagField::Min => "min",
            TagField::Tir => "tir",
            TagField::Status => "status",
        }
    }

    /// The measurement field a numeric tag takes (`None` for status tags).
    pub fn measurement_field(self) -> Option<Field> {
        match self {
            TagField::Value => Some(Field::Value),
            TagField::Max => Some(Field::Max),
            TagField::Min => Some(Field::Min),
            TagField::Tir => Some(Field::Tir),
            TagField::Status => None,
        }
    }
}

use crate::line::LineFormat;
pub use crate::line::{FlowControl, Parity};

/// Everything needed to open a port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSettings {
    /// Device path; prefer the stable `/dev/serial/by-id/...` names of USB adapters.
    pub path: String,
    pub baud: u32,
    /// 7 or 8.
    pub data_bits: u8,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    pub flow_control: FlowControl,
    /// Level DTR is held at while the port is open (`None`: leave it as the OS sets it, which on Linux is
    /// high). Some gauge cables draw power from DTR/RTS.
    pub dtr: Option<bool>,
    pub rts: Option<bool>,
    /// Lock the port against other programs (TIOCEXCL + flock).
    pub exclusive: bool,
}

impl PortSettings {
    /// 9600 8N1 on `path`, the settings most USB gauge interfaces use.
    pub fn new(path: impl Into<String>) -> Self {
        PortSettings {
            path: path.into(),
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
            dtr: None,
            rts: None,
            exclusive: true,
        }
    }

    /// The character format.
    pub fn format(&self) -> LineFormat {
        LineFormat {
            baud: self.baud,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            flow_control: self.flow_control,
        }
    }

    /// `9600 7E2` style.
    pub fn describe(&self) -> String {
        self.format().describe()
    }
}

/// How readings are triggered.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The instrument sends by itself (data button, foot switch, continuous output).
    Stream,
    /// A request on an interval; each request waits for its reply up to the timeout.
    Poll {
        interval: Duration,
        requests: Vec<PollRequest>,
    },
    /// DTR is dropped from its idle level (high) for `pulse` to request a reading (simplex cables).
    DtrPulse { interval: Duration, pulse: Duration },
}

impl Trigger {
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Stream => "stream",
            Trigger::Poll { .. } => "poll",
            Trigger::DtrPulse { .. } => "dtr-pulse",
        }
    }
}

/// One request of a poll cycle and the tags its reply fills.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRequest {
    pub bytes: Vec<u8>,
    /// Indexes into [`DeviceConfig::tags`].
    pub tags: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct TagConfig {
    pub name: String,
    /// Normalized (see [`normalize_channel`]); `None` takes the first measurement of a frame.
    pub channel: Option<String>,
    pub field: TagField,
    /// The unit the tag reports in; values in another unit are converted or refused.
    pub unit: Option<Unit>,
}

/// A validated serial device configuration.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub port: PortSettings,
    pub protocol: Protocol,
    pub trigger: Trigger,
    /// Poll/dtr-pulse: how long a reply may take. Stream: how long an incomplete line may wait for the
    /// rest before it is dropped as bad.
    pub timeout: Duration,
    pub terminator: Terminator,
    pub max_line: usize,
    /// The unit the instrument reads in when its frames carry none (Mitutoyo, most Sylvac).
    pub instrument_unit: Option<Unit>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub tags: Vec<TagConfig>,
}

/// Longest accepted line cap; gauges send tens of bytes.
const MAX_LINE_LIMIT: usize = 65_536;

/// Typical port settings per protocol (baud, data bits, parity, stop bits), used where the config
/// leaves them out.
fn protocol_port_defaults(p: ProtocolName) -> (u32, u8, Parity, u8) {
    match p {
        // Sylvac Opto-RS.
        ProtocolName::Sylvac => (4800, 7, Parity::Even, 2),
        // Mahr C1202 and most Millimar amplifiers.
        ProtocolName::Mahr => (9600, 7, Parity::Even, 2),
        ProtocolName::Mitutoyo | ProtocolName::MitutoyoId | ProtocolName::Line => {
            (9600, 8, Parity::None, 1)
        }
    }
}

/// Parses and checks a serial device's table. Every problem found is returned, each with its path.
pub fn parse(table: toml::Table) -> Result<DeviceConfig, Vec<ConfigIssue>> {
    let raw: RawConfig = config::from_table(table).map_err(|e| vec![e])?;
    let mut issues = Vec::new();

    let port = port_settings(&raw, &mut issues);
    let (protocol, terminator) = protocol(&raw, &mut issues);
    let (tags, instrument_unit) = tag_configs(&raw, &mut issues);
    let (trigger, timeout) = trigger(&raw, &protocol, &tags, &mut issues);
    let (reconnect_min, reconnect_max) = reconnect(&raw, &mut issues);

    if !issues.is_empty() {
        return Err(issues);
    }
    let port = PortSettings {
        // dtr-pulse needs DTR high while idle.
        dtr: if matches!(trigger, Trigger::DtrPulse { .. }) {
            Some(true)
        } else {
            port.dtr
        },
        ..port
    };
    Ok(DeviceConfig {
        port,
        protocol,
        trigger,
        timeout,
        terminator,
        max_line: raw.max_line,
        instrument_unit,
        reconnect_min,
        reconnect_max,
        tags,
    })
}

/// The port: the protocol's usual settings where the config gives none.
fn port_settings(raw: &RawConfig, issues: &mut Vec<ConfigIssue>) -> PortSettings {
    let mut issue = |path: &str, msg: String| issues.push(ConfigIssue::new(path, msg));
    let (baud, data_bits, parity, stop_bits) = protocol_port_defaults(raw.protocol);
    let port = PortSettings {
        path: raw.port.trim().to_string(),
        baud: raw.baud.unwrap_or(baud),
        data_bits: raw.data_bits.unwrap_or(data_bits),
        parity: raw.parity.unwrap_or(parity),
        stop_bits: raw.stop_bits.unwrap_or(stop_bits),
        flow_control: raw.flow_control,
        dtr: raw.dtr,
        rts: raw.rts,
        exclusive: raw.exclusive,
    };
    if port.path.is_empty() {
        issue(
            "port",
            "must name the device, e.g. \"/dev/serial/by-id/usb-...\" or \"/dev/ttyUSB0\"".into(),
        );
    }
    if let Err(e) = crate::line::check_baud(port.baud) {
        issue("baud", e.to_string());
    }
    if !matches!(port.data_bits, 7 | 8) {
        issue("data_bits", "must be 7 or 8".into());
    }
    if !matches!(port.stop_bits, 1 | 2) {
        issue("stop_bits", "must be 1 or 2".into());
    }
    if port.flow_control == FlowControl::Hardware && raw.rts.is_some() {
        issue(
            "rts",
            "RTS is driven by the hardware flow control; leave `rts` out or set flow_control = \"none\""
                .into(),
        );
    }
    port
}

/// The protocol (compiled patterns for `line`), the request/terminator texts and the line cap.
fn protocol(raw: &RawConfig, issues: &mut Vec<ConfigIssue>) -> (Protocol, Terminator) {
    let mut issue = |path: &str, msg: String| issues.push(ConfigIssue::new(path, msg));
    let protocol = match raw.protocol {
        ProtocolName::Mitutoyo => Protocol::Mitutoyo,
        ProtocolName::MitutoyoId => Protocol::MitutoyoId,
        ProtocolName::Sylvac => Protocol::Sylvac,
        ProtocolName::Mahr => Protocol::Mahr,
        ProtocolName::Line => match raw.pattern.as_deref() {
            Some(p) => {
                match LineProtocol::new(p, raw.error_pattern.as_deref(), raw.decimal_comma) {
                    Ok(lp) => Protocol::Line(lp),
                    Err((key, msg)) => {
                        issue(key, msg.to_string());
                        Protocol::Mitutoyo // placeholder; the issues are returned below
                    }
                }
            }
            None => {
                issue(
                    "pattern",
                    "protocol = \"line\" needs a regular expression with a named capture `value`, e.g. pattern = '^(?P<value>[-+]?[0-9.]+)\\s*(?P<unit>mm|in)?$'"
                        .into(),
                );
                Protocol::Mitutoyo
            }
        },
    };
    if raw.protocol != ProtocolName::Line {
        for (key, set) in [
            ("pattern", raw.pattern.is_some()),
            ("error_pattern", raw.error_pattern.is_some()),
            ("decimal_comma", raw.decimal_comma),
        ] {
            if set {
                issue(key, "is only used with protocol = \"line\"".into());
            }
        }
    }

    for (key, text) in [
        ("request", raw.request.as_deref()),
        ("terminator", raw.terminator.as_deref()),
    ] {
        if let Some(t) = text {
            if t.is_empty() {
                issue(
                    key,
                    "must not be empty (leave the key out for the default)".into(),
                );
            } else if t.contains("\\r") || t.contains("\\n") {
                issue(
                    key,
                    format!(
                        "contains a literal backslash (\"{}\"): write it in double quotes, e.g. \"?\\r\", so TOML turns \\r into a carriage return",
                        escape(t.as_bytes())
                    ),
                );
            }
        }
    }
    let terminator = Terminator::from_config(raw.terminator.as_deref());
    if raw.max_line == 0 || raw.max_line > MAX_LINE_LIMIT {
        issue(
            "max_line",
            format!("must be between 1 and {MAX_LINE_LIMIT} bytes"),
        );
    }
    (protocol, terminator)
}

/// The tags, checked against what the protocol sends, and the instrument's unit.
fn tag_configs(raw: &RawConfig, issues: &mut Vec<ConfigIssue>) -> (Vec<TagConfig>, Option<Unit>) {
    let mut issue = |path: &str, msg: String| issues.push(ConfigIssue::new(path, msg));
    if raw.tag.is_empty() {
        issue(
            "tag",
            "a serial device needs at least one [[device.tag]]".into(),
        );
    }
    let mut seen = HashSet::new();
    let mut tags = Vec::with_capacity(raw.tag.len());
    for (i, t) in raw.tag.iter().enumerate() {
        let name = t.name.trim();
        if name.is_empty() {
            issue(&format!("tag[{i}].name"), "must not be empty".into());
        } else if !seen.insert(name) {
            issue(
                &format!("tag[{i}].name"),
                format!("duplicate tag name `{name}`"),
            );
        }
        let channel = match &t.channel {
            None => None,
            Some(Channel::Number(n)) if *n >= 0 => Some(n.to_string()),
            Some(Channel::Number(_)) => {
                issue(&format!("tag[{i}].channel"), "must not be negative".into());
                None
            }
            Some(Channel::Text(s)) if s.trim().is_empty() => {
                issue(&format!("tag[{i}].channel"), "must not be empty".into());
                None
            }
            Some(Channel::Text(s)) => Some(normalize_channel(s)),
        };
        match (raw.protocol, t.field) {
            (ProtocolName::MitutoyoId, TagField::Status) => issue(
                &format!("tag[{i}].field"),
                "mitutoyo-id sends no status; use value, max, min or tir".into(),
            ),
            (ProtocolName::MitutoyoId, _) => {}
            (_, TagField::Max | TagField::Min | TagField::Tir) => issue(
                &format!("tag[{i}].field"),
                format!(
                    "`{}` is only sent by mitutoyo-id; use value{}",
                    t.field.name(),
                    if matches!(raw.protocol, ProtocolName::Sylvac | ProtocolName::Line) {
                        " or status"
                    } else {
                        ""
                    }
                ),
            ),
            (ProtocolName::Mitutoyo | ProtocolName::Mahr, TagField::Status) => issue(
                &format!("tag[{i}].field"),
                format!("{} sends no status; use value", raw.protocol_name()),
            ),
            _ => {}
        }
        if raw.protocol == ProtocolName::Sylvac && channel.is_some() {
            issue(
                &format!("tag[{i}].channel"),
                "sylvac sends one value per frame and has no channels".into(),
            );
        }
        if raw.protocol == ProtocolName::MitutoyoId {
            match channel.as_deref().map(str::parse::<u8>) {
                Some(Ok(id)) if id <= 99 => {}
                Some(_) => issue(
                    &format!("tag[{i}].channel"),
                    "the instrument id must be 00-99".into(),
                ),
                None => issue(
                    &format!("tag[{i}].channel"),
                    "mitutoyo-id tags need `channel` = the instrument id (00-99) used in GA**"
                        .into(),
                ),
            }
        }
        let unit = match &t.unit {
            Some(u) if u.trim().is_empty() => {
                issue(&format!("tag[{i}].unit"), "must not be empty".into());
                None
            }
            Some(_) if t.field == TagField::Status => {
                issue(
                    &format!("tag[{i}].unit"),
                    "a status tag is text and has no unit".into(),
                );
                None
            }
            Some(u) => Some(Unit::parse(u)),
            None => None,
        };
        tags.push(TagConfig {
            name: name.to_string(),
            channel,
            field: t.field,
            unit,
        });
    }
    let instrument_unit = match raw.instrument_unit.as_deref() {
        Some(u) if u.trim().is_empty() => {
            issue("instrument_unit", "must not be empty".into());
            None
        }
        Some(u) => Some(Unit::parse(u)),
        None => None,
    };
    (tags, instrument_unit)
}

/// How readings are requested (stream, poll with its requests, dtr-pulse) and the reply timeout.
fn trigger(
    raw: &RawConfig,
    protocol: &Protocol,
    tags: &[TagConfig],
    issues: &mut Vec<ConfigIssue>,
) -> (Trigger, Duration) {
    let mut issue = |path: &str, msg: String| issues.push(ConfigIssue::new(path, msg));
    let trigger_name = raw.trigger.unwrap_or(match raw.protocol {
        ProtocolName::Mitutoyo => TriggerName::Stream,
        ProtocolName::Line if raw.request.is_none() => TriggerName::Stream,
        _ => TriggerName::Poll,
    });
    let interval = raw.interval.unwrap_or(Duration::from_secs(1));
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(1));
    if timeout.is_zero() {
        issue("timeout", "must be greater than zero".into());
    }
    let trigger = match trigger_name {
        TriggerName::Stream => {
            for (key, set) in [
                ("interval", raw.interval.is_some()),
                ("pulse", raw.pulse.is_some()),
                ("request", raw.request.is_some()),
            ] {
                if set {
                    issue(
                        key,
                        "is not used with trigger = \"stream\" (the instrument sends by itself)"
                            .into(),
                    );
                }
            }
            Trigger::Stream
        }
        TriggerName::Poll => {
            if interval.is_zero() {
                issue("interval", "must be greater than zero".into());
            }
            if raw.pulse.is_some() {
                issue("pulse", "is only used with trigger = \"dtr-pulse\"".into());
            }
            let requests = match (&raw.request, &protocol) {
                (Some(r), _) => vec![PollRequest {
                    bytes: r.as_bytes().to_vec(),
                    tags: (0..tags.len()).collect(),
                }],
                (None, Protocol::MitutoyoId) => {
                    // One request per instrument id; each reply fills that id's tags.
                    let mut by_id: Vec<(u8, Vec<usize>)> = Vec::new();
                    for (i, t) in tags.iter().enumerate() {
                        let Some(id) = t.channel.as_deref().and_then(|c| c.parse::<u8>().ok())
                        else {
                            continue;
                        };
                        match by_id.iter_mut().find(|(known, _)| *known == id) {
                            Some((_, idx)) => idx.push(i),
                            None => by_id.push((id, vec![i])),
                        }
                    }
                    by_id
                        .into_iter()
                        .map(|(id, tags)| PollRequest {
                            bytes: mitutoyo_id::request(id),
                            tags,
                        })
                        .collect()
                }
                (None, p) => match p.default_request() {
                    Some(r) => vec![PollRequest {
                        bytes: r.to_vec(),
                        tags: (0..tags.len()).collect(),
                    }],
                    None => {
                        issue(
                            "request",
                            format!(
                                "{} has no standard request; set `request` (the bytes to send, e.g. \"1\\r\") or use trigger = \"stream\"",
                                raw.protocol_name()
                            ),
                        );
                        Vec::new()
                    }
                },
            };
            Trigger::Poll { interval, requests }
        }
        TriggerName::DtrPulse => {
            if interval.is_zero() {
                issue("interval", "must be greater than zero".into());
            }
            if raw.request.is_some() {
                issue(
                    "request",
                    "is not used with trigger = \"dtr-pulse\" (the DTR pulse is the request)"
                        .into(),
                );
            }
            if raw.dtr == Some(false) {
                issue(
                    "dtr",
                    "dtr-pulse drops DTR from its idle level, which must be high: leave `dtr` out or set it true"
                        .into(),
                );
            }
            let pulse = raw.pulse.unwrap_or(Duration::from_millis(150));
            if pulse.is_zero() {
                issue(
                    "pulse",
                    "must be greater than zero (Sylvac needs at least 110ms)".into(),
                );
            }
            if pulse >= interval {
                issue("pulse", "must be shorter than the interval".into());
            }
            Trigger::DtrPulse { interval, pulse }
        }
    };
    (trigger, timeout)
}

/// Backoff bounds for reopening a lost port.
fn reconnect(raw: &RawConfig, issues: &mut Vec<ConfigIssue>) -> (Duration, Duration) {
    let mut issue = |path: &str, msg: String| issues.push(ConfigIssue::new(path, msg));
    let reconnect_min = raw.reconnect_min.unwrap_or(Duration::from_millis(500));
    let reconnect_max = raw.reconnect_max.unwrap_or(Duration::from_secs(30));
    if reconnect_min.is_zero() {
        issue("reconnect_min", "must be greater than zero".into());
    }
    if reconnect_max < reconnect_min {
        issue(
            "reconnect_max",
            "must not be less than reconnect_min".into(),
        );
    }
    (reconnect_min, reconnect_max)
}

impl RawConfig {
    fn protocol_name(&self) -> &'static str {
        match self.protocol {
            ProtocolName::Mitutoyo => "mitutoyo",
            ProtocolName::MitutoyoId => "mitutoyo-id",
            ProtocolName::Sylvac => "sylvac",
            ProtocolName::Mahr => "mahr",
            ProtocolName::Line => "line",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DeviceConfig, Vec<ConfigIssue>> {
        super::parse(toml::from_str(text).unwrap())
    }

    fn paths(text: &str) -> Vec<String> {
        parse(text)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.path)
            .collect()
    }

    #[test]
    fn protocol_defaults_apply() {
        let c = parse("port='/dev/ttyUSB0'\nprotocol='sylvac'\n[[tag]]\nname='h'\nunit='mm'\n")
            .unwrap();
        assert_eq!(c.port.describe(), "4800 7E2");
        assert_eq!(c.port.dtr, None);
        let Trigger::Poll { interval, requests } = &c.trigger else {
            panic!("sylvac polls by default")
        };
        assert_eq!(*interval, Duration::from_secs(1));
        assert_eq!(requests[0].bytes, b"?\r");
        assert_eq!(c.terminator, Terminator::CrOrLf);
        let m = parse("port='/dev/ttyUSB0'\nprotocol='mitutoyo'\n[[tag]]\nname='d'\n").unwrap();
        assert_eq!(m.trigger, Trigger::Stream);
        assert_eq!(m.port.describe(), "9600 8N1");
    }

    #[test]
    fn mitutoyo_id_polls_each_id() {
        let c = parse(
            "port='p'\nprotocol='mitutoyo-id'\n[[tag]]\nname='a'\nchannel='01'\n\
             [[tag]]\nname='b'\nchannel=2\n[[tag]]\nname='a_max'\nchannel=1\nfield='max'\n",
        )
        .unwrap();
        let Trigger::Poll { requests, .. } = &c.trigger else {
            panic!()
        };
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].bytes, b"GA01\r\n");
        assert_eq!(requests[0].tags, [0, 2]);
        assert_eq!(requests[1].bytes, b"GA02\r\n");
    }

    #[test]
    fn dtr_pulse_holds_dtr_high() {
        let c = parse(
            "port='p'\nprotocol='sylvac'\ntrigger='dtr-pulse'\npulse='120ms'\ninterval='2s'\n[[tag]]\nname='h'\n",
        )
        .unwrap();
        assert_eq!(c.port.dtr, Some(true));
        assert_eq!(
            c.trigger,
            Trigger::DtrPulse {
                interval: Duration::from_secs(2),
                pulse: Duration::from_millis(120)
            }
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let p = paths(
            "port=''\nprotocol='mitutoyo-id'\nbaud=0\ndata_bits=9\nstop_bits=3\nmax_line=0\n\
             timeout='0s'\npulse='1s'\n\
             [[tag]]\nname='a'\n[[tag]]\nname='a'\nchannel='100'\nfield='status'\n",
        );
        assert_eq!(
            p,
            [
                "port",
                "baud",
                "data_bits",
                "stop_bits",
                "max_line",
                "tag[0].channel",
                "tag[1].name",
                "tag[1].field",
                "tag[1].channel",
                "timeout",
                "pulse"
            ]
        );
    }

    #[test]
    fn keys_that_do_not_apply_are_refused() {
        assert_eq!(
            paths(
                "port='p'\nprotocol='mitutoyo'\ninterval='1s'\nrequest='x'\npattern='x'\n[[tag]]\nname='a'\nfield='max'\n"
            ),
            ["pattern", "tag[0].field", "interval", "request"]
        );
        assert_eq!(
            paths("port='p'\nprotocol='mitutoyo'\ntrigger='poll'\n[[tag]]\nname='a'\n"),
            ["request"],
            "mitutoyo has no standard request"
        );
        assert_eq!(
            paths(
                "port='p'\nprotocol='sylvac'\ntrigger='dtr-pulse'\ndtr=false\n[[tag]]\nname='a'\nchannel=1\n"
            ),
            ["tag[0].channel", "dtr"]
        );
        assert_eq!(paths("port='p'\nprotocol='sylvac'\ntag=[]\n"), ["tag"]);
    }

    #[test]
    fn literal_backslashes_in_requests_are_caught() {
        let issues =
            parse("port='p'\nprotocol='sylvac'\nrequest='?\\r'\n[[tag]]\nname='a'\n").unwrap_err();
        assert_eq!(issues[0].path, "request");
        assert!(
            issues[0].message.contains("double quotes"),
            "{}",
            issues[0].message
        );
        // In double quotes TOML makes it a real CR.
        assert!(
            parse("port='p'\nprotocol='sylvac'\nrequest=\"?\\r\"\n[[tag]]\nname='a'\n").is_ok()
        );
    }

    #[test]
    fn line_protocol_needs_a_valid_pattern() {
        assert_eq!(
            paths("port='p'\nprotocol='line'\n[[tag]]\nname='a'\n"),
            ["pattern"]
        );
        assert_eq!(
            paths("port='p'\nprotocol='line'\npattern='(?P<value>'\n[[tag]]\nname='a'\n"),
            ["pattern"]
        );
        let c = parse(
            "port='p'\nprotocol='line'\npattern='^(?P<value>\\S+)$'\nrequest=\"R\\r\\n\"\nterminator=\"\\r\\n\"\n[[tag]]\nname='a'\n",
        )
        .unwrap();
        assert_eq!(c.trigger.name(), "poll", "a request implies polling");
        assert_eq!(c.terminator, Terminator::Bytes(b"\r\n".to_vec()));
    }

    #[test]
    fn typos_are_unknown_fields() {
        let issues =
            parse("port='p'\nprotocol='sylvac'\n[[tag]]\nname='a'\nunti='mm'\n").unwrap_err();
        assert_eq!(issues[0].path, "tag[0].unti");
        let issues = parse("port='p'\nprotocol='sylvak'\n[[tag]]\nname='a'\n").unwrap_err();
        assert_eq!(issues[0].path, "protocol");
    }
}
