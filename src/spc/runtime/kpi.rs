//! Alarm KPIs after ISA-18.2: alarms raised per 10 minutes (≤ ~1 is manageable, > 10 a flood),
//! standing (open) and stale (active for more than a day) episodes, chattering alarms (the same
//! chart raising 3 or more episodes within 10 minutes), the mean time to acknowledge, and the
//! episodes the rate guard held back. Kept by the SPC task, read by metrics and `/status`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Runtime;
use super::outputs::Effect;
use crate::spc::episodes::AlarmState;

const WINDOW: Duration = Duration::from_secs(600);
const CHATTER: usize = 3;
const STALE_US: i64 = 24 * 3600 * 1_000_000;

#[derive(Debug, Default)]
pub struct SpcKpis {
    pub raised_total: AtomicU64,
    pub raised_10min: AtomicU64,
    pub standing: AtomicU64,
    pub stale: AtomicU64,
    pub shelved: AtomicU64,
    pub chattering: AtomicU64,
    pub acknowledged_total: AtomicU64,
    /// Sum of the times to acknowledge, in milliseconds.
    pub ack_ms_total: AtomicU64,
    pub rate_limited_total: AtomicU64,
}

impl SpcKpis {
    pub fn mean_time_to_ack_s(&self) -> Option<f64> {
        let n = self.acknowledged_total.load(Relaxed);
        (n > 0).then(|| self.ack_ms_total.load(Relaxed) as f64 / n as f64 / 1000.0)
    }

    pub fn json(&self) -> Value {
        json!({
            "raised_total": self.raised_total.load(Relaxed),
            "raised_last_10min": self.raised_10min.load(Relaxed),
            "standing": self.standing.load(Relaxed),
            "stale": self.stale.load(Relaxed),
            "shelved": self.shelved.load(Relaxed),
            "chattering": self.chattering.load(Relaxed),
            "acknowledged_total": self.acknowledged_total.load(Relaxed),
            "mean_time_to_ack_s": self.mean_time_to_ack_s(),
            "rate_limited_total": self.rate_limited_total.load(Relaxed),
        })
    }

    /// Prometheus text (for tests and tools).
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        self.prometheus(&mut out);
        out
    }

    /// Prometheus text lines.
    pub fn prometheus(&self, out: &mut String) {
        let mut line = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP lineside_{name} {help}\n# TYPE lineside_{name} {kind}\nlineside_{name} {value}"
            );
        };
        let g = |a: &AtomicU64| a.load(Relaxed).to_string();
        line(
            "spc_alarms_raised_total",
            "SPC alarm episodes raised.",
            "counter",
            g(&self.raised_total),
        );
        line(
            "spc_alarms_raised_10min",
            "SPC alarm episodes raised in the last 10 minutes (ISA-18.2: > 10 is a flood).",
            "gauge",
            g(&self.raised_10min),
        );
        line(
            "spc_alarms_standing",
            "Open SPC alarm episodes (not normal).",
            "gauge",
            g(&self.standing),
        );
        line(
            "spc_alarms_stale",
            "SPC alarm episodes active for more than 24 hours.",
            "gauge",
            g(&self.stale),
        );
        line(
            "spc_alarms_shelved",
            "Characteristics shelved or out of service.",
            "gauge",
            g(&self.shelved),
        );
        line(
            "spc_alarms_chattering",
            "Charts that raised 3 or more episodes in 10 minutes.",
            "gauge",
            g(&self.chattering),
        );
        line(
            "spc_alarms_acknowledged_total",
            "SPC alarm episodes acknowledged.",
            "counter",
            g(&self.acknowledged_total),
        );
        line(
            "spc_alarms_ack_seconds_total",
            "Sum of the times from raise to acknowledgement.",
            "counter",
            format!("{:.3}", self.ack_ms_total.load(Relaxed) as f64 / 1000.0),
        );
        line(
            "spc_alarms_rate_limited_total",
            "SPC alarm episodes not raised because of the rate guard.",
            "counter",
            g(&self.rate_limited_total),
        );
    }
}

/// Raises of the last 10 minutes (wall clock) and by which chart.
#[derive(Debug, Default)]
pub(super) struct Window {
    raised: VecDeque<(Instant, String)>,
}

impl Window {
    pub fn record(&mut self, e: &Effect, kpis: &SpcKpis) {
        match e.transition {
            Some("raised") => {
                kpis.raised_total.fetch_add(1, Relaxed);
                let key = format!(
                    "{}|{}|{}|{}",
                    e.body["characteristic"],
                    e.body["episode_kind"],
                    e.body["chart"],
                    e.body["partition"]
                );
                self.raised.push_back((Instant::now(), key));
            }
            Some("acknowledged" | "cleared") if e.ack_seconds.is_some() => {
                kpis.acknowledged_total.fetch_add(1, Relaxed);
                let ms = e.ack_seconds.unwrap_or(0.0) * 1000.0;
                kpis.ack_ms_total.fetch_add(ms.max(0.0) as u64, Relaxed);
            }
            _ => {}
        }
    }
}

impl Runtime {
    /// Refreshes the gauges (every tick).
    pub(super) fn update_kpis(&mut self) {
        let now = Instant::now();
        let w = &mut self.kpi.raised;
        while w
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            w.pop_front();
        }
        let mut per_key: HashMap<&str, usize> = HashMap::new();
        for (_, k) in w.iter() {
            *per_key.entry(k.as_str()).or_default() += 1;
        }
        let k = &self.kpis;
        k.raised_10min.store(w.len() as u64, Relaxed);
        k.chattering.store(
            per_key.values().filter(|n| **n >= CHATTER).count() as u64,
            Relaxed,
        );
        let now_us = chrono::Utc::now().timestamp_micros();
        let (mut standing, mut stale, mut shelved, mut limited) = (0, 0, 0, 0);
        for ch in &self.chars {
            standing += ch.alarms.open.len() as u64;
            stale += ch
                .alarms
                .open
                .iter()
                .filter(|e| {
                    e.state != AlarmState::RtnUnacked && now_us - e.raised_micros > STALE_US
                })
                .count() as u64;
            shelved += u64::from(ch.alarms.suppression.is_some());
            limited += ch.alarms.guard.suppressed;
        }
        k.standing.store(standing, Relaxed);
        k.stale.store(stale, Relaxed);
        k.shelved.store(shelved, Relaxed);
        k.rate_limited_total.store(limited, Relaxed);
    }
}
