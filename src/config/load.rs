//! Loading and validating a config file, collecting every problem with its file, line and key.
//!
//! Approach: parse each file once with spans (`toml::de::DeTable`) to index every key path to its file and
//! position, merge the files (see `merge`), then deserialize each section and each device on its own so
//! that one mistake does not hide the next. serde_path_to_error gives the key path of each error; the index turns it into a
//! line and column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::merge::{self, Pos, Source, join};

use super::types::{
    AgentConfig, BrokerUrl, CharacteristicAgentKeys, CharacteristicConfig, Config, MqttConfig,
    StoreConfig, TagRef, is_plain_name,
};

const SECTIONS: &[&str] = &[
    "agent",
    "store",
    "mqtt",
    "device",
    "characteristic",
    "station",
];

/// One problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (e.g. a missing section).
    pub line: usize,
    pub column: usize,
    /// Key path, e.g. `device[1].tag[0].register`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration (its main file and conf.d files).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file and the `conf.d/*.toml` files next to it (merged in name order).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let unreadable = |file: &Path, message: String| ConfigError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message,
    };
    let files = merge::files(path).map_err(|m| ConfigErrors(vec![unreadable(path, m)]))?;
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push(Source { path: file, text }),
            Err(e) => errors.push(unreadable(&file, format!("cannot read the file: {e}"))),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    load_sources(path, sources)
}

/// The files `load` reads for `path`: the file itself, then `conf.d/*.toml` next to it in name order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    merge::files(path)
}

/// Validates config text; `path` is used in messages and as `Config::source`. No conf.d is read.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    load_sources(
        path,
        vec![Source {
            path: path.to_path_buf(),
            text: text.to_string(),
        }],
    )
}

/// Merges and validates the sources; the first is the main file.
fn load_sources(path: &Path, sources: Vec<Source>) -> Result<Config, ConfigErrors> {
    let (merged, merge_errors) = merge::merge(&sources);
    let mut cx = Checker {
        sources: &sources,
        spans: merged.spans,
        errors: Vec::new(),
    };
    let syntax = merge_errors.iter().any(|e| e.syntax);
    for e in merge_errors {
        cx.push_at(e.at, &e.key, e.message);
    }
    if syntax {
        return Err(cx.into_errors());
    }
    let root = merged.root;

    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            cx.push(
                key,
                format!("unknown section `{key}`{}", did_you_mean(key, SECTIONS)),
            );
        }
    }
    let agent: Option<AgentConfig> = cx.section(&root, "agent", true);
    let store: Option<StoreConfig> = cx.section(&root, "store", false);
    let mqtt: Option<MqttConfig> = cx.section(&root, "mqtt", true);
    let station: Option<crate::config::StationConfig> = cx.section(&root, "station", false);
    if let Some(st) = &station
        && st.tls_cert.is_some() != st.tls_key.is_some()
    {
        cx.push("station.tls_cert", "tls_cert and tls_key go together");
    }
    if let Some(agent) = &agent {
        if !is_plain_name(&agent.id) {
            cx.push(
                "agent.id",
                "must be 1-128 letters, digits, `-`, `_` or `.` (it is part of MQTT topics)",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&agent.log_level).is_err() {
            cx.push(
                "agent.log_level",
                format!(
                    "invalid log level {:?}; use error, warn, info, debug or trace",
                    agent.log_level
                ),
            );
        }
        if agent.ingest_queue == 0 {
            cx.push("agent.ingest_queue", "must be at least 1");
        }
    }
    if let Some(store) = &store {
        cx.check_store(store);
    }
    if let Some(mqtt) = &mqtt {
        cx.check_mqtt(mqtt);
    }
    let devices = cx.devices(&root);
    let characteristics = cx.characteristics(&root, &devices);

    // A missing required section has been reported, so both are present whenever there is no error;
    // the check stays an error path rather than a panic.
    let (true, Some(mut agent), Some(mqtt)) = (cx.errors.is_empty(), agent, mqtt) else {
        if cx.errors.is_empty() {
            cx.push("", "the [agent] and [mqtt] sections are required");
        }
        return Err(cx.into_errors());
    };
    let mut store = store.unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    agent.state_dir = resolve(base, &agent.state_dir);
    store.path = resolve(&agent.state_dir, &store.path);
    let mut station = station.unwrap_or_default();
    station.users_file = resolve(&agent.state_dir, &station.users_file);
    let device_tables = device_tables(&root);
    Ok(Config {
        source: path.to_path_buf(),
        hash: hash(&sources),
        files: sources.iter().map(|s| s.path.clone()).collect(),
        device_tables,
        agent,
        store,
        mqtt,
        devices,
        characteristics,
        station,
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// SHA-256 of the config: of the file's bytes for a single file (so the hash of a config without
/// conf.d does not change), else of every file's name and bytes in order.
fn hash(sources: &[Source]) -> String {
    let digest = match sources {
        [one] => ring::digest::digest(&ring::digest::SHA256, one.text.as_bytes()),
        many => {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for s in many {
                ctx.update(s.path.as_os_str().as_encoded_bytes());
                ctx.update(&[0]);
                ctx.update(&(s.text.len() as u64).to_le_bytes());
                ctx.update(s.text.as_bytes());
            }
            ctx.finish()
        }
    };
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Each enabled device's whole `[[device]]` table by name: what a reload compares to tell a changed
/// device from an unchanged one.
fn device_tables(root: &toml::Table) -> BTreeMap<String, toml::Table> {
    let Some(toml::Value::Array(items)) = root.get("device") else {
        return BTreeMap::new();
    };
    items
        .iter()
        .filter_map(|d| d.as_table())
        .filter(|d| d.get("enabled").and_then(|e| e.as_bool()) != Some(false))
        .filter_map(|d| Some((d.get("name")?.as_str()?.to_string(), d.clone())))
        .collect()
}

struct Checker<'a> {
    sources: &'a [Source],
    /// Key path → file and byte offset of the key (or the table header).
    spans: HashMap<String, Pos>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn main_file(&self) -> PathBuf {
        self.sources
            .first()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn push_at(&mut self, at: Pos, key: &str, message: String) {
        let (file, (line, column)) = match self.sources.get(at.file) {
            Some(s) => (s.path.clone(), merge::line_col(&s.text, at.offset)),
            None => (self.main_file(), (0, 0)),
        };
        self.errors.push(ConfigError {
            file,
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    /// Every error, in file order, then by position.
    fn into_errors(mut self) -> ConfigErrors {
        let order: HashMap<PathBuf, usize> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.clone(), i))
            .collect();
        self.errors
            .sort_by_key(|e| (order.get(&e.file).copied().unwrap_or(0), e.line, e.column));
        ConfigErrors(self.errors)
    }

    /// `file:line:column` of a key, for messages that point at a second place.
    fn place(&self, key: &str) -> Option<String> {
        self.spans
            .get(key)
            .map(|p| merge::describe(self.sources, *p))
    }

    /// Reports at the position of `key`, or of its nearest ancestor that has one.
    fn push(&mut self, key: &str, message: impl Into<String>) {
        let mut probe = key;
        loop {
            if let Some(&offset) = self.spans.get(probe) {
                return self.push_at(offset, key, message.into());
            }
            match probe.rfind(['.', '[']) {
                Some(i) => probe = &probe[..i],
                None => break,
            }
        }
        let file = self.main_file();
        self.errors.push(ConfigError {
            file,
            line: 0,
            column: 0,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Deserializes one value at `prefix`, reporting every error with its full key path: after each
    /// error the offending key is taken out and the value is tried again, so one mistake does not hide
    /// the next. A "missing field" caused by such a removal is not reported twice.
    fn parse_at<T: DeserializeOwned>(&mut self, prefix: &str, mut value: toml::Value) -> Option<T> {
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_ITEM {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return Some(v), // still validated further; the config is rejected if anything was reported
                Err(e) => {
                    let inner = e.path().to_string();
                    let inner = if inner == "." { String::new() } else { inner };
                    let message = explain(&clean(&e.into_inner().to_string()));
                    if !self.retry_after(prefix, &inner, message, &mut value, &mut removed) {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Reports one error; returns whether the value can be tried again without the offending key.
    fn retry_after(
        &mut self,
        prefix: &str,
        inner: &str,
        message: String,
        value: &mut toml::Value,
        removed: &mut Vec<String>,
    ) -> bool {
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            && removed.contains(&join(inner, field))
        {
            return false; // a consequence of our own removal
        }
        self.push(&join(prefix, inner), message);
        if inner.is_empty() || removed.iter().any(|r| r == inner) || !remove_path(value, inner) {
            return false;
        }
        removed.push(inner.to_string());
        true
    }

    fn section<T: DeserializeOwned>(
        &mut self,
        root: &toml::Table,
        name: &str,
        required: bool,
    ) -> Option<T> {
        match root.get(name) {
            Some(v @ toml::Value::Table(_)) => self.parse_at(name, v.clone()),
            Some(_) => {
                self.push(
                    name,
                    format!("`{name}` must be a table: write it as [{name}]"),
                );
                None
            }
            None if required => {
                self.push(name, format!("missing section [{name}]"));
                None
            }
            None => None,
        }
    }

    fn check_store(&mut self, store: &StoreConfig) {
        if store.batch_size == 0 {
            self.push("store.batch_size", "must be at least 1");
        }
        if store.flush_interval.is_zero() {
            self.push("store.flush_interval", "must be greater than zero");
        }
        if store.max_size.is_some_and(|s| s < 256 * 1024) {
            self.push(
                "store.max_size",
                "must be at least 256KiB (the database needs room to work)",
            );
        }
        if store.maintenance_interval.is_zero() {
            self.push("store.maintenance_interval", "must be greater than zero");
        }
    }

    fn check_mqtt(&mut self, mqtt: &MqttConfig) {
        match BrokerUrl::parse(&mqtt.url) {
            Ok(url) => {
                if !url.tls && !url.is_loopback() && !mqtt.allow_plaintext {
                    self.push(
                        "mqtt.url",
                        "plain mqtt:// to a non-loopback broker sends data and passwords unencrypted; use mqtts:// \
                         or set allow_plaintext = true",
                    );
                }
                if mqtt.embedded_broker && (!url.is_loopback() || url.tls) {
                    self.push(
                        "mqtt.embedded_broker",
                        "the embedded broker needs a plain mqtt:// url on a loopback address",
                    );
                }
                if mqtt.embedded_broker && !cfg!(feature = "embedded-broker") {
                    self.push(
                        "mqtt.embedded_broker",
                        "this build has no embedded broker (cargo feature `embedded-broker`)",
                    );
                }
                if (mqtt.ca_file.is_some() || mqtt.client_cert.is_some()) && !url.tls {
                    self.push("mqtt.url", "TLS files are set but the url is not mqtts://");
                }
            }
            Err(e) => self.push("mqtt.url", e),
        }
        if mqtt.client_cert.is_some() != mqtt.client_key.is_some() {
            self.push("mqtt.client_cert", "client_cert and client_key go together");
        }
        if mqtt.password_file.is_some() && mqtt.password_env.is_some() {
            self.push(
                "mqtt.password_env",
                "set either password_file or password_env, not both",
            );
        }
        if (mqtt.password_file.is_some() || mqtt.password_env.is_some()) && mqtt.username.is_none()
        {
            self.push("mqtt.username", "a password needs a username");
        }
        if !is_topic_prefix(&mqtt.topic_prefix) {
            self.push(
                "mqtt.topic_prefix",
                "must be non-empty and must not contain `+`, `#` or start/end with `/`",
            );
        }
        if let Some(id) = &mqtt.client_id
            && (id.is_empty() || id.len() > 128)
        {
            self.push("mqtt.client_id", "must be 1-128 characters");
        }
        if mqtt.max_readings_per_message == 0 {
            self.push("mqtt.max_readings_per_message", "must be at least 1");
        }
        if mqtt.max_message_size < 4096 {
            self.push("mqtt.max_message_size", "must be at least 4KiB");
        }
        if mqtt.inflight == 0 {
            self.push("mqtt.inflight", "must be at least 1");
        }
        if mqtt.reconnect_min.is_zero() || mqtt.reconnect_min > mqtt.reconnect_max {
            self.push(
                "mqtt.reconnect_min",
                "must be greater than zero and at most reconnect_max",
            );
        }
        if mqtt.keep_alive < std::time::Duration::from_secs(1) {
            self.push("mqtt.keep_alive", "must be at least 1s");
        }
    }

    fn devices(&mut self, root: &toml::Table) -> Vec<Box<dyn lineside_drivers::Device>> {
        let tables = match root.get("device") {
            None => return Vec::new(),
            Some(toml::Value::Array(items)) => items.clone(),
            Some(_) => {
                self.push("device", "devices are written as [[device]] tables");
                return Vec::new();
            }
        };
        let mut devices = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, item) in tables.into_iter().enumerate() {
            let at = format!("device[{i}]");
            let toml::Value::Table(mut table) = item else {
                self.push(&at, "a device must be a table: write it as [[device]]");
                continue;
            };
            let name = match table.remove("name") {
                Some(toml::Value::String(s)) => s,
                Some(_) => {
                    self.push(&format!("{at}.name"), "must be a string");
                    continue;
                }
                None => {
                    self.push(&at, "missing key `name`");
                    continue;
                }
            };
            if !is_plain_name(&name) {
                self.push(
                    &format!("{at}.name"),
                    "must be 1-128 letters, digits, `-`, `_` or `.` (it is part of MQTT topics)",
                );
            }
            if let Some(first) = names.insert(name.clone(), i) {
                let first_key = format!("device[{first}]");
                let elsewhere = match (self.spans.get(&first_key), self.spans.get(&at)) {
                    (Some(a), Some(b)) if a.file != b.file => self
                        .place(&format!("{first_key}.name"))
                        .map(|p| format!(" in {p}"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                self.push(
                    &format!("{at}.name"),
                    format!("duplicate device name `{name}` (also {first_key}{elsewhere})"),
                );
            }
            let driver = match table.remove("driver") {
                Some(toml::Value::String(s)) => s,
                Some(_) => {
                    self.push(&format!("{at}.driver"), "must be a string");
                    continue;
                }
                None => {
                    self.push(
                        &at,
                        format!(
                            "missing key `driver` (one of {})",
                            lineside_drivers::DRIVER_KINDS.join(", ")
                        ),
                    );
                    continue;
                }
            };
            let enabled = match table.remove("enabled") {
                None => true,
                Some(toml::Value::Boolean(b)) => b,
                Some(_) => {
                    self.push(&format!("{at}.enabled"), "must be true or false");
                    true
                }
            };
            if let Some(device) = self.parse_device(&at, &name, &driver, table)
                && enabled
            {
                devices.push(device);
            }
        }
        devices
    }

    /// Lets the driver parse its table; like [`Checker::parse_at`], retries without a key the driver
    /// rejected so that every problem of the device is reported.
    fn parse_device(
        &mut self,
        at: &str,
        name: &str,
        driver: &str,
        table: toml::Table,
    ) -> Option<Box<dyn lineside_drivers::Device>> {
        let mut value = toml::Value::Table(table);
        let mut removed = Vec::new();
        for _ in 0..MAX_ERRORS_PER_ITEM {
            let toml::Value::Table(table) = value.clone() else {
                return None;
            };
            match lineside_drivers::parse_device(name, driver, table) {
                Ok(device) => return Some(device),
                Err(issues) if issues.len() == 1 && issues[0].path != "driver" => {
                    let issue = &issues[0];
                    let message = explain(&clean(&issue.message));
                    if !self.retry_after(at, &issue.path, message, &mut value, &mut removed) {
                        return None;
                    }
                }
                Err(issues) => {
                    for issue in issues {
                        let mut message = explain(&clean(&issue.message));
                        if issue.path == "driver"
                            && !lineside_drivers::DRIVER_KINDS.contains(&driver)
                        {
                            message.push_str(&did_you_mean(driver, lineside_drivers::DRIVER_KINDS));
                        }
                        self.push(&join(at, &issue.path), message);
                    }
                    return None;
                }
            }
        }
        None
    }

    /// The `[[characteristic]]` tables: the agent's keys (context sources, capability interval, points)
    /// are taken out, the rest is the SPC engine's spec; both are checked, and every tag they name must
    /// belong to a configured device (tags of disabled devices are accepted unchecked).
    fn characteristics(
        &mut self,
        root: &toml::Table,
        devices: &[Box<dyn lineside_drivers::Device>],
    ) -> Vec<CharacteristicConfig> {
        let items = match root.get("characteristic") {
            None => return Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(_) => {
                self.push(
                    "characteristic",
                    "characteristics are written as [[characteristic]] tables",
                );
                return Vec::new();
            }
        };
        let tags = KnownTags::new(root, devices);
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("characteristic[{i}]");
            let toml::Value::Table(table) = item else {
                self.push(&at, "write it as [[characteristic]]");
                continue;
            };
            if let Some(toml::Value::String(name)) = table.get("name") {
                if let Some(first) = seen.insert(name.clone(), i) {
                    let first = format!("characteristic[{first}]");
                    let place = self
                        .place(&format!("{first}.name"))
                        .map(|p| format!(" at {p}"))
                        .unwrap_or_default();
                    self.push(
                        &format!("{at}.name"),
                        format!("duplicate characteristic `{name}` (also {first}{place})"),
                    );
                }
                if !is_plain_name(name) {
                    self.push(
                        &format!("{at}.name"),
                        "must be 1-128 letters, digits, `-`, `_` or `.` (it is part of MQTT topics)",
                    );
                }
            }
            if let Some(c) = self.characteristic(&at, table.clone(), &tags) {
                out.push(c);
            }
        }
        out
    }

    fn characteristic(
        &mut self,
        at: &str,
        mut table: toml::Table,
        tags: &KnownTags,
    ) -> Option<CharacteristicConfig> {
        let errors_before = self.errors.len();
        if let Some(toml::Value::Array(_)) = table.get("context") {
            self.push(
                &format!("{at}.context"),
                "name the tag each context key is read from: context = { part = \"device/tag\", ... }",
            );
            table.remove("context");
        }
        let mut agent_table = toml::Table::new();
        for key in CharacteristicAgentKeys::KEYS {
            if let Some(v) = table.remove(*key) {
                agent_table.insert((*key).to_string(), v);
            }
        }
        let agent: Option<CharacteristicAgentKeys> =
            self.parse_at(at, toml::Value::Table(agent_table));
        let keys: Vec<String> = agent
            .as_ref()
            .map(|a| a.context.keys().cloned().collect())
            .unwrap_or_default();
        table.insert(
            "context".into(),
            toml::Value::Array(keys.iter().cloned().map(toml::Value::String).collect()),
        );
        let spec: lineside_spc::CharacteristicSpec =
            self.parse_at(at, toml::Value::Table(table))?;
        let agent = agent?;
        if self.errors.len() > errors_before {
            return None; // validating a spec with keys taken out would report consequences twice
        }
        for issue in spec.validate() {
            // The engine numbers context keys; the config names them.
            let path = match issue
                .path
                .strip_prefix("context[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| keys.get(n))
            {
                Some(key) => format!("context.{key}"),
                None => issue.path.clone(),
            };
            self.push(&join(at, &path), issue.message.clone());
        }
        if agent.capability_interval < std::time::Duration::from_secs(1) {
            self.push(&format!("{at}.capability_interval"), "must be at least 1s");
        }
        let source = self.tag_ref(&format!("{at}.source"), &spec.source, tags, true);
        let context_sources: Vec<Option<TagRef>> = agent
            .context
            .iter()
            .map(|(key, src)| self.tag_ref(&format!("{at}.context.{key}"), src, tags, false))
            .collect();
        let sample_size_source = spec
            .sample_size_source
            .as_ref()
            .map(|s| self.tag_ref(&format!("{at}.sample_size_source"), s, tags, true));
        if self.errors.len() > errors_before {
            return None;
        }
        let source = source?;
        let unit = tags.unit(&source);
        Some(CharacteristicConfig {
            source,
            context_sources: context_sources.into_iter().collect::<Option<_>>()?,
            sample_size_source: sample_size_source.flatten(),
            unit,
            capability_interval: agent.capability_interval,
            publish_points: agent.publish_points,
            spec,
        })
    }

    /// Resolves "device/tag" against the configured devices, reporting what does not fit.
    fn tag_ref(
        &mut self,
        key: &str,
        text: &str,
        tags: &KnownTags,
        numeric: bool,
    ) -> Option<TagRef> {
        let Some(r) = TagRef::parse(text) else {
            self.push(key, format!("{text:?} must be \"device/tag\""));
            return None;
        };
        if tags.disabled.contains(&r.device) {
            return Some(r);
        }
        let Some(device_tags) = tags.by_device.get(&r.device) else {
            let names: Vec<&str> = tags.by_device.keys().map(String::as_str).collect();
            self.push(
                key,
                format!(
                    "no device `{}` is configured{}",
                    r.device,
                    did_you_mean(&r.device, &names)
                ),
            );
            return None;
        };
        match device_tags.iter().find(|t| t.name == r.tag) {
            None => {
                let names: Vec<&str> = device_tags.iter().map(|t| t.name.as_str()).collect();
                self.push(
                    key,
                    format!(
                        "device `{}` has no tag `{}`{}",
                        r.device,
                        r.tag,
                        did_you_mean(&r.tag, &names)
                    ),
                );
                None
            }
            Some(t) if numeric && !t.numeric => {
                self.push(
                    key,
                    format!("tag `{r}` is not numeric, so it cannot be charted"),
                );
                None
            }
            Some(_) => Some(r),
        }
    }
}

/// The tags of the configured devices, for checking what characteristics refer to.
struct KnownTags {
    by_device: HashMap<String, Vec<lineside_drivers::device::TagInfo>>,
    /// Devices with `enabled = false`: not parsed into the running set, so their tags are unknown here.
    disabled: HashSet<String>,
}

impl KnownTags {
    fn new(root: &toml::Table, devices: &[Box<dyn lineside_drivers::Device>]) -> Self {
        let disabled = match root.get("device") {
            Some(toml::Value::Array(items)) => items
                .iter()
                .filter_map(|d| d.as_table())
                .filter(|d| d.get("enabled").and_then(|e| e.as_bool()) == Some(false))
                .filter_map(|d| d.get("name").and_then(|n| n.as_str()).map(String::from))
                .collect(),
            _ => HashSet::new(),
        };
        KnownTags {
            by_device: devices
                .iter()
                .map(|d| (d.name().to_string(), d.tags()))
                .collect(),
            disabled,
        }
    }

    fn unit(&self, r: &TagRef) -> Option<String> {
        self.by_device
            .get(&r.device)?
            .iter()
            .find(|t| t.name == r.tag)?
            .unit
            .clone()
    }
}

/// Most errors reported for one section or device before giving up on it.
const MAX_ERRORS_PER_ITEM: usize = 20;

/// Drops the "in `key`" lines toml appends: the key is already in front of the message.
fn clean(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("in `"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Removes the key at a serde_path_to_error path (`tag[2].sigma`) from a value; false if not found.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let mut segments: Vec<(String, Option<usize>)> = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default().to_string();
        let idx: Vec<usize> = pieces
            .filter_map(|p| p.trim_end_matches(']').parse().ok())
            .collect();
        if !key.is_empty() {
            segments.push((key, None));
        }
        for i in idx {
            segments.push((String::new(), Some(i)));
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for (key, idx) in parents {
        cur = match (idx, cur) {
            (Some(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            (None, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        ((key, None), toml::Value::Table(t)) => t.remove(key).is_some(),
        _ => false,
    }
}

fn is_topic_prefix(p: &str) -> bool {
    !p.is_empty() && !p.contains(['+', '#']) && !p.starts_with('/') && !p.ends_with('/')
}

/// Adds a "did you mean" hint to serde's unknown-field and unknown-variant messages.
fn explain(message: &str) -> String {
    for marker in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = message.strip_prefix(marker)
            && let Some((bad, tail)) = rest.split_once('`')
        {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(bad, &expected);
            return format!("{message}{hint}");
        }
    }
    message.to_string()
}

fn did_you_mean(bad: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(bad, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
id = "gw1"
state_dir = "/tmp/x"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[device]]
name = "g1"
driver = "sim"
interval = "100ms"
[[device.tag]]
name = "d"
mean = 1.0
sigma = 0.1
"#;

    fn errors(text: &str) -> Vec<ConfigError> {
        load_str(Path::new("t.toml"), text)
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    }

    #[test]
    fn a_good_config_loads() {
        let cfg = load_str(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(cfg.agent.id, "gw1");
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.store.path, PathBuf::from("/tmp/x/lineside.db"));
        assert_eq!(cfg.hash.len(), 64);
    }

    #[test]
    fn a_typo_names_line_key_and_suggestion() {
        let text = GOOD.replace("sigma = 0.1", "sigam = 0.1");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = &errs[0];
        assert_eq!((e.line, e.key.as_str()), (16, "device[0].tag[0].sigam"));
        assert!(e.message.contains("did you mean `sigma`"), "{}", e.message);
        assert!(
            e.to_string()
                .starts_with("t.toml:16:1: device[0].tag[0].sigam:"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = GOOD
            .replace("id = \"gw1\"", "id = 5")
            .replace("interval = \"100ms\"", "interval = \"soon\"")
            + "\n[stroe]\nx = 1\n";
        let errs = errors(&text);
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["agent.id", "device[0].interval", "stroe"],
            "{errs:?}"
        );
        assert!(errs[2].message.contains("did you mean `store`"));
        assert!(errs.iter().all(|e| e.line > 0));
    }

    #[test]
    fn missing_section_and_duplicate_device() {
        let text = GOOD.replace("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n", "")
            + "[[device]]\nname = \"g1\"\ndriver = \"sim\"\ninterval = \"1s\"\n[[device.tag]]\nname = \"d\"\n";
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e.key == "mqtt" && e.message.contains("missing section [mqtt]")),
            "{errs:?}"
        );
        let dup = errs
            .iter()
            .find(|e| e.message.contains("duplicate device name"))
            .unwrap();
        assert_eq!(dup.key, "device[1].name");
        assert_eq!(dup.line, 16);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let errs = errors("[agent]\nid = \"x\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn plaintext_to_a_remote_broker_is_refused() {
        let text = GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://broker.plant:1883");
        let errs = errors(&text);
        assert_eq!(errs[0].key, "mqtt.url");
        let ok = text.replace("[mqtt]\n", "[mqtt]\nallow_plaintext = true\n");
        assert!(errors(&ok).is_empty());
    }

    #[test]
    fn unknown_driver_gets_a_suggestion() {
        let errs = errors(&GOOD.replace("driver = \"sim\"", "driver = \"smi\""));
        assert_eq!(errs[0].key, "device[0].driver");
        assert!(
            errs[0].message.contains("did you mean `sim`"),
            "{}",
            errs[0].message
        );
    }

    /// Writes `main` and the conf.d files into a fresh directory; returns it and the main file's path.
    fn with_conf_d(main: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lineside.toml");
        std::fs::write(&path, main).unwrap();
        let d = dir.path().join(merge::CONF_D);
        std::fs::create_dir(&d).unwrap();
        for (name, text) in extra {
            std::fs::write(d.join(name), text).unwrap();
        }
        (dir, path)
    }

    const EXTRA_DEVICE: &str = "\n[[device]]\nname = \"g2\"\ndriver = \"sim\"\ninterval = \"1s\"\n[[device.tag]]\nname = \"d\"\n";

    #[test]
    fn conf_d_files_are_merged_in_name_order() {
        let (_dir, path) = with_conf_d(
            GOOD,
            &[
                ("20-more.toml", EXTRA_DEVICE),
                ("10-agent.toml", "[agent]\nlog_level = \"debug\"\n"),
            ],
        );
        let cfg = load(&path).unwrap();
        assert_eq!(cfg.agent.log_level, "debug");
        let names: Vec<&str> = cfg.devices.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["g1", "g2"]);
        assert_eq!(cfg.files.len(), 3);
        assert!(cfg.files[1].ends_with("conf.d/10-agent.toml"));
        assert_eq!(cfg.device_tables.len(), 2);
        assert_ne!(cfg.hash, load_str(&path, GOOD).unwrap().hash);
    }

    #[test]
    fn an_error_in_a_conf_d_file_names_that_file_and_line() {
        let broken = EXTRA_DEVICE.replace("interval = \"1s\"", "interval = \"soon\"");
        let (_dir, path) = with_conf_d(GOOD, &[("10-line2.toml", &broken)]);
        let errs = load(&path).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = &errs[0];
        assert!(e.file.ends_with("conf.d/10-line2.toml"), "{e}");
        assert_eq!((e.line, e.key.as_str()), (5, "device[1].interval"));
    }

    #[test]
    fn a_key_set_in_two_files_and_a_device_defined_twice() {
        let dup = GOOD
            .split("[[device]]")
            .nth(1)
            .map(|d| format!("[agent]\nstate_dir = \"/tmp/y\"\n\n[[device]]{d}"))
            .unwrap();
        let (_dir, path) = with_conf_d(GOOD, &[("10-x.toml", &dup)]);
        let errs = load(&path).unwrap_err().0;
        let twice = errs.iter().find(|e| e.key == "agent.state_dir").unwrap();
        assert!(twice.file.ends_with("10-x.toml"), "{twice}");
        assert_eq!(twice.line, 2);
        assert!(
            twice.message.contains("lineside.toml:4:1"),
            "names the first place: {twice}"
        );
        let name = errs.iter().find(|e| e.key == "device[1].name").unwrap();
        assert!(name.file.ends_with("10-x.toml"), "{name}");
        assert!(
            name.message.contains("(also device[0] in ")
                && name.message.contains("lineside.toml:10:1"),
            "{name}"
        );
    }
}
