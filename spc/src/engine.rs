//! [`Characteristic`]: the streaming engine for one `[[characteristic]]`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::capability::{self, Capability};
use crate::chart::{self, ChartConfig, Core, Emit, Record, Spread};
use crate::constants;
use crate::output::{
    Context, FrozenLimits, IgnoreReason, Ignored, Limits, OutOfSpec, Output, SpecSide,
};
use crate::rules::{self, Scope};
use crate::snapshot::{PartitionSnap, SNAPSHOT_VERSION, Snapshot, SnapshotError, limits_ok};
use crate::spec::{
    CharacteristicSpec, ChartType, CusumSpec, DEFAULT_BASELINE, DEFAULT_CAPABILITY_WINDOW,
    EwmaSpec, SpecIssue, parse_duration_micros,
};

/// One reading handed to the engine. The agent passes only good-quality readings, in store order.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The store's sequence number of the reading.
    pub seq: u64,
    /// The reading's timestamp, Unix microseconds (only used for time-window subgroups).
    pub ts_micros: i64,
    /// The measured value, or for attribute charts the count (nonconforming units for p/np,
    /// nonconformities for c/u).
    pub value: f64,
    /// Attribute charts p/u: this sample's size (from `sample_size_source`); None uses the spec's
    /// fixed `sample_size`.
    pub size: Option<f64>,
    /// Values of the spec's `context` keys, in that order; missing trailing values count as None,
    /// extra values are ignored.
    pub context: &'a [Option<&'a str>],
}

impl<'a> Observation<'a> {
    /// An observation without context or sample size.
    pub fn new(seq: u64, ts_micros: i64, value: f64) -> Self {
        Observation {
            seq,
            ts_micros,
            value,
            size: None,
            context: &[],
        }
    }
}

/// Why [`Characteristic::recalculate`] or [`Characteristic::restore_limits`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsError {
    /// The characteristic has fixed limits from its configuration.
    FixedLimits,
    /// Fewer than two subgroups, or no spread, in the window to compute from.
    NotEnoughData,
    /// Persisted limits of the wrong kind or with invalid values for this chart.
    Incompatible(String),
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitsError::FixedLimits => f.write_str("the characteristic has fixed limits"),
            LimitsError::NotEnoughData => f.write_str("not enough data to compute limits"),
            LimitsError::Incompatible(m) => write!(f, "incompatible limits: {m}"),
        }
    }
}

impl std::error::Error for LimitsError {}

/// The open (not yet plotted) subgroup.
#[derive(Debug, Clone)]
struct Open {
    vals: [f64; constants::MAX_N],
    len: usize,
    seq_first: u64,
    seq: u64,
    ts_micros: i64,
    /// Index of the time window (ts / window) the subgroup belongs to.
    window: i64,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            vals: [0.0; constants::MAX_N],
            len: 0,
            seq_first: 0,
            seq: 0,
            ts_micros: 0,
            window: 0,
        }
    }
}

/// One chart: the whole characteristic, or one value of its `chart_per` key.
#[derive(Debug, Clone)]
struct Partition {
    key: Option<Arc<str>>,
    ctx: Context,
    open: Open,
    /// Previous individual value (moving ranges).
    prev_x: Option<f64>,
    core: Core,
    /// The most recent subgroups, up to the baseline size (phase I, and recalculation).
    history: VecDeque<(Record, Context)>,
    cap: VecDeque<Spread>,
}

/// Derived, validated configuration.
#[derive(Debug, Clone)]
struct Config {
    chart: ChartConfig,
    window_us: Option<i64>,
    usl: Option<f64>,
    lsl: Option<f64>,
    target: Option<f64>,
    fixed: Option<Limits>,
    baseline: usize,
    exclude: bool,
    sample_size: Option<f64>,
    cap_window: usize,
    partition_index: Option<usize>,
    keys: Arc<[String]>,
}

/// The streaming SPC engine for one characteristic: deterministic, no I/O, no clock.
#[derive(Debug, Clone)]
pub struct Characteristic {
    spec: CharacteristicSpec,
    cfg: Config,
    parts: Vec<Partition>,
    by_key: HashMap<Arc<str>, usize>,
    no_key: Option<usize>,
    last: usize,
    last_seq: Option<u64>,
}

impl Characteristic {
    /// Validate the spec and build the engine.
    pub fn new(spec: CharacteristicSpec) -> Result<Self, Vec<SpecIssue>> {
        let issues = spec.validate();
        if !issues.is_empty() {
            return Err(issues);
        }
        let cfg = Config::from_spec(&spec);
        let mut c = Characteristic {
            spec,
            cfg,
            parts: Vec::new(),
            by_key: HashMap::new(),
            no_key: None,
            last: 0,
            last_seq: None,
        };
        if c.cfg.partition_index.is_none() {
            c.no_key = Some(c.new_partition(None, &[]));
        }
        Ok(c)
    }

    pub fn spec(&self) -> &CharacteristicSpec {
        &self.spec
    }

    /// Feed one observation; results are appended to `out` (not cleared). Constant work and no
    /// allocation per observation, except when a context value changes, a new `chart_per` value
    /// appears, or the limits freeze (the baseline and capability windows grow to their
    /// configured size once, then recycle their space).
    pub fn push(&mut self, obs: Observation<'_>, out: &mut Vec<Output>) {
        self.last_seq = Some(self.last_seq.map_or(obs.seq, |s| s.max(obs.seq)));
        if !obs.value.is_finite() {
            return ignore(out, obs.seq, obs.seq, IgnoreReason::NotFinite);
        }
        let kind = self.cfg.chart.kind;
        let mut size = 1.0;
        if kind.is_attribute() {
            match self.check_count(&obs) {
                Ok(s) => size = s,
                Err(r) => return ignore(out, obs.seq, obs.seq, r),
            }
        }
        let pi = self.partition_for(&obs);
        let cfg = &self.cfg;
        let Some(part) = self.parts.get_mut(pi) else {
            return;
        };
        if !part.ctx.matches(obs.context) {
            close(cfg, part, out);
            part.ctx = Context::new(cfg.keys.clone(), obs.context, cfg.partition_index);
        }
        if !kind.is_attribute() {
            out_of_spec(cfg, &obs, &part.ctx, out);
        }
        if cfg.chart.n == 1 {
            let mr = part.prev_x.map(|p| (obs.value - p).abs());
            part.prev_x = Some(obs.value);
            let rec = Record {
                seq_first: obs.seq,
                seq: obs.seq,
                ts_micros: obs.ts_micros,
                n: 1,
                mean: obs.value,
                range: 0.0,
                sd: 0.0,
                mr,
                size,
            };
            return plot_record(cfg, part, rec, out);
        }
        if let Some(w) = cfg.window_us {
            let win = obs.ts_micros.div_euclid(w);
            // A reading older than the open window (clock skew) joins the open window.
            if part.open.len > 0 && win > part.open.window {
                close(cfg, part, out);
            }
            if part.open.len == 0 {
                part.open.window = win;
            }
        }
        let o = &mut part.open;
        if o.len == 0 {
            o.seq_first = obs.seq;
        }
        if let Some(slot) = o.vals.get_mut(o.len) {
            *slot = obs.value;
            o.len += 1;
        }
        o.seq = obs.seq;
        o.ts_micros = obs.ts_micros;
        if o.len >= cfg.chart.n {
            close(cfg, part, out);
        }
    }

    /// Validate an attribute observation; returns its sample size.
    fn check_count(&self, obs: &Observation<'_>) -> Result<f64, IgnoreReason> {
        let v = obs.value;
        if v < 0.0 || v.fract() != 0.0 {
            return Err(IgnoreReason::NotACount);
        }
        match self.cfg.chart.kind {
            ChartType::C => Ok(1.0),
            ChartType::Np => {
                if v > self.cfg.chart.np_size {
                    return Err(IgnoreReason::CountExceedsSampleSize);
                }
                Ok(self.cfg.chart.np_size)
            }
            kind => {
                let n = obs
                    .size
                    .or(self.cfg.sample_size)
                    .ok_or(IgnoreReason::NoSampleSize)?;
                if !(n.is_finite() && n > 0.0) || (kind == ChartType::P && n.fract() != 0.0) {
                    return Err(IgnoreReason::BadSampleSize);
                }
                if kind == ChartType::P && v > n {
                    return Err(IgnoreReason::CountExceedsSampleSize);
                }
                Ok(n)
            }
        }
    }

    fn partition_for(&mut self, obs: &Observation<'_>) -> usize {
        let Some(pi) = self.cfg.partition_index else {
            return 0;
        };
        let value = obs.context.get(pi).copied().flatten();
        if let Some(p) = self.parts.get(self.last)
            && p.key.as_deref() == value
        {
            return self.last;
        }
        let found = match value {
            None => self.no_key,
            Some(v) => self.by_key.get(v).copied(),
        };
        let idx = match found {
            Some(i) => i,
            None => {
                let key: Option<Arc<str>> = value.map(Arc::from);
                let i = self.new_partition(key.clone(), obs.context);
                match key {
                    Some(k) => {
                        self.by_key.insert(k, i);
                    }
                    None => self.no_key = Some(i),
                }
                i
            }
        };
        self.last = idx;
        idx
    }

    fn new_partition(&mut self, key: Option<Arc<str>>, context: &[Option<&str>]) -> usize {
        let mut core = Core {
            limits: self.cfg.fixed,
            ..Core::default()
        };
        core.reset(&self.cfg.chart);
        self.parts.push(Partition {
            key,
            ctx: Context::new(self.cfg.keys.clone(), context, self.cfg.partition_index),
            open: Open::default(),
            prev_x: None,
            core,
            history: VecDeque::new(),
            cap: VecDeque::new(),
        });
        self.parts.len() - 1
    }

    /// Recompute the limits now from the most recent subgroups (up to the baseline size) of every
    /// chart of this characteristic, emit [`Output::LimitsFrozen`] for each, and continue in
    /// phase II with the new limits. The run-rule state is rebuilt silently from those subgroups.
    /// Charts without enough data keep their state. Returns how many charts got new limits.
    ///
    /// Like an observation, a recalculation is an input: to replay deterministically, the agent
    /// records it at its position among the readings.
    pub fn recalculate(&mut self, out: &mut Vec<Output>) -> Result<usize, LimitsError> {
        if self.cfg.fixed.is_some() {
            return Err(LimitsError::FixedLimits);
        }
        let mut done = 0;
        for part in &mut self.parts {
            if freeze(&self.cfg, part, Emit::Nothing, out) {
                done += 1;
            }
        }
        if done == 0 {
            Err(LimitsError::NotEnoughData)
        } else {
            Ok(done)
        }
    }

    /// Start the chart of `limits.partition` in phase II with persisted limits (e.g. after a
    /// restart), replacing computed or fixed limits. Its rule state starts afresh.
    pub fn restore_limits(&mut self, limits: &FrozenLimits) -> Result<(), LimitsError> {
        let ok_kind = matches!(
            (self.cfg.chart.kind, limits.limits),
            (
                ChartType::IMr
                    | ChartType::XbarR
                    | ChartType::XbarS
                    | ChartType::Ewma
                    | ChartType::Cusum,
                Limits::Variables { .. }
            ) | (ChartType::P | ChartType::Np, Limits::Proportion { .. })
                | (ChartType::C | ChartType::U, Limits::Rate { .. })
        );
        if !ok_kind {
            return Err(LimitsError::Incompatible(format!(
                "{:?} limits for chart \"{}\"",
                limits.limits, self.cfg.chart.kind
            )));
        }
        if !limits.limits.is_valid() {
            return Err(LimitsError::Incompatible(
                "non-finite or non-positive values".into(),
            ));
        }
        if limits.partition.is_some() && self.cfg.partition_index.is_none() {
            return Err(LimitsError::Incompatible(
                "the characteristic has no chart_per".into(),
            ));
        }
        let idx = match &limits.partition {
            None => match self.no_key {
                Some(i) => i,
                None => {
                    let i = self.new_partition(None, &[]);
                    self.no_key = Some(i);
                    i
                }
            },
            Some(k) => match self.by_key.get(k.as_str()) {
                Some(&i) => i,
                None => {
                    let key: Arc<str> = Arc::from(k.as_str());
                    let mut ctx: Vec<Option<&str>> = vec![None; self.cfg.keys.len()];
                    if let Some(pi) = self.cfg.partition_index
                        && let Some(slot) = ctx.get_mut(pi)
                    {
                        *slot = Some(k.as_str());
                    }
                    let i = self.new_partition(Some(key.clone()), &ctx);
                    self.by_key.insert(key, i);
                    i
                }
            },
        };
        if let Some(part) = self.parts.get_mut(idx) {
            part.core.limits = Some(limits.limits);
            part.core.reset(&self.cfg.chart);
        }
        Ok(())
    }

    /// The current limits of the chart for `partition` (None: still collecting the baseline, or
    /// no such chart).
    pub fn limits(&self, partition: Option<&str>) -> Option<Limits> {
        self.part(partition)?.core.limits
    }

    /// The `chart_per` values seen so far (None for the characteristic's single chart).
    pub fn partitions(&self) -> impl Iterator<Item = Option<&str>> {
        self.parts.iter().map(|p| p.key.as_deref())
    }

    /// Process capability over the capability window of the chart for `partition`; None for
    /// attribute charts, an unknown partition, or an empty window.
    pub fn capability(&self, partition: Option<&str>) -> Option<Capability> {
        if self.cfg.chart.kind.is_attribute() {
            return None;
        }
        let p = self.part(partition)?;
        capability::compute(
            self.cfg.chart.kind,
            self.cfg.chart.n,
            p.cap.iter(),
            self.cfg.usl,
            self.cfg.lsl,
            self.cfg.target,
        )
    }

    /// The highest sequence number pushed so far.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The whole state, to persist and restore with [`Characteristic::from_snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            spec: self.spec.clone(),
            last_seq: self.last_seq,
            partitions: self
                .parts
                .iter()
                .map(|p| PartitionSnap {
                    key: p.key.as_deref().map(str::to_string),
                    ctx: p.ctx.values(),
                    open: p.open.vals.get(..p.open.len).unwrap_or(&[]).to_vec(),
                    open_seq_first: p.open.seq_first,
                    open_seq: p.open.seq,
                    open_ts_micros: p.open.ts_micros,
                    open_window: p.open.window,
                    prev_x: p.prev_x,
                    core: p.core.clone(),
                    history: p
                        .history
                        .iter()
                        .map(|(r, c)| (r.clone(), c.values()))
                        .collect(),
                    cap: p.cap.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// Rebuild an engine from a snapshot taken with the same spec. Replaying the readings after
    /// [`Snapshot::last_seq`] then yields exactly what the engine would have produced without
    /// the interruption.
    pub fn from_snapshot(spec: CharacteristicSpec, snap: &Snapshot) -> Result<Self, SnapshotError> {
        if snap.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(snap.version));
        }
        if snap.spec != spec {
            return Err(SnapshotError::SpecChanged);
        }
        let mut c = Characteristic::new(spec).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
            SnapshotError::Invalid(format!("spec: {}", text.join("; ")))
        })?;
        c.parts.clear();
        c.no_key = None;
        c.last_seq = snap.last_seq;
        let keys = c.cfg.keys.clone();
        let pi = c.cfg.partition_index;
        let ctx_of = |v: &[Option<String>]| -> Result<Context, SnapshotError> {
            if v.len() != keys.len() {
                return Err(SnapshotError::Invalid(
                    "context values do not match the keys".into(),
                ));
            }
            let refs: Vec<Option<&str>> = v.iter().map(|x| x.as_deref()).collect();
            Ok(Context::new(keys.clone(), &refs, pi))
        };
        for p in &snap.partitions {
            if p.open.len() >= c.cfg.chart.n.max(2) || !limits_ok(&p.core.limits) {
                return Err(SnapshotError::Invalid("state does not fit the spec".into()));
            }
            if p.key.is_some() && pi.is_none() {
                return Err(SnapshotError::Invalid("chart_per does not match".into()));
            }
            let mut open = Open {
                len: p.open.len(),
                seq_first: p.open_seq_first,
                seq: p.open_seq,
                ts_micros: p.open_ts_micros,
                window: p.open_window,
                ..Open::default()
            };
            for (slot, v) in open.vals.iter_mut().zip(&p.open) {
                *slot = *v;
            }
            // Consecutive records usually share a context: share the allocation too.
            let mut history: VecDeque<(Record, Context)> = VecDeque::with_capacity(p.history.len());
            for (r, v) in &p.history {
                let ctx = match history.back() {
                    Some((_, prev)) if prev.values() == *v => prev.clone(),
                    _ => ctx_of(v)?,
                };
                history.push_back((r.clone(), ctx));
            }
            let key: Option<Arc<str>> = p.key.as_deref().map(Arc::from);
            let idx = c.parts.len();
            match &key {
                Some(k) => {
                    c.by_key.insert(k.clone(), idx);
                }
                None => c.no_key = Some(idx),
            }
            c.parts.push(Partition {
                key,
                ctx: ctx_of(&p.ctx)?,
                open,
                prev_x: p.prev_x,
                core: p.core.clone(),
                history,
                cap: p.cap.iter().copied().collect(),
            });
        }
        if c.cfg.partition_index.is_none() && c.no_key.is_none() {
            c.no_key = Some(c.new_partition(None, &[]));
        }
        Ok(c)
    }

    fn part(&self, partition: Option<&str>) -> Option<&Partition> {
        let i = match partition {
            None => self.no_key?,
            Some(k) => *self.by_key.get(k)?,
        };
        self.parts.get(i)
    }
}

fn ignore(out: &mut Vec<Output>, seq_first: u64, seq: u64, reason: IgnoreReason) {
    out.push(Output::Ignored(Ignored {
        seq_first,
        seq,
        reason,
    }));
}

fn out_of_spec(cfg: &Config, obs: &Observation<'_>, ctx: &Context, out: &mut Vec<Output>) {
    let side = match (cfg.usl, cfg.lsl) {
        (Some(u), _) if obs.value > u => Some((SpecSide::AboveUsl, u)),
        (_, Some(l)) if obs.value < l => Some((SpecSide::BelowLsl, l)),
        _ => None,
    };
    if let Some((side, limit)) = side {
        out.push(Output::OutOfSpec(OutOfSpec {
            seq: obs.seq,
            ts_micros: obs.ts_micros,
            value: obs.value,
            side,
            limit,
            context: ctx.clone(),
        }));
    }
}

/// Close the open subgroup, if any, and plot it.
fn close(cfg: &Config, part: &mut Partition, out: &mut Vec<Output>) {
    let o = &part.open;
    if o.len == 0 {
        return;
    }
    let (seq_first, seq, ts) = (o.seq_first, o.seq, o.ts_micros);
    let vals = o.vals.get(..o.len).unwrap_or(&[]);
    let count = vals.len();
    let n = count as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let (mut lo, mut hi, mut ss) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
        ss += (v - mean) * (v - mean);
    }
    part.open.len = 0;
    if count < 2 {
        return ignore(out, seq_first, seq, IgnoreReason::SubgroupOfOne);
    }
    let rec = Record {
        seq_first,
        seq,
        ts_micros: ts,
        n: count as u32,
        mean,
        range: hi - lo,
        sd: (ss / (n - 1.0)).sqrt(),
        mr: None,
        size: 1.0,
    };
    plot_record(cfg, part, rec, out);
}

/// Plot a closed subgroup, keep it for the capability window and the baseline, and freeze the
/// limits when the baseline is complete.
fn plot_record(cfg: &Config, part: &mut Partition, rec: Record, out: &mut Vec<Output>) {
    if cfg.cap_window > 0 && !cfg.chart.kind.is_attribute() {
        if part.cap.len() >= cfg.cap_window {
            part.cap.pop_front();
        }
        part.cap.push_back(rec.spread());
    }
    part.core.plot(&cfg.chart, &rec, &part.ctx, Emit::All, out);
    if cfg.baseline == 0 {
        return;
    }
    if part.history.len() >= cfg.baseline {
        part.history.pop_front();
    }
    part.history.push_back((rec, part.ctx.clone()));
    if part.core.limits.is_none() && part.history.len() >= cfg.baseline {
        freeze(cfg, part, Emit::All, out);
    }
}

/// Compute limits from the history, emit them, and re-plot the history against them (emitting
/// points and violations for a first freeze, silently after a recalculation).
fn freeze(cfg: &Config, part: &mut Partition, emit: Emit, out: &mut Vec<Output>) -> bool {
    let recs: Vec<&Record> = part.history.iter().map(|(r, _)| r).collect();
    let Some((limits, excluded)) = chart::baseline_limits(&cfg.chart, &recs, cfg.exclude) else {
        return false;
    };
    let (first, last) = match (recs.first(), recs.last()) {
        (Some(f), Some(l)) => (f.seq_first, l.seq),
        _ => return false,
    };
    out.push(Output::LimitsFrozen(FrozenLimits {
        partition: part.key.as_deref().map(str::to_string),
        limits,
        subgroups: recs.len() as u32,
        excluded: excluded as u32,
        seq_first: first,
        seq_last: last,
    }));
    part.core.limits = Some(limits);
    part.core.reset(&cfg.chart);
    for (rec, ctx) in &part.history {
        part.core.plot(&cfg.chart, rec, ctx, emit, out);
    }
    true
}

impl Config {
    fn from_spec(spec: &CharacteristicSpec) -> Config {
        let kind = spec.chart;
        let n = match kind {
            ChartType::XbarR | ChartType::XbarS | ChartType::Ewma | ChartType::Cusum => {
                spec.subgroup_size.unwrap_or(1) as usize
            }
            _ => 1,
        };
        let all = rules::active_rules(spec.rules, &spec.rule);
        let (prim, disp) = match kind {
            ChartType::Ewma | ChartType::Cusum => (
                rules::scoped(&all, Scope::BeyondOnly),
                rules::scoped(&all, Scope::BeyondOnly),
            ),
            _ => (
                rules::scoped(&all, Scope::All),
                rules::scoped(&all, Scope::Dispersion),
            ),
        };
        let ewma = spec.ewma.unwrap_or_default();
        let cusum = spec.cusum.unwrap_or_default();
        let EwmaSpec { lambda, l } = ewma;
        let CusumSpec {
            k,
            h,
            head_start,
            reset_after_signal,
        } = cusum;
        let np_size = spec.sample_size.unwrap_or(1.0);
        let fixed = fixed_limits(spec, n, np_size);
        Config {
            chart: ChartConfig {
                kind,
                n,
                prim_rules: prim,
                disp_rules: disp,
                lambda,
                l,
                k,
                h,
                head_start,
                reset_after_signal,
                np_size,
            },
            window_us: spec
                .subgroup_window
                .as_deref()
                .and_then(|w| parse_duration_micros(w).ok()),
            usl: spec.usl,
            lsl: spec.lsl,
            target: spec.target,
            baseline: if fixed.is_some() {
                0
            } else {
                spec.limits.baseline.unwrap_or(DEFAULT_BASELINE) as usize
            },
            fixed,
            exclude: spec.limits.exclude_out_of_control,
            sample_size: spec.sample_size,
            cap_window: spec.capability_window.unwrap_or(DEFAULT_CAPABILITY_WINDOW) as usize,
            partition_index: spec
                .chart_per
                .as_ref()
                .and_then(|p| spec.context.iter().position(|k| k == p)),
            keys: spec.context.to_vec().into(),
        }
    }
}

/// Fixed limits from a validated spec.
fn fixed_limits(spec: &CharacteristicSpec, n: usize, np_size: f64) -> Option<Limits> {
    let l = &spec.limits;
    match spec.chart {
        ChartType::P => l.centre.map(|p_bar| Limits::Proportion { p_bar }),
        ChartType::Np => l.centre.map(|c| Limits::Proportion { p_bar: c / np_size }),
        ChartType::C | ChartType::U => l.centre.map(|c_bar| Limits::Rate { c_bar }),
        _ => {
            if let (Some(centre), Some(sigma)) = (l.centre, l.sigma) {
                return Some(Limits::Variables {
                    centre,
                    sigma_upper: sigma,
                    sigma_lower: sigma,
                });
            }
            let (ucl, lcl) = (l.ucl?, l.lcl?);
            let centre = l.centre.unwrap_or(0.5 * (ucl + lcl));
            let sq = (n as f64).sqrt();
            Some(Limits::Variables {
                centre,
                sigma_upper: (ucl - centre) / 3.0 * sq,
                sigma_lower: (centre - lcl) / 3.0 * sq,
            })
        }
    }
}
