//! The `[[device]]` table of an OPC UA device, its defaults and its semantic checks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::nodeid::{self, NodeRef};
use super::security::{self, Identity, Mode, Policy};
use super::values::Kind;
use crate::config::{self, ConfigIssue};

/// Largest array a tag may expand into; beyond that the tag list is the wrong tool.
const MAX_ELEMENTS: u32 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `opc.tcp://host:port[/path]`, as the server's discovery endpoint.
    pub endpoint: String,
    #[serde(default)]
    pub mode: Acquisition,
    #[serde(default, deserialize_with = "policy")]
    pub security_policy: Policy,
    #[serde(default, deserialize_with = "mode")]
    pub security_mode: Mode,
    #[serde(default)]
    pub identity: Identity,
    /// PKI directory (own/, private/, trusted/, rejected/); relative to the agent's state dir.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// Trust any server certificate on first contact (commissioning only; it defeats the point of
    /// certificates in production).
    #[serde(default)]
    pub auto_trust: bool,
    /// The application URI in the client certificate; defaults to `urn:lineside:<hostname>`.
    pub application_uri: Option<String>,
    /// Subscription: how often the server sends the changes it collected.
    #[serde(default = "one_second", deserialize_with = "config::duration")]
    pub publishing_interval: Duration,
    /// Subscription: default sampling interval per monitored item (the publishing interval if absent).
    #[serde(default, deserialize_with = "config::opt_duration")]
    pub sampling_interval: Option<Duration>,
    /// Subscription: default server-side queue per monitored item.
    #[serde(default = "ten")]
    pub queue_size: u32,
    /// Polled mode: time between reads.
    #[serde(default = "one_second", deserialize_with = "config::duration")]
    pub poll_interval: Duration,
    /// Timeout of one request (read, create items, browse) and of the connect handshake.
    #[serde(default = "ten_seconds", deserialize_with = "config::duration")]
    pub request_timeout: Duration,
    /// How often the session checks that the server is alive.
    #[serde(default = "five_seconds", deserialize_with = "config::duration")]
    pub keep_alive_interval: Duration,
    /// Reconnect backoff: first delay and cap.
    #[serde(default = "one_second", deserialize_with = "config::duration")]
    pub reconnect_initial: Duration,
    #[serde(default = "one_minute", deserialize_with = "config::duration")]
    pub reconnect_max: Duration,
    /// How often monitored items that the server refused (unknown node, namespace not there yet) are
    /// tried again while the session is up.
    #[serde(default = "thirty_seconds", deserialize_with = "config::duration")]
    pub retry_failed_items: Duration,
    /// Session timeout requested from the server.
    #[serde(default = "one_minute", deserialize_with = "config::duration")]
    pub session_timeout: Duration,
    /// Most nodes per Read or CreateMonitoredItems request (servers limit this).
    #[serde(default = "five_hundred")]
    pub max_nodes_per_request: u32,
    #[serde(default)]
    pub tag: Vec<TagConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acquisition {
    /// Monitored items on one subscription: the server pushes changes.
    #[default]
    Subscription,
    /// Read every tag every `poll_interval`.
    Poll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    pub name: String,
    /// Node id: `ns=2;s=...`, `i=...`, `g=...`, `b=...`, or `nsu=<uri>;...`.
    pub node: String,
    pub unit: Option<String>,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default, deserialize_with = "config::opt_duration")]
    pub sampling_interval: Option<Duration>,
    pub queue_size: Option<u32>,
    /// Report a change only when it exceeds this absolute amount (subscription mode).
    pub deadband_absolute: Option<f64>,
    /// Report a change only when it exceeds this percentage of the node's EURange (subscription mode;
    /// the server must know the EURange).
    pub deadband_percent: Option<f64>,
    /// The node holds an array: one reading per element, named `name[0]`, `name[1]`, ...
    pub array_elements: Option<u32>,
}

/// A deadband on a monitored item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    Absolute(f64),
    Percent(f64),
}

/// A tag after validation.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub node: NodeRef,
    pub unit: Option<String>,
    pub kind: Kind,
    pub sampling_interval: Duration,
    pub queue_size: u32,
    pub deadband: Option<Deadband>,
    pub array_elements: Option<u32>,
}

fn policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
    let text = String::deserialize(d)?;
    Policy::parse(&text).map_err(serde::de::Error::custom)
}

fn mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let text = String::deserialize(d)?;
    Mode::parse(&text).map_err(serde::de::Error::custom)
}

fn default_pki_dir() -> PathBuf {
    PathBuf::from("opcua-pki")
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}
fn ten() -> u32 {
    10
}
fn five_hundred() -> u32 {
    500
}

impl DeviceConfig {
    /// The PKI directory, resolved against the agent's state dir when relative.
    pub fn pki_dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(&self.pki_dir)
    }
}

/// Parses and checks a device table; every problem is reported with its path.
pub fn parse(table: toml::Table) -> Result<(DeviceConfig, Vec<Tag>), Vec<ConfigIssue>> {
    let cfg: DeviceConfig = config::from_table(table).map_err(|e| vec![e])?;
    let mut issues = Vec::new();
    let mut issue = |path: &str, msg: String| issues.push(ConfigIssue::new(path, msg));

    if let Err(e) = check_endpoint(&cfg.endpoint) {
        issue("endpoint", e.to_string());
    }
    if let Err(e) = security::check_pair(cfg.security_policy, cfg.security_mode) {
        issue("security_mode", e.to_string());
    }
    for (path, msg) in cfg.identity.validate() {
        issue(&format!("identity.{path}"), msg);
    }
    for (key, d) in [
        ("publishing_interval", cfg.publishing_interval),
        ("poll_interval", cfg.poll_interval),
        ("request_timeout", cfg.request_timeout),
        ("keep_alive_interval", cfg.keep_alive_interval),
        ("reconnect_initial", cfg.reconnect_initial),
        ("reconnect_max", cfg.reconnect_max),
        ("retry_failed_items", cfg.retry_failed_items),
        ("session_timeout", cfg.session_timeout),
    ] {
        if d.is_zero() {
            issue(key, "must be greater than zero".into());
        }
    }
    if cfg.sampling_interval.is_some_and(|d| d.is_zero()) {
        issue("sampling_interval", "must be greater than zero".into());
    }
    if cfg.reconnect_max < cfg.reconnect_initial {
        issue(
            "reconnect_max",
            "must not be shorter than reconnect_initial".into(),
        );
    }
    if cfg.queue_size == 0 {
        issue("queue_size", "must be at least 1".into());
    }
    if cfg.max_nodes_per_request == 0 {
        issue("max_nodes_per_request", "must be at least 1".into());
    }
    if cfg.tag.is_empty() {
        issue(
            "tag",
            "an opcua device needs at least one [[device.tag]]".into(),
        );
    }

    let mut tags = Vec::with_capacity(cfg.tag.len());
    let mut names = HashSet::new();
    for (i, t) in cfg.tag.iter().enumerate() {
        let p = |key: &str| format!("tag[{i}].{key}");
        if t.name.trim().is_empty() {
            issue(&p("name"), "must not be empty".into());
        }
        let produced: Vec<String> = match t.array_elements {
            Some(n) => (0..n).map(|k| format!("{}[{k}]", t.name)).collect(),
            None => vec![t.name.clone()],
        };
        for n in produced {
            if !names.insert(n.clone()) {
                issue(&p("name"), format!("duplicate tag name `{n}`"));
                break;
            }
        }
        let node = match nodeid::parse(&t.node) {
            Ok(n) => Some(n),
            Err(e) => {
                issue(&p("node"), e.to_string());
                None
            }
        };
        if t.sampling_interval.is_some_and(|d| d.is_zero()) {
            issue(&p("sampling_interval"), "must be greater than zero".into());
        }
        if t.queue_size == Some(0) {
            issue(&p("queue_size"), "must be at least 1".into());
        }
        let deadband = match (t.deadband_absolute, t.deadband_percent) {
            (Some(_), Some(_)) => {
                issue(
                    &p("deadband_percent"),
                    "give deadband_absolute or deadband_percent, not both".into(),
                );
                None
            }
            (Some(v), None) if !(v.is_finite() && v >= 0.0) => {
                issue(
                    &p("deadband_absolute"),
                    "must be a finite number >= 0".into(),
                );
                None
            }
            (None, Some(v)) if !(v.is_finite() && (0.0..=100.0).contains(&v)) => {
                issue(&p("deadband_percent"), "must be between 0 and 100".into());
                None
            }
            (Some(v), None) => Some(Deadband::Absolute(v)),
            (None, Some(v)) => Some(Deadband::Percent(v)),
            (None, None) => None,
        };
        if deadband.is_some() {
            if cfg.mode == Acquisition::Poll {
                issue(
                    &p("deadband_absolute"),
                    "deadbands apply to mode = \"subscription\" only".into(),
                );
            } else if t.kind != Kind::Number {
                issue(
                    &p("deadband_absolute"),
                    "deadbands apply to numeric tags only".into(),
                );
            }
        }
        if let Some(n) = t.array_elements
            && !(1..=MAX_ELEMENTS).contains(&n)
        {
            issue(
                &p("array_elements"),
                format!("must be between 1 and {MAX_ELEMENTS}"),
            );
        }
        if let Some(node) = node {
            tags.push(Tag {
                name: t.name.clone(),
                node,
                unit: t.unit.clone(),
                kind: t.kind,
                sampling_interval: t
                    .sampling_interval
                    .or(cfg.sampling_interval)
                    .unwrap_or(cfg.publishing_interval),
                queue_size: t.queue_size.unwrap_or(cfg.queue_size),
                deadband,
                array_elements: t.array_elements,
            });
        }
    }
    if issues.is_empty() {
        Ok((cfg, tags))
    } else {
        Err(issues)
    }
}

/// An endpoint URL lineside cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointUrlError {
    #[error("{0:?} must start with opc.tcp:// (the only transport lineside speaks)")]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{url:?}: port {port:?} is not a number from 1 to 65535")]
    Port { url: String, port: String },
}

/// `opc.tcp://host:port[/path]` with a host; the port defaults to 4840 as the spec says.
pub fn check_endpoint(url: &str) -> Result<(), EndpointUrlError> {
    let rest = url
        .strip_prefix("opc.tcp://")
        .ok_or_else(|| EndpointUrlError::Scheme(url.to_string()))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(EndpointUrlError::NoHost(url.to_string()));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(EndpointUrlError::Port {
            url: url.to_string(),
            port: port.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn minimal_device_gets_defaults() {
        let (cfg, tags) = parse(table(
            "endpoint = \"opc.tcp://cnc1:4840\"\n[[tag]]\nname = \"bore\"\nnode = \"ns=2;s=Bore\"\n",
        ))
        .unwrap();
        assert_eq!(cfg.mode, Acquisition::Subscription);
        assert_eq!(cfg.security_policy, Policy::None);
        assert_eq!(cfg.identity, Identity::Anonymous);
        assert!(!cfg.auto_trust);
        assert_eq!(
            cfg.pki_dir(Path::new("/var/lib/lineside")),
            PathBuf::from("/var/lib/lineside/opcua-pki")
        );
        assert_eq!(tags[0].sampling_interval, Duration::from_secs(1));
        assert_eq!(tags[0].queue_size, 10);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let issues = parse(table(
            "endpoint = \"http://x\"\nsecurity_policy = \"Basic256Sha256\"\npoll_interval = \"0s\"\n\
             mode = \"poll\"\n[identity]\nkind = \"username\"\nuser = \"op\"\n\
             [[tag]]\nname = \"a\"\nnode = \"ns=2;q=1\"\n\
             [[tag]]\nname = \"a\"\nnode = \"i=1\"\ndeadband_absolute = 0.1\n\
             [[tag]]\nname = \"b\"\nnode = \"i=2\"\ndeadband_absolute = 1.0\ndeadband_percent = 2.0\n\
             [[tag]]\nname = \"c\"\nnode = \"i=3\"\narray_elements = 0\n",
        ))
        .unwrap_err();
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "endpoint",
                "security_mode",
                "identity.password_file",
                "poll_interval",
                "tag[0].node",
                "tag[1].name",
                "tag[1].deadband_absolute",
                "tag[2].deadband_percent",
                "tag[3].array_elements",
            ],
            "{issues:#?}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_enums_are_errors() {
        let issue = parse(table(
            "endpoint = \"opc.tcp://h\"\nsecurity_polcy = \"None\"\n",
        ))
        .unwrap_err();
        assert_eq!(issue[0].path, "security_polcy");
        let issue = parse(table(
            "endpoint = \"opc.tcp://h\"\nsecurity_policy = \"Basic128Rsa15\"\n",
        ))
        .unwrap_err();
        assert_eq!(issue[0].path, "security_policy");
        let issue = parse(table("endpoint = \"opc.tcp://h\"\nmode = \"push\"\n")).unwrap_err();
        assert_eq!(issue[0].path, "mode");
    }

    #[test]
    fn array_tags_reserve_their_element_names() {
        let issues = parse(table(
            "endpoint = \"opc.tcp://h:4840/ua\"\n[[tag]]\nname = \"p\"\nnode = \"i=1\"\narray_elements = 2\n\
             [[tag]]\nname = \"p[1]\"\nnode = \"i=2\"\n",
        ))
        .unwrap_err();
        assert_eq!(issues[0].path, "tag[1].name");
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("opc.tcp://10.0.0.5:4840").is_ok());
        assert!(check_endpoint("opc.tcp://cnc1").is_ok());
        assert!(check_endpoint("opc.tcp://[::1]:4840/ua").is_ok());
        assert!(check_endpoint("opc.tcp://:4840").is_err());
        assert!(check_endpoint("opc.tcp://h:port").is_err());
        assert!(check_endpoint("opc.https://h").is_err());
    }
}
