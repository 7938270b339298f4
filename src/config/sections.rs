//! Checks of the `[agent]`, `[store]` and `[mqtt]` sections beyond what their types enforce.

use super::checker::Checker;
use super::hints::did_you_mean;
use super::types::{AgentConfig, BrokerUrl, MqttConfig, StoreConfig, is_plain_name};

/// The top-level sections a config may have.
pub(super) const SECTIONS: &[&str] = &[
    "agent",
    "store",
    "mqtt",
    "sparkplug",
    "device",
    "characteristic",
];

impl Checker<'_> {
    /// Reports every top-level key that is not a known section.
    pub(super) fn check_sections(&mut self, root: &toml::Table) {
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                self.push(
                    key,
                    format!("unknown section `{key}`{}", did_you_mean(key, SECTIONS)),
                );
            }
        }
    }

    pub(super) fn check_agent(&mut self, agent: &AgentConfig) {
        if !is_plain_name(&agent.id) {
            self.push(
                "agent.id",
                "must be 1-128 letters, digits, `-`, `_` or `.` (it is part of MQTT topics)",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&agent.log_level).is_err() {
            self.push(
                "agent.log_level",
                format!(
                    "invalid log level {:?}; use error, warn, info, debug or trace",
                    agent.log_level
                ),
            );
        }
        if agent.ingest_queue == 0 {
            self.push("agent.ingest_queue", "must be at least 1");
        }
    }

    pub(super) fn check_store(&mut self, store: &StoreConfig) {
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

    pub(super) fn check_mqtt(&mut self, mqtt: &MqttConfig) {
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
}

fn is_topic_prefix(p: &str) -> bool {
    !p.is_empty() && !p.contains(['+', '#']) && !p.starts_with('/') && !p.ends_with('/')
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{GOOD, errors};

    #[test]
    fn plaintext_to_a_remote_broker_is_refused() {
        let text = GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://broker.plant:1883");
        let errs = errors(&text);
        assert_eq!(errs[0].key, "mqtt.url");
        let ok = text.replace("[mqtt]\n", "[mqtt]\nallow_plaintext = true\n");
        assert!(errors(&ok).is_empty());
    }
}
