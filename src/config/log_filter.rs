//! `agent.log_level`: a level, or a tracing filter whose directives name targets this program has.
//! tracing's own parser takes any word as a target, so `"infoo"` would be a filter for a target that
//! never logs, silencing every line; here it is an error with a hint.

use super::hints::did_you_mean;

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// The crates whose log lines reach the agent's log: the first `::` segment of a directive's target.
pub const KNOWN_TARGETS: &[&str] = &[
    "lineside",
    "lineside_drivers",
    "lineside_spc",
    "rumqttc",
    "rumqttd",
    "opcua",
    "opcua_client",
    "opcua_core",
    "opcua_crypto",
    "opcua_nodes",
    "opcua_types",
    "tokio_modbus",
    "tokio_serial",
    "serialport",
    "rustls",
    "rusqlite",
];

fn is_level(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    LEVELS.contains(&w.as_str()) || matches!(w.as_str(), "0" | "1" | "2" | "3" | "4" | "5")
}

/// Checks a log level or filter such as `"info"` or `"info,lineside_drivers::modbus=debug"`.
pub fn check(filter: &str) -> Result<(), String> {
    let usage = "use error, warn, info, debug or trace, or a filter such as \
                 \"info,lineside_drivers=debug\"";
    if filter.split(',').all(|d| d.trim().is_empty()) {
        return Err(format!("is empty; {usage}"));
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // target[span{field=value}]=level: the level follows the last `=` outside the brackets.
        let closing = directive.rfind(']').map_or(0, |i| i + 1);
        let (target, level) = match directive[closing..].rfind('=') {
            Some(i) => (
                &directive[..(closing + i)],
                Some(&directive[closing + i + 1..]),
            ),
            None => (directive, None),
        };
        let target = target.split(['[', '{']).next().unwrap_or_default().trim();
        match level {
            None if is_level(target) => {}
            None => {
                let mut candidates: Vec<&str> = LEVELS.to_vec();
                candidates.extend_from_slice(KNOWN_TARGETS);
                return Err(format!(
                    "{directive:?} is not a log level{}; {usage}",
                    did_you_mean(target, &candidates)
                ));
            }
            Some(level) if !is_level(level) => {
                return Err(format!(
                    "{level:?} in {directive:?} is not a log level{}; {usage}",
                    did_you_mean(level, LEVELS)
                ));
            }
            Some(_) => {
                let krate = target.split("::").next().unwrap_or_default();
                if !krate.is_empty() && !KNOWN_TARGETS.contains(&krate) {
                    let dashed = krate.replace('-', "_");
                    let hint = if KNOWN_TARGETS.contains(&dashed.as_str()) {
                        format!(" (did you mean `{dashed}`?)")
                    } else {
                        did_you_mean(krate, KNOWN_TARGETS)
                    };
                    return Err(format!(
                        "unknown log target `{krate}` in {directive:?}{hint}; known: {}",
                        KNOWN_TARGETS.join(", ")
                    ));
                }
            }
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(|e| format!("invalid log filter {filter:?}: {e}; {usage}"))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn levels_and_filters_naming_known_targets_pass() {
        for ok in [
            "info",
            "DEBUG",
            "warn,lineside_drivers::modbus=debug",
            "info,rumqttc=warn,opcua_client=error",
            "lineside[reload]=debug",
            "off",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_misspelt_level_or_target_is_refused_with_a_hint() {
        let e = check("infoo").unwrap_err();
        assert!(e.contains("did you mean `info`"), "{e}");
        let e = check("info,lineside_driver=debug").unwrap_err();
        assert!(e.contains("did you mean `lineside_drivers`"), "{e}");
        let e = check("tokio-modbus=debug").unwrap_err();
        assert!(e.contains("did you mean `tokio_modbus`"), "{e}");
        assert!(
            check("lineside=loud")
                .unwrap_err()
                .contains("not a log level")
        );
        assert!(check("").is_err());
        assert!(check(" , ").is_err());
    }
}
