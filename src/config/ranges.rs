//! The valid range of every duration, size and count key of the agent's sections: the one place that
//! says what `run` can handle. Zero and absurd values are refused with the range in the message (a
//! zero interval panics a timer, a century-long one overflows a deadline).
//!
//! Adding a key: one `Range` constant here and one `self.in_range(..)` line where its section is checked.

use std::time::Duration;

use super::checker::Checker;

/// An inclusive range of a key's value.
#[derive(Debug, Clone, Copy)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}
const DAY: u64 = 86_400;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const PIB: u64 = 1024 * 1024 * 1024 * MIB;

// [agent]
pub const INGEST_QUEUE: Range<u64> = Range {
    min: 1,
    max: 1_000_000,
};
/// Also the range of a device's own `bad_heartbeat` (checked by the drivers); `0s` reports every bad reading.
pub const BAD_HEARTBEAT: Range<Duration> = Range {
    min: Duration::ZERO,
    max: lineside_drivers::report::MAX_BAD_HEARTBEAT,
};
// [store]
pub const BATCH_SIZE: Range<u64> = Range {
    min: 1,
    max: 1_000_000,
};
pub const FLUSH_INTERVAL: Range<Duration> = Range {
    min: ms(1),
    max: s(60),
};
pub const COMMIT_DELAY: Range<Duration> = Range {
    min: Duration::ZERO,
    max: s(1),
};
pub const MAINTENANCE_INTERVAL: Range<Duration> = Range {
    min: ms(10),
    max: s(DAY),
};
pub const MAX_AGE: Range<Duration> = Range {
    min: s(60),
    max: s(36_525 * DAY),
};
/// The database needs room to work; a petabyte is far beyond any gateway.
pub const MAX_SIZE: Range<u64> = Range {
    min: 256 * KIB,
    max: PIB,
};
// [mqtt]
/// MQTT carries keep-alive as 16-bit seconds; rumqttc refuses below 1 s.
pub const KEEP_ALIVE: Range<Duration> = Range {
    min: s(1),
    max: s(65_535),
};
pub const MAX_READINGS_PER_MESSAGE: Range<u64> = Range {
    min: 1,
    max: 1_000_000,
};
/// MQTT's packet limit is 256 MiB − 1; leave room for the topic and headers.
pub const MAX_MESSAGE_SIZE: Range<u64> = Range {
    min: 4 * KIB,
    max: 128 * MIB,
};
pub const INFLIGHT: Range<u64> = Range {
    min: 1,
    max: u16::MAX as u64,
};
pub const RECONNECT: Range<Duration> = Range {
    min: ms(1),
    max: s(3600),
};
pub const STATUS_INTERVAL: Range<Duration> = Range {
    min: s(1),
    max: s(DAY),
};
/// The progress watchdog must leave a broker time to acknowledge a full window; beyond a day it no
/// longer watches anything.
pub const STALL_TIMEOUT: Range<Duration> = Range {
    min: s(1),
    max: s(DAY),
};
/// A command is a small JSON object; the client reads at most 4 MiB from the broker (see
/// `forward::options::INCOMING_MAX`), so a larger limit could never be used.
pub const MAX_COMMAND_SIZE: Range<u64> = Range {
    min: 256,
    max: 4 * MIB,
};
// [station]
pub const SESSION_IDLE: Range<Duration> = Range {
    min: s(60),
    max: s(30 * DAY),
};
pub const STATION_HISTORY: Range<u64> = Range {
    min: 1,
    max: 100_000,
};
pub const STATION_STREAMS: Range<u64> = Range {
    min: 1,
    max: 10_000,
};
pub const LOGIN_ATTEMPTS: Range<u64> = Range {
    min: 1,
    max: 10_000,
};
// [[characteristic]]
/// A subgroup's time window (aligned to the clock).
pub const SUBGROUP_WINDOW: Range<Duration> = Range {
    min: s(1),
    max: s(DAY),
};
pub const CAPABILITY_INTERVAL: Range<Duration> = Range {
    min: s(1),
    max: s(DAY),
};

// [[device]] tables of every driver, by key (the drivers check their own rules; these bound what a
// timer or a deadline can hold).
/// Sampling and polling periods.
const DEVICE_PERIOD: Range<Duration> = Range {
    min: ms(1),
    max: s(DAY),
};
/// Time allowed for a reply, a connection or a handshake.
const DEVICE_TIMEOUT: Range<Duration> = Range {
    min: ms(1),
    max: s(3600),
};
/// Reconnect backoff delays.
const DEVICE_BACKOFF: Range<Duration> = Range {
    min: ms(1),
    max: s(3600),
};
/// How often a tag that stays bad, or a value that stays the same, is reported again.
const DEVICE_HEARTBEAT: Range<Duration> = Range {
    min: ms(100),
    max: s(DAY),
};

/// Duration keys of a `[[device]]` table and their ranges (a key a driver does not know is reported by
/// the driver).
pub const DEVICE_DURATIONS: &[(&str, Range<Duration>)] = &[
    ("interval", DEVICE_PERIOD),
    ("poll_interval", DEVICE_PERIOD),
    ("publishing_interval", DEVICE_PERIOD),
    ("sampling_interval", DEVICE_PERIOD),
    ("timeout", DEVICE_TIMEOUT),
    ("connect_timeout", DEVICE_TIMEOUT),
    ("request_timeout", DEVICE_TIMEOUT),
    (
        "keep_alive_interval",
        Range {
            min: ms(10),
            max: s(3600),
        },
    ),
    (
        "session_timeout",
        Range {
            min: s(1),
            max: s(DAY),
        },
    ),
    (
        "retry_failed_items",
        Range {
            min: ms(100),
            max: s(DAY),
        },
    ),
    // A pause between frames on a serial line: a few milliseconds, zero allowed.
    (
        "inter_frame_delay",
        Range {
            min: ms(0),
            max: s(1),
        },
    ),
    // The DTR pulse that asks a simplex gauge for a value.
    (
        "pulse",
        Range {
            min: ms(1),
            max: s(10),
        },
    ),
    ("reconnect_min", DEVICE_BACKOFF),
    ("reconnect_max", DEVICE_BACKOFF),
    ("reconnect_initial", DEVICE_BACKOFF),
    ("bad_heartbeat", BAD_HEARTBEAT),
];
/// Duration keys of a `[[device.tag]]` table.
pub const TAG_DURATIONS: &[(&str, Range<Duration>)] = &[
    ("heartbeat", DEVICE_HEARTBEAT),
    ("sampling_interval", DEVICE_PERIOD),
];
/// Count keys of a `[[device]]` table.
pub const DEVICE_COUNTS: &[(&str, Range<u64>)] = &[
    // sim: samples per tag per tick.
    (
        "batch",
        Range {
            min: 1,
            max: 100_000,
        },
    ),
    // OPC UA: server-side queue per monitored item, and nodes per request.
    (
        "queue_size",
        Range {
            min: 1,
            max: 100_000,
        },
    ),
    (
        "max_nodes_per_request",
        Range {
            min: 1,
            max: 100_000,
        },
    ),
];
/// Count keys of a `[[device.tag]]` table.
pub const TAG_COUNTS: &[(&str, Range<u64>)] = &[(
    "queue_size",
    Range {
        min: 1,
        max: 100_000,
    },
)];

/// How a value of a range is written in a message.
pub trait Shown: Copy + PartialOrd {
    fn shown(self) -> String;
}

impl Shown for Duration {
    fn shown(self) -> String {
        humantime::format_duration(self).to_string()
    }
}

impl Shown for u64 {
    fn shown(self) -> String {
        self.to_string()
    }
}

/// A byte size, written as the config would ("256KiB"), exact where possible.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Bytes(pub u64);

impl Shown for Bytes {
    fn shown(self) -> String {
        const UNITS: &[(u64, &str)] = &[
            (PIB, "PiB"),
            (1024 * 1024 * MIB, "TiB"),
            (1024 * MIB, "GiB"),
            (MIB, "MiB"),
            (KIB, "KiB"),
        ];
        for (unit, name) in UNITS {
            if self.0 >= *unit && self.0.is_multiple_of(*unit) {
                return format!("{}{name}", self.0 / unit);
            }
        }
        format!("{}B", self.0)
    }
}

impl Range<u64> {
    pub const fn bytes(self) -> Range<Bytes> {
        Range {
            min: Bytes(self.min),
            max: Bytes(self.max),
        }
    }
}

impl Checker<'_> {
    /// Reports `key` unless `value` lies in `range`; the message gives the range and the value.
    pub(super) fn in_range<T: Shown>(&mut self, key: &str, value: T, range: Range<T>) {
        if value < range.min || value > range.max {
            self.push(
                key,
                format!(
                    "must be between {} and {} (it is {})",
                    range.min.shown(),
                    range.max.shown(),
                    value.shown()
                ),
            );
        }
    }
}

impl Checker<'_> {
    /// Checks the duration and count keys of a device table (at `at`, e.g. `device[0]`) and of its
    /// tags against their ranges. A value out of range is reported here and replaced by the range's
    /// minimum, so the driver does not report the same key again.
    pub(super) fn device_ranges(&mut self, at: &str, table: &mut toml::Table) {
        self.table_ranges(at, table, DEVICE_DURATIONS, DEVICE_COUNTS);
        if let Some(toml::Value::Array(tags)) = table.get_mut("tag") {
            for (i, tag) in tags.iter_mut().enumerate() {
                if let toml::Value::Table(tag) = tag {
                    self.table_ranges(&format!("{at}.tag[{i}]"), tag, TAG_DURATIONS, TAG_COUNTS);
                }
            }
        }
    }

    fn table_ranges(
        &mut self,
        at: &str,
        table: &mut toml::Table,
        durations: &[(&str, Range<Duration>)],
        counts: &[(&str, Range<u64>)],
    ) {
        for (key, range) in durations {
            // Not a string, or not a duration: the driver says so.
            let Some(toml::Value::String(text)) = table.get(*key) else {
                continue;
            };
            let Ok(d) = lineside_drivers::config::parse_duration(text) else {
                continue;
            };
            if d < range.min || d > range.max {
                self.in_range(&format!("{at}.{key}"), d, *range);
                let min = humantime::format_duration(range.min).to_string();
                table.insert((*key).to_string(), toml::Value::String(min));
            }
        }
        for (key, range) in counts {
            let Some(toml::Value::Integer(n)) = table.get(*key) else {
                continue;
            };
            if *n < 0 {
                continue; // the driver's type refuses it
            }
            let n = *n as u64;
            if n < range.min || n > range.max {
                self.in_range(&format!("{at}.{key}"), n, *range);
                table.insert((*key).to_string(), toml::Value::Integer(range.min as i64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{GOOD, errors};

    fn one_error(text: &str) -> crate::config::ConfigError {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn zero_and_absurd_durations_are_refused_with_the_range() {
        let e = one_error(&GOOD.replace("[mqtt]\n", "[mqtt]\nstatus_interval = \"0s\"\n"));
        assert_eq!(e.key, "mqtt.status_interval");
        assert_eq!(e.message, "must be between 1s and 1day (it is 0s)");
        assert!(
            e.to_string()
                .starts_with("t.toml:7:1: mqtt.status_interval:"),
            "{e}"
        );
        let e = one_error(&(GOOD.to_string() + "[store]\nmax_age = \"100000000d\"\n"));
        assert_eq!(e.key, "store.max_age");
        assert!(
            e.message.starts_with("must be between 1m and 100years"),
            "{}",
            e.message
        );
        for key in ["flush_interval", "commit_delay", "maintenance_interval"] {
            let e = one_error(&(GOOD.to_string() + &format!("[store]\n{key} = \"99999999d\"\n")));
            assert_eq!(e.key, format!("store.{key}"));
        }
    }

    #[test]
    fn watchdog_and_command_limits_have_ranges() {
        let e = one_error(&GOOD.replace("[mqtt]\n", "[mqtt]\nstall_timeout = \"0s\"\n"));
        assert_eq!(e.key, "mqtt.stall_timeout");
        assert_eq!(e.message, "must be between 1s and 1day (it is 0s)");
        let e = one_error(&GOOD.replace("[mqtt]\n", "[mqtt]\nmax_command_size = \"1GiB\"\n"));
        assert_eq!(e.key, "mqtt.max_command_size");
        assert_eq!(e.message, "must be between 256B and 4MiB (it is 1GiB)");
        let e = one_error(&GOOD.replace("[mqtt]\n", "[mqtt]\nmax_command_size = \"0B\"\n"));
        assert_eq!(e.key, "mqtt.max_command_size");
    }

    #[test]
    fn device_durations_and_counts_are_refused_out_of_range_once() {
        let device = "interval = \"100ms\"\n";
        for (line, key, shown) in [
            (
                "interval = \"0s\"\n",
                "interval",
                "must be between 1ms and 1day (it is 0s)",
            ),
            (
                "interval = \"100000000d\"\n",
                "interval",
                "must be between 1ms and 1day",
            ),
            (
                "interval = \"1s\"\nbad_heartbeat = \"2d\"\n",
                "bad_heartbeat",
                "must be between 0s and 1day (it is 2days)",
            ),
            (
                "interval = \"1s\"\nbatch = 0\n",
                "batch",
                "must be between 1 and 100000 (it is 0)",
            ),
        ] {
            let e = one_error(&GOOD.replace(device, line));
            assert_eq!(e.key, format!("device[0].{key}"), "{e}");
            assert!(e.message.starts_with(shown), "{key}: {}", e.message);
        }
    }

    #[test]
    fn station_counts_and_durations_have_ranges() {
        for (line, key) in [
            ("session_idle = \"0s\"", "station.session_idle"),
            ("history = 0", "station.history"),
            ("max_streams = 0", "station.max_streams"),
            ("login_attempts = 0", "station.login_attempts"),
        ] {
            let e = one_error(&format!("{GOOD}\n[station]\n{line}\n"));
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.starts_with("must be between"), "{e}");
        }
    }

    #[test]
    fn sizes_show_their_range_in_config_units() {
        let e = one_error(&(GOOD.to_string() + "[store]\nmax_size = \"2PiB\"\n"));
        assert_eq!(e.message, "must be between 256KiB and 1PiB (it is 2PiB)");
    }
}
