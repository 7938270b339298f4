//! From a `[[device]]` table to a runnable [`Device`], by driver kind.

use crate::config::ConfigIssue;
use crate::device::Device;

/// Every driver kind lineside knows, compiled in or not.
pub const DRIVER_KINDS: &[&str] = &["sim", "modbus", "opcua", "serial"];

/// Parses one device. `table` is the `[[device]]` table without the agent's own keys (`name`, `driver`);
/// issue paths are relative to it.
pub fn parse_device(
    name: &str,
    kind: &str,
    table: toml::Table,
) -> Result<Box<dyn Device>, Vec<ConfigIssue>> {
    let _ = (&name, &table);
    match kind {
        #[cfg(feature = "sim")]
        "sim" => crate::sim::parse(name, table),
        #[cfg(feature = "modbus")]
        "modbus" => crate::modbus::parse(name, table),
        #[cfg(feature = "opcua")]
        "opcua" => crate::opcua::parse(name, table),
        #[cfg(feature = "serial")]
        "serial" => crate::serial::parse(name, table),
        known if DRIVER_KINDS.contains(&known) => Err(vec![ConfigIssue::new(
            "driver",
            format!("driver `{known}` is not compiled into this build (cargo feature `{known}`)"),
        )]),
        other => Err(vec![ConfigIssue::new(
            "driver",
            format!(
                "unknown driver `{other}`; known drivers: {}",
                DRIVER_KINDS.join(", ")
            ),
        )]),
    }
}
