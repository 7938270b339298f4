//! What `run` checks before it starts anything, beyond loading the config: that every value it turns
//! into a timer, a deadline or a filter can be one. `lineside check` runs the same function after
//! loading, so a config `check` passes is one `run` starts with (one code path for both).
//!
//! The config's ranges (`config::ranges`) are meant to make every check here pass; this is the
//! run-time side of that promise, and the fuzz test (tests/config_fuzz.rs) holds the two together.

use std::time::Duration;

use crate::config::Config;

/// Every problem that would stop or break `run`, as "key: problem".
pub fn validate_for_run(cfg: &Config) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if let Err(e) = crate::logging::filter_for(&cfg.agent.log_level) {
        problems.push(format!("agent.log_level: {e}"));
    }
    let mut timers: Vec<(String, Duration)> = vec![
        ("store.flush_interval".into(), cfg.store.flush_interval),
        (
            "store.maintenance_interval".into(),
            cfg.store.maintenance_interval,
        ),
        ("mqtt.status_interval".into(), cfg.mqtt.status_interval),
        ("mqtt.keep_alive".into(), cfg.mqtt.keep_alive),
        ("mqtt.reconnect_min".into(), cfg.mqtt.reconnect_min),
        ("mqtt.reconnect_max".into(), cfg.mqtt.reconnect_max),
    ];
    for c in &cfg.characteristics {
        timers.push((
            format!("characteristic {}.capability_interval", c.spec.name),
            c.capability_interval,
        ));
    }
    for (key, d) in timers {
        // tokio's interval panics on zero; a deadline past the clock's range panics on addition.
        if d.is_zero() {
            problems.push(format!("{key}: a timer cannot have a zero period"));
        } else if tokio::time::Instant::now().checked_add(d * 2).is_none()
            || std::time::Instant::now().checked_add(d * 2).is_none()
        {
            problems.push(format!("{key}: {d:?} is beyond the clock's range"));
        }
    }
    if let Some(max_age) = cfg.store.max_age {
        let representable = chrono::Duration::from_std(max_age)
            .ok()
            .and_then(|d| chrono::Utc::now().checked_sub_signed(d));
        if representable.is_none() {
            problems.push(format!(
                "store.max_age: {max_age:?} reaches before the earliest representable time"
            ));
        }
    }
    if cfg.mqtt.keep_alive.as_secs() > u64::from(u16::MAX) {
        problems.push("mqtt.keep_alive: MQTT carries at most 65535 s".into());
    }
    // tokio's channels refuse capacities above usize::MAX >> 3 (a panic).
    if cfg.agent.ingest_queue == 0 || cfg.agent.ingest_queue > (usize::MAX >> 3) {
        problems.push("agent.ingest_queue: not a usable channel capacity".into());
    }
    if usize::try_from(cfg.mqtt.max_message_size)
        .ok()
        .and_then(|m| m.checked_add(64 * 1024))
        .is_none()
    {
        problems.push("mqtt.max_message_size: beyond this platform's memory".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
