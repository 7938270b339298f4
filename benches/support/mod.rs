//! What the load benches share: settings from the environment, a free loopback port, and a process's
//! counters from /proc (CPU time, memory): this process's, or a child's by pid.

// Each bench uses a part of this module.
#![allow(dead_code)]

/// `name` from the environment, parsed, else `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kB figure of /proc/self/status, e.g. `VmHWM:` (peak RSS) or `VmRSS:`; 0 when unknown.
pub fn proc_status(key: &str) -> u64 {
    proc_status_of("self", key)
}

/// A kB figure of `/proc/<pid>/status` (`pid` a number or "self"); 0 when unknown (e.g. it exited).
pub fn proc_status_of(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of this process in seconds (clock ticks at 100 Hz on Linux).
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// utime + stime of `/proc/<pid>/stat` in seconds, all threads; 0 when unknown.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}
