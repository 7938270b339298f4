//! Statistical process control at the edge: the agent side of the `lineside-spc` engine.
//!
//! The SPC task ([`Spc`]) sits after the store: it takes every committed reading in sequence order,
//! feeds the good-quality values of each characteristic's source to its engine, with the latest
//! values of its context tags, and turns the results into:
//!
//! - stored events, forwarded at least once with a seq on `<prefix>/<agent>/alarms`:
//!   `spc.violation` (a run rule broken), `spc.out_of_spec` (a reading beyond USL/LSL), `spc.limits`
//!   (limits computed), `spc.ack` (alarms acknowledged), `spc.recalculate`, and
//!   `agent.command_rejected` (a command that could not be carried out, with the reason);
//! - derived messages published through the forwarder: every plotted point on
//!   `.../spc/<characteristic>/points`, capability on `.../spc/<characteristic>/capability`
//!   (periodically and on request), and, retained, the current limits on
//!   `.../spc/<characteristic>/limits` and the open alarms on `.../alarms/active/<characteristic>`.
//!
//! An alarm stays active until it is acknowledged on the command topic. The state (every chart's
//! snapshot, limits, active alarms, latest context values) is persisted in the state directory; after
//! a restart the engines continue from it and replay the readings stored since, so a developing
//! pattern is not forgotten and an alarm is not raised twice (see `runtime` and `persist`).

mod alarms;
mod commands;
#[cfg(test)]
mod config_tests;
mod context;
mod messages;
mod persist;
mod runtime;

pub use alarms::{ACK, LIMITS, OUT_OF_SPEC, RECALCULATE, REJECTED, VIOLATION};
pub use persist::state_path;
pub use runtime::{Changes, Spc, SpcControl};

use crate::bus::Topics;

/// The topics SPC publishes on.
#[derive(Debug, Clone)]
pub struct SpcTopics {
    topics: Topics,
    base: String,
}

impl SpcTopics {
    pub fn new(prefix: &str, agent_id: &str) -> Self {
        SpcTopics {
            topics: Topics::new(prefix, agent_id),
            base: format!("{prefix}/{agent_id}"),
        }
    }

    pub fn points(&self, ch: &str) -> String {
        self.topics.spc_points(ch)
    }

    pub fn capability(&self, ch: &str) -> String {
        self.topics.spc_capability(ch)
    }

    /// Retained: the open alarms of a characteristic.
    pub fn active(&self, ch: &str) -> String {
        self.topics.active_alarms(ch)
    }

    /// Retained: the current control limits of every chart of a characteristic.
    pub fn limits(&self, ch: &str) -> String {
        format!("{}/spc/{ch}/limits", self.base)
    }
}
