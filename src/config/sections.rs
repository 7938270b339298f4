//! Checks of the `[agent]`, `[store]` and `[mqtt]` sections beyond what their types enforce.

use std::path::Path;

use super::checker::Checker;
use super::hints::did_you_mean;
use super::ranges::{self, Bytes};
use super::types::{AgentConfig, BrokerUrl, MqttConfig, StoreConfig, is_plain_name};

/// The top-level sections a config may have.
pub(super) const SECTIONS: &[&str] = &[
    "agent",
    "store",
    "mqtt",
    "sparkplug",
    "device",
    "characteristic",
    "spc",
    "station",
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
        self.check_path("agent.state_dir", &agent.state_dir);
        if let Err(e) = super::log_filter::check(&agent.log_level) {
            self.push("agent.log_level", e);
        }
        self.in_range(
            "agent.ingest_queue",
            agent.ingest_queue as u64,
            ranges::INGEST_QUEUE,
        );
        if let Some(heartbeat) = agent.bad_heartbeat {
            self.in_range("agent.bad_heartbeat", heartbeat, ranges::BAD_HEARTBEAT);
        }
    }

    /// A path `run` creates or opens: no NUL byte, no component longer than 255 bytes, at most 4095
    /// bytes in all (Linux's limits), so creating it cannot fail for the path's own sake.
    pub(super) fn check_path(&mut self, key: &str, path: &Path) {
        let bytes = path.as_os_str().as_encoded_bytes();
        if bytes.contains(&0) {
            self.push(key, "must not contain a NUL character");
        } else if bytes.len() > 4095 {
            self.push(key, format!("is {} bytes long; at most 4095", bytes.len()));
        } else if path.components().any(|c| c.as_os_str().len() > 255) {
            self.push(key, "has a name longer than 255 bytes");
        }
    }

    pub(super) fn check_store(&mut self, store: &StoreConfig) {
        self.check_path("store.path", &store.path);
        self.in_range(
            "store.batch_size",
            store.batch_size as u64,
            ranges::BATCH_SIZE,
        );
        self.in_range(
            "store.flush_interval",
            store.flush_interval,
            ranges::FLUSH_INTERVAL,
        );
        self.in_range(
            "store.commit_delay",
            store.commit_delay,
            ranges::COMMIT_DELAY,
        );
        if let Some(max_size) = store.max_size {
            self.in_range("store.max_size", Bytes(max_size), ranges::MAX_SIZE.bytes());
        }
        if let Some(max_age) = store.max_age {
            self.in_range("store.max_age", max_age, ranges::MAX_AGE);
        }
        self.in_range(
            "store.maintenance_interval",
            store.maintenance_interval,
            ranges::MAINTENANCE_INTERVAL,
        );
    }

    pub(super) fn check_station(&mut self, station: &crate::config::StationConfig) {
        if station.tls_cert.is_some() != station.tls_key.is_some() {
            self.push("station.tls_cert", "tls_cert and tls_key go together");
        }
        self.in_range(
            "station.session_idle",
            station.session_idle,
            ranges::SESSION_IDLE,
        );
        self.in_range(
            "station.history",
            station.history as u64,
            ranges::STATION_HISTORY,
        );
        self.in_range(
            "station.max_streams",
            station.max_streams as u64,
            ranges::STATION_STREAMS,
        );
        self.in_range(
            "station.login_attempts",
            u64::from(station.login_attempts),
            ranges::LOGIN_ATTEMPTS,
        );
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
                "must be 1-1024 bytes and must not contain `+`, `#`, NUL or start/end with `/`",
            );
        }
        if mqtt
            .username
            .as_ref()
            .is_some_and(|u| u.len() > 1024 || u.contains('\0'))
        {
            self.push(
                "mqtt.username",
                "must be at most 1024 bytes, without NUL characters",
            );
        }
        if let Some(id) = &mqtt.client_id
            && (id.is_empty() || id.len() > 128)
        {
            self.push("mqtt.client_id", "must be 1-128 characters");
        }
        self.in_range(
            "mqtt.max_readings_per_message",
            mqtt.max_readings_per_message as u64,
            ranges::MAX_READINGS_PER_MESSAGE,
        );
        self.in_range(
            "mqtt.max_message_size",
            Bytes(mqtt.max_message_size),
            ranges::MAX_MESSAGE_SIZE.bytes(),
        );
        self.in_range("mqtt.inflight", u64::from(mqtt.inflight), ranges::INFLIGHT);
        self.in_range("mqtt.reconnect_min", mqtt.reconnect_min, ranges::RECONNECT);
        self.in_range("mqtt.reconnect_max", mqtt.reconnect_max, ranges::RECONNECT);
        if mqtt.reconnect_min > mqtt.reconnect_max {
            self.push("mqtt.reconnect_min", "must be at most reconnect_max");
        }
        self.in_range("mqtt.keep_alive", mqtt.keep_alive, ranges::KEEP_ALIVE);
        self.in_range(
            "mqtt.status_interval",
            mqtt.status_interval,
            ranges::STATUS_INTERVAL,
        );
        self.in_range(
            "mqtt.stall_timeout",
            mqtt.stall_timeout,
            ranges::STALL_TIMEOUT,
        );
        self.in_range(
            "mqtt.max_command_size",
            Bytes(mqtt.max_command_size),
            ranges::MAX_COMMAND_SIZE.bytes(),
        );
    }
}

fn is_topic_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.contains(['+', '#', '\0'])
        && !p.starts_with('/')
        && !p.ends_with('/')
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_run_could_not_create_are_refused() {
        let long = "d".repeat(300);
        let errs = errors(&GOOD.replace("/tmp/x", &format!("/tmp/{long}")));
        assert_eq!(errs[0].key, "agent.state_dir", "{errs:?}");
        let errs = errors(&GOOD.replace("/tmp/x", "/tmp/a\\u0000b"));
        assert!(errs[0].message.contains("NUL"), "{errs:?}");
    }

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
