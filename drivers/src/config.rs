//! Helpers shared by every driver's configuration: how errors are reported and how durations are parsed.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::DeserializeOwned};

/// One problem in a device's configuration. `path` is relative to the `[[device]]` table, in the form
/// serde_path_to_error prints (`tag[2].register`); the agent turns it into file:line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    /// `message` is any text or typed error; its display form is what `lineside check` prints.
    pub fn new(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ConfigIssue {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Deserializes a driver's config struct from its `[[device]]` table, keeping the path of the first error.
/// Structs should use `#[serde(deny_unknown_fields)]` so a typo is an error, not a silent default.
pub fn from_table<T: DeserializeOwned>(table: toml::Table) -> Result<T, ConfigIssue> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigIssue::new(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

/// A duration in a config or on a command line that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration {text:?} ({source}); write e.g. \"500ms\", \"2s\", \"5m\"")]
pub struct DurationError {
    pub text: String,
    pub source: humantime::DurationError,
}

/// Parses "500ms", "2s", "1m 30s", "1h" (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|source| DurationError {
        text: text.to_string(),
        source,
    })
}

/// serde `deserialize_with` for a duration written as a string.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// serde `deserialize_with` for an optional duration written as a string.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("fast").is_err());
        assert!(
            parse_duration("10").is_err(),
            "a bare number has no unit and must be rejected"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(deserialize_with = "duration")]
        interval: Duration,
        tag: Vec<SampleTag>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct SampleTag {
        name: String,
    }

    #[test]
    fn errors_carry_the_path_inside_the_table() {
        let table: toml::Table =
            toml::from_str("interval = \"1s\"\n[[tag]]\nname = \"a\"\n[[tag]]\nnmae = \"b\"\n")
                .unwrap();
        let issue = from_table::<Sample>(table).unwrap_err();
        assert_eq!(issue.path, "tag[1].nmae");
        assert!(
            issue.message.contains("unknown field `nmae`"),
            "{}",
            issue.message
        );

        let table: toml::Table = toml::from_str("interval = \"soon\"\ntag = []\n").unwrap();
        let issue = from_table::<Sample>(table).unwrap_err();
        assert_eq!(issue.path, "interval");
    }
}
