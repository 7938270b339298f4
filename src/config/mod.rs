//! The agent's configuration: one TOML file, validated as a whole before anything starts.
//!
//! `load` reports every problem it finds with file, line, column and key (see [`load::ConfigError`]).

mod load;
mod types;
pub mod units;

pub use load::{ConfigError, ConfigErrors, load, load_str};
pub use types::*;
