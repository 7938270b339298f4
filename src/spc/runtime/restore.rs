//! Starting the task: the saved state, the events stored since, and which readings are replayed.
//!
//! - A characteristic restored from its snapshot continues exactly; the readings after the state's
//!   position are replayed and regenerate the episode transitions stored meanwhile, which are
//!   dropped by their de-duplication key. Acknowledgements stored meanwhile are applied again once
//!   the replay is over; shelving changes at once.
//! - Otherwise (first start, or the spec changed) the engine starts afresh, takes over persisted
//!   limits where they still apply, replays every stored reading silently (no alarm), and takes its
//!   open episodes from the state and the stored events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::Result;
use lineside_drivers::device::ErrorBurst;
use lineside_spc::{Characteristic, CharacteristicSpec};
use tokio::time::Instant;

use super::outputs::{Char, Outputs};
use super::{CHUNK, Runtime, Spc, kpi};
use crate::spc::alarms;
use crate::spc::context::Router;
use crate::spc::episodes::AckInfo;
use crate::spc::persist::{self, CharState};
use crate::store::StoreReader;

impl Runtime {
    pub(super) async fn start(spc: &Spc, reader: StoreReader) -> Result<Runtime> {
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
            let mut ch = Char::new(index, cfg, &spc.policy, inputs, engine, &spc.topics, now);
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
                ch.alarms = s.alarms;
            }
            chars.push(ch);
        }
        let mut rt = Runtime {
            store: spc.store.clone(),
            reader: Some(reader),
            state_path: spc.state_path.clone(),
            router,
            position: chars
                .iter()
                .map(|c| c.fed_upto)
                .min()
                .unwrap_or(committed.readings),
            chars,
            by_name,
            outputs: Outputs::new(spc.side.clone(), &spc.policy),
            policy: spc.policy.clone(),
            kpis: spc.kpis.clone(),
            kpi: kpi::Window::default(),
            dedup: HashSet::new(),
            pending_acks: Vec::new(),
            recalcs: VecDeque::new(),
            removed: saved_chars.into_keys().collect(),
            topics: spc.topics.clone(),
            state_dirty: true,
            saved_position: 0,
            read_errors: ErrorBurst::new(Duration::from_secs(60)),
            replayed: false,
            rejections: (now, 0, 0),
        };
        rt.load_events(events_since).await?;
        Ok(rt)
    }

    /// Reads the SPC events stored after the state was saved (all of them without a state): the
    /// keys a replay must not store again, the acknowledgements and recalculations to repeat, and
    /// for characteristics that are not replayed, their episodes and shelving as stored.
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
                    // Regenerated by the replay, except what a command did.
                    alarms::ALARM if ch.restored && is_acknowledgement(&e.body) => {
                        self.pending_acks.push((ci, e.body));
                    }
                    alarms::ALARM if ch.restored => {}
                    alarms::ALARM | alarms::SUPPRESSION => ch.alarms.apply_stored(&e.kind, &e.body),
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

    /// The start-up replay is over: transitions from now on are new.
    pub(super) async fn finish_replay(&mut self) {
        while let Some((at, ci)) = self.recalcs.pop_front() {
            self.replay_recalculation(ci, at);
        }
        // Acknowledgements given after the state was saved, on the episodes the replay rebuilt.
        for (ci, body) in std::mem::take(&mut self.pending_acks) {
            let (Some(id), Some(ack)) = (
                body.get("episode").and_then(|v| v.as_u64()),
                body.get("ack")
                    .and_then(|a| serde_json::from_value::<AckInfo>(a.clone()).ok()),
            ) else {
                continue;
            };
            let Some(ch) = self.chars.get_mut(ci) else {
                continue;
            };
            let now = chrono::DateTime::parse_from_rfc3339(&ack.at)
                .map(|t| t.timestamp_micros())
                .unwrap_or_default();
            ch.alarms
                .acknowledge(&[id], &ack, now, &mut self.outputs.transitions);
            let ts = chrono::Utc::now();
            for t in self.outputs.transitions.drain(..) {
                self.outputs
                    .effects
                    .push(super::outputs::Effect::from_transition(ci, ts, t));
            }
        }
        self.apply_effects().await;
        self.dedup = HashSet::new();
        self.replayed = true;
    }
}

/// Whether a stored transition records an acknowledgement (a command, not regenerated by a replay).
fn is_acknowledgement(body: &serde_json::Value) -> bool {
    match body.get("transition").and_then(|t| t.as_str()) {
        Some("acknowledged") => true,
        // Closed by an acknowledgement of a returned episode (the other way to close is a return
        // to normal of an acknowledged one, which the replay regenerates).
        Some("cleared") => body.get("ack").is_some_and(|a| !a.is_null()),
        _ => false,
    }
}

/// The engine of a characteristic after a restart, and whether it was restored from its snapshot.
pub(super) fn restore(
    spec: &CharacteristicSpec,
    saved: Option<&CharState>,
) -> Result<(Characteristic, bool)> {
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
