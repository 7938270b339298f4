//! The agent's configuration: one TOML file plus optional `conf.d/*.toml` files next to it, merged and
//! validated as a whole before anything starts.
//!
//! `load` reports every problem it finds with file, line, column and key (see [`ConfigError`]).

mod characteristics;
mod checker;
mod devices;
mod error;
mod fingerprint;
mod hints;
mod load;
pub mod log_filter;
mod merge;
pub mod ranges;
mod read;
mod referenced;
mod sections;
mod sparkplug;
mod state_paths;
#[cfg(test)]
mod test_support;
mod types;
pub mod units;

pub use error::{ConfigError, ConfigErrors};
pub use fingerprint::DeviceFingerprint;
pub use load::{files, load, load_str};
pub use merge::CONF_D;
pub use types::*;
