//! Device drivers for lineside.
//!
//! A driver turns a device's protocol into [`Reading`]s and hands them to a [`ReadingSink`]. Drivers know
//! nothing of SQLite or MQTT: the agent owns the store and the forwarder. Each protocol lives in its own
//! module behind a cargo feature; [`parse_device`] is the one entry point the agent calls per `[[device]]`.

pub mod config;
pub mod device;
pub mod reading;
mod registry;
pub mod report;

#[cfg(any(feature = "modbus", feature = "serial"))]
pub mod line;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "opcua")]
pub mod opcua;
#[cfg(feature = "serial")]
pub mod serial;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::ConfigIssue;
pub use device::{
    Device, DeviceContext, DeviceMetrics, DeviceState, ReadingSink, SinkClosed, TagInfo,
};
pub use reading::{Quality, Reading, Value};
pub use registry::{DRIVER_KINDS, parse_device};
