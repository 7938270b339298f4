//! Statistical process control for lineside: pure computation, no I/O, no async, no clock.
//!
//! See the crate README section in `lib.rs` docs below and `RULES.md` for the rule conventions.

// `!(x > 0.0)` is deliberate throughout: it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod capability;
mod chart;
pub mod constants;
mod engine;
pub mod output;
pub mod rules;
mod snapshot;
pub mod spec;

pub use capability::Capability;
pub use engine::{Characteristic, LimitsError, Observation};
pub use output::{
    ChartId, Context, FrozenLimits, IgnoreReason, Ignored, Limits, OutOfSpec, Output, Point,
    PointLimits, SpecSide, Violation,
};
pub use rules::{Rule, RulePreset, RuleSet, RuleSpec, Severity};
pub use snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotError};
pub use spec::{CharacteristicSpec, ChartType, CusumSpec, EwmaSpec, LimitsSpec, SpecIssue};
