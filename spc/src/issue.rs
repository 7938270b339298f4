//! A problem found in a characteristic's configuration: its own module so that both the spec and the
//! rules can report one without depending on each other.

use std::fmt;

use serde::Serialize;

/// A problem in a characteristic's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecIssue {
    /// Key path relative to the `[[characteristic]]` table, e.g. "limits.sigma" or "rule.2.points".
    pub path: String,
    pub message: String,
}

impl SpecIssue {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
