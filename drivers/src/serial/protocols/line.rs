//! The generic protocol: a regular expression with named captures turns a line into a measurement, so an
//! instrument lineside has never seen can be connected with configuration only.
//!
//! Captures: `value` (the number), `unit`, `channel`, `status` (text, e.g. `OK`/`NG`), and in the
//! optional error pattern `code`. At least one of `value` and `status` must exist.

use regex::Regex;

use super::{Fault, Measurement, NumberStyle, Parsed, normalize_channel, parse_number, shorten};
use crate::serial::units::Unit;

/// Capture names the pattern may use.
pub const CAPTURES: &[&str] = &["value", "unit", "channel", "status"];

/// Bounds the compiled size of user patterns so a pathological one cannot eat the gateway's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct LineProtocol {
    pattern: Regex,
    error_pattern: Option<Regex>,
    style: NumberStyle,
}

impl LineProtocol {
    /// Compiles and checks the patterns; errors name the key (`pattern`/`error_pattern`) they concern.
    pub fn new(
        pattern: &str,
        error_pattern: Option<&str>,
        decimal_comma: bool,
    ) -> Result<Self, (&'static str, PatternError)> {
        let pattern = compile(pattern).map_err(|e| ("pattern", e))?;
        let names: Vec<&str> = pattern.capture_names().flatten().collect();
        if let Some(unknown) = names.iter().find(|n| !CAPTURES.contains(n)) {
            return Err(("pattern", PatternError::UnknownCapture(unknown.to_string())));
        }
        if !names.contains(&"value") && !names.contains(&"status") {
            return Err(("pattern", PatternError::NoValueCapture));
        }
        let error_pattern = error_pattern
            .map(|p| {
                let re = compile(p)?;
                if let Some(unknown) = re.capture_names().flatten().find(|n| *n != "code") {
                    return Err(PatternError::UnknownErrorCapture(unknown.to_string()));
                }
                Ok(re)
            })
            .transpose()
            .map_err(|e| ("error_pattern", e))?;
        Ok(LineProtocol {
            pattern,
            error_pattern,
            style: NumberStyle {
                decimal_comma,
                exponent: true,
            },
        })
    }

    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    pub fn parse(&self, frame: &str) -> Parsed {
        if let Some(re) = &self.error_pattern
            && let Some(caps) = re.captures(frame)
        {
            let detail = caps
                .name("code")
                .map(|c| c.as_str())
                .unwrap_or(frame)
                .trim();
            return Err(Fault::Instrument(format!(
                "instrument error \"{}\"",
                shorten(detail)
            )));
        }
        let Some(caps) = self.pattern.captures(frame) else {
            return Err(Fault::Malformed(format!(
                "line: \"{}\" does not match the pattern",
                shorten(frame.trim())
            )));
        };
        let text = |name: &str| {
            caps.name(name)
                .map(|m| m.as_str().trim())
                .filter(|s| !s.is_empty())
        };
        let value = text("value")
            .map(|v| parse_number(v, self.style))
            .transpose()
            .map_err(|e| Fault::Malformed(format!("line: {e}")))?;
        let status = text("status").map(str::to_string);
        if value.is_none() && status.is_none() {
            return Err(Fault::Malformed(format!(
                "line: no value in \"{}\"",
                shorten(frame.trim())
            )));
        }
        Ok(vec![Measurement {
            channel: text("channel").map(normalize_channel),
            value,
            unit: text("unit").map(Unit::parse),
            status,
            ..Measurement::value(0.0)
        }])
    }
}

/// A `pattern` or `error_pattern` lineside cannot use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PatternError {
    #[error("invalid regular expression: {0}")]
    Invalid(#[from] regex::Error),
    #[error("unknown capture name `{0}`; use {names}", names = CAPTURES.join(", "))]
    UnknownCapture(String),
    #[error("the pattern needs a named capture `(?P<value>...)` (or `(?P<status>...)`)")]
    NoValueCapture,
    #[error("unknown capture name `{0}` in the error pattern; only `code` is used")]
    UnknownErrorCapture(String),
}

fn compile(pattern: &str) -> Result<Regex, PatternError> {
    Ok(regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(p: &str) -> LineProtocol {
        LineProtocol::new(p, Some(r"^E(?P<code>\d+)$"), false).unwrap()
    }

    #[test]
    fn captures_map_to_a_measurement() {
        let p = proto(
            r"^(?P<channel>\d+):\s*(?P<value>[-+]?\s*[\d.]+)\s*(?P<unit>\w+)?\s*(?P<status>OK|NG)?$",
        );
        let m = p.parse("2: -1.25 mm OK").unwrap();
        assert_eq!(m[0].channel.as_deref(), Some("2"));
        assert_eq!(m[0].value, Some(-1.25));
        assert_eq!(m[0].unit.as_ref().map(|u| u.name()), Some("mm"));
        assert_eq!(m[0].status.as_deref(), Some("OK"));
        let bare = p.parse("07:3.5").unwrap();
        assert_eq!(
            (bare[0].channel.as_deref(), bare[0].unit.clone()),
            (Some("7"), None)
        );
    }

    #[test]
    fn status_only_lines_and_exponents() {
        let p = proto(r"^(?:(?P<status>OK|NG)|(?P<value>\S+))$");
        assert_eq!(p.parse("NG").unwrap()[0].value, None);
        assert_eq!(p.parse("1.5E-03").unwrap()[0].value, Some(0.0015));
        let comma = LineProtocol::new(r"(?P<value>[-\d,]+)", None, true).unwrap();
        assert_eq!(comma.parse("-3,25").unwrap()[0].value, Some(-3.25));
    }

    #[test]
    fn errors_and_mismatches() {
        let p = proto(r"^V=(?P<value>.*)$");
        assert_eq!(
            p.parse("E12"),
            Err(Fault::Instrument("instrument error \"12\"".into()))
        );
        assert!(
            matches!(p.parse("hello"), Err(Fault::Malformed(r)) if r.contains("does not match"))
        );
        assert!(matches!(p.parse("V=abc"), Err(Fault::Malformed(r)) if r.contains("unparsable")));
        assert!(matches!(p.parse("V="), Err(Fault::Malformed(r)) if r.contains("no value")));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_key() {
        assert_eq!(
            LineProtocol::new("(", None, false).unwrap_err().0,
            "pattern"
        );
        assert!(
            LineProtocol::new(r"(?P<val>\d+)", None, false)
                .unwrap_err()
                .1
                .to_string()
                .contains("unknown capture name `val`")
        );
        assert!(
            LineProtocol::new(r"\d+", None, false)
                .unwrap_err()
                .1
                .to_string()
                .contains("(?P<value>")
        );
        assert_eq!(
            LineProtocol::new(r"(?P<value>\d+)", Some("("), false)
                .unwrap_err()
                .0,
            "error_pattern"
        );
        assert_eq!(
            LineProtocol::new(r"(?P<value>\d+)", Some("(?P<x>E)"), false)
                .unwrap_err()
                .0,
            "error_pattern"
        );
    }
}
