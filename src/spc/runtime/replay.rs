//! Readings in store order: live batches, and what is read back from the store when a batch does
//! not follow on (a lag, the start-up replay), with recorded recalculations repeated at their
//! position.

use anyhow::Result;
use chrono::Utc;
use lineside_drivers::Reading;
use tokio_util::sync::CancellationToken;

use super::{CHUNK, Runtime};
use crate::store::CommittedBatch;

impl Runtime {
    /// Processes every stored reading after `position` up to at least `upto`. With `stop`, gives up
    /// early when it is cancelled (a long rebuild at start must not delay a shutdown).
    pub(super) async fn catch_up(
        &mut self,
        upto: u64,
        stop: Option<&CancellationToken>,
    ) -> Result<()> {
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
    pub(super) async fn on_batch(&mut self, batch: &CommittedBatch) {
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
    pub(super) fn read_error(&mut self, e: &anyhow::Error) {
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
        let Some(route) = self.router.route(r) else {
            return;
        };
        let slot = route.slot;
        for &ci in &route.sources {
            if let Some(ch) = self.chars.get_mut(ci) {
                ch.push(seq, r, &self.router.slots, &mut self.outputs);
            }
        }
        // After the push: a reading's own context is the value before it.
        if let Some(slot) = slot {
            self.router.update(slot, r);
        }
    }

    /// A recalculation requested after the state was saved, repeated at the same position.
    pub(super) fn replay_recalculation(&mut self, ci: usize, at: u64) {
        let Some(ch) = self.chars.get_mut(ci) else {
            return;
        };
        self.outputs.out.clear();
        if ch.engine.recalculate(&mut self.outputs.out).is_ok() {
            let silent = at <= ch.silent_upto;
            ch.handle(silent, "recalculate", Utc::now(), &mut self.outputs);
        }
    }
}
