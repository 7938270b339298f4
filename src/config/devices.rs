//! The `[[device]]` tables: names unique and plain, then each driver parses and checks its own table.

use std::collections::HashMap;

use super::checker::{Checker, MAX_ERRORS_PER_ITEM, clean};
use super::hints::{did_you_mean, explain};
use super::merge::join;
use super::types::{AgentConfig, is_plain_name};

/// Writes the agent-wide device defaults (`[agent] bad_heartbeat`) into every `[[device]]` table that does not
/// set the key itself, before the drivers parse the tables. A reload that changes a default then restarts
/// the devices it applies to, as any other change of their tables does. An out-of-range default is not
/// applied (`check_agent` reports it).
pub(super) fn apply_device_defaults(root: &mut toml::Table, agent: &AgentConfig) {
    let Some(heartbeat) = agent.bad_heartbeat else {
        return;
    };
    if heartbeat > super::ranges::BAD_HEARTBEAT.max {
        return;
    }
    let Some(toml::Value::Array(devices)) = root.get_mut("device") else {
        return;
    };
    let text = humantime::format_duration(heartbeat).to_string();
    for device in devices {
        if let toml::Value::Table(table) = device {
            table
                .entry("bad_heartbeat")
                .or_insert_with(|| toml::Value::String(text.clone()));
        }
    }
}

impl Checker<'_> {
    pub(super) fn devices(&mut self, root: &toml::Table) -> Vec<Box<dyn lineside_drivers::Device>> {
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
            self.device_ranges(&at, &mut table);
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
    pub(super) fn parse_device(
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::test_support::{GOOD, errors};

    /// The bad heartbeat each device of `text` runs with (`run` applies it before the device starts).
    fn heartbeats(text: &str) -> Vec<(String, Duration)> {
        let cfg = crate::config::load_str(Path::new("t.toml"), text).unwrap();
        cfg.devices
            .into_iter()
            .map(|d| {
                let name = d.name().to_string();
                let metrics = Arc::new(lineside_drivers::DeviceMetrics::new(&name, d.kind()));
                let (sink, _rx) = lineside_drivers::ReadingSink::bounded(1);
                let ctx = lineside_drivers::DeviceContext {
                    sink,
                    metrics: metrics.clone(),
                    shutdown: tokio_util::sync::CancellationToken::new(),
                    state_dir: "/tmp".into(),
                };
                drop(d.run(ctx));
                (name, metrics.bad_heartbeat())
            })
            .collect()
    }

    #[test]
    fn the_agent_sets_the_default_bad_heartbeat_and_a_device_overrides_it() {
        let second = "[[device]]\nname = \"g2\"\ndriver = \"sim\"\ninterval = \"1s\"\nbad_heartbeat = \"0s\"\n\
                      [[device.tag]]\nname = \"d\"\n";
        assert_eq!(
            heartbeats(&format!("{GOOD}{second}")),
            [
                (
                    "g1".to_string(),
                    lineside_drivers::report::DEFAULT_BAD_HEARTBEAT
                ),
                ("g2".to_string(), Duration::ZERO)
            ]
        );
        let text =
            format!("{GOOD}{second}").replace("[agent]\n", "[agent]\nbad_heartbeat = \"5m\"\n");
        assert_eq!(
            heartbeats(&text),
            [
                ("g1".to_string(), Duration::from_secs(300)),
                ("g2".to_string(), Duration::ZERO)
            ]
        );
        // A reload compares device fingerprints: the default is part of the devices it applies to
        // (g1 changes with it), not of one that sets its own (g2).
        let before = crate::config::load_str(Path::new("t.toml"), &format!("{GOOD}{second}"))
            .unwrap()
            .device_fingerprints;
        let after = crate::config::load_str(Path::new("t.toml"), &text)
            .unwrap()
            .device_fingerprints;
        assert_ne!(before["g1"], after["g1"]);
        assert_eq!(before["g2"], after["g2"]);
    }

    #[test]
    fn bad_heartbeats_out_of_range_are_reported_where_they_are_written() {
        let text = GOOD.replace("[agent]\n", "[agent]\nbad_heartbeat = \"2days\"\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "agent.bad_heartbeat");
        assert!(errs[0].message.contains("between 0s and 1day"), "{errs:?}");
        let text = GOOD.replace(
            "interval = \"100ms\"",
            "interval = \"100ms\"\nbad_heartbeat = \"25h\"",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "device[0].bad_heartbeat");
        assert!(errs[0].message.contains("between 0s and 1day"), "{errs:?}");
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
    fn unknown_driver_gets_a_suggestion() {
        let errs = errors(&GOOD.replace("driver = \"sim\"", "driver = \"smi\""));
        assert_eq!(errs[0].key, "device[0].driver");
        assert!(
            errs[0].message.contains("did you mean `sim`"),
            "{}",
            errs[0].message
        );
    }
}
