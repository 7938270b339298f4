//! lineside: an edge data-collection agent. See the README for the architecture.

pub mod agent;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod bus;
pub mod cli;
pub mod config;
pub mod forward;
pub mod logging;
pub mod metrics;
pub mod sparkplug;
pub mod spc;
pub mod station;
pub mod store;
pub mod timefmt;
