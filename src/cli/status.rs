//! `lineside status`: asks the running agent for its counters (`GET /status` on `agent.metrics_listen`)
//! and prints the devices with their state and last error (and the notes of drivers that changed something
//! at run time, such as Modbus read requests split to isolate a refused register), the store's backlog and
//! the age of the oldest unforwarded reading, the broker connection, and the active alarms when the agent
//! reports them.
//!
//! Plain HTTP/1.1 over a std `TcpStream` with timeouts: the agent's endpoint is a few lines of tokio and
//! answers one request per connection, so no HTTP client crate is needed.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The whole exchange, connect included, must finish within this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A status document is a few KiB per device; anything this large is not our agent.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent's config file; `agent.metrics_listen` there says where to ask.
    #[arg(long, short, default_value = "/etc/lineside/lineside.toml")]
    config: PathBuf,
    /// Print the agent's status document as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

/// Exit codes: 0 the agent answered, 1 it did not (or not with a status), 2 the config gives no address.
pub fn run(args: Args) -> ExitCode {
    let addr = match metrics_address(&args.config) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("lineside status: {msg}");
            return ExitCode::from(2);
        }
    };
    let status = match fetch_status(addr) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("lineside status: the agent at {addr} did not answer: {msg}");
            eprintln!("is it running? `systemctl status lineside`, `journalctl -u lineside -n 50`");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("lineside status: cannot print the status: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render(&status, addr, Utc::now()));
    }
    ExitCode::SUCCESS
}

/// Where the agent serves `/status`, from the config. A config that no longer validates (being edited
/// while the agent runs) still names the address: fall back to reading just that key, with a warning.
fn metrics_address(config: &Path) -> Result<SocketAddr, String> {
    let listen = match crate::config::load(config) {
        Ok(cfg) => cfg.agent.metrics_listen,
        Err(errors) => {
            let text = std::fs::read_to_string(config)
                .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
            let listen = raw_metrics_listen(&text).ok_or_else(|| {
                format!(
                    "{} does not validate and names no agent.metrics_listen:\n{errors}",
                    config.display()
                )
            })?;
            eprintln!(
                "warning: {} has {} error(s) (see `lineside check {}`); asking {listen} anyway",
                config.display(),
                errors.0.len(),
                config.display()
            );
            Some(listen)
        }
    };
    let listen = listen.ok_or_else(|| {
        format!(
            "{} has no agent.metrics_listen, so the agent serves no status; set e.g. \
             metrics_listen = \"127.0.0.1:9464\" in [agent] and restart it (`systemctl restart lineside`)",
            config.display()
        )
    })?;
    Ok(connectable(listen))
}

/// `agent.metrics_listen` from TOML text without validating anything else.
fn raw_metrics_listen(text: &str) -> Option<SocketAddr> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table
        .get("agent")?
        .get("metrics_listen")?
        .as_str()?
        .parse()
        .ok()
}

/// An agent listening on every address (0.0.0.0 / ::) is asked on loopback.
fn connectable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// `GET /status` and the parsed JSON body.
fn fetch_status(addr: SocketAddr) -> Result<Value, String> {
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let mut sock =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    sock.set_write_timeout(Some(CONNECT_TIMEOUT))
        .and_then(|()| sock.set_read_timeout(Some(EXCHANGE_TIMEOUT)))
        .map_err(|e| format!("socket: {e}"))?;
    let request = format!(
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;

    let mut response = Vec::with_capacity(8192);
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete answer within {}s",
                EXCHANGE_TIMEOUT.as_secs()
            ));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| format!("socket: {e}"))?;
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(buf.get(..n).unwrap_or_default());
                if response.len() > MAX_RESPONSE {
                    return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
                }
                if complete(&response) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    parse_response(&response)
}

/// Whether a response with a Content-Length has all of its body (the agent also closes the connection).
fn complete(response: &[u8]) -> bool {
    let Some(head_end) = find(response, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(response.get(..head_end).unwrap_or_default());
    content_length(&head).is_some_and(|len| response.len() >= head_end + 4 + len)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(response: &[u8]) -> Result<Value, String> {
    let head_end = find(response, b"\r\n\r\n")
        .ok_or_else(|| "the answer is not HTTP (no header end)".to_string())?;
    let head = String::from_utf8_lossy(response.get(..head_end).unwrap_or_default());
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (proto, code) = (parts.next().unwrap_or_default(), parts.next());
    if !proto.starts_with("HTTP/") {
        return Err(format!("the answer is not HTTP: {status_line:?}"));
    }
    if code != Some("200") {
        return Err(format!("GET /status answered {status_line:?}"));
    }
    let mut body = response.get(head_end + 4..).unwrap_or_default();
    if let Some(len) = content_length(&head) {
        body = body
            .get(..len)
            .ok_or_else(|| format!("the answer ended after {} of {len} body bytes", body.len()))?;
    }
    serde_json::from_slice(body).map_err(|e| format!("the status is not JSON: {e}"))
}

/// The human-readable summary.
fn render(status: &Value, addr: SocketAddr, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "agent      {addr}");

    let store = &status["store"];
    let backlog = store["backlog"].as_u64();
    let oldest = match store["oldest_unforwarded"].as_str() {
        Some(ts) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => format!("{ts} ({} ago)", age(now, t.with_timezone(&Utc))),
            Err(_) => ts.to_string(),
        },
        None => "-".into(),
    };
    let _ = writeln!(
        out,
        "store      backlog {} readings, oldest unforwarded {oldest}",
        num(backlog)
    );
    let _ = writeln!(
        out,
        "           committed {} (last seq {}), on disk {}, dropped unforwarded {}",
        num(store["committed"].as_u64()),
        num(store["last_seq"].as_u64()),
        store["disk_bytes"]
            .as_u64()
            .map(bytes)
            .unwrap_or_else(|| "?".into()),
        num(store["dropped_unforwarded"].as_u64()),
    );

    let fwd = &status["forwarder"];
    let conn = match fwd["connected"].as_bool() {
        Some(true) => "connected",
        Some(false) => "NOT CONNECTED",
        None => "?",
    };
    let _ = writeln!(
        out,
        "forwarder  {conn}, {} reconnects, {} readings and {} events acknowledged",
        num(fwd["reconnects"].as_u64()),
        num(fwd["forwarded"].as_u64()),
        num(fwd["events_forwarded"].as_u64()),
    );

    let devices = status["devices"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let _ = writeln!(out, "devices    {}", devices.len());
    if !devices.is_empty() {
        let rows: Vec<[String; 6]> = devices
            .iter()
            .map(|d| {
                [
                    text(&d["name"]),
                    text(&d["driver"]),
                    text(&d["state"]),
                    num(d["readings"].as_u64()),
                    num(d["bad_readings"].as_u64()),
                    d["last_error"]
                        .as_str()
                        .filter(|e| !e.is_empty())
                        .unwrap_or("-")
                        .to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            ["NAME", "DRIVER", "STATE", "READINGS", "BAD", "LAST ERROR"],
            &rows,
        );
        // What drivers changed at run time (e.g. Modbus read requests split to isolate a refused
        // register), one line per note, under a label on the first.
        let notes = devices.iter().flat_map(|d| {
            let name = text(&d["name"]);
            d["notes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(move |n| format!("{name}: {n}"))
        });
        for (i, note) in notes.enumerate() {
            let label = if i == 0 { "notes" } else { "" };
            let _ = writeln!(out, "{label:<11}{note}");
        }
    }

    match active_alarms(status) {
        None => {
            let _ = writeln!(out, "alarms     not reported by this agent");
        }
        Some(alarms) if alarms.is_empty() => {
            let _ = writeln!(out, "alarms     none active");
        }
        Some(alarms) => {
            let _ = writeln!(out, "alarms     {} active", alarms.len());
            let rows: Vec<[String; 6]> = alarms
                .iter()
                .map(|a| {
                    [
                        a.seq.clone(),
                        a.ts.clone(),
                        a.characteristic.clone(),
                        a.kind.clone(),
                        a.rule.clone(),
                        a.detail.clone(),
                    ]
                })
                .collect();
            table(
                &mut out,
                ["SEQ", "SINCE", "CHARACTERISTIC", "KIND", "RULE", "DETAIL"],
                &rows,
            );
        }
    }
    out
}

/// One active alarm as printed.
#[derive(Debug, PartialEq)]
struct AlarmRow {
    seq: String,
    ts: String,
    characteristic: String,
    kind: String,
    rule: String,
    detail: String,
}

/// The active alarms, if the status reports them: a top-level `alarms`, or `spc.alarms` /
/// `spc.active_alarms`. Each may be a list of alarms, a list of per-characteristic documents
/// (`{"characteristic", "alarms": [...]}`, as in the retained `alarms/active/<characteristic>` message),
/// or a map from characteristic to either. `None` when the agent reports no alarms at all.
fn active_alarms(status: &Value) -> Option<Vec<AlarmRow>> {
    let source = status.get("alarms").or_else(|| {
        let spc = status.get("spc")?;
        spc.get("active_alarms")
            .or_else(|| spc.get("alarms"))
            .or_else(|| spc.get("active"))
    })?;
    let mut rows = Vec::new();
    collect_alarms(source, None, &mut rows, 0);
    Some(rows)
}

fn collect_alarms(v: &Value, ch: Option<&str>, rows: &mut Vec<AlarmRow>, depth: usize) {
    // The documents are shallow; the bound only guards against a pathological answer.
    if depth > 4 {
        return;
    }
    match v {
        Value::Array(items) => {
            for item in items {
                collect_alarms(item, ch, rows, depth + 1);
            }
        }
        Value::Object(map) => {
            let here = map.get("characteristic").and_then(Value::as_str).or(ch);
            if let Some(inner) = map
                .get("alarms")
                .or_else(|| map.get("active"))
                .or_else(|| map.get("episodes"))
            {
                collect_alarms(inner, here, rows, depth + 1);
            } else if map.contains_key("alarm_seq")
                || map.contains_key("episode")
                || map.contains_key("seq")
                || map.contains_key("rule")
                || map.contains_key("kind")
            {
                rows.push(alarm_row(map, here));
            } else {
                // A map from characteristic name to its alarms.
                for (name, inner) in map {
                    collect_alarms(inner, Some(name), rows, depth + 1);
                }
            }
        }
        _ => {}
    }
}

fn alarm_row(map: &serde_json::Map<String, Value>, ch: Option<&str>) -> AlarmRow {
    let get = |k: &str| map.get(k).map(text).filter(|s| s != "-");
    let detail = ["message", "reason", "state", "value", "description"]
        .iter()
        .find_map(|k| {
            get(k).map(|v| {
                if *k == "value" {
                    format!("value {v}")
                } else {
                    v
                }
            })
        })
        .unwrap_or_else(|| "-".into());
    AlarmRow {
        seq: get("alarm_seq")
            .or_else(|| get("episode"))
            .or_else(|| get("seq"))
            .unwrap_or_else(|| "-".into()),
        ts: get("ts").unwrap_or_else(|| "-".into()),
        characteristic: get("characteristic")
            .or_else(|| ch.map(str::to_string))
            .unwrap_or_else(|| "-".into()),
        kind: get("kind")
            .or_else(|| get("episode_kind"))
            .unwrap_or_else(|| "-".into()),
        // An episode lists every rule broken so far.
        rule: get("rule")
            .or_else(|| {
                let rules: Vec<&str> = map
                    .get("rules")?
                    .as_array()?
                    .iter()
                    .filter_map(|r| r.get("rule").and_then(Value::as_str))
                    .collect();
                (!rules.is_empty()).then(|| rules.join(","))
            })
            .unwrap_or_else(|| "-".into()),
        detail,
    }
}

fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut width = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("  ");
        for (i, (cell, w)) in cells.zip(width).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// Whole seconds, as "3m 12s"; a timestamp in the future (clock steps) reads as 0s.
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn addr() -> SocketAddr {
        "127.0.0.1:9464".parse().unwrap()
    }

    fn sample() -> Value {
        json!({
            "store": {"received": 10, "committed": 10, "dropped_unforwarded": 0, "pruned": 0, "backlog": 4,
                      "oldest_unforwarded": "2026-11-22T10:00:00.000000Z", "disk_bytes": 5324800, "last_seq": 10},
            "forwarder": {"connected": false, "reconnects": 3, "messages": 2, "forwarded": 6, "events_forwarded": 0},
            "devices": [
                {"name": "bore-gauge", "driver": "sim", "state": "connected", "readings": 7, "bad_readings": 0,
                 "last_error": null},
                {"name": "press-plc", "driver": "modbus", "state": "reconnecting", "readings": 3, "bad_readings": 3,
                 "last_error": "connect 10.0.0.5:502: connection refused",
                 "notes": ["read requests split after exceptions (2 request(s) instead of 1; merging retried every 10m): unit 1 holding-register 0..=4, unit 1 holding-register 6..=9"]}
            ]
        })
    }

    #[test]
    fn summary_names_devices_backlog_age_and_connection() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:03:12Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = render(&sample(), addr(), now);
        assert!(text.contains("backlog 4 readings"), "{text}");
        assert!(
            text.contains("oldest unforwarded 2026-11-22T10:00:00.000000Z (3m 12s ago)"),
            "{text}"
        );
        assert!(text.contains("on disk 5.1 MiB"), "{text}");
        assert!(
            text.contains("forwarder  NOT CONNECTED, 3 reconnects"),
            "{text}"
        );
        assert!(text.contains("devices    2"), "{text}");
        let plc = text.lines().find(|l| l.contains("press-plc")).unwrap();
        assert!(plc.contains("reconnecting"), "{plc}");
        assert!(
            plc.ends_with("connect 10.0.0.5:502: connection refused"),
            "{plc}"
        );
        let gauge = text.lines().find(|l| l.contains("bore-gauge")).unwrap();
        assert!(gauge.trim_end().ends_with('-'), "{gauge}");
        let notes: Vec<&str> = text.lines().filter(|l| l.starts_with("notes")).collect();
        assert_eq!(
            notes,
            [
                "notes      press-plc: read requests split after exceptions (2 request(s) instead of 1; \
              merging retried every 10m): unit 1 holding-register 0..=4, unit 1 holding-register 6..=9"
            ],
            "{text}"
        );
        assert!(
            text.contains("alarms     not reported by this agent"),
            "{text}"
        );
    }

    #[test]
    fn alarms_in_the_shapes_the_agent_may_report() {
        let alarm = json!({"alarm_seq": 12, "kind": "spc.violation", "ts": "2026-11-22T10:01:00Z",
                           "characteristic": "bore", "rule": "nelson-1", "value": 74.02});
        // A flat list.
        let mut s = sample();
        s["alarms"] = json!([alarm.clone()]);
        let rows = active_alarms(&s).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].seq, "12");
        assert_eq!(rows[0].rule, "nelson-1");
        assert_eq!(rows[0].detail, "value 74.02");
        // Per-characteristic documents under spc, as the retained active-alarm messages.
        let mut s = sample();
        let mut bare = alarm.clone();
        bare.as_object_mut().unwrap().remove("characteristic");
        s["spc"] = json!({"active_alarms": [{"characteristic": "bore", "count": 1, "alarms": [bare]},
                                             {"characteristic": "depth", "count": 0, "alarms": []}]});
        let rows = active_alarms(&s).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].characteristic, "bore");
        // A map from characteristic to alarms.
        let mut s = sample();
        s["spc"] = json!({"alarms": {"bore": [alarm.clone()], "depth": []}});
        assert_eq!(active_alarms(&s).unwrap().len(), 1);
        // Reported, none active.
        let mut s = sample();
        s["alarms"] = json!([]);
        let text = render(&s, addr(), Utc::now());
        assert!(text.contains("alarms     none active"), "{text}");
        // Printed as a table.
        let mut s = sample();
        s["alarms"] = json!([alarm]);
        let text = render(&s, addr(), Utc::now());
        assert!(text.contains("alarms     1 active"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("bore") && l.contains("nelson-1")),
            "{text}"
        );
    }

    #[test]
    fn a_partial_status_prints_question_marks_not_panics() {
        let text = render(&json!({}), addr(), Utc::now());
        assert!(
            text.contains("backlog ? readings, oldest unforwarded -"),
            "{text}"
        );
        assert!(text.contains("devices    0"), "{text}");
        let text = render(&json!("garbage"), addr(), Utc::now());
        assert!(text.contains("forwarder  ?"), "{text}");
    }

    #[test]
    fn http_responses() {
        let body = r#"{"store":{}}"#;
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert!(complete(ok.as_bytes()));
        assert!(!complete(&ok.as_bytes()[..ok.len() - 1]));
        assert_eq!(parse_response(ok.as_bytes()).unwrap(), json!({"store": {}}));
        let short = &ok.as_bytes()[..ok.len() - 2];
        assert!(parse_response(short).unwrap_err().contains("ended after"));
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n";
        assert!(parse_response(missing).unwrap_err().contains("404"));
        assert!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")
                .unwrap_err()
                .contains("not HTTP")
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json")
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            connectable("0.0.0.0:9464".parse().unwrap()),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            connectable("[::]:9464".parse().unwrap()),
            "[::1]:9464".parse().unwrap()
        );
        assert_eq!(
            connectable("10.1.2.3:9464".parse().unwrap()),
            "10.1.2.3:9464".parse().unwrap()
        );
        assert_eq!(
            raw_metrics_listen(
                "[agent]\nid = 1\nmetrics_listen = \"127.0.0.1:9\"\n[bogus]\nx = 1\n"
            ),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(raw_metrics_listen("[agent]\nid = \"x\"\n"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
