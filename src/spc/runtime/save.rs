//! Persisting the state (every engine's snapshot, limits, episodes, context values) at one position
//! in the store; see `persist`.

use super::Runtime;
use crate::spc::persist::{self, CharState, State};

impl Runtime {
    /// Persists the state if anything changed since the last save.
    pub(super) async fn save(&mut self) {
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
                            alarms: c.alarms.clone(),
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
