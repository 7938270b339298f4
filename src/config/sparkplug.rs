//! Checks of the `[sparkplug]` section (Sparkplug B encoding of the data stream).

use super::checker::Checker;
use super::types::{Encoding, MqttConfig, SparkplugConfig};

impl Checker<'_> {
    /// `[sparkplug]` is required with `mqtt.encoding = "sparkplug"`; its ids must be valid Sparkplug
    /// topic elements, and the SPC device id must not be a configured device's name.
    pub(super) fn check_sparkplug(
        &mut self,
        mqtt: &MqttConfig,
        sparkplug: Option<&SparkplugConfig>,
        device_names: &[String],
    ) {
        let Some(sp) = sparkplug else {
            if mqtt.encoding == Encoding::Sparkplug {
                self.push(
                    "mqtt.encoding",
                    "encoding = \"sparkplug\" needs a [sparkplug] section with group_id",
                );
            }
            return;
        };
        let ids = [
            ("sparkplug.group_id", Some(&sp.group_id)),
            ("sparkplug.edge_node_id", sp.edge_node_id.as_ref()),
            ("sparkplug.primary_host_id", sp.primary_host_id.as_ref()),
            ("sparkplug.spc_device", Some(&sp.spc_device)),
        ];
        for (key, id) in ids {
            if let Some(problem) = id.and_then(|id| sparkplug_id_problem(id)) {
                self.push(key, problem);
            }
        }
        for d in device_names {
            if let Some(problem) = sparkplug_id_problem(d) {
                self.push(
                    "sparkplug",
                    format!("device {d:?}: {problem}, so Sparkplug cannot name it"),
                );
            }
        }
        if device_names.contains(&sp.spc_device) {
            self.push(
                "sparkplug.spc_device",
                format!(
                    "{:?} is also a device's name; choose another id for the SPC device",
                    sp.spc_device
                ),
            );
        }
        if sp.rebirth_min_interval > std::time::Duration::from_secs(600) {
            self.push("sparkplug.rebirth_min_interval", "must be at most 10m");
        }
    }
}

/// Sparkplug ids (group, edge node, device, host) are topic elements: UTF-8 without `+`, `/`, `#`
/// (specification 4.1.1). The same rule as `sparkplug::topic::check_id`, kept here so the config does
/// not depend on the protocol module.
fn sparkplug_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    id.chars()
        .find(|c| matches!(c, '+' | '/' | '#'))
        .map(|c| format!("contains {c:?}, which Sparkplug reserves (+, /, #)"))
}

#[cfg(test)]
mod tests {
    use crate::config::{Encoding, load_str};

    const BASE: &str = r#"
[agent]
id = "gw-1"
state_dir = "/tmp/lineside-sparkplug-config-test"
[mqtt]
url = "mqtt://127.0.0.1:1883"
"#;

    const DEVICE: &str = r#"
[[device]]
name = "press"
driver = "sim"
interval = "1s"
[[device.tag]]
name = "force"
unit = "kN"
mean = 10.0
sigma = 0.1
"#;

    fn load(extra: &str) -> Result<crate::config::Config, String> {
        load_str(
            std::path::Path::new("/tmp/x.toml"),
            &format!("{BASE}{extra}{DEVICE}"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn sparkplug_section_is_placed_in_mqtt_with_defaults() {
        let cfg = load("encoding = \"sparkplug\"\n[sparkplug]\ngroup_id = \"Plant A\"\n").unwrap();
        assert_eq!(cfg.mqtt.encoding, Encoding::Sparkplug);
        let sp = cfg.mqtt.sparkplug.unwrap();
        assert_eq!(
            sp.edge_node_id.as_deref(),
            Some("gw-1"),
            "defaults to the agent id"
        );
        assert_eq!(sp.spc_device, "spc");
        assert_eq!(sp.tags.len(), 1);
        assert_eq!(sp.tags[0].device, "press");
        assert!(sp.state_dir.ends_with("lineside-sparkplug-config-test"));
    }

    #[test]
    fn sparkplug_mistakes_are_reported() {
        let e = load("encoding = \"sparkplug\"\n").unwrap_err();
        assert!(e.contains("[sparkplug]"), "{e}");
        let e = load("[sparkplug]\ngroup_id = \"a/b\"\n").unwrap_err();
        assert!(e.contains("sparkplug.group_id"), "{e}");
        let e = load("[sparkplug]\ngroup_id = \"g\"\nspc_device = \"press\"\n").unwrap_err();
        assert!(e.contains("sparkplug.spc_device"), "{e}");
        let e = load("[sparkplug]\ngroup_id = \"g\"\ngroupid = \"x\"\n").unwrap_err();
        assert!(e.contains("groupid"), "{e}");
    }
}
