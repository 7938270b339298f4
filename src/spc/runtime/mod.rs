//! The SPC task: feeds committed readings to the engines in store order and turns their outputs into
//! alarm episodes (stored events) and published messages.
//!
//! Position: `position` is the highest reading seq processed. Batches come from the store's broadcast;
//! whenever a batch does not follow on from `position` (the broadcast lagged, or the task started
//! after the readings were committed) the missing readings are read back from the store first, so no
//! reading is skipped and none is processed twice.
//!
//! The task's jobs, one file each: the loop (here), a characteristic's outputs (`outputs`), the start
//! from the saved state and the store (`restore`), reading back and replaying readings (`replay`),
//! the retained and periodic messages (`publish`), commands (`commands`), persisting the state
//! (`save`), the alarm KPIs (`kpi`), and reconfiguration (`reconfigure`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use lineside_drivers::device::ErrorBurst;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SpcTopics;
use super::context::Router;
use super::persist;
use crate::bus::{CommandReceiver, SidePublish};
use crate::config::{CharacteristicConfig, SpcConfig};
use crate::store::{Committed, CommittedBatch, Store, StoreReader};

mod commands;
mod kpi;
mod outputs;
mod publish;
mod reconfigure;
mod replay;
mod restore;
mod save;

pub use kpi::SpcKpis;
use outputs::{Char, Outputs};
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
    policy: SpcConfig,
    kpis: Arc<SpcKpis>,
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
            policy: SpcConfig::default(),
            kpis: Arc::default(),
            batches: store.subscribe(),
            start_head: *store.watch_committed().borrow(),
            store,
            side,
            commands,
            topics,
            state_path: persist::state_path(state_dir),
        }
    }

    /// The agent-wide alarm policy (`[spc]`); the defaults without it.
    pub fn with_policy(mut self, policy: SpcConfig) -> Spc {
        self.policy = policy;
        self
    }

    /// The alarm KPIs the task keeps up to date (for metrics and `/status`).
    pub fn kpis(&self) -> Arc<SpcKpis> {
        self.kpis.clone()
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
        rt.finish_replay().await;
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
                        rt.outputs.stats.lagged += n;
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
                    rt.expire_shelving().await;
                    rt.publish_due_capability();
                    rt.publish_retained(false);
                    rt.update_kpis();
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
        publish::drain_side(&rt.outputs.side).await;
        rt.outputs.stats.log();
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
    transitions: u64,
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
            alarm_transitions = self.transitions,
            duplicates_dropped = self.duplicates_dropped,
            lagged_batches = self.lagged,
            "SPC stopped"
        );
    }
}

struct Runtime {
    store: Arc<Store>,
    reader: Option<StoreReader>,
    state_path: PathBuf,
    router: Router,
    chars: Vec<Char>,
    by_name: HashMap<String, usize>,
    position: u64,
    /// Where every characteristic's outputs go (one struct, borrowed beside `chars`).
    outputs: Outputs,
    policy: SpcConfig,
    kpis: Arc<SpcKpis>,
    kpi: kpi::Window,
    /// Keys of SPC events stored after the state was saved: a replay drops what is already stored.
    dedup: HashSet<String>,
    /// Acknowledgements stored after the state was saved, applied again once the replay has rebuilt
    /// their episodes: (characteristic index, stored body).
    pending_acks: Vec<(usize, serde_json::Value)>,
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
    /// Rejections stored and logged in the current window (a burst of bad commands must not flood
    /// the store or the log): window start, count, and how many were only counted.
    rejections: (Instant, u32, u64),
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

    fn lookup(&self, name: &str) -> Result<usize, String> {
        self.by_name.get(name).copied().ok_or_else(|| {
            format!(
                "unknown characteristic \"{}\"",
                super::commands::truncate(name, super::commands::MAX_FIELD)
            )
        })
    }
}

#[cfg(test)]
mod tests;
