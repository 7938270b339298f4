//! A serializable image of an engine's whole state, for restarts without a full replay.
//!
//! Floating-point state is stored as IEEE-754 bit patterns (u64), so that any serde format,
//! including JSON parsed without exact float round-tripping, restores the state bit for bit:
//! replaying the same observations after a restore then gives exactly the outputs an
//! uninterrupted engine would have given.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::chart::{Core, Record, Spread};
use crate::float_bits::{opt_bits, vec_bits};
use crate::output::Limits;
use crate::spec::CharacteristicSpec;

/// Format version of [`Snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// The state of a [`crate::Characteristic`]: take it with `snapshot()`, persist it (any serde
/// format), and give it back to `Characteristic::from_snapshot` with the same spec; then replay
/// the readings with a sequence number above [`Snapshot::last_seq`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub(crate) version: u32,
    pub(crate) spec: CharacteristicSpec,
    pub(crate) last_seq: Option<u64>,
    pub(crate) partitions: Vec<PartitionSnap>,
}

impl Snapshot {
    /// The highest sequence number the engine had seen: replay from the next one.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The spec the snapshot was taken with.
    pub fn spec(&self) -> &CharacteristicSpec {
        &self.spec
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartitionSnap {
    pub key: Option<String>,
    pub ctx: Vec<Option<String>>,
    #[serde(with = "vec_bits")]
    pub open: Vec<f64>,
    pub open_seq_first: u64,
    pub open_seq: u64,
    pub open_ts_micros: i64,
    pub open_window: i64,
    #[serde(with = "opt_bits")]
    pub prev_x: Option<f64>,
    pub core: Core,
    pub history: Vec<(Record, Vec<Option<String>>)>,
    pub cap: Vec<Spread>,
}

/// Why a snapshot could not be restored (the agent then starts afresh and replays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The characteristic's configuration changed since the snapshot.
    SpecChanged,
    /// Written by another version of the engine.
    Version(u32),
    /// The spec is invalid, or the snapshot does not fit it.
    Invalid(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::SpecChanged => f.write_str("the characteristic's spec changed"),
            SnapshotError::Version(v) => write!(f, "snapshot version {v} is not supported"),
            SnapshotError::Invalid(m) => write!(f, "invalid snapshot: {m}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Limits restored from a snapshot must be usable.
pub(crate) fn limits_ok(l: &Option<Limits>) -> bool {
    l.is_none_or(|l| l.is_valid())
}
