//! Configs both versions accept (0.1.0 denies unknown keys, so only keys it knows, plus `mqtt.json` for
//! this tree's compact format). Every case uses the same `[agent]`/`[store]`/`[mqtt]` settings: the
//! store's defaults (flush_interval 50 ms, batch_size 4096) and synchronous as given, an in-flight window
//! of 128 messages of up to 1,000 readings and 512 KiB, and a short reconnect back-off (200 ms-1 s) so
//! the drain case measures draining, not the back-off.

use std::fmt::Write as _;
use std::path::Path;

/// The JSON data format of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Json {
    /// Not set: the default format (the only one 0.1.0 knows).
    Default,
    /// `mqtt.json = "compact"` (this tree only).
    Compact,
}

pub const AGENT_ID: &str = "load";

pub fn header(state_dir: &Path, port: u16, sync: &str, json: Json) -> String {
    let mut t = format!(
        "[agent]\nid = \"{AGENT_ID}\"\nstate_dir = {:?}\nlog_level = \"warn\"\ningest_queue = 4096\n\
         [store]\nsynchronous = \"{sync}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ninflight = 128\nmax_readings_per_message = 1000\n\
         max_message_size = \"512KiB\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n",
        state_dir.display().to_string()
    );
    if json == Json::Compact {
        t.push_str("json = \"compact\"\n");
    }
    t
}

/// `devices` sim devices of `tags` gauge tags each, sampled every `interval`.
pub fn sim_devices(t: &mut String, devices: usize, tags: usize, interval: &str) {
    for d in 0..devices {
        let _ = write!(
            t,
            "[[device]]\nname = \"plc{d}\"\ndriver = \"sim\"\ninterval = \"{interval}\"\nseed = {d}\n"
        );
        for i in 0..tags {
            let _ = write!(
                t,
                "[[device.tag]]\nname = \"t{i}\"\nunit = \"mm\"\nmean = 10.0\nsigma = 0.1\nresolution = 0.001\n"
            );
        }
    }
}

/// `devices` Modbus TCP devices, unit ids 1..=devices of one server, `registers` u16 holding registers
/// each (one read request per poll), polled every `interval`.
pub fn modbus_devices(t: &mut String, port: u16, devices: usize, registers: usize, interval: &str) {
    for d in 1..=devices {
        let _ = write!(
            t,
            "[[device]]\nname = \"unit{d}\"\ndriver = \"modbus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
             unit_id = {d}\npoll_interval = \"{interval}\"\ntimeout = \"1s\"\n"
        );
        for r in 0..registers {
            let _ = write!(
                t,
                "[[device.tag]]\nname = \"r{r}\"\narea = \"holding-register\"\naddress = {r}\ntype = \"u16\"\n"
            );
        }
    }
}
