//! The checker that every part of validation reports through: it knows where each key path was written
//! (file and byte offset, from `merge`) and turns a key into `file:line:column`. It also deserializes
//! a section or item with retries, so that one mistake does not hide the next.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::error::{ConfigError, ConfigErrors};
use super::hints::explain;
use super::merge::{self, Pos, Source, join};

pub(super) struct Checker<'a> {
    pub(super) sources: &'a [Source],
    /// Key path → file and byte offset of the key (or the table header).
    pub(super) spans: HashMap<String, Pos>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(sources: &'a [Source], spans: HashMap<String, Pos>) -> Self {
        Checker {
            sources,
            spans,
            errors: Vec::new(),
        }
    }
    fn main_file(&self) -> PathBuf {
        self.sources
            .first()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    pub(super) fn push_at(&mut self, at: Pos, key: &str, message: String) {
        let (file, (line, column)) = match self.sources.get(at.file) {
            Some(s) => (s.path.clone(), merge::line_col(&s.text, at.offset)),
            None => (self.main_file(), (0, 0)),
        };
        self.errors.push(ConfigError {
            file,
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    /// Every error, in file order, then by position.
    pub(super) fn into_errors(mut self) -> ConfigErrors {
        let order: HashMap<PathBuf, usize> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.clone(), i))
            .collect();
        self.errors
            .sort_by_key(|e| (order.get(&e.file).copied().unwrap_or(0), e.line, e.column));
        ConfigErrors(self.errors)
    }

    /// `file:line:column` of a key, for messages that point at a second place.
    pub(super) fn place(&self, key: &str) -> Option<String> {
        self.spans
            .get(key)
            .map(|p| merge::describe(self.sources, *p))
    }

    /// Reports at the position of `key`, or of its nearest ancestor that has one.
    pub(super) fn push(&mut self, key: &str, message: impl Into<String>) {
        let mut probe = key;
        loop {
            if let Some(&offset) = self.spans.get(probe) {
                return self.push_at(offset, key, message.into());
            }
            match probe.rfind(['.', '[']) {
                Some(i) => probe = &probe[..i],
                None => break,
            }
        }
        let file = self.main_file();
        self.errors.push(ConfigError {
            file,
            line: 0,
            column: 0,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Deserializes one value at `prefix`, reporting every error with its full key path: after each
    /// error the offending key is taken out and the value is tried again, so one mistake does not hide
    /// the next. A "missing field" caused by such a removal is not reported twice.
    pub(super) fn parse_at<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        mut value: toml::Value,
    ) -> Option<T> {
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_ITEM {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return Some(v), // still validated further; the config is rejected if anything was reported
                Err(e) => {
                    let inner = e.path().to_string();
                    let inner = if inner == "." { String::new() } else { inner };
                    let message = explain(&clean(&e.into_inner().to_string()));
                    if !self.retry_after(prefix, &inner, message, &mut value, &mut removed) {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Reports one error; returns whether the value can be tried again without the offending key.
    pub(super) fn retry_after(
        &mut self,
        prefix: &str,
        inner: &str,
        message: String,
        value: &mut toml::Value,
        removed: &mut Vec<String>,
    ) -> bool {
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            && removed.contains(&join(inner, field))
        {
            return false; // a consequence of our own removal
        }
        self.push(&join(prefix, inner), message);
        if inner.is_empty() || removed.iter().any(|r| r == inner) || !remove_path(value, inner) {
            return false;
        }
        removed.push(inner.to_string());
        true
    }

    pub(super) fn section<T: DeserializeOwned>(
        &mut self,
        root: &toml::Table,
        name: &str,
        required: bool,
    ) -> Option<T> {
        match root.get(name) {
            Some(v @ toml::Value::Table(_)) => self.parse_at(name, v.clone()),
            Some(_) => {
                self.push(
                    name,
                    format!("`{name}` must be a table: write it as [{name}]"),
                );
                None
            }
            None if required => {
                self.push(name, format!("missing section [{name}]"));
                None
            }
            None => None,
        }
    }
}

/// Most errors reported for one section or device before giving up on it.
pub(super) const MAX_ERRORS_PER_ITEM: usize = 20;

/// Drops the "in `key`" lines toml appends: the key is already in front of the message.
pub(super) fn clean(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("in `"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Removes the key at a serde_path_to_error path (`tag[2].sigma`) from a value; false if not found.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let mut segments: Vec<(String, Option<usize>)> = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default().to_string();
        let idx: Vec<usize> = pieces
            .filter_map(|p| p.trim_end_matches(']').parse().ok())
            .collect();
        if !key.is_empty() {
            segments.push((key, None));
        }
        for i in idx {
            segments.push((String::new(), Some(i)));
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for (key, idx) in parents {
        cur = match (idx, cur) {
            (Some(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            (None, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        ((key, None), toml::Value::Table(t)) => t.remove(key).is_some(),
        _ => false,
    }
}
