//! The configuration's sections as typed structs. Every struct denies unknown keys: a typo is an error,
//! never a silently ignored setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lineside_drivers::Device;
use lineside_drivers::config::{duration, opt_duration};
use serde::Deserialize;

use super::units::{opt_size, size};

/// A validated configuration, ready to run.
pub struct Config {
    /// The file it came from (for messages).
    pub source: PathBuf,
    /// SHA-256 of the file's bytes (of every file's, with conf.d), published in the birth message so
    /// upstream knows what runs.
    pub hash: String,
    /// The files read: the main file, then the conf.d files in merge order.
    pub files: Vec<PathBuf>,
    /// Each running device's whole `[[device]]` table by name, to tell on reload what changed.
    pub device_tables: std::collections::BTreeMap<String, toml::Table>,
    pub agent: AgentConfig,
    pub store: StoreConfig,
    pub mqtt: MqttConfig,
    pub devices: Vec<Box<dyn Device>>,
    /// `[[characteristic]]`s, validated against the devices' tags.
    pub characteristics: Vec<CharacteristicConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("files", &self.files)
            .field("agent", &self.agent)
            .field("store", &self.store)
            .field("mqtt", &self.mqtt)
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's id: part of every MQTT topic. Letters, digits, `-`, `_`, `.`.
    pub id: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Serve Prometheus metrics on this address (e.g. "127.0.0.1:9464"); off when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Batches the ingest channel holds before drivers wait (back-pressure).
    #[serde(default = "default_ingest_queue")]
    pub ingest_queue: usize,
    /// Print readings (a summary per second) and alarms to stdout, as `lineside demo` does.
    #[serde(default)]
    pub echo: Echo,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Echo {
    #[default]
    Off,
    Alarms,
    All,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/lineside")
}
fn default_log_level() -> String {
    "info".into()
}
fn default_ingest_queue() -> usize {
    1024
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Database file; relative paths resolve against `agent.state_dir`.
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Readings per transaction at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest a reading waits for its batch to fill before it is committed anyway.
    #[serde(default = "default_flush_interval", deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// Disk budget for the database and its WAL ("2GiB"). Unlimited when absent.
    #[serde(default, deserialize_with = "opt_size")]
    pub max_size: Option<u64>,
    /// Percent of `max_size` the events (alarms, agent notices) may take; the oldest go beyond it.
    #[serde(default = "default_events_share")]
    pub events_share: u8,
    /// Readings older than this are pruned ("30d"), forwarded or not. Unlimited when absent.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_age: Option<Duration>,
    /// How often the budget is checked and pruning runs.
    #[serde(
        default = "default_maintenance_interval",
        deserialize_with = "duration"
    )]
    pub maintenance_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_db_path(),
            synchronous: Synchronous::default(),
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            max_size: None,
            events_share: default_events_share(),
            max_age: None,
            maintenance_interval: default_maintenance_interval(),
        }
    }
}

fn default_db_path() -> PathBuf {
    PathBuf::from("lineside.db")
}
fn default_batch_size() -> usize {
    4096
}
fn default_flush_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_events_share() -> u8 {
    10
}

fn default_maintenance_interval() -> Duration {
    Duration::from_secs(1)
}

/// SQLite's `synchronous` in WAL mode: `normal` survives a process crash, `full` also a power cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

/// The JSON layout of data messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonFormat {
    #[default]
    Default,
    Compact,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtts://host:8883` (TLS) or `mqtt://host:1883` (plain; only to loopback unless `allow_plaintext`).
    pub url: String,
    /// Defaults to `lineside-<agent id>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// File holding the password (first line). Preferred over `password_env`.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM file with the CA(s) that signed the broker's certificate; the system bundle when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Explicitly allow an unencrypted connection to a non-loopback broker.
    #[serde(default)]
    pub allow_plaintext: bool,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
    /// Readings per data message at most.
    #[serde(default = "default_max_readings")]
    pub max_readings_per_message: usize,
    /// Bytes per data message at most ("256KiB").
    #[serde(default = "default_max_bytes", deserialize_with = "size")]
    pub max_message_size: u64,
    /// Messages published but not yet acknowledged at most.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    #[serde(default = "default_backoff_min", deserialize_with = "duration")]
    pub reconnect_min: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub reconnect_max: Duration,
    /// How often the retained status message is refreshed with current counters.
    #[serde(default = "default_status_interval", deserialize_with = "duration")]
    pub status_interval: Duration,
    /// Progress watchdog: connected, data waiting, and nothing acknowledged for this long → the
    /// connection is torn down and rebuilt.
    #[serde(default = "default_stall_timeout", deserialize_with = "duration")]
    pub stall_timeout: Duration,
    /// Largest message accepted on the command topic ("16KiB"); larger ones are rejected unread.
    #[serde(default = "default_max_command_size", deserialize_with = "size")]
    pub max_command_size: u64,
    /// Run an in-process broker (rumqttd) on the url's port: for the demo and trials only.
    #[serde(default)]
    pub embedded_broker: bool,
    /// Data message format: `default` (one object per reading) or `compact` (device and tag table once
    /// per message, one array per reading; see the README).
    #[serde(default)]
    pub json: JsonFormat,
}

fn default_prefix() -> String {
    "lineside".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_readings() -> usize {
    1000
}
fn default_max_bytes() -> u64 {
    256 * 1024
}
fn default_inflight() -> u16 {
    64
}
fn default_backoff_min() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(5)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_command_size() -> u64 {
    16 * 1024
}
fn default_status_interval() -> Duration {
    Duration::from_secs(30)
}

/// A reading of one device, written "device/tag" in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagRef {
    pub device: String,
    pub tag: String,
}

impl TagRef {
    /// Splits "device/tag" at the first `/` (device names cannot contain one; tag names may).
    pub fn parse(s: &str) -> Option<TagRef> {
        match s.split_once('/') {
            Some((d, t)) if !d.is_empty() && !t.is_empty() => Some(TagRef {
                device: d.to_string(),
                tag: t.to_string(),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for TagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.device, self.tag)
    }
}

/// One `[[characteristic]]`: the SPC engine's spec plus what the agent needs to feed and publish it.
#[derive(Debug, Clone, PartialEq)]
pub struct CharacteristicConfig {
    /// The engine's spec. `spec.context` holds the context key names, in the order of `context_sources`.
    pub spec: lineside_spc::CharacteristicSpec,
    /// The charted reading (`spec.source`).
    pub source: TagRef,
    /// Where each context key's value is read from, in the order of `spec.context`.
    pub context_sources: Vec<TagRef>,
    /// The reading that gives each sample's size (`spec.sample_size_source`, p and u charts).
    pub sample_size_source: Option<TagRef>,
    /// The source tag's unit, if the device declares one (copied into points and alarms).
    pub unit: Option<String>,
    /// How often Cp/Cpk/Pp/Ppk/Cpm are published.
    pub capability_interval: Duration,
    /// Publish every plotted point on `<prefix>/<agent>/spc/<name>/points`.
    pub publish_points: bool,
}

/// The agent's own keys of a `[[characteristic]]` table; the rest belongs to the SPC engine's spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CharacteristicAgentKeys {
    /// Context key → "device/tag" it is read from, e.g. `context = { part = "gauge/part_number" }`.
    #[serde(default)]
    pub context: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_capability_interval", deserialize_with = "duration")]
    pub capability_interval: Duration,
    #[serde(default = "default_true")]
    pub publish_points: bool,
}

impl CharacteristicAgentKeys {
    pub(crate) const KEYS: &[&str] = &["context", "capability_interval", "publish_points"];
}

fn default_capability_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}

/// The parts of a broker URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "invalid broker url {url:?}: must start with mqtts:// or mqtt://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("invalid port {p:?} in broker url {url:?}"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("invalid host in broker url {url:?}"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// True for names safe inside an MQTT topic level and a file name.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtts://broker.plant:8884").unwrap(),
            BrokerUrl {
                tls: true,
                host: "broker.plant".into(),
                port: 8884
            }
        );
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1").unwrap().port, 1883);
        assert_eq!(BrokerUrl::parse("mqtts://b").unwrap().port, 8883);
        assert!(BrokerUrl::parse("mqtt://[::1]:1883").unwrap().is_loopback());
        assert!(BrokerUrl::parse("http://b").is_err());
        assert!(BrokerUrl::parse("mqtt://b:99999").is_err());
        assert!(BrokerUrl::parse("mqtt://").is_err());
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name("line1-gw_2.a"));
        assert!(!is_plain_name("a/b"));
        assert!(!is_plain_name("a+"));
        assert!(!is_plain_name(""));
    }
}
