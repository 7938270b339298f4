//! Changing the characteristics of the running SPC task (a config reload), by name:
//!
//! - unchanged: kept as they are (engine, limits, alarm episodes);
//! - only the agent's keys changed (context sources, capability interval, points): kept, with the new
//!   settings;
//! - the engine's spec changed: rebuilt the way a restart rebuilds it (`restore`): a fresh engine that
//!   takes over the computed limits where they still apply, keeps its alarm episodes, and replays every
//!   stored reading silently, so only readings from now on alarm;
//! - added: a fresh engine; the stored readings are history to it, replayed silently;
//! - removed: dropped, and what the broker retains for it (active alarms, limits) is cleared.
//!
//! The replay runs inside the task between two batches, up to the task's position: readings committed
//! meanwhile wait in the broadcast (or are read back after a lag) and reach every characteristic live.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::restore::restore;
use super::{CHUNK, Char, Runtime};
use crate::config::CharacteristicConfig;
use crate::spc::context::Router;
use crate::spc::persist::CharState;

/// A new set of characteristics and where to say what changed.
pub(crate) struct Request {
    chars: Vec<CharacteristicConfig>,
    reply: oneshot::Sender<Changes>,
}

/// What a reconfiguration changed, by characteristic name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The spec changed: rebuilt from the stored readings.
    pub rebuilt: Vec<String>,
    /// Only the agent's keys changed (context sources, capability interval, points).
    pub updated: Vec<String>,
    /// Could not be built (name, reason); not running.
    pub failed: Vec<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.rebuilt.is_empty()
            && self.updated.is_empty()
            && self.failed.is_empty()
    }
}

/// Changes the characteristics of a running SPC task.
#[derive(Clone)]
pub struct SpcControl(pub(super) Option<mpsc::Sender<Request>>);

impl SpcControl {
    /// Hands the task a new set of characteristics and waits until it has applied them. Waits while
    /// the task is still replaying at start-up. Err when the task has ended.
    pub async fn reconfigure(&self, chars: Vec<CharacteristicConfig>) -> Result<Changes> {
        let tx = self
            .0
            .as_ref()
            .context("the SPC task has started already")?;
        let (reply, rx) = oneshot::channel();
        tx.send(Request { chars, reply })
            .await
            .ok()
            .context("the SPC task has stopped")?;
        rx.await.context("the SPC task stopped while reconfiguring")
    }
}

impl Runtime {
    pub(super) async fn reconfigure(&mut self, req: Request, stop: &CancellationToken) {
        let changes = self.apply(req.chars, stop).await;
        if !changes.is_empty() {
            tracing::info!(
                added = ?changes.added,
                removed = ?changes.removed,
                rebuilt = ?changes.rebuilt,
                updated = ?changes.updated,
                failed = ?changes.failed,
                position = self.position,
                "SPC characteristics reconfigured"
            );
        }
        let _ = req.reply.send(changes);
    }

    async fn apply(
        &mut self,
        cfgs: Vec<CharacteristicConfig>,
        stop: &CancellationToken,
    ) -> Changes {
        let mut changes = Changes::default();
        let mut old: HashMap<String, Char> = self
            .chars
            .drain(..)
            .map(|c| (c.name().to_string(), c))
            .collect();
        // Context values carry over for the tags that are still used.
        let slots = self.router.save();
        let (mut router, inputs) = Router::new(&cfgs);
        router.restore(&slots);
        let now = Instant::now();
        let mut chars = Vec::with_capacity(cfgs.len());
        let mut fresh = Vec::new();
        for (cfg, inputs) in cfgs.into_iter().zip(inputs) {
            let name = cfg.spec.name.clone();
            let index = chars.len();
            let previous = match old.remove(&name) {
                Some(mut ch) if ch.cfg.spec == cfg.spec => {
                    if ch.cfg != cfg {
                        if ch.cfg.capability_interval != cfg.capability_interval {
                            ch.next_capability = now + cfg.capability_interval;
                        }
                        changes.updated.push(name);
                    }
                    ch.index = index;
                    ch.inputs = inputs;
                    ch.policy = super::outputs::policy(&cfg, &self.policy);
                    ch.cfg = cfg;
                    chars.push(ch);
                    continue;
                }
                other => other,
            };
            let saved = previous.as_ref().map(|p| CharState {
                snapshot: p.engine.snapshot(),
                limits: p.limits.values().cloned().collect(),
                alarms: p.alarms.clone(),
            });
            let engine = match restore(&cfg.spec, saved.as_ref()) {
                Ok((engine, _)) => engine,
                Err(e) => {
                    tracing::error!(characteristic = %name, error = format!("{e:#}"), "cannot build the characteristic; it does not run");
                    changes.failed.push((name.clone(), format!("{e:#}")));
                    self.removed.push(name);
                    continue;
                }
            };
            let mut ch = Char::new(index, cfg, &self.policy, inputs, engine, &self.topics, now);
            // Everything processed so far is history to the new engine.
            ch.silent_upto = self.position;
            if let Some(p) = previous {
                ch.limits = p.limits;
                ch.alarms = p.alarms;
                changes.rebuilt.push(name);
            } else {
                changes.added.push(name);
            }
            fresh.push(index);
            chars.push(ch);
        }
        for name in old.into_keys() {
            self.removed.push(name.clone());
            changes.removed.push(name);
        }
        changes.removed.sort();
        self.by_name = chars
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name().to_string(), i))
            .collect();
        self.chars = chars;
        self.router = router;
        if !fresh.is_empty() {
            let upto = self.position;
            if let Err(e) = self.replay_into(&fresh, upto, stop).await {
                tracing::error!(
                    error = format!("{e:#}"),
                    "SPC: cannot replay the stored readings into the new characteristics; they start from the next reading"
                );
            }
        }
        self.apply_effects().await;
        self.state_dirty = true;
        self.publish_retained(false);
        self.save().await;
        changes
    }

    /// Feeds the stored readings up to `upto` to the characteristics `targets` only, silently, with
    /// context values as they were at each reading.
    async fn replay_into(
        &mut self,
        targets: &[usize],
        upto: u64,
        stop: &CancellationToken,
    ) -> Result<()> {
        let cfgs: Vec<CharacteristicConfig> = targets
            .iter()
            .filter_map(|&i| self.chars.get(i).map(|c| c.cfg.clone()))
            .collect();
        let (mut router, inputs) = Router::new(&cfgs);
        // The targets read their context from the replay's own router meanwhile.
        let mut live_inputs = Vec::with_capacity(targets.len());
        for (&ci, inputs) in targets.iter().zip(inputs) {
            if let Some(ch) = self.chars.get_mut(ci) {
                live_inputs.push(std::mem::replace(&mut ch.inputs, inputs));
            }
        }
        let result = self.replay_rows(targets, &mut router, upto, stop).await;
        for (&ci, inputs) in targets.iter().zip(live_inputs) {
            if let Some(ch) = self.chars.get_mut(ci) {
                ch.inputs = inputs;
            }
        }
        // A context tag no characteristic used before has no live value yet; the replay has the
        // latest one it saw (as of `upto`, like every live value).
        if matches!(result, Ok(true)) {
            let seen: Vec<_> = router
                .save()
                .into_iter()
                .filter(|s| s.text.is_some() || s.num_bits.is_some())
                .collect();
            self.router.restore(&seen);
        }
        result.map(|_| ())
    }

    /// Ok(false) when stopped before the end.
    async fn replay_rows(
        &mut self,
        targets: &[usize],
        router: &mut Router,
        upto: u64,
        stop: &CancellationToken,
    ) -> Result<bool> {
        let mut after = 0;
        while after < upto {
            if stop.is_cancelled() {
                // A half-built chart must not be saved as if it had seen everything: the next start
                // rebuilds from the previous state instead.
                self.replayed = false;
                return Ok(false);
            }
            let Some(rows) = self
                .read_store(move |r| r.readings_after(after, CHUNK))
                .await?
            else {
                anyhow::bail!("no store reader");
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                break;
            };
            after = last;
            for row in rows.iter().take_while(|r| r.seq <= upto) {
                let Some(route) = router.route(&row.reading) else {
                    continue;
                };
                let slot = route.slot;
                for &local in &route.sources {
                    if let Some(ch) = targets.get(local).and_then(|&ci| self.chars.get_mut(ci)) {
                        ch.push(row.seq, &row.reading, &router.slots, &mut self.outputs);
                    }
                }
                if let Some(slot) = slot {
                    router.update(slot, &row.reading);
                }
            }
            tokio::task::yield_now().await;
        }
        Ok(true)
    }
}
