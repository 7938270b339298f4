//! The `[[characteristic]]` tables: the agent's keys are split from the SPC engine's spec, both are
//! checked, and every tag they name is resolved against the configured devices.

use std::collections::{HashMap, HashSet};

use super::checker::Checker;
use super::hints::did_you_mean;
use super::merge::join;
use super::types::{CharacteristicAgentKeys, CharacteristicConfig, TagRef, is_plain_name};

impl Checker<'_> {
    /// The `[[characteristic]]` tables: the agent's keys (context sources, capability interval, points)
    /// are taken out, the rest is the SPC engine's spec; both are checked, and every tag they name must
    /// belong to a configured device (tags of disabled devices are accepted unchecked).
    pub(super) fn characteristics(
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
        // The engine checks the window's form; its range is the config's (one message per key).
        let window_refused = spec
            .subgroup_window
            .as_deref()
            .and_then(|w| humantime::parse_duration(w.trim()).ok())
            .filter(|w| {
                let r = super::ranges::SUBGROUP_WINDOW;
                *w < r.min || *w > r.max
            });
        if let Some(w) = window_refused {
            self.in_range(
                &format!("{at}.subgroup_window"),
                w,
                super::ranges::SUBGROUP_WINDOW,
            );
        }
        for issue in spec.validate() {
            if window_refused.is_some() && issue.path == "subgroup_window" {
                continue;
            }
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
        let (alarm, problems) = agent.alarm();
        for (key, message) in problems {
            self.push(&format!("{at}.{key}"), message);
        }
        self.in_range(
            &format!("{at}.capability_interval"),
            agent.capability_interval,
            super::ranges::CAPABILITY_INTERVAL,
        );
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
            alarm,
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
