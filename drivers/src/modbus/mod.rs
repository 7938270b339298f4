//! The Modbus driver: Modbus TCP, Modbus RTU on a serial port, and RTU framing over TCP (serial-to-Ethernet
//! gateways), built on tokio-modbus.
//!
//! - [`config`]: the `[[device]]` keys, validated into a [`DeviceConfig`] (see `config/examples/modbus-*.toml`).
//! - [`decode`]: areas, value types, byte orders, and decoding.
//! - [`plan`]: tags merged into the fewest read requests, computed once at parse time
//!   ([`Device::plan`] prints it for `lineside check --plan`).
//! - [`transport`]: one link with timeouts, drop-and-reconnect and backoff.
//! - [`bus`]: the process-wide registry and task that own a shared RTU bus.
//! - `poll`: the poll loop that turns replies into readings.
//! - [`commission`]: read once and decode in every type and order (`lineside modbus read`).
//!
//! Writes: a tag may be declared `writable = true` (only coils and holding registers), which the agent
//! sees in [`TagInfo::writable`]; the driver itself has no write path yet, so nothing is ever written.

pub mod bus;
pub mod commission;
pub mod config;
pub mod decode;
pub mod plan;
mod poll;
pub mod transport;

use crate::config::ConfigIssue;
use crate::device::{Device, DeviceContext, DeviceFuture, TagInfo};

pub use commission::{Decoded, ReadOnce, decode_window, read_once, render};
pub use config::{DeviceConfig, Endpoint, Parity, SerialSettings, TagConfig, TransportKind};
pub use decode::{Area, ByteOrder, DataType, Raw};
pub use plan::Block;
pub use transport::ReadData;

/// Parses a `[[device]]` table (without `name` and `driver`) into a runnable Modbus device.
pub fn parse(name: &str, table: toml::Table) -> Result<Box<dyn Device>, Vec<ConfigIssue>> {
    Ok(Box::new(ModbusDevice::from_table(name, table)?))
}

/// A configured Modbus device with its request plan.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    name: String,
    spec: DeviceConfig,
    blocks: Vec<Block>,
}

impl ModbusDevice {
    pub fn from_table(name: &str, table: toml::Table) -> Result<Self, Vec<ConfigIssue>> {
        let spec = config::parse(table)?;
        let blocks = plan::plan(&spec.tags, spec.max_gap, spec.max_registers, spec.max_bits);
        Ok(ModbusDevice {
            name: name.to_string(),
            spec,
            blocks,
        })
    }

    pub fn spec(&self) -> &DeviceConfig {
        &self.spec
    }

    /// The read requests of one poll, in the order they are sent.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }
}

impl Device for ModbusDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "modbus"
    }

    fn tags(&self) -> Vec<TagInfo> {
        self.spec
            .tags
            .iter()
            .map(|t| TagInfo {
                name: t.name.to_string(),
                unit: t.eng_unit.as_deref().map(str::to_string),
                numeric: t.numeric(),
                writable: t.writable,
            })
            .collect()
    }

    fn plan(&self) -> Option<String> {
        Some(plan::describe(&self.spec, &self.blocks))
    }

    fn run(self: Box<Self>, ctx: DeviceContext) -> DeviceFuture {
        let dev = *self;
        Box::pin(poll::run(dev.name, dev.spec, dev.blocks, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example configs must always parse: they are what engineers copy from.
    #[test]
    fn example_configs_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
        let mut checked = 0;
        for file in ["modbus-plc-tcp.toml", "modbus-gauges-rtu.toml"] {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let doc: toml::Table = toml::from_str(&text).unwrap();
            let devices = doc["device"].as_array().unwrap();
            assert!(!devices.is_empty(), "{file} has no [[device]]");
            for d in devices {
                let mut table = d.as_table().unwrap().clone();
                let name = table.remove("name").unwrap();
                assert_eq!(table.remove("driver").unwrap().as_str(), Some("modbus"));
                let dev = parse(name.as_str().unwrap(), table)
                    .unwrap_or_else(|e| panic!("{file}: {e:?}"));
                let plan = dev.plan().unwrap();
                assert!(plan.contains("read request"), "{plan}");
                if std::env::var_os("MODBUS_PRINT_PLANS").is_some() {
                    println!("{plan}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 3, "both examples with their devices: {checked}");
    }
}
