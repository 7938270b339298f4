//! The MQTT topic layout: everything under `<prefix>/<agent id>/`.

#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, agent_id: &str) -> Self {
        Topics {
            base: format!("{prefix}/{agent_id}"),
        }
    }

    /// Batches of readings of one device.
    pub fn data(&self, device: &str) -> String {
        format!("{}/data/{device}", self.base)
    }

    /// Alarm and agent events (QoS 1, one event per message).
    pub fn alarms(&self) -> String {
        format!("{}/alarms", self.base)
    }

    /// Retained birth/death and periodic status with counters.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Retained high-water marks of the durable sequences (see `crate::forward::high_water`): what a
    /// restart checks its store against when the database and its marks file were both lost.
    pub fn highwater(&self) -> String {
        format!("{}/highwater", self.base)
    }

    /// Requests to the agent (rebirth, alarm acknowledgement).
    pub fn command(&self) -> String {
        format!("{}/cmd", self.base)
    }

    /// Retained open alarms of one characteristic.
    pub fn active_alarms(&self, characteristic: &str) -> String {
        format!("{}/alarms/active/{characteristic}", self.base)
    }

    /// Plotted SPC points of one characteristic.
    pub fn spc_points(&self, characteristic: &str) -> String {
        format!("{}/spc/{characteristic}/points", self.base)
    }

    /// Capability indices of one characteristic.
    pub fn spc_capability(&self, characteristic: &str) -> String {
        format!("{}/spc/{characteristic}/capability", self.base)
    }
}
