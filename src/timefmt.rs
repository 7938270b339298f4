//! How timestamps are written in everything the agent publishes and stores as text.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-22T10:03:12.123456Z`.
pub fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}
