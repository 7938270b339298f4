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
// [[characteristic]]
pub const CAPABILITY_INTERVAL: Range<Duration> = Range {
    min: s(1),
    max: s(DAY),
};

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
        for key in ["flush_interval", "maintenance_interval"] {
            let e = one_error(&(GOOD.to_string() + &format!("[store]\n{key} = \"99999999d\"\n")));
            assert_eq!(e.key, format!("store.{key}"));
        }
    }

    #[test]
    fn sizes_show_their_range_in_config_units() {
        let e = one_error(&(GOOD.to_string() + "[store]\nmax_size = \"2PiB\"\n"));
        assert_eq!(e.message, "must be between 256KiB and 1PiB (it is 2PiB)");
    }
}
