//! The simulated line: gauges with normal noise and scheduled disturbances, so that the whole pipeline
//! (store, forwarder, SPC alarms) can be shown and tested without hardware.
//!
//! Disturbances are scheduled by sample index (not wall time), so a run is reproducible for a given seed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use crate::config::{self, ConfigIssue};
use crate::device::{Device, DeviceContext, DeviceFuture, DeviceState, TagInfo};
use crate::reading::{Reading, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimConfig {
    /// Time between samples.
    #[serde(deserialize_with = "config::duration")]
    interval: Duration,
    /// Samples per tag per tick (timestamps spread over the interval); raises the rate for load tests.
    #[serde(default = "one")]
    batch: u32,
    /// Random seed; by default derived from the device name so every run of a config is the same.
    seed: Option<u64>,
    #[serde(default)]
    tag: Vec<SimTag>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimTag {
    name: String,
    #[serde(default)]
    kind: TagKind,
    unit: Option<String>,
    /// Process mean (gauge) or mean count per sample (count).
    #[serde(default)]
    mean: f64,
    /// Standard deviation of the noise (gauge only).
    #[serde(default)]
    sigma: f64,
    /// Instrument resolution: values are rounded to a multiple of it, as a real gauge displays them.
    resolution: Option<f64>,
    /// Values a `cycle` tag steps through (e.g. lot numbers, part numbers, operators).
    #[serde(default)]
    values: Vec<String>,
    /// Samples per value of a `cycle` tag.
    #[serde(default = "hundred")]
    every: u64,
    #[serde(default)]
    disturbance: Vec<Disturbance>,
}

fn hundred() -> u64 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TagKind {
    /// A measured dimension: normal noise around `mean` with `sigma`.
    #[default]
    Gauge,
    /// A count per sample (e.g. rejects), Poisson with mean `mean`.
    Count,
    /// A text value that steps through `values` every `every` samples (context: lot, part, operator).
    Cycle,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disturbance {
    kind: DisturbanceKind,
    /// Sample index (0-based, counted per tag since start) at which the disturbance begins.
    start: u64,
    /// Number of samples it lasts; forever if absent.
    length: Option<u64>,
    /// shift: offset in sigmas; drift: sigmas per sample; spread: factor on sigma. Unused by stuck/dropout.
    #[serde(default)]
    magnitude: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DisturbanceKind {
    Shift,
    Drift,
    Spread,
    Stuck,
    Dropout,
}

impl Disturbance {
    fn active(&self, i: u64) -> bool {
        i >= self.start
            && self
                .length
                .is_none_or(|len| i < self.start.saturating_add(len))
    }
}

pub(crate) fn parse(name: &str, table: toml::Table) -> Result<Box<dyn Device>, Vec<ConfigIssue>> {
    let cfg: SimConfig = config::from_table(table).map_err(|e| vec![e])?;
    let mut issues = Vec::new();
    if cfg.interval.is_zero() {
        issues.push(ConfigIssue::new("interval", "must be greater than zero"));
    }
    if cfg.batch == 0 {
        issues.push(ConfigIssue::new("batch", "must be at least 1"));
    }
    if cfg.tag.is_empty() {
        issues.push(ConfigIssue::new(
            "tag",
            "a sim device needs at least one [[device.tag]]",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, tag) in cfg.tag.iter().enumerate() {
        if !seen.insert(tag.name.as_str()) {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].name"),
                format!("duplicate tag name `{}`", tag.name),
            ));
        }
        if !(tag.sigma >= 0.0 && tag.sigma.is_finite()) {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].sigma"),
                "must be a finite number >= 0",
            ));
        }
        if tag.kind == TagKind::Count && tag.mean < 0.0 {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].mean"),
                "a count's mean must be >= 0",
            ));
        }
        if tag.kind == TagKind::Cycle && tag.values.is_empty() {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].values"),
                "a cycle tag needs at least one value",
            ));
        }
        if tag.resolution.is_some_and(|r| r.is_nan() || r <= 0.0) {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].resolution"),
                "must be greater than zero",
            ));
        }
        if tag.every == 0 {
            issues.push(ConfigIssue::new(
                format!("tag[{i}].every"),
                "must be at least 1",
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Box::new(SimDevice {
        name: name.to_string(),
        cfg,
    }))
}

struct SimDevice {
    name: String,
    cfg: SimConfig,
}

impl Device for SimDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sim"
    }

    fn tags(&self) -> Vec<TagInfo> {
        self.cfg
            .tag
            .iter()
            .map(|t| TagInfo {
                name: t.name.clone(),
                unit: t.unit.clone(),
                numeric: t.kind != TagKind::Cycle,
                writable: false,
            })
            .collect()
    }

    fn run(self: Box<Self>, ctx: DeviceContext) -> DeviceFuture {
        Box::pin(run(*self, ctx))
    }
}

async fn run(dev: SimDevice, ctx: DeviceContext) {
    // Take the config apart: the task keeps only what sampling needs (one `TagSim` per tag), not the
    // parsed config beside it.
    let SimDevice { name, cfg } = dev;
    let SimConfig {
        interval,
        batch,
        seed,
        tag,
    } = cfg;
    let seed = seed.unwrap_or_else(|| name_seed(&name));
    let mut shared = Shared::new(Arc::from(name.as_str()));
    drop(name);
    let mut tags: Vec<TagSim> = tag
        .into_iter()
        .enumerate()
        .map(|(i, t)| TagSim::new(&mut shared, t, seed.wrapping_add(i as u64 * 0x9E37_79B9)))
        .collect();
    let step = interval / batch;
    let batch = batch as usize;
    let mut ticker = tokio::time::interval(interval);
    // A simulated line that fell behind catches up, like a gauge buffering its samples.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    ctx.metrics.set_state(DeviceState::Connected);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Utc::now();
        let mut out = Vec::with_capacity(tags.len() * batch);
        for k in 0..batch {
            let back = step * (batch - 1 - k) as u32;
            let ts = now - chrono::Duration::from_std(back).unwrap_or_default();
            for tag in tags.iter_mut() {
                out.push(tag.sample(&shared, ts));
            }
        }
        ctx.metrics
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if ctx.publish(out).await.is_err() {
            break;
        }
    }
    ctx.metrics.set_state(DeviceState::Stopped);
}

/// FNV-1a of the device name: a stable default seed.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the tags of one device share: the device name, the dropout reason and one allocation per
/// distinct unit, so a tag costs its own name and state only.
struct Shared {
    device: Arc<str>,
    dropout_reason: Arc<str>,
    units: Vec<Arc<str>>,
}

impl Shared {
    fn new(device: Arc<str>) -> Self {
        Shared {
            device,
            dropout_reason: Arc::from("sim: dropout (device did not answer)"),
            units: Vec::new(),
        }
    }

    fn unit(&mut self, unit: &str) -> Arc<str> {
        if let Some(u) = self.units.iter().find(|u| &***u == unit) {
            return u.clone();
        }
        let u: Arc<str> = Arc::from(unit);
        self.units.push(u.clone());
        u
    }
}

/// The sampling parameters of a tag (its `SimTag` less the name and unit, which readings carry as
/// shared `Arc<str>`s).
struct TagModel {
    kind: TagKind,
    mean: f64,
    sigma: f64,
    resolution: Option<f64>,
    values: Box<[Arc<str>]>,
    every: u64,
    disturbance: Box<[Disturbance]>,
}

/// One tag's sampling state; what all tags of the device share is passed in (`Shared`), not kept per tag.
struct TagSim {
    name: Arc<str>,
    unit: Option<Arc<str>>,
    cfg: TagModel,
    rng: fastrand::Rng,
    index: u64,
    last: Option<Value>,
}

impl TagSim {
    fn new(shared: &mut Shared, cfg: SimTag, seed: u64) -> Self {
        let SimTag {
            name,
            kind,
            unit,
            mean,
            sigma,
            resolution,
            values,
            every,
            disturbance,
        } = cfg;
        TagSim {
            name: Arc::from(name.as_str()),
            unit: unit.as_deref().map(|u| shared.unit(u)),
            cfg: TagModel {
                kind,
                mean,
                sigma,
                resolution,
                values: values.iter().map(|v| Arc::from(v.as_str())).collect(),
                every,
                disturbance: disturbance.into_boxed_slice(),
            },
            rng: fastrand::Rng::with_seed(seed),
            index: 0,
            last: None,
        }
    }

    fn sample(&mut self, shared: &Shared, ts: chrono::DateTime<Utc>) -> Reading {
        let i = self.index;
        self.index += 1;
        let active = |kind| {
            self.cfg
                .disturbance
                .iter()
                .filter(move |d| d.kind == kind && d.active(i))
        };
        if active(DisturbanceKind::Dropout).next().is_some() {
            return Reading::bad(
                &shared.device,
                &self.name,
                ts,
                shared.dropout_reason.clone(),
                self.unit.as_ref(),
            );
        }
        if active(DisturbanceKind::Stuck).next().is_some()
            && let Some(last) = &self.last
        {
            return Reading::good(
                &shared.device,
                &self.name,
                ts,
                last.clone(),
                self.unit.as_ref(),
            );
        }
        let value = match self.cfg.kind {
            TagKind::Cycle => {
                let n = self.cfg.values.len() as u64;
                let idx = ((i / self.cfg.every) % n) as usize;
                Value::Str(self.cfg.values[idx].clone())
            }
            TagKind::Gauge | TagKind::Count => {
                let base_sigma = if self.cfg.kind == TagKind::Count {
                    self.cfg.mean.max(0.0).sqrt()
                } else {
                    self.cfg.sigma
                };
                let mut mean = self.cfg.mean;
                let mut sigma = base_sigma;
                for d in active(DisturbanceKind::Shift) {
                    mean += d.magnitude * base_sigma;
                }
                for d in active(DisturbanceKind::Drift) {
                    mean += d.magnitude * base_sigma * (i - d.start + 1) as f64;
                }
                for d in active(DisturbanceKind::Spread) {
                    sigma *= d.magnitude;
                }
                if self.cfg.kind == TagKind::Count {
                    Value::I64(poisson(&mut self.rng, mean.max(0.0)))
                } else {
                    let mut x = mean + sigma * standard_normal(&mut self.rng);
                    if let Some(r) = self.cfg.resolution {
                        x = (x / r).round() * r;
                    }
                    Value::F64(x)
                }
            }
        };
        self.last = Some(value.clone());
        Reading::good(&shared.device, &self.name, ts, value, self.unit.as_ref())
    }
}

/// Box-Muller transform.
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln is finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Knuth's method for small means, normal approximation above 30.
fn poisson(rng: &mut fastrand::Rng, lambda: f64) -> i64 {
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * standard_normal(rng))
            .round()
            .max(0.0) as i64;
    }
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.f64();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag with the device's shared part.
    struct OneTag {
        shared: Shared,
        sim: TagSim,
    }

    impl OneTag {
        fn sample(&mut self, ts: chrono::DateTime<Utc>) -> Reading {
            self.sim.sample(&self.shared, ts)
        }
    }

    fn tag(toml_text: &str) -> OneTag {
        let cfg: SimTag = toml::from_str(toml_text).unwrap();
        let mut shared = Shared::new(Arc::from("d"));
        let sim = TagSim::new(&mut shared, cfg, 1);
        OneTag { shared, sim }
    }

    fn values(t: &mut OneTag, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                t.sample(Utc::now())
                    .value
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::NAN)
            })
            .collect()
    }

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    fn sd(xs: &[f64]) -> f64 {
        let m = mean(xs);
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
    }

    #[test]
    fn gauge_noise_has_the_configured_mean_and_sigma() {
        let mut t = tag("name='x'\nmean=10.0\nsigma=0.5\n");
        let xs = values(&mut t, 20_000);
        assert!((mean(&xs) - 10.0).abs() < 0.02, "{}", mean(&xs));
        assert!((sd(&xs) - 0.5).abs() < 0.02, "{}", sd(&xs));
    }

    #[test]
    fn disturbances_follow_the_schedule() {
        let mut t = tag("name='x'\nmean=0.0\nsigma=1.0\n\
             [[disturbance]]\nkind='shift'\nstart=1000\nlength=1000\nmagnitude=3.0\n\
             [[disturbance]]\nkind='spread'\nstart=2000\nlength=1000\nmagnitude=4.0\n\
             [[disturbance]]\nkind='stuck'\nstart=3000\nlength=10\n\
             [[disturbance]]\nkind='dropout'\nstart=3010\nlength=5\n\
             [[disturbance]]\nkind='drift'\nstart=3015\nlength=100\nmagnitude=0.5\n");
        let xs = values(&mut t, 3115);
        assert!(mean(&xs[..1000]).abs() < 0.15);
        assert!(
            (mean(&xs[1000..2000]) - 3.0).abs() < 0.15,
            "shift by 3 sigma"
        );
        assert!((sd(&xs[2000..3000]) - 4.0).abs() < 0.3, "spread x4");
        assert!(
            xs[3000..3010].iter().all(|x| *x == xs[2999]),
            "stuck at the last value"
        );
        assert!(
            xs[3010..3015].iter().all(|x| x.is_nan()),
            "dropout gives no value"
        );
        assert!(
            mean(&xs[3105..3115]) > 40.0,
            "drift of 0.5 sigma per sample reaches ~50 after 100"
        );
    }

    #[test]
    fn resolution_rounds_like_a_display() {
        let mut t = tag("name='x'\nmean=74.0\nsigma=0.01\nresolution=0.001\n");
        for x in values(&mut t, 100) {
            assert!(((x * 1000.0).round() - x * 1000.0).abs() < 1e-6);
        }
    }

    #[test]
    fn cycle_and_count_tags() {
        let mut t = tag("name='lot'\nkind='cycle'\nvalues=['A','B']\nevery=2\n");
        let v: Vec<_> = (0..5).map(|_| t.sample(Utc::now()).value).collect();
        assert_eq!(v[0], Some(Value::Str("A".into())));
        assert_eq!(v[2], Some(Value::Str("B".into())));
        assert_eq!(v[4], Some(Value::Str("A".into())));
        let mut c = tag("name='rejects'\nkind='count'\nmean=4.0\n");
        let xs = values(&mut c, 10_000);
        assert!((mean(&xs) - 4.0).abs() < 0.1);
    }

    #[test]
    fn bad_config_is_reported_with_paths() {
        let table: toml::Table =
            toml::from_str("interval='0s'\n[[tag]]\nname='a'\nsigma=-1.0\n[[tag]]\nname='a'\n")
                .unwrap();
        let issues = parse("d", table).err().unwrap();
        let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["interval", "tag[0].sigma", "tag[1].name"]);
    }

    #[test]
    fn a_tag_keeps_only_its_name_and_sampling_state() {
        // Per configured tag the task holds one `TagSim` (152 bytes on 64-bit: name, unit, the
        // model, rng, index, last value): no copy of the parsed `SimTag` (name and unit strings)
        // beside it, no device name or dropout reason per tag.
        assert!(
            std::mem::size_of::<TagSim>() <= 152,
            "TagSim grew to {} bytes",
            std::mem::size_of::<TagSim>()
        );
        let mut shared = Shared::new(Arc::from("d"));
        let a: SimTag = toml::from_str("name='a'\nunit='mm'\n").unwrap();
        let b: SimTag = toml::from_str("name='b'\nunit='mm'\n").unwrap();
        let (mut a, mut b) = (
            TagSim::new(&mut shared, a, 1),
            TagSim::new(&mut shared, b, 2),
        );
        let (ra, rb) = (a.sample(&shared, Utc::now()), b.sample(&shared, Utc::now()));
        assert!(Arc::ptr_eq(&ra.device, &rb.device));
        assert!(!Arc::ptr_eq(&ra.tag, &rb.tag));
        let (Some(ua), Some(ub)) = (&ra.unit, &rb.unit) else {
            panic!("units kept");
        };
        assert!(Arc::ptr_eq(ua, ub), "one allocation per distinct unit");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn runs_and_publishes_until_shutdown() {
        let table: toml::Table =
            toml::from_str("interval='100ms'\nbatch=2\n[[tag]]\nname='a'\nmean=1.0\n").unwrap();
        let dev = parse("d", table).unwrap();
        let (sink, rx) = crate::ReadingSink::bounded(16);
        let ctx = DeviceContext {
            sink,
            metrics: Arc::new(crate::DeviceMetrics::new("d", "sim")),
            shutdown: tokio_util::sync::CancellationToken::new(),
            state_dir: std::env::temp_dir(),
        };
        let stop = ctx.shutdown.clone();
        let metrics = ctx.metrics.clone();
        let task = tokio::spawn(dev.run(ctx));
        tokio::time::sleep(Duration::from_millis(350)).await;
        stop.cancel();
        task.await.unwrap();
        let batches: Vec<_> = rx.drain().collect();
        assert_eq!(batches.len(), 4, "ticks at 0, 100, 200, 300 ms");
        assert!(batches.iter().all(|b| b.len() == 2));
        assert_eq!(
            metrics.readings.load(std::sync::atomic::Ordering::Relaxed),
            8
        );
        assert_eq!(metrics.state(), DeviceState::Stopped);
    }
}
