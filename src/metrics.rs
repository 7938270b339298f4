//! Counters of the whole agent: Prometheus text on an optional local port, and JSON for the status
//! message.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use lineside_drivers::DeviceMetrics;
use serde_json::json;

use crate::forward::ForwarderStats;
use crate::store::StoreStats;

/// Metric name, help text, and how to read it from a device's counters.
type DeviceCounter = (&'static str, &'static str, fn(&DeviceMetrics) -> u64);

/// The running devices' counters, in config order; replaced when a reload changes the device set.
pub type DeviceList = Arc<std::sync::RwLock<Vec<Arc<DeviceMetrics>>>>;

/// The open-alarms document of each characteristic, as last published retained on
/// `alarms/active/<name>`; kept by the uplink relay so `/status` can show what is open now.
pub type OpenAlarms = Arc<std::sync::RwLock<std::collections::BTreeMap<String, serde_json::Value>>>;

#[derive(Clone)]
pub struct Metrics {
    pub store: Arc<StoreStats>,
    pub forwarder: Arc<ForwarderStats>,
    pub devices: DeviceList,
    pub alarms: OpenAlarms,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The devices running now.
    fn devices(&self) -> Vec<Arc<DeviceMetrics>> {
        self.devices
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn prometheus(&self) -> String {
        let devices = self.devices();
        let mut out = String::with_capacity(4096);
        let s = &self.store;
        let f = &self.forwarder;
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP lineside_{name} {help}\n# TYPE lineside_{name} {kind}\nlineside_{name} {value}"
            );
        };
        gauge(
            "store_received_total",
            "Readings received from drivers.",
            "counter",
            s.received.load(Relaxed),
        );
        gauge(
            "store_committed_total",
            "Readings committed to SQLite.",
            "counter",
            s.committed.load(Relaxed),
        );
        gauge(
            "store_transactions_total",
            "Write transactions.",
            "counter",
            s.transactions.load(Relaxed),
        );
        gauge(
            "store_commit_errors_total",
            "Failed commits (retried).",
            "counter",
            s.commit_errors.load(Relaxed),
        );
        gauge(
            "store_dropped_unforwarded_total",
            "Unforwarded readings dropped by the disk budget or max age.",
            "counter",
            s.dropped_unforwarded.load(Relaxed),
        );
        gauge(
            "store_pruned_total",
            "Readings pruned.",
            "counter",
            s.pruned.load(Relaxed),
        );
        gauge(
            "store_events_dropped_unforwarded_total",
            "Unforwarded events dropped (over their share of the disk budget, or unreadable).",
            "counter",
            s.dropped_events.load(Relaxed),
        );
        gauge(
            "store_events_held",
            "Events waiting in memory because the store cannot write (disk full).",
            "gauge",
            s.events_held.load(Relaxed),
        );
        gauge(
            "store_events_lost_total",
            "Events that could not be stored at all.",
            "counter",
            s.events_lost.load(Relaxed),
        );
        gauge(
            "store_integrity_problems",
            "Problems the integrity check at start found.",
            "gauge",
            s.integrity_problems.load(Relaxed),
        );
        gauge(
            "store_backlog",
            "Committed readings not yet acknowledged by the broker.",
            "gauge",
            s.backlog(),
        );
        gauge(
            "store_disk_bytes",
            "Database and WAL size.",
            "gauge",
            s.disk_bytes.load(Relaxed),
        );
        gauge(
            "store_last_seq",
            "Last committed reading sequence number.",
            "gauge",
            s.last_seq.load(Relaxed),
        );
        for (name, help, kind, value) in f.prometheus_values() {
            let _ = writeln!(
                out,
                "# HELP lineside_{name} {help}\n# TYPE lineside_{name} {kind}\nlineside_{name} {value}"
            );
        }
        let device_counters: [DeviceCounter; 7] = [
            (
                "device_readings_total",
                "Readings produced by the device.",
                |d| d.readings.load(Relaxed),
            ),
            ("device_bad_readings_total", "Bad-quality readings.", |d| {
                d.bad_readings.load(Relaxed)
            }),
            (
                "device_requests_total",
                "Requests sent to the device.",
                |d| d.requests.load(Relaxed),
            ),
            ("device_timeouts_total", "Requests that timed out.", |d| {
                d.timeouts.load(Relaxed)
            }),
            (
                "device_exceptions_total",
                "Protocol exceptions from the device.",
                |d| d.exceptions.load(Relaxed),
            ),
            (
                "device_errors_total",
                "Transport and framing errors.",
                |d| d.errors.load(Relaxed),
            ),
            (
                "device_reconnects_total",
                "Reconnects to the device.",
                |d| d.reconnects.load(Relaxed),
            ),
        ];
        for (name, help, get) in device_counters {
            let _ = writeln!(
                out,
                "# HELP lineside_{name} {help}\n# TYPE lineside_{name} counter"
            );
            for d in &devices {
                let _ = writeln!(
                    out,
                    "lineside_{name}{{device=\"{}\",driver=\"{}\"}} {}",
                    escape(&d.device),
                    d.kind,
                    get(d)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP lineside_device_connected 1 when the device is connected.\n# TYPE lineside_device_connected gauge"
        );
        for d in &devices {
            let up = d.state() == lineside_drivers::DeviceState::Connected;
            let _ = writeln!(
                out,
                "lineside_device_connected{{device=\"{}\"}} {}",
                escape(&d.device),
                up as u8
            );
        }
        let _ = writeln!(
            out,
            "# HELP lineside_tag_committed_total Readings committed per tag.\n# TYPE lineside_tag_committed_total counter"
        );
        let tags = s.tag_counters();
        for t in &tags {
            let _ = writeln!(
                out,
                "lineside_tag_committed_total{{device=\"{}\",tag=\"{}\"}} {}",
                escape(&t.device),
                escape(&t.tag),
                t.committed
            );
        }
        let _ = writeln!(
            out,
            "# HELP lineside_tag_bad_total Bad-quality readings per tag.\n# TYPE lineside_tag_bad_total counter"
        );
        for t in &tags {
            let _ = writeln!(
                out,
                "lineside_tag_bad_total{{device=\"{}\",tag=\"{}\"}} {}",
                escape(&t.device),
                escape(&t.tag),
                t.bad
            );
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let s = &self.store;
        let f = &self.forwarder;
        let oldest = s.oldest_unforwarded_us.load(Relaxed);
        json!({
            "store": {
                "received": s.received.load(Relaxed),
                "committed": s.committed.load(Relaxed),
                "epoch": s.epoch_str(),
                "dropped_unforwarded": s.dropped_unforwarded.load(Relaxed),
                "events_dropped_unforwarded": s.dropped_events.load(Relaxed),
                "events_held": s.events_held.load(Relaxed),
                "events_lost": s.events_lost.load(Relaxed),
                "integrity_problems": s.integrity_problems.load(Relaxed),
                "pruned": s.pruned.load(Relaxed),
                "backlog": s.backlog(),
                "oldest_unforwarded": (oldest > 0).then(|| chrono::DateTime::from_timestamp_micros(oldest as i64).map(crate::timefmt::rfc3339)).flatten(),
                "disk_bytes": s.disk_bytes.load(Relaxed),
                "last_seq": s.last_seq.load(Relaxed),
            },
            "forwarder": f.json(),
            "alarms": self.alarms.read().map(|a| a.values().cloned().collect::<Vec<_>>()).unwrap_or_default(),
            "devices": self.devices().iter().map(|d| json!({
                "name": d.device,
                "driver": d.kind,
                "state": d.state().name(),
                "readings": d.readings.load(Relaxed),
                "bad_readings": d.bad_readings.load(Relaxed),
                "requests": d.requests.load(Relaxed),
                "timeouts": d.timeouts.load(Relaxed),
                "exceptions": d.exceptions.load(Relaxed),
                "errors": d.errors.load(Relaxed),
                "reconnects": d.reconnects.load(Relaxed),
                "last_error": d.last_error(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Serves `GET /metrics` (Prometheus text) and `GET /status` (JSON) until cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut sock, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.prometheus()),
                "/status" => ("200 OK", "application/json", metrics.json().to_string()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /status\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
