//! The forwarder's Sparkplug path (`mqtt.encoding = "sparkplug"`): the same connection, window,
//! cursor, size checks and quarantine as the JSON path, with the protocol from `crate::sparkplug`.
//!
//! Every Sparkplug message is published with QoS 1, a documented deviation from the specification's
//! QoS 0: the store's cursor moves only on PUBACK, which is what makes the stream lossless. Readings
//! (DDATA) belong to cursor windows; births, deaths, NDATA and SPC metrics are tracked like side
//! messages (acknowledged, but they move no cursor). Messages are handed to the client in the order
//! the edge node numbered them, so `seq` arrives gap-free unless a message is quarantined.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rumqttc::{AsyncClient, QoS};

use super::options::Limits;
use super::session::{Ended, FillError};
use super::tracker::MessageKey;
use super::{Forwarder, State};
use crate::bus::SidePublish;
use crate::sparkplug::uplink::Action;
use crate::sparkplug::{Message, MessageType, PackLimits};
use crate::store::Stream;

/// Most rows read from the store per fetch.
const MAX_FETCH: usize = 20_000;

fn refused() -> Ended {
    Ended::Lost {
        error: "the MQTT client refused a publish".into(),
        established: false,
        incoming_too_large: false,
    }
}

impl Forwarder {
    fn pack_limits(&self, max_messages: usize) -> PackLimits {
        PackLimits {
            max_metrics: self.cfg.max_readings_per_message.max(1),
            max_bytes: self.cfg.max_message_size as usize,
            max_messages,
        }
    }

    /// Publishes messages that move no cursor (births, deaths, NDATA, SPC metrics), in order.
    fn publish_sparkplug(
        &self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        msgs: Vec<Message>,
    ) -> Result<(), Ended> {
        for m in msgs {
            if !limits.fits(&m.topic, m.payload.len()) {
                self.stats.oversized_dropped.fetch_add(1, Relaxed);
                tracing::error!(
                    topic = m.topic,
                    bytes = m.payload.len(),
                    "a Sparkplug message is larger than mqtt.max_message_size allows; not sent (a \
                     host will see a seq gap and ask for a rebirth)"
                );
                continue;
            }
            client
                .try_publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload)
                .map_err(|_| refused())?;
            st.tracker.sent(None, MessageKey::Side(m.topic));
            self.stats.messages_published.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// After the ConnAck: subscribe to NCMD (and the primary host's STATE), then the births unless a
    /// primary host must say it is online first.
    pub(super) fn sparkplug_connected(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
    ) -> Result<(), Ended> {
        let Some(sp) = st.sparkplug.as_ref() else {
            return Ok(());
        };
        for topic in sp.subscriptions() {
            let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
        }
        if sp.may_birth() {
            self.sparkplug_birth(st, client, limits)?;
        } else {
            tracing::info!("connected; waiting for the primary host's STATE before the births");
        }
        Ok(())
    }

    fn sparkplug_birth(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
    ) -> Result<(), Ended> {
        let Some(sp) = st.sparkplug.as_mut() else {
            return Ok(());
        };
        let status = (self.status)("online");
        let committed = self.committed.borrow().readings;
        let msgs = match sp.birth(&mut self.reader, committed, &status) {
            Ok(m) => m,
            Err(e) => {
                // Not born: the tick tries again.
                tracing::warn!(error = %e, "cannot read the current values for the Sparkplug births; retrying");
                return Ok(());
            }
        };
        self.publish_sparkplug(st, client, limits, msgs)
    }

    /// A message on a Sparkplug topic: NCMD (rebirth) or the primary host's STATE.
    pub(super) fn sparkplug_incoming(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Ended> {
        let Some(sp) = st.sparkplug.as_mut() else {
            return Ok(());
        };
        match sp.incoming(topic, payload) {
            Action::None => Ok(()),
            Action::Birth => {
                self.sparkplug_birth(st, client, limits)?;
                self.try_fill(st, client, limits)
            }
            Action::EndSession => {
                let death = sp.death();
                self.publish_sparkplug(st, client, limits, vec![death])?;
                Err(Ended::HostOffline)
            }
        }
    }

    /// SPC side messages also update the SPC device's metrics.
    pub(super) fn sparkplug_side(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        side: &SidePublish,
    ) -> Result<(), Ended> {
        let pack = self.pack_limits(usize::MAX);
        let Some(sp) = st.sparkplug.as_mut() else {
            return Ok(());
        };
        let msgs = sp.side(&side.topic, &side.payload, pack);
        self.publish_sparkplug(st, client, limits, msgs)
    }

    /// Every tick: births that are due (primary host online, deferred rebirth), DDEATH/DBIRTH for
    /// devices whose connection changed, and at the status interval the changed node metrics.
    pub(super) fn sparkplug_tick(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        status_due: bool,
        now: Instant,
    ) -> Result<(), Ended> {
        let Some(sp) = st.sparkplug.as_mut() else {
            return Ok(());
        };
        if (!sp.born() && sp.may_birth()) || (sp.born() && sp.rebirth_due(now)) {
            self.sparkplug_birth(st, client, limits)?;
            return self.try_fill(st, client, limits);
        }
        if !sp.born() {
            return Ok(());
        }
        let status = (self.status)("online");
        let msgs = if status_due {
            sp.status(&status)
        } else {
            sp.devices(&status)
        };
        self.publish_sparkplug(st, client, limits, msgs)
    }

    /// Readings as DDATA from the cursor, while the window has room. Nothing is sent before the
    /// births (e.g. while the primary host is offline): the readings wait in the store.
    pub(super) fn fill_sparkplug(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        room: usize,
        committed: u64,
    ) -> Result<(), FillError> {
        if !st.sparkplug.as_ref().is_some_and(|sp| sp.born()) {
            return Ok(());
        }
        let want = room
            .saturating_mul(self.cfg.max_readings_per_message)
            .min(MAX_FETCH);
        let rows = self
            .reader
            .readings_after(st.next.readings, want)
            .map_err(FillError::Store)?;
        if rows.is_empty() {
            st.next.readings = committed;
            return Ok(());
        }
        let pack = self.pack_limits(room);
        let Some(sp) = st.sparkplug.as_mut() else {
            return Ok(());
        };
        let packed = sp.pack(&rows, pack);
        if packed.taken == 0 {
            return Ok(()); // no room for a birth and its data yet
        }
        let hi = rows[packed.taken - 1].seq;
        let data = packed
            .messages
            .iter()
            .filter(|m| m.kind == MessageType::DData)
            .count();
        // A window of at least one message; a window without DDATA (every reading skipped) is
        // passed at once, in order behind the windows before it.
        let window = st
            .tracker
            .open_window(Stream::Readings, hi, data.max(1) as u32);
        if data == 0 {
            self.skip(st, window);
        }
        for m in packed.messages {
            if m.kind != MessageType::DData {
                if client
                    .try_publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload)
                    .is_err()
                {
                    return Err(FillError::Refused);
                }
                st.tracker.sent(None, MessageKey::Side(m.topic));
                self.stats.messages_published.fetch_add(1, Relaxed);
                continue;
            }
            let key = MessageKey::Data {
                stream: Stream::Readings,
                device: m.device.as_deref().map(Into::into),
                lo: m.lo,
                hi: m.hi,
            };
            if !limits.fits(&m.topic, m.payload.len()) {
                self.quarantine(st, key, "too_large", Some(m.payload.len()));
                self.skip(st, window);
                continue;
            }
            if st.quarantine.contains(&key) {
                self.skip(st, window);
                continue;
            }
            client
                .try_publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                .map_err(|_| FillError::Refused)?;
            st.tracker.sent(Some(window), key);
            self.stats.messages_published.fetch_add(1, Relaxed);
        }
        st.next.readings = hi;
        if packed.skipped > 0 {
            tracing::debug!(
                skipped = packed.skipped,
                "readings of disconnected devices not sent as Sparkplug data"
            );
        }
        Ok(())
    }
}
