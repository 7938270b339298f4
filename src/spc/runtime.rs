//! The SPC task: feeds committed readings to the engines in store order and turns their outputs into
//! stored alarm events and published messages.
//!
//! Position: `position` is the highest reading seq processed. Batches come from the store's broadcast;
//! whenever a batch does not follow on from `position` (the broadcast lagged, or the task started
//! after the readings were committed) the missing readings are read back from the store first, so no
//! reading is skipped and none is processed twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use lineside_drivers::device::ErrorBurst;
use lineside_drivers::{Reading, Value};
use lineside_spc::spec::MAX_CONTEXT_KEYS;
use lineside_spc::{Characteristic, CharacteristicSpec, FrozenLimits, Observation, Output};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SpcTopics;
use super::alarms::{self, ActiveAlarm, ActiveSet};
use super::commands::{self, Request};
use super::context::{Inputs, Router};
use super::messages;
use super::persist::{self, CharState, State};
use crate::bus::{Command, CommandReceiver, SidePublish};
use crate::config::CharacteristicConfig;
use crate::store::{Committed, CommittedBatch, Store, StoreReader};
use crate::timefmt::rfc3339;

mod reconfigure;
pub use reconfigure::{Changes, SpcControl};

/// Readings read back from the store per query.
const CHUNK: usize = 5000;
/// How often the state is persisted (and at shutdown, and after a recalculation).
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// How long shutdown waits for the forwarder to take the last messages from the side channel.
const SIDE_DRAIN: Duration = Duration::from_secs(1);

/// Everything the SPC task needs; `run` consumes it.
pub struct Spc {
    chars: Vec<CharacteristicConfig>,
    store: Arc<Store>,
    batches: broadcast::Receiver<Arc<CommittedBatch>>,
    side: mpsc::Sender<SidePublish>,
    commands: CommandReceiver,
    topics: SpcTopics,
    state_path: PathBuf,
    /// What the store held when SPC was created: without a usable state, that is history, replayed
    /// silently; everything after it is new and alarms.
    start_head: Committed,
    /// New sets of characteristics from a config reload (see [`SpcControl`]).
    reconfig: mpsc::Receiver<reconfigure::Request>,
    /// Handed out by [`Spc::control`]; dropped when the task starts, so the channel closes with the
    /// last control.
    reconfig_tx: Option<mpsc::Sender<reconfigure::Request>>,
}

impl Spc {
    /// Subscribes to committed batches at once, so nothing committed from now on is missed. Create it
    /// before the devices start.
    pub fn new(
        characteristics: Vec<CharacteristicConfig>,
        store: Arc<Store>,
        side: mpsc::Sender<SidePublish>,
        commands: CommandReceiver,
        topics: SpcTopics,
        state_dir: &std::path::Path,
    ) -> Spc {
        let (reconfig_tx, reconfig) = mpsc::channel(4);
        Spc {
            reconfig,
            reconfig_tx: Some(reconfig_tx),
            chars: characteristics,
            batches: store.subscribe(),
            start_head: *store.watch_committed().borrow(),
            store,
            side,
            commands,
            topics,
            state_path: persist::state_path(state_dir),
        }
    }

    /// A handle to change the characteristics while the task runs (config reload). Take it before
    /// `run`.
    pub fn control(&self) -> SpcControl {
        SpcControl(self.reconfig_tx.clone())
    }

    /// Runs until `stop`; then processes everything the store committed, persists the state and lets
    /// the forwarder take the last messages. Stop it after the final store flush and before the
    /// forwarder.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        let result = self.run_inner(stop).await;
        if let Err(e) = &result {
            // Said at once: the agent only collects the task's result at shutdown.
            tracing::error!(
                error = format!("{e:#}"),
                "SPC stopped: no SPC alarms until a restart"
            );
        }
        result
    }

    async fn run_inner(mut self, stop: CancellationToken) -> Result<()> {
        self.reconfig_tx = None;
        let reader = self.store.reader().context("SPC: opening a store reader")?;
        let mut rt = Runtime::start(&self, reader).await?;
        let head = self.store.watch_committed().borrow().readings;
        rt.catch_up(head, Some(&stop)).await?;
        if rt.position < head && stop.is_cancelled() {
            return Ok(()); // stopped during the start-up replay: nothing new to save
        }
        rt.finish_replay();
        rt.publish_retained(true);
        rt.save().await;
        tracing::info!(
            characteristics = rt.chars.len(),
            position = rt.position,
            "SPC running"
        );

        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_save = Instant::now() + SAVE_EVERY;
        let mut commands_open = true;
        let mut reconfig_open = true;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                b = self.batches.recv() => match b {
                    Ok(batch) => rt.on_batch(&batch).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Missed batches are read back from the store (here, or at the next batch).
                        rt.stats.lagged += n;
                        tracing::debug!(missed_batches = n, "SPC fell behind; reading back from the store");
                        let head = self.store.watch_committed().borrow().readings;
                        if let Err(e) = rt.catch_up(head, None).await {
                            rt.read_error(&e);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(cmd) => rt.on_command(cmd).await,
                    None => commands_open = false,
                },
                req = self.reconfig.recv(), if reconfig_open => match req {
                    Some(req) => rt.reconfigure(req, &stop).await,
                    None => reconfig_open = false,
                },
                _ = tick.tick() => {
                    rt.publish_due_capability();
                    rt.publish_retained(false);
                    if Instant::now() >= next_save {
                        rt.save().await;
                        next_save = Instant::now() + SAVE_EVERY;
                    }
                }
            }
        }
        // The agent flushed the store before stopping us: take everything it committed.
        let head = self.store.watch_committed().borrow().readings;
        if let Err(e) = rt.catch_up(head, None).await {
            rt.read_error(&e);
        }
        rt.publish_retained(false);
        rt.save().await;
        drain_side(&rt.side).await;
        rt.stats.log();
        Ok(())
    }
}

/// Counters, logged at shutdown.
#[derive(Debug, Default)]
struct Stats {
    pushed: u64,
    skipped_quality: u64,
    skipped_not_numeric: u64,
    ignored: u64,
    points_published: u64,
    points_dropped: u64,
    alarms: u64,
    duplicates_dropped: u64,
    lagged: u64,
}

impl Stats {
    fn log(&self) {
        tracing::info!(
            pushed = self.pushed,
            skipped_quality = self.skipped_quality,
            skipped_not_numeric = self.skipped_not_numeric,
            ignored = self.ignored,
            points_published = self.points_published,
            points_dropped = self.points_dropped,
            alarms = self.alarms,
            duplicates_dropped = self.duplicates_dropped,
            lagged_batches = self.lagged,
            "SPC stopped"
        );
    }
}

/// An event to store once the current batch is processed (storing waits for the store's commit).
struct Effect {
    ci: usize,
    kind: &'static str,
    ts: DateTime<Utc>,
    body: serde_json::Value,
}

/// Where outputs go while a characteristic is borrowed mutably.
struct Sink<'a> {
    side: &'a mpsc::Sender<SidePublish>,
    effects: &'a mut Vec<Effect>,
    stats: &'a mut Stats,
}

impl Sink<'_> {
    fn publish(&mut self, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        self.side
            .try_send(SidePublish {
                topic: topic.to_string(),
                payload,
                retain,
            })
            .is_ok()
    }
}

struct Char {
    index: usize,
    cfg: CharacteristicConfig,
    inputs: Inputs,
    engine: Characteristic,
    /// Readings up to this seq are already in the engine (restored from a snapshot).
    fed_upto: u64,
    /// Outputs caused by readings up to this seq were published before (or belong to history that
    /// is only replayed to rebuild the windows): they are not published again.
    silent_upto: u64,
    /// Restored from a snapshot: its replay raises alarms, de-duplicated against stored events.
    restored: bool,
    limits: BTreeMap<Option<String>, FrozenLimits>,
    active: ActiveSet,
    active_dirty: bool,
    limits_dirty: bool,
    next_capability: Instant,
    topic_points: String,
    topic_active: String,
    topic_limits: String,
    topic_capability: String,
}

impl Char {
    /// A characteristic that has seen no reading yet, with no limits and no active alarm.
    fn new(
        index: usize,
        cfg: CharacteristicConfig,
        inputs: Inputs,
        engine: Characteristic,
        topics: &SpcTopics,
        now: Instant,
    ) -> Char {
        let ch = &cfg.spec.name;
        Char {
            index,
            inputs,
            engine,
            fed_upto: 0,
            silent_upto: 0,
            restored: false,
            limits: BTreeMap::new(),
            active: ActiveSet::default(),
            active_dirty: true,
            limits_dirty: true,
            next_capability: now + cfg.capability_interval,
            topic_points: topics.points(ch),
            topic_active: topics.active(ch),
            topic_limits: topics.limits(ch),
            topic_capability: topics.capability(ch),
            cfg,
        }
    }

    fn name(&self) -> &str {
        &self.cfg.spec.name
    }

    fn push(
        &mut self,
        seq: u64,
        r: &Reading,
        slots: &[super::context::Slot],
        out: &mut Vec<Output>,
        sink: &mut Sink<'_>,
    ) {
        if seq <= self.fed_upto {
            return;
        }
        if !r.quality.is_good() {
            sink.stats.skipped_quality += 1;
            return;
        }
        let Some(value) = r.value.as_ref().and_then(Value::as_f64) else {
            sink.stats.skipped_not_numeric += 1;
            return;
        };
        let mut ctx: [Option<&str>; MAX_CONTEXT_KEYS] = [None; MAX_CONTEXT_KEYS];
        for (c, &s) in ctx.iter_mut().zip(&self.inputs.context) {
            *c = slots.get(s).and_then(|s| s.text.as_deref());
        }
        let context = ctx.get(..self.inputs.context.len()).unwrap_or(&[]);
        let size = self
            .inputs
            .size
            .and_then(|s| slots.get(s))
            .and_then(|s| s.num);
        out.clear();
        self.engine.push(
            Observation {
                seq,
                ts_micros: r.ts.timestamp_micros(),
                value,
                size,
                context,
            },
            out,
        );
        sink.stats.pushed += 1;
        self.handle(out, seq <= self.silent_upto, "baseline", r.ts, sink);
    }

    fn handle(
        &mut self,
        out: &mut Vec<Output>,
        silent: bool,
        reason: &str,
        ts: DateTime<Utc>,
        sink: &mut Sink<'_>,
    ) {
        let unit = self.cfg.unit.as_deref();
        for o in out.drain(..) {
            match o {
                Output::Point(p) => {
                    if silent || !self.cfg.publish_points {
                        continue;
                    }
                    let payload = messages::point(&self.cfg.spec.name, unit, &p);
                    if sink.publish(&self.topic_points, payload, false) {
                        sink.stats.points_published += 1;
                    } else {
                        sink.stats.points_dropped += 1;
                    }
                }
                Output::Violation(v) if !silent => sink.effects.push(Effect {
                    ci: self.index,
                    kind: alarms::VIOLATION,
                    ts: DateTime::from_timestamp_micros(v.ts_micros).unwrap_or(ts),
                    body: alarms::violation_body(&self.cfg.spec.name, unit, &v),
                }),
                Output::OutOfSpec(o) if !silent => sink.effects.push(Effect {
                    ci: self.index,
                    kind: alarms::OUT_OF_SPEC,
                    ts: DateTime::from_timestamp_micros(o.ts_micros).unwrap_or(ts),
                    body: alarms::out_of_spec_body(&self.cfg.spec.name, unit, &o),
                }),
                Output::LimitsFrozen(f) => {
                    if !silent {
                        sink.effects.push(Effect {
                            ci: self.index,
                            kind: alarms::LIMITS,
                            ts,
                            body: alarms::limits_body(&self.cfg.spec.name, &f, reason),
                        });
                    }
                    tracing::info!(characteristic = %self.cfg.spec.name, partition = ?f.partition, limits = ?f.limits, reason, "control limits computed");
                    self.limits.insert(f.partition.clone(), f);
                    self.limits_dirty = true;
                }
                Output::Ignored(i) => {
                    sink.stats.ignored += 1;
                    tracing::debug!(characteristic = %self.cfg.spec.name, seq = i.seq, reason = ?i.reason, "not charted");
                }
                Output::Violation(_) | Output::OutOfSpec(_) => {}
            }
        }
    }
}

struct Runtime {
    store: Arc<Store>,
    reader: Option<StoreReader>,
    side: mpsc::Sender<SidePublish>,
    state_path: PathBuf,
    router: Router,
    chars: Vec<Char>,
    by_name: HashMap<String, usize>,
    position: u64,
    out: Vec<Output>,
    effects: Vec<Effect>,
    /// Keys of SPC events stored after the state was saved: a replay drops alarms already raised.
    dedup: HashSet<String>,
    /// Recalculations recorded after the state was saved, to repeat at their position on replay.
    recalcs: VecDeque<(u64, usize)>,
    /// Characteristics in the saved state that are no longer configured: their retained topics are
    /// cleared once.
    removed: Vec<String>,
    topics: SpcTopics,
    state_dirty: bool,
    saved_position: u64,
    read_errors: ErrorBurst,
    /// The start-up replay is complete (the state may be saved).
    replayed: bool,
    stats: Stats,
}

impl Runtime {
    /// Runs a blocking read on the store reader off the async threads. `None` when there is no reader
    /// (a previous read task failed and took it with it).
    async fn read_store<T: Send + 'static>(
        &mut self,
        read: impl FnOnce(&mut StoreReader) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<Option<T>> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(None);
        };
        let (reader, result) = tokio::task::spawn_blocking(move || {
            let result = read(&mut reader);
            (reader, result)
        })
        .await
        .context("SPC: store reader task")?;
        self.reader = Some(reader);
        Ok(Some(result.context("SPC: reading from the store")?))
    }

    async fn start(spc: &Spc, reader: StoreReader) -> Result<Runtime> {
        let committed = spc.start_head;
        let mut state = match persist::load(&spc.state_path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the SPC state; rebuilding from the store");
                None
            }
        };
        if let Some(s) = &state
            && (s.readings_seq > committed.readings || s.events_seq > committed.events)
        {
            tracing::warn!(
                state_seq = s.readings_seq,
                store_seq = committed.readings,
                "the SPC state is ahead of the store (a new database?); rebuilding from the store"
            );
            state = None;
        }
        let saved_position = state.as_ref().map_or(0, |s| s.readings_seq);
        let events_since = state.as_ref().map_or(0, |s| s.events_seq);
        let mut saved_chars = state
            .as_mut()
            .map(|s| std::mem::take(&mut s.characteristics))
            .unwrap_or_default();
        let (mut router, inputs) = Router::new(&spc.chars);
        if let Some(s) = &state {
            router.restore(&s.slots);
        }
        let now = Instant::now();
        let mut chars = Vec::new();
        let mut by_name = HashMap::new();
        for (index, (cfg, inputs)) in spc.chars.iter().cloned().zip(inputs).enumerate() {
            let saved = saved_chars.remove(&cfg.spec.name);
            let (engine, restored) = restore(&cfg.spec, saved.as_ref())?;
            by_name.insert(cfg.spec.name.clone(), index);
            let mut ch = Char::new(index, cfg, inputs, engine, &spc.topics, now);
            // Restored: the engine has seen every reading up to the state's position, and the replay
            // after it alarms. Rebuilt: every stored reading up to the store's head at start is
            // history, replayed silently.
            ch.fed_upto = if restored { saved_position } else { 0 };
            ch.silent_upto = if restored {
                saved_position
            } else {
                committed.readings
            };
            ch.restored = restored;
            if let Some(s) = saved {
                ch.limits = s
                    .limits
                    .iter()
                    .map(|l| (l.partition.clone(), l.clone()))
                    .collect();
                ch.active = ActiveSet::from_saved(s.active);
            }
            chars.push(ch);
        }
        let mut rt = Runtime {
            store: spc.store.clone(),
            reader: Some(reader),
            side: spc.side.clone(),
            state_path: spc.state_path.clone(),
            router,
            position: chars
                .iter()
                .map(|c| c.fed_upto)
                .min()
                .unwrap_or(committed.readings),
            chars,
            by_name,
            out: Vec::new(),
            effects: Vec::new(),
            dedup: HashSet::new(),
            recalcs: VecDeque::new(),
            removed: saved_chars.into_keys().collect(),
            topics: spc.topics.clone(),
            state_dirty: true,
            saved_position: 0,
            read_errors: ErrorBurst::new(Duration::from_secs(60)),
            replayed: false,
            stats: Stats::default(),
        };
        rt.load_events(events_since).await?;
        Ok(rt)
    }

    /// Applies the SPC events stored after the state was saved: alarms raised and acknowledged since
    /// (the active sets), the keys of alarms a replay must not raise again, and recalculations to
    /// repeat. Without a state this reads every stored SPC event.
    async fn load_events(&mut self, since: u64) -> Result<()> {
        let mut after = since;
        let mut recalcs = Vec::new();
        loop {
            let Some(rows) = self
                .read_store(move |r| r.events_after(after, CHUNK))
                .await?
            else {
                break;
            };
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for e in rows {
                let Some(ci) = e
                    .body
                    .get("characteristic")
                    .and_then(|c| c.as_str())
                    .and_then(|c| self.by_name.get(c))
                    .copied()
                else {
                    continue;
                };
                let Some(ch) = self.chars.get_mut(ci) else {
                    continue;
                };
                if ch.restored
                    && let Some(key) = alarms::dedup_key(&e.kind, &e.body)
                {
                    self.dedup.insert(key);
                }
                match e.kind.as_str() {
                    k if alarms::is_alarm(k) => ch.active.insert(ActiveAlarm {
                        alarm_seq: e.seq,
                        kind: e.kind.clone(),
                        ts: rfc3339(e.ts),
                        body: e.body,
                    }),
                    alarms::ACK => {
                        let seqs: Vec<u64> = e
                            .body
                            .get("alarms")
                            .and_then(|a| a.as_array())
                            .map(|a| a.iter().filter_map(|s| s.as_u64()).collect())
                            .unwrap_or_default();
                        ch.active.remove(&seqs);
                    }
                    alarms::RECALCULATE => {
                        if let Some(at) = e.body.get("at_seq").and_then(|s| s.as_u64()) {
                            recalcs.push((at, ci));
                        }
                    }
                    _ => {}
                }
            }
        }
        recalcs.sort_by_key(|r| r.0);
        self.recalcs = recalcs.into();
        Ok(())
    }

    /// Processes every stored reading after `position` up to at least `upto`. With `stop`, gives up
    /// early when it is cancelled (a long rebuild at start must not delay a shutdown).
    async fn catch_up(&mut self, upto: u64, stop: Option<&CancellationToken>) -> Result<()> {
        while self.position < upto {
            if stop.is_some_and(|s| s.is_cancelled()) {
                break;
            }
            let after = self.position;
            let Some(rows) = self
                .read_store(move |r| r.readings_after(after, CHUNK))
                .await?
            else {
                break;
            };
            if rows.is_empty() {
                // Pruned, or never committed (a gap): nothing to process up to `upto`.
                self.position = upto;
                break;
            }
            for r in &rows {
                self.process(r.seq, &r.reading);
            }
            self.apply_effects().await;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// A committed batch from the broadcast. If the readings before it cannot be read back from the
    /// store, the batch waits too: it is read back with them on a later attempt.
    async fn on_batch(&mut self, batch: &CommittedBatch) {
        if batch.first_seq > self.position + 1
            && let Err(e) = self.catch_up(batch.first_seq - 1, None).await
        {
            return self.read_error(&e);
        }
        for (seq, r) in batch.iter() {
            if seq > self.position {
                self.process(seq, r);
            }
        }
        self.apply_effects().await;
        self.publish_retained(false);
    }

    /// A failed read of the store: logged once per burst; the position stays, so it is tried again.
    fn read_error(&mut self, e: &anyhow::Error) {
        if self.read_errors.error() {
            tracing::error!(
                error = format!("{e:#}"),
                position = self.position,
                "SPC cannot read back from the store; retrying"
            );
        }
    }

    /// One committed reading, in store order. No allocation unless the engine produces output.
    fn process(&mut self, seq: u64, r: &Reading) {
        while let Some(&(at, ci)) = self.recalcs.front()
            && at < seq
        {
            self.recalcs.pop_front();
            self.replay_recalculation(ci, at);
        }
        self.position = seq;
        let Runtime {
            router,
            chars,
            out,
            effects,
            stats,
            side,
            ..
        } = self;
        let Some(route) = router.route(r) else {
            return;
        };
        let slot = route.slot;
        let mut sink = Sink {
            side,
            effects,
            stats,
        };
        for &ci in &route.sources {
            if let Some(ch) = chars.get_mut(ci) {
                ch.push(seq, r, &router.slots, out, &mut sink);
            }
        }
        // After the push: a reading's own context is the value before it.
        if let Some(slot) = slot {
            router.update(slot, r);
        }
    }

    /// A recalculation requested after the state was saved, repeated at the same position.
    fn replay_recalculation(&mut self, ci: usize, at: u64) {
        let Runtime {
            chars,
            out,
            effects,
            stats,
            side,
            ..
        } = self;
        let Some(ch) = chars.get_mut(ci) else { return };
        out.clear();
        if ch.engine.recalculate(out).is_ok() {
            let mut sink = Sink {
                side,
                effects,
                stats,
            };
            ch.handle(
                out,
                at <= ch.silent_upto,
                "recalculate",
                Utc::now(),
                &mut sink,
            );
        }
    }

    /// The start-up replay is over: alarms from now on are new.
    fn finish_replay(&mut self) {
        while let Some((at, ci)) = self.recalcs.pop_front() {
            self.replay_recalculation(ci, at);
        }
        self.dedup = HashSet::new();
        self.replayed = true;
    }

    /// Stores the events of the last batch, in order, and raises their alarms.
    async fn apply_effects(&mut self) {
        for e in std::mem::take(&mut self.effects) {
            if !self.dedup.is_empty()
                && alarms::dedup_key(e.kind, &e.body).is_some_and(|k| self.dedup.contains(&k))
            {
                self.stats.duplicates_dropped += 1;
                continue;
            }
            match self.store.append_event(e.kind, e.ts, e.body.clone()).await {
                Ok(seq) => {
                    self.state_dirty = true;
                    if alarms::is_alarm(e.kind)
                        && let Some(ch) = self.chars.get_mut(e.ci)
                    {
                        self.stats.alarms += 1;
                        ch.active.insert(ActiveAlarm {
                            alarm_seq: seq,
                            kind: e.kind.to_string(),
                            ts: rfc3339(e.ts),
                            body: e.body,
                        });
                        ch.active_dirty = true;
                    }
                }
                Err(e) => tracing::error!(error = %e, "SPC: cannot store an event"),
            }
        }
    }

    /// Publishes the retained active-alarm and limits messages that changed (`all`: every one). A
    /// message that does not fit in the side channel stays due and is tried again on the next tick.
    fn publish_retained(&mut self, all: bool) {
        let now = rfc3339(Utc::now());
        for ch in &mut self.chars {
            if all || ch.active_dirty {
                let payload = ch.active.payload(&ch.cfg.spec.name, &now);
                ch.active_dirty = !try_side(&self.side, &ch.topic_active, payload, true);
            }
            if all || ch.limits_dirty {
                let fixed = ch.cfg.spec.limits.baseline.is_none()
                    && (ch.cfg.spec.limits.centre.is_some()
                        || ch.cfg.spec.limits.sigma.is_some()
                        || ch.cfg.spec.limits.ucl.is_some());
                let charts: Vec<_> = ch
                    .engine
                    .partitions()
                    .map(|p| (p, ch.engine.limits(p)))
                    .collect();
                let payload = messages::limits(
                    &ch.cfg.spec.name,
                    &now,
                    fixed,
                    charts.into_iter(),
                    &ch.limits,
                );
                ch.limits_dirty = !try_side(&self.side, &ch.topic_limits, payload, true);
            }
        }
        // Characteristics removed from the configuration: clear what the broker retains for them.
        self.removed.retain(|ch| {
            !(try_side(&self.side, &self.topics.active(ch), Vec::new(), true)
                && try_side(&self.side, &self.topics.limits(ch), Vec::new(), true))
        });
    }

    fn publish_due_capability(&mut self) {
        let now = Instant::now();
        for ci in 0..self.chars.len() {
            let due = self.chars.get(ci).is_some_and(|c| now >= c.next_capability);
            if due {
                self.publish_capability(ci);
                if let Some(c) = self.chars.get_mut(ci) {
                    c.next_capability = now + c.cfg.capability_interval;
                }
            }
        }
    }

    /// Publishes the capability of every chart of a characteristic; false when there is none yet.
    fn publish_capability(&mut self, ci: usize) -> bool {
        let Some(ch) = self.chars.get(ci) else {
            return false;
        };
        let now = rfc3339(Utc::now());
        let spec = &ch.cfg.spec;
        let ctx = messages::CapabilityCtx {
            characteristic: &spec.name,
            usl: spec.usl,
            lsl: spec.lsl,
            target: spec.target,
            unit: ch.cfg.unit.as_deref(),
            seq: self.position,
            now: &now,
        };
        let mut any = false;
        for p in ch.engine.partitions() {
            if let Some(cap) = ch.engine.capability(p) {
                any = true;
                try_side(
                    &self.side,
                    &ch.topic_capability,
                    messages::capability(&ctx, p, &cap),
                    false,
                );
            }
        }
        any
    }

    async fn on_command(&mut self, cmd: Command) {
        let request = match commands::parse(&cmd.body) {
            Ok(r) => r,
            Err(reason) => return self.reject(&cmd.body, reason).await,
        };
        let id = cmd.body.get("id").cloned();
        match request {
            Request::Ack {
                characteristic,
                alarms: sel,
                by,
                cause,
                action,
            } => {
                let ci = match self.lookup(&characteristic) {
                    Ok(ci) => ci,
                    Err(reason) => return self.reject(&cmd.body, reason).await,
                };
                let Some(ch) = self.chars.get(ci) else { return };
                let seqs = match ch.active.select(&sel) {
                    Ok(s) => s,
                    Err(reason) => return self.reject(&cmd.body, reason).await,
                };
                let body = json!({
                    "characteristic": characteristic,
                    "alarms": seqs,
                    "by": by,
                    "cause": cause,
                    "action": action,
                    "id": id,
                });
                match self.store.append_event(alarms::ACK, Utc::now(), body).await {
                    Ok(seq) => {
                        tracing::info!(characteristic, alarms = ?seqs, by, ack_seq = seq, "alarms acknowledged");
                        if let Some(ch) = self.chars.get_mut(ci) {
                            ch.active.remove(&seqs);
                            ch.active_dirty = true;
                        }
                        self.state_dirty = true;
                        self.publish_retained(false);
                    }
                    Err(e) => tracing::error!(error = %e, "SPC: cannot store an acknowledgement"),
                }
            }
            Request::Recalculate { characteristic, by } => {
                let ci = match self.lookup(&characteristic) {
                    Ok(ci) => ci,
                    Err(reason) => return self.reject(&cmd.body, reason).await,
                };
                self.recalculate(ci, by, id, &cmd.body).await;
            }
            Request::Capability { characteristic } => {
                let targets: Vec<usize> = match characteristic {
                    None => (0..self.chars.len()).collect(),
                    Some(name) => match self.lookup(&name) {
                        Ok(ci) => vec![ci],
                        Err(reason) => return self.reject(&cmd.body, reason).await,
                    },
                };
                let mut any = false;
                for ci in targets {
                    any |= self.publish_capability(ci);
                }
                if !any {
                    self.reject(&cmd.body, "no capability yet: not enough data".into())
                        .await;
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Result<usize, String> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| format!("unknown characteristic \"{name}\""))
    }

    /// Recomputes the limits from the most recent baseline subgroups. The request is stored with its
    /// position among the readings so that a replay repeats it at the same point.
    async fn recalculate(
        &mut self,
        ci: usize,
        by: Option<String>,
        id: Option<serde_json::Value>,
        request: &serde_json::Value,
    ) {
        let Some(ch) = self.chars.get_mut(ci) else {
            return;
        };
        self.out.clear();
        let charts = match ch.engine.recalculate(&mut self.out) {
            Ok(n) => n,
            Err(e) => return self.reject(request, e.to_string()).await,
        };
        let body = json!({
            "characteristic": ch.name(),
            "at_seq": self.position,
            "charts": charts,
            "by": by,
            "id": id,
        });
        if let Err(e) = self
            .store
            .append_event(alarms::RECALCULATE, Utc::now(), body)
            .await
        {
            tracing::error!(error = %e, "SPC: cannot store a recalculation");
        }
        let Runtime {
            chars,
            out,
            effects,
            stats,
            side,
            ..
        } = self;
        if let Some(ch) = chars.get_mut(ci) {
            let mut sink = Sink {
                side,
                effects,
                stats,
            };
            ch.handle(out, false, "recalculate", Utc::now(), &mut sink);
        }
        self.apply_effects().await;
        self.publish_retained(false);
        self.state_dirty = true;
        self.save().await;
    }

    /// Answers a request that cannot be carried out with an event upstream can see.
    async fn reject(&mut self, request: &serde_json::Value, reason: String) {
        tracing::warn!(command = %request, reason, "command rejected");
        let body = json!({
            "cmd": request.get("cmd"),
            "id": request.get("id"),
            "reason": reason,
            "request": request,
        });
        if let Err(e) = self
            .store
            .append_event(alarms::REJECTED, Utc::now(), body)
            .await
        {
            tracing::error!(error = %e, "SPC: cannot store a rejected command");
        }
    }

    /// Persists the state if anything changed since the last save.
    async fn save(&mut self) {
        // A rebuild cut short by a shutdown is not saved: the next start would take the history it
        // did not reach for new readings.
        if !self.replayed || (!self.state_dirty && self.position == self.saved_position) {
            return;
        }
        let events_seq = self.store.watch_committed().borrow().events;
        let state = State {
            version: persist::STATE_VERSION,
            readings_seq: self.position,
            events_seq,
            slots: self.router.save(),
            characteristics: self
                .chars
                .iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        CharState {
                            snapshot: c.engine.snapshot(),
                            limits: c.limits.values().cloned().collect(),
                            active: c.active.saved(),
                        },
                    )
                })
                .collect(),
        };
        let bytes = match serde_json::to_vec(&state) {
            Ok(b) => b,
            Err(e) => return tracing::error!(error = %e, "SPC: cannot serialize the state"),
        };
        let path = self.state_path.clone();
        match tokio::task::spawn_blocking(move || persist::save(&path, &bytes)).await {
            Ok(Ok(())) => {
                self.state_dirty = false;
                self.saved_position = self.position;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, path = %self.state_path.display(), "SPC: cannot save the state")
            }
            Err(e) => tracing::error!(error = %e, "SPC: saving the state failed"),
        }
    }
}

/// Waits (briefly) until the forwarder has taken every message from the side channel.
async fn drain_side(side: &mpsc::Sender<SidePublish>) {
    let deadline = Instant::now() + SIDE_DRAIN;
    while side.capacity() < side.max_capacity() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn try_side(side: &mpsc::Sender<SidePublish>, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
    side.try_send(SidePublish {
        topic: topic.to_string(),
        payload,
        retain,
    })
    .is_ok()
}

/// The engine of a characteristic after a restart, and whether it was restored from its snapshot.
///
/// - A snapshot taken with the same spec restores the engine exactly; readings after the state's
///   position are replayed and their alarms de-duplicated against the stored events.
/// - Otherwise (first start, or the spec changed) the engine starts afresh, takes over persisted
///   limits where the configuration they were computed for still applies, and replays every stored
///   reading silently up to the store's head: the windows are rebuilt, and only new points alarm.
fn restore(spec: &CharacteristicSpec, saved: Option<&CharState>) -> Result<(Characteristic, bool)> {
    let name = &spec.name;
    if let Some(s) = saved {
        match Characteristic::from_snapshot(spec.clone(), &s.snapshot) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => {
                tracing::info!(characteristic = %name, reason = %e, "SPC snapshot not used; rebuilding the charts from the store")
            }
        }
    }
    let mut engine = Characteristic::new(spec.clone()).map_err(|issues| {
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        anyhow::anyhow!("characteristic {name}: {}", text.join("; "))
    })?;
    if let Some(s) = saved
        && limits_still_apply(s.snapshot.spec(), spec)
    {
        for l in &s.limits {
            if let Err(e) = engine.restore_limits(l) {
                tracing::warn!(characteristic = %name, error = %e, "persisted limits not restored");
            }
        }
    }
    Ok((engine, false))
}

/// Limits computed for `old` still describe the process charted by `new` if what is charted and how
/// the limits are obtained did not change (rules, spec limits or context may have).
fn limits_still_apply(old: &CharacteristicSpec, new: &CharacteristicSpec) -> bool {
    let l = &new.limits;
    let computed = l.centre.is_none() && l.sigma.is_none() && l.ucl.is_none() && l.lcl.is_none();
    computed
        && old.source == new.source
        && old.chart == new.chart
        && old.subgroup_size == new.subgroup_size
        && old.subgroup_window == new.subgroup_window
        && old.limits == new.limits
        && old.chart_per == new.chart_per
        && old.sample_size == new.sample_size
        && old.sample_size_source == new.sample_size_source
}

#[cfg(test)]
mod tests;
