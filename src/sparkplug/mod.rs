//! Sparkplug B 3.0 edge node: lineside's readings as Sparkplug metrics for SCADA hosts (Ignition's
//! MQTT Engine, HiveMQ/EMQX Sparkplug support, any Sparkplug host application).
//!
//! - [`proto`]: the payload schema (`sparkplug_b.proto`) as prost structs, no code generation.
//! - [`datatype`]: Sparkplug datatypes and how lineside values map onto them.
//! - [`topic`]: the `spBv1.0/<group>/<TYPE>/<node>[/<device>]` namespace and STATE topics.
//! - [`bdseq`]: the birth/death sequence number, persisted across restarts.
//! - [`catalog`]: metric definitions (alias, datatype, unit) and latest values for births.
//! - [`node`]: the session state machine: births, DDATA, deaths, `seq`, rebirth requests.
//! - [`host`]: the primary host's STATE.
//! - [`spc`]: SPC side messages as metrics of the `spc` device.
//! - [`uplink`]: the forwarder's Sparkplug seams (will, subscriptions, births, DDATA, commands).
//!
//! The module is pure protocol: the MQTT connection, the store cursor and acknowledgements stay in
//! the forwarder.

pub mod bdseq;
pub mod catalog;
pub mod datatype;
pub mod host;
pub mod node;
pub mod proto;
pub mod spc;
pub mod topic;
pub mod uplink;

pub use bdseq::BdSeqFile;
pub use catalog::{Catalog, TagSpec};
pub use datatype::DataType;
pub use host::{HostChange, PrimaryHost};
pub use node::{EdgeNode, Message, NodeCommand, PackLimits, Packed};
pub use topic::{MessageType, NodeTopics};
