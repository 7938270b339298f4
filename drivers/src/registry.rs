//! From a `[[device]]` table to a runnable [`Device`], by driver kind: one table lists every driver, its
//! cargo feature and its parser.
//!
//! Keys every driver accepts are taken out here before the driver sees the table:
//! - `bad_heartbeat`: how often a tag that stays bad for the same reason is reported again (report by
//!   exception, see [`crate::report`]); default 60 s (the agent may set another default for every device
//!   with `[agent] bad_heartbeat`), `"0s"` reports every bad reading, at most
//!   [`crate::report::MAX_BAD_HEARTBEAT`].

use std::time::Duration;

use crate::config::{ConfigIssue, parse_duration};
use crate::device::{Device, DeviceContext, DeviceFuture, TagInfo};
use crate::report::MAX_BAD_HEARTBEAT;

type ParseFn = fn(&str, toml::Table) -> Result<Box<dyn Device>, Vec<ConfigIssue>>;

/// One line per driver: the kind as written in `driver = "..."`, the cargo feature, the module.
macro_rules! drivers {
    ($($kind:literal => $feature:literal, $module:ident;)*) => {
        /// Every driver kind lineside knows, compiled in or not.
        pub const DRIVER_KINDS: &[&str] = &[$($kind),*];

        /// The parser of each kind; `None` when its feature is not compiled in.
        const DRIVERS: &[(&str, Option<ParseFn>)] = &[$(($kind, {
            #[cfg(feature = $feature)]
            let parse: Option<ParseFn> = Some(crate::$module::parse);
            #[cfg(not(feature = $feature))]
            let parse: Option<ParseFn> = None;
            parse
        })),*];
    };
}

drivers! {
    "sim" => "sim", sim;
    "modbus" => "modbus", modbus;
    "opcua" => "opcua", opcua;
    "serial" => "serial", serial;
}

/// Parses one device. `table` is the `[[device]]` table without the agent's own keys (`name`, `driver`);
/// issue paths are relative to it.
pub fn parse_device(
    name: &str,
    kind: &str,
    mut table: toml::Table,
) -> Result<Box<dyn Device>, Vec<ConfigIssue>> {
    let parse = match DRIVERS.iter().find(|(k, _)| *k == kind) {
        Some((_, Some(parse))) => parse,
        Some((known, None)) => {
            return Err(vec![ConfigIssue::new(
                "driver",
                format!(
                    "driver `{known}` is not compiled into this build (cargo feature `{known}`)"
                ),
            )]);
        }
        None => {
            return Err(vec![ConfigIssue::new(
                "driver",
                format!(
                    "unknown driver `{kind}`; known drivers: {}",
                    DRIVER_KINDS.join(", ")
                ),
            )]);
        }
    };
    let bad_heartbeat = match table.remove("bad_heartbeat") {
        None => None,
        Some(toml::Value::String(text)) => match parse_duration(&text) {
            Ok(d) if d <= MAX_BAD_HEARTBEAT => Some(d),
            Ok(d) => {
                return Err(vec![ConfigIssue::new(
                    "bad_heartbeat",
                    format!(
                        "must be between 0s and {} (it is {})",
                        humantime::format_duration(MAX_BAD_HEARTBEAT),
                        humantime::format_duration(d)
                    ),
                )]);
            }
            Err(e) => return Err(vec![ConfigIssue::new("bad_heartbeat", e)]),
        },
        Some(other) => {
            return Err(vec![ConfigIssue::new(
                "bad_heartbeat",
                format!(
                    "expected a duration such as \"60s\", found {}",
                    other.type_str()
                ),
            )]);
        }
    };
    let inner = parse(name, table)?;
    Ok(Box::new(Configured {
        inner,
        bad_heartbeat,
    }))
}

/// A driver's device with what every device has: the `bad_heartbeat`, and a tracing span named after the
/// device around everything it runs (library log lines included), so every log line says which device.
struct Configured {
    inner: Box<dyn Device>,
    bad_heartbeat: Option<Duration>,
}

impl Device for Configured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn tags(&self) -> Vec<TagInfo> {
        self.inner.tags()
    }

    fn plan(&self) -> Option<String> {
        self.inner.plan()
    }

    fn run(self: Box<Self>, ctx: DeviceContext) -> DeviceFuture {
        use tracing::Instrument;
        if let Some(heartbeat) = self.bad_heartbeat {
            ctx.metrics.set_bad_heartbeat(heartbeat);
        }
        let span =
            tracing::info_span!("device", name = %self.inner.name(), driver = self.inner.kind());
        Box::pin(self.inner.run(ctx).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_uncompiled_kinds_are_named() {
        let e = parse_device("d", "profinet", toml::Table::new())
            .err()
            .unwrap();
        assert!(e[0].message.contains("known drivers: sim, modbus"), "{e:?}");
        assert_eq!(DRIVER_KINDS.len(), DRIVERS.len());
    }

    #[cfg(feature = "sim")]
    #[test]
    fn bad_heartbeat_is_a_duration() {
        let table: toml::Table = toml::from_str("bad_heartbeat = 5").unwrap();
        let e = parse_device("d", "sim", table).err().unwrap();
        assert_eq!(e[0].path, "bad_heartbeat");
        let table: toml::Table = toml::from_str("bad_heartbeat = \"soon\"").unwrap();
        let e = parse_device("d", "sim", table).err().unwrap();
        assert_eq!(e[0].path, "bad_heartbeat");
        let table: toml::Table = toml::from_str("bad_heartbeat = \"2days\"").unwrap();
        let e = parse_device("d", "sim", table).err().unwrap();
        assert_eq!(e[0].path, "bad_heartbeat");
        assert_eq!(e[0].message, "must be between 0s and 1day (it is 2days)");
    }
}
