//! Statistical process control for lineside: pure computation, no I/O, no async, no clock.
//!
//! The crate's only dependency is serde. It takes readings, returns events, and is deterministic:
//! the same observations (and the same requests, at the same positions) always give the same
//! outputs, bit for bit. The run-rule conventions are in `spc/RULES.md`.
//!
//! # Configuration
//!
//! A [`CharacteristicSpec`] deserializes from one `[[characteristic]]` table (every struct denies
//! unknown keys, so parse it with `serde_path_to_error` to get the key path of a type error).
//! [`CharacteristicSpec::validate`] (also run by [`Characteristic::new`]) returns every semantic
//! problem as a [`SpecIssue`] whose `path` is relative to the table, e.g. `limits.sigma` or
//! `rule.2.points`.
//!
//! ```toml
//! [[characteristic]]
//! name = "bore-diameter"
//! source = "cmm/bore"              # the reading charted, "device/tag"
//! chart = "xbar-r"                 # i-mr | xbar-r | xbar-s | ewma | cusum | p | np | c | u
//! subgroup_size = 5                # X-bar: 2..=25 (the largest subgroup with a window)
//! subgroup_window = "10m"          # optional: also close a subgroup at the end of its window
//! usl = 74.05                      # specification limits and target (variables charts)
//! lsl = 73.95
//! target = 74.0
//! context = ["part", "lot", "operator"]  # context keys; a change closes the open subgroup
//! chart_per = "part"               # optional: a separate chart per value of this key
//! rules = "nelson"                 # nelson | western-electric | limits-only
//! capability_window = 100          # subgroups in the rolling capability window
//! limits = { baseline = 25, exclude_out_of_control = true }
//! # or fixed: limits = { centre = 74.0, sigma = 0.01 }  or  { ucl = 74.014, lcl = 73.988 }
//! [characteristic.rule.2]          # per-rule override, by number in the preset
//! points = 8
//! severity = "warning"
//! # chart = "ewma":  ewma = { lambda = 0.2, l = 3.0 }
//! # chart = "cusum": cusum = { k = 0.5, h = 5.0, head_start = 2.5, reset_after_signal = false }
//! # chart = "p"/"u": sample_size = 50, or sample_size_source = "line/inspected"
//! ```
//!
//! # Feeding readings
//!
//! Build one [`Characteristic`] per spec and call [`Characteristic::push`] for every committed,
//! good-quality reading of its `source`, in store order, with an [`Observation`]: the store's
//! `seq`, the reading's timestamp in Unix microseconds (only used by `subgroup_window`), the value
//! as f64 (for attribute charts the count), and the context values in the order of
//! `spec.context` (resolve each context key to the latest value of its tag at that point in the
//! store order, the same way live and on replay). For p/u charts with `sample_size_source`, pass
//! that tag's latest value as `size`. Outputs are appended to a caller-owned `Vec<Output>`;
//! clear and reuse it, and the hot path does not allocate.
//!
//! ```
//! use lineside_spc::{Characteristic, CharacteristicSpec, Observation, Output};
//!
//! let spec: CharacteristicSpec = toml::from_str(r#"
//!     name = "shaft"
//!     source = "gauge/od"
//!     chart = "i-mr"
//!     context = ["part"]
//!     limits = { centre = 10.0, sigma = 0.1 }
//! "#).unwrap();
//! let mut engine = Characteristic::new(spec).unwrap();
//! let mut out = Vec::new();
//! let ctx = [Some("P-100")];
//! engine.push(Observation { seq: 1, ts_micros: 0, value: 10.5, size: None, context: &ctx }, &mut out);
//! for o in out.drain(..) {
//!     match o {
//!         Output::Point(p) => { /* publish p (serde) on the data topic */ }
//!         Output::Violation(v) => { assert_eq!(v.rule.to_string(), "nelson-1"); /* raise an alarm */ }
//!         Output::OutOfSpec(_) | Output::LimitsFrozen(_) | Output::Ignored(_) => {}
//!     }
//! }
//! ```
//!
//! # Outputs
//!
//! - [`Output::Point`]: every plotted point (individual, subgroup statistic, EWMA, C+/C-) with its
//!   limits and the rules it broke: enough to draw the chart upstream. During a baseline the
//!   points come without limits; when the limits freeze the baseline's points are emitted again
//!   with limits (same `chart` and `seq`: the later one replaces the earlier).
//! - [`Output::Violation`]: one per rule broken by a point, with severity, the point's seq/ts,
//!   value, limits and context. De-duplicate alarms on (characteristic, `chart`,
//!   `context.partition()`, `rule`, `seq`): a replay flags the same points again.
//! - [`Output::OutOfSpec`]: an individual reading beyond USL/LSL (strict), a separate alarm kind.
//! - [`Output::LimitsFrozen`]: limits computed from a baseline or by [`Characteristic::recalculate`];
//!   persist the [`FrozenLimits`] (serde) and publish them.
//! - [`Output::Ignored`]: input that was not charted (NaN, a bad count, a one-observation X-bar
//!   subgroup); count or log it.
//!
//! All outputs are `Serialize` (`Output` is tagged by `"type"`); [`Context`] serializes as a map
//! of key to value.
//!
//! [`rule_text`] gives a rule's wording in English and Chinese (with its configured K, from
//! [`CharacteristicSpec::rule_points`]) for alarms an operator reads.
//!
//! # Requests
//!
//! - Capability: [`Characteristic::capability`] for each of [`Characteristic::partitions`], on a
//!   timer or on request (O(window) work; the engine reads no clock).
//! - Recalculation (command topic): [`Characteristic::recalculate`] recomputes the limits of every
//!   chart from its most recent `baseline` subgroups, emits `LimitsFrozen`, and continues with them.
//!   To keep replays deterministic, record the request at its position among the readings.
//!
//! # Restart
//!
//! Preferred: persist [`Characteristic::snapshot`] (any serde format; floats are stored as bit
//! patterns) periodically and at shutdown; on start, [`Characteristic::from_snapshot`] with the
//! configured spec, then replay the readings with `seq > snapshot.last_seq()`. The result is
//! exactly what an uninterrupted engine would have produced (property-tested); the replay
//! re-emits nothing from before the snapshot. Alarms raised between the snapshot and the crash
//! are raised again on replay and must be dropped by the de-duplication key above.
//!
//! If there is no usable snapshot (first start, or [`SnapshotError::SpecChanged`]): create the
//! engine with [`Characteristic::new`], optionally [`Characteristic::restore_limits`] for each
//! persisted [`FrozenLimits`] whose configuration still applies, and replay stored readings
//! (all of them to be exact; a recent tail rebuilds the rule windows, but X-bar subgroup
//! boundaries may then differ from the original run).

// `!(x > 0.0)` is deliberate throughout: it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod capability;
mod chart;
pub mod constants;
mod engine;
mod float_bits;
mod issue;
pub mod output;
pub mod rules;
mod snapshot;
pub mod spec;
pub mod text;

pub use capability::Capability;
pub use engine::{Characteristic, LimitsError, Observation};
pub use output::{
    ChartId, Context, FrozenLimits, IgnoreReason, Ignored, Limits, OutOfSpec, Output, Point,
    PointLimits, SpecSide, Violation,
};
pub use rules::{Rule, RulePreset, RuleSet, RuleSpec, Severity};
pub use snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotError};
pub use spec::{CharacteristicSpec, ChartType, CusumSpec, EwmaSpec, LimitsSpec, SpecIssue};
pub use text::{RuleText, is_trend, pattern_points, rule_text};
