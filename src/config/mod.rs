//! The agent's configuration: one TOML file plus optional `conf.d/*.toml` files next to it, merged and
//! validated as a whole before anything starts.
//!
//! `load` reports every problem it finds with file, line, column and key (see [`load::ConfigError`]).

mod load;
mod merge;
mod types;
pub mod units;

pub use load::{ConfigError, ConfigErrors, files, load, load_str};
pub use merge::CONF_D;
pub use types::*;
