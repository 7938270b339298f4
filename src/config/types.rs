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
    /// Each running device's fingerprint (of its whole `[[device]]` table) by name, to tell on reload
    /// what changed.
    pub device_fingerprints: std::collections::BTreeMap<String, super::DeviceFingerprint>,
    pub agent: AgentConfig,
    pub store: StoreConfig,
    pub mqtt: MqttConfig,
    pub devices: Vec<Box<dyn Device>>,
    /// `[[characteristic]]`s, validated against the devices' tags.
    pub characteristics: Vec<CharacteristicConfig>,
    /// Problems that do not stop the agent (e.g. a password file every user may read).
    pub warnings: Vec<super::ConfigError>,
    /// `[spc]`: the agent-wide alarm policy.
    pub spc: SpcConfig,
    /// `[station]`: the operator station (off unless `listen` is set).
    pub station: StationConfig,
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
    /// Default `bad_heartbeat` of every device (how often a tag that stays bad for the same reason is
    /// reported again); a device's own key overrides it. The drivers' default (60 s) when absent.
    #[serde(default, deserialize_with = "opt_duration")]
    pub bad_heartbeat: Option<Duration>,
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
    /// Group commit: how long the writer waits, once its queue is empty, for more readings to join the
    /// transaction (measured from the last arrival; `flush_interval` still bounds the whole wait). Polls
    /// that fire together (devices on the same interval) then share one commit and one message.
    #[serde(default = "default_commit_delay", deserialize_with = "duration")]
    pub commit_delay: Duration,
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
            commit_delay: default_commit_delay(),
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
fn default_commit_delay() -> Duration {
    Duration::from_millis(2)
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
    /// Payload format of the data stream: lineside's JSON, or Sparkplug B (then `[sparkplug]`).
    #[serde(default)]
    pub encoding: Encoding,
    /// The `[sparkplug]` section, placed here by the loader (with the devices' tags and the state
    /// directory) so a change restarts the forwarder like any MQTT setting.
    #[serde(skip)]
    pub sparkplug: Option<SparkplugConfig>,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Json,
    Sparkplug,
}

/// `[sparkplug]`: the Sparkplug B edge node (used when `mqtt.encoding = "sparkplug"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    pub group_id: String,
    /// Defaults to the agent id.
    pub edge_node_id: Option<String>,
    /// Publish births and data only while this host application's STATE says it is online.
    pub primary_host_id: Option<String>,
    /// Rebirth requests closer together than this are served once, when it has passed.
    #[serde(default = "default_rebirth_min", deserialize_with = "duration")]
    pub rebirth_min_interval: Duration,
    /// The device id under which SPC state is published.
    #[serde(default = "default_spc_device")]
    pub spc_device: String,
    /// Every configured tag, for the device births (filled by the loader).
    #[serde(skip)]
    pub tags: Vec<SparkplugTag>,
    /// Where the bdSeq file lives (the agent's state directory; filled by the loader).
    #[serde(skip)]
    pub state_dir: PathBuf,
}

/// A configured tag as the Sparkplug births announce it before its first value.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugTag {
    pub device: String,
    pub tag: String,
    pub unit: Option<String>,
    pub numeric: bool,
}

fn default_rebirth_min() -> Duration {
    Duration::from_secs(5)
}
fn default_spc_device() -> String {
    "spc".into()
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
    /// How its alarms behave and what they tell the operator.
    pub alarm: CharacteristicAlarms,
}

/// The alarm keys of a `[[characteristic]]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CharacteristicAlarms {
    /// Steps of the reaction plan (OCAP) shown with every alarm of the characteristic.
    pub reaction_plan: Vec<String>,
    /// Steps for one rule (`nelson-2`, `western-electric-1`, ...) or `out-of-spec`, instead.
    pub reaction_plan_rule: std::collections::BTreeMap<String, Vec<String>>,
    /// Consecutive in-control points (in-spec readings) that return an episode to normal.
    pub return_to_normal: u32,
    /// The source's resolution (e.g. 0.001): points are rounded to it.
    pub resolution: Option<f64>,
    /// Episodes raised per 10 minutes at most (further ones are counted, not raised); 0: no limit.
    pub max_alarms_per_10min: u32,
}

/// `[spc]`: the alarm policy of the whole agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpcConfig {
    /// Episodes raised per 10 minutes over all characteristics at most; 0: no limit.
    #[serde(default = "default_agent_alarms")]
    pub max_alarms_per_10min: u32,
    /// An open episode sends an `updated` event every this many further points (new rules and
    /// re-activation always do); 0: only those.
    #[serde(default = "default_update_every")]
    pub update_every: u32,
    /// Longest shelving accepted.
    #[serde(default = "default_max_shelve", deserialize_with = "duration")]
    pub max_shelve: Duration,
    /// Pick lists for acknowledgements: when set, `cause` / `action` must be one of them.
    #[serde(default)]
    pub causes: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
    /// Who may send each kind of command (`by`); a kind without a list is open to anyone.
    #[serde(default)]
    pub allow: CommandAllow,
}

impl Default for SpcConfig {
    fn default() -> Self {
        SpcConfig {
            max_alarms_per_10min: default_agent_alarms(),
            update_every: default_update_every(),
            max_shelve: default_max_shelve(),
            causes: Vec::new(),
            actions: Vec::new(),
            allow: CommandAllow::default(),
        }
    }
}

/// `[spc.allow]`: the `by` values allowed per command kind.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandAllow {
    pub ack: Option<Vec<String>>,
    /// Also `unshelve`.
    pub shelve: Option<Vec<String>>,
    /// Also `in-service`.
    pub out_of_service: Option<Vec<String>>,
    pub recalculate: Option<Vec<String>>,
}

impl SpcConfig {
    /// Problems as (key under `spc`, message).
    pub(crate) fn check(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if self.max_shelve < Duration::from_secs(60)
            || self.max_shelve > Duration::from_secs(7 * 86400)
        {
            v.push(("max_shelve".into(), "must be between 1m and 7d".into()));
        }
        for (key, list) in [("causes", &self.causes), ("actions", &self.actions)] {
            for (i, item) in list.iter().enumerate() {
                if item.trim().is_empty() || item.len() > 200 {
                    v.push((format!("{key}[{i}]"), "must be 1 to 200 characters".into()));
                }
            }
        }
        v
    }
}

fn default_agent_alarms() -> u32 {
    10
}
fn default_update_every() -> u32 {
    25
}
fn default_max_shelve() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_return_to_normal() -> u32 {
    9
}
fn default_char_alarms() -> u32 {
    5
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
    #[serde(default)]
    pub reaction_plan: Vec<String>,
    #[serde(default)]
    pub reaction_plan_rule: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default = "default_return_to_normal")]
    pub return_to_normal: u32,
    #[serde(default)]
    pub resolution: Option<f64>,
    #[serde(default = "default_char_alarms")]
    pub max_alarms_per_10min: u32,
}

impl CharacteristicAgentKeys {
    pub(crate) const KEYS: &[&str] = &[
        "context",
        "capability_interval",
        "publish_points",
        "reaction_plan",
        "reaction_plan_rule",
        "return_to_normal",
        "resolution",
        "max_alarms_per_10min",
    ];

    /// The alarm keys, checked: problems as (key, message).
    pub(crate) fn alarm(&self) -> (CharacteristicAlarms, Vec<(String, String)>) {
        let mut v = Vec::new();
        if !(1..=1000).contains(&self.return_to_normal) {
            v.push(("return_to_normal".into(), "must be in 1..=1000".into()));
        }
        if self.resolution.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            v.push(("resolution".into(), "must be a number > 0".into()));
        }
        let steps = |key: String, list: &Vec<String>, v: &mut Vec<(String, String)>| {
            if list.len() > 20 {
                v.push((key.clone(), "at most 20 steps".into()));
            }
            for (i, s) in list.iter().enumerate() {
                if s.trim().is_empty() || s.len() > 500 {
                    v.push((
                        format!("{key}[{i}]"),
                        "a step is 1 to 500 characters".into(),
                    ));
                }
            }
        };
        steps("reaction_plan".into(), &self.reaction_plan, &mut v);
        for (rule, list) in &self.reaction_plan_rule {
            let known = rule == "out-of-spec"
                || serde_json::from_value::<lineside_spc::Rule>(serde_json::Value::String(
                    rule.clone(),
                ))
                .is_ok();
            if !known {
                v.push((
                    format!("reaction_plan_rule.{rule}"),
                    "must name a rule (nelson-1 .. nelson-8, western-electric-1 .. western-electric-4) or out-of-spec".into(),
                ));
            }
            steps(format!("reaction_plan_rule.{rule}"), list, &mut v);
        }
        let alarm = CharacteristicAlarms {
            reaction_plan: self.reaction_plan.clone(),
            reaction_plan_rule: self.reaction_plan_rule.clone(),
            return_to_normal: self.return_to_normal,
            resolution: self.resolution,
            max_alarms_per_10min: self.max_alarms_per_10min,
        };
        (alarm, v)
    }
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

/// `[station]`: the operator station, web pages served by the agent (src/station). Off unless `listen`
/// is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Address to serve the pages on, e.g. "0.0.0.0:8080"; the station is off when absent.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and private key: serve HTTPS (and mark the session cookie Secure).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// "open": anyone on the network may look; "login": looking needs a login too. Writes (ack,
    /// shelve, recalculate) always need one.
    #[serde(default)]
    pub view: StationView,
    /// The users file (`lineside user add` writes it); relative paths resolve against `agent.state_dir`.
    #[serde(default = "default_users_file")]
    pub users_file: PathBuf,
    /// Subgroups (plotted points) per chart loaded from the store when the station starts.
    #[serde(default = "default_station_history")]
    pub history: usize,
    /// Live event streams (browser tabs) served at once; more are refused with 503.
    #[serde(default = "default_station_streams")]
    pub max_streams: usize,
    /// Failed logins per client address per minute before further attempts are refused (429).
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    /// A session ends after this long without a request.
    #[serde(default = "default_session_idle", deserialize_with = "duration")]
    pub session_idle: Duration,
    /// The pick lists offered when acknowledging: assignable causes and corrective actions.
    #[serde(default)]
    pub causes: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Default for StationConfig {
    fn default() -> Self {
        StationConfig {
            listen: None,
            tls_cert: None,
            tls_key: None,
            view: StationView::default(),
            users_file: default_users_file(),
            history: default_station_history(),
            max_streams: default_station_streams(),
            login_attempts: default_login_attempts(),
            session_idle: default_session_idle(),
            causes: Vec::new(),
            actions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StationView {
    #[default]
    Open,
    Login,
}

fn default_users_file() -> PathBuf {
    PathBuf::from("station-users.toml")
}
fn default_station_history() -> usize {
    100
}
fn default_station_streams() -> usize {
    32
}
fn default_login_attempts() -> u32 {
    5
}
fn default_session_idle() -> Duration {
    Duration::from_secs(8 * 3600)
}
