//! Side and status messages: published as the window allows, cut down to the size they may have
//! (see [`super::degrade`]), and what happens when the broker refuses one again and again.

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::{AsyncClient, QoS};

use super::options::Limits;
use super::tracker::MessageKey;
use super::{Forwarder, State, degrade};
use crate::bus::SidePublish;

impl Forwarder {
    /// Side messages waiting for room: the held one, then retained topics still to re-publish after
    /// the reconnect.
    pub(super) fn publish_side_due(&self, st: &mut State, client: &AsyncClient, limits: &Limits) {
        if st.tracker.in_flight() >= limits.side_limit() {
            return;
        }
        self.publish_held(st, client, limits);
        while st.held.is_none() && st.tracker.in_flight() < limits.side_limit() {
            let Some(topic) = st.republish.pop_front() else {
                return;
            };
            let Some(payload) = st.retained.get(&topic).cloned() else {
                continue; // cleared or dropped since
            };
            st.held = Some(SidePublish {
                topic,
                payload,
                retain: true,
            });
            self.publish_held(st, client, limits);
        }
    }

    /// Publishes the held side message; keeps it held when the client refuses it.
    pub(super) fn publish_held(&self, st: &mut State, client: &AsyncClient, limits: &Limits) {
        let Some(side) = st.held.take() else { return };
        let SidePublish {
            topic,
            payload,
            retain,
        } = side;
        let Some(payload) = self.fit_side(st, limits, &topic, payload) else {
            st.retained.remove(&topic);
            return;
        };
        let bytes = payload.len();
        match client.try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload.clone()) {
            Ok(()) => {
                st.side_sizes.published(&topic, bytes);
                st.tracker.sent(None, MessageKey::Side(topic));
            }
            Err(_) => {
                st.held = Some(SidePublish {
                    topic,
                    payload,
                    retain,
                })
            }
        }
    }

    /// The broker refused a side or status message again and again (three connections dropped with
    /// it alone in flight): from now on such messages are cut to half its size, or dropped when they
    /// cannot be cut that far.
    pub(super) fn side_refused(&self, st: &mut State, topic: &str) {
        self.stats.side_refused.fetch_add(1, Relaxed);
        match st.side_sizes.refused(topic) {
            Some((bytes, cap)) => tracing::error!(
                topic,
                bytes,
                cap,
                "the broker keeps refusing a side or status message (its connection dropped with it \
                 alone in flight, three times); dropped, and such messages are cut to the cap from \
                 now on"
            ),
            None => tracing::error!(topic, "the broker keeps refusing a side message; dropped"),
        }
    }

    /// A side or status message cut down to what may be published (see [`degrade`]); None when it
    /// cannot be (dropped, counted, logged once per topic).
    fn fit_side(
        &self,
        st: &mut State,
        limits: &Limits,
        topic: &str,
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let cap = st
            .side_sizes
            .cap(self.cfg.max_message_size as usize)
            .min(limits.packet_max.saturating_sub(topic.len() + 16));
        if payload.len() <= cap {
            return Some(payload);
        }
        match degrade::fit(&payload, cap) {
            Some(cut) => {
                self.stats.side_degraded.fetch_add(1, Relaxed);
                Some(cut)
            }
            None => {
                self.stats.oversized_dropped.fetch_add(1, Relaxed);
                if st.side_sizes.first_drop(topic) {
                    tracing::error!(
                        topic,
                        bytes = payload.len(),
                        cap,
                        "a side or status message is too large and cannot be cut down; dropped \
                         (logged once per topic)"
                    );
                }
                None
            }
        }
    }

    /// Publishes the status message (retained). With `force` it goes out even if the window is full
    /// (shutdown); otherwise it waits for room.
    pub(super) fn publish_status(
        &self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        state: &str,
        force: bool,
    ) {
        if st.sparkplug.is_some() {
            // Sparkplug: the node's state is its NBIRTH/NDEATH and node metrics; the JSON status
            // topic (whose will is replaced by the NDEATH) is not used.
            return;
        }
        if !force && st.tracker.in_flight() >= limits.total {
            st.status_pending = true;
            return;
        }
        st.status_pending = false;
        let topic = self.topics.status();
        let Ok(payload) = serde_json::to_vec(&(self.status)(state)) else {
            return;
        };
        let Some(payload) = self.fit_side(st, limits, &topic, payload) else {
            if let Some(iso) = st.isolation.as_mut() {
                iso.through(&MessageKey::Status); // not sent again: not waited for
            }
            return;
        };
        let bytes = payload.len();
        if client
            .try_publish(topic.clone(), QoS::AtLeastOnce, true, payload)
            .is_ok()
        {
            st.side_sizes.published(&topic, bytes);
            st.tracker.sent(None, MessageKey::Status);
            st.high_water_due = true;
            self.publish_high_water(st, client, limits, force);
        }
    }

    /// Publishes the retained high-water message (see [`super::high_water`]) once a status message
    /// went out: the durable marks, when they changed since the last one on this connection (after a
    /// connect, always). It waits for room like the status (and so stays out of the one-at-a-time
    /// sending after a drop); the tick tries again. A small side message of a fixed shape: no size cap
    /// applies.
    pub(super) fn publish_high_water(
        &self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        force: bool,
    ) {
        if !st.high_water_due || (!force && st.tracker.in_flight() >= limits.total) {
            return;
        }
        let marks = *self.committed.borrow();
        if st.high_water_sent == Some(marks) {
            st.high_water_due = false;
            return;
        }
        let topic = self.topics.highwater();
        let payload = super::high_water::body(&self.agent_id, self.store.epoch(), marks);
        if client
            .try_publish(topic.clone(), QoS::AtLeastOnce, true, payload)
            .is_ok()
        {
            st.high_water_sent = Some(marks);
            st.high_water_due = false;
            st.tracker.sent(None, MessageKey::Side(topic));
        }
    }
}
