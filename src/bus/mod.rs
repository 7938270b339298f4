//! The channels between the agent's parts, and what travels on them: commands from upstream (or the
//! operator station) to SPC, and the derived messages SPC hands to the forwarder. The store, the
//! forwarder and SPC all depend on this module and not on each other.

mod command;
mod ratelimit;
pub mod topics;

use tokio::sync::mpsc;

pub use command::{Command, ECHO_MAX_CHARS, Via, echo_value, truncate_echo};
pub use ratelimit::RateLimit;
pub use topics::Topics;

/// Commands waiting for SPC at most; beyond this, new ones are dropped and counted by the intake.
pub const COMMAND_QUEUE: usize = 1024;

/// Sends accepted commands to SPC. Bounded: the sender uses `try_send` and counts what does not fit.
pub type CommandSender = mpsc::Sender<Command>;
pub type CommandReceiver = mpsc::Receiver<Command>;

/// The bounded command channel (capacity [`COMMAND_QUEUE`]).
pub fn command_channel() -> (CommandSender, CommandReceiver) {
    mpsc::channel(COMMAND_QUEUE)
}

/// Something else the agent publishes through the forwarder's connection (SPC points, retained alarm
/// state). These are not in the store's streams: they are derived and can be re-derived.
#[derive(Debug, Clone)]
pub struct SidePublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}
