//! The end-to-end load bench's parts: the agent under test as a child process ([`agent`]), mosquitto
//! ([`broker`]), the checking subscriber ([`subscriber`]), the configs both versions accept ([`config`]),
//! the cases ([`cases`]) and the side-by-side report ([`report`]).

pub mod agent;
pub mod broker;
pub mod cases;
pub mod config;
pub mod report;
pub mod subscriber;
