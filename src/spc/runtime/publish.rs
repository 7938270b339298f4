//! Messages published through the forwarder's side channel: the retained active set and limits of
//! each characteristic, and capability (periodically and on request). A retained message that does
//! not fit in the side channel stays due and is tried again on the next tick.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Runtime, SIDE_DRAIN};
use crate::bus::SidePublish;
use crate::spc::messages;
use crate::timefmt::rfc3339;

impl Runtime {
    /// Publishes the retained active-set and limits messages that changed (`all`: every one).
    pub(super) fn publish_retained(&mut self, all: bool) {
        let now = rfc3339(Utc::now());
        let side = &self.outputs.side;
        for ch in &mut self.chars {
            if all || ch.active_dirty {
                let payload = ch.alarms.payload(&ch.cfg.spec.name, &now);
                ch.active_dirty = !try_side(side, &ch.topic_active, payload, true);
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
                ch.limits_dirty = !try_side(side, &ch.topic_limits, payload, true);
            }
        }
        // Characteristics removed from the configuration: clear what the broker retains for them.
        let topics = &self.topics;
        self.removed.retain(|ch| {
            !(try_side(side, &topics.active(ch), Vec::new(), true)
                && try_side(side, &topics.limits(ch), Vec::new(), true))
        });
    }

    pub(super) fn publish_due_capability(&mut self) {
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
    pub(super) fn publish_capability(&mut self, ci: usize) -> bool {
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
                    &self.outputs.side,
                    &ch.topic_capability,
                    messages::capability(&ctx, p, &cap),
                    false,
                );
            }
        }
        any
    }
}

/// Waits (briefly) until the forwarder has taken every message from the side channel.
pub(super) async fn drain_side(side: &mpsc::Sender<SidePublish>) {
    let deadline = Instant::now() + SIDE_DRAIN;
    while side.capacity() < side.max_capacity() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn try_side(
    side: &mpsc::Sender<SidePublish>,
    topic: &str,
    payload: Vec<u8>,
    retain: bool,
) -> bool {
    side.try_send(SidePublish {
        topic: topic.to_string(),
        payload,
        retain,
    })
    .is_ok()
}
