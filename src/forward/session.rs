//! One connection's life: wait for the ConnAck, publish from the cursors while the window has room,
//! book acknowledgements, hand commands to the intake, and watch progress.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, Packet, QoS, StateError};

use super::intake::Action;
use super::link::Link;
use super::options::Limits;
use super::tracker::MessageKey;
use super::{Forwarder, State, payload};
use crate::store::{Committed, Stream};

/// How often the loop turns without events: retries, status, the watchdog, the intake's tick.
const TICK: Duration = Duration::from_millis(500);
/// Events handled in one turn of the loop at most.
const EVENT_BATCH: usize = 256;
/// Most rows read from the store per fetch.
const MAX_FETCH: usize = 20_000;

/// Why a connection ended.
pub enum Ended {
    Shutdown {
        connected: bool,
    },
    /// The store stopped (the agent is shutting down).
    StoreGone,
    Lost {
        error: String,
        /// A ConnAck had arrived.
        established: bool,
        /// The broker sent a message larger than the client reads.
        incoming_too_large: bool,
    },
    /// The progress watchdog fired.
    Stalled {
        stalled_for: Duration,
    },
    /// Sparkplug: the primary host went offline (NDEATH published); start over.
    HostOffline,
}

pub(super) enum FillError {
    Store(rusqlite::Error),
    /// The client's request channel refused a publish (its polling task ended, or the window
    /// bookkeeping is off): the connection is rebuilt.
    Refused,
}

fn incoming_too_large(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

impl Forwarder {
    pub(super) async fn serve(
        &mut self,
        st: &mut State,
        link: &mut Link,
        limits: &Limits,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Ended {
        let mut connected = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let full = *limits;
        loop {
            // One message at a time while isolating a refused message (see `isolation`).
            let lim = self.limits_now(st, &full);
            let limits = &lim;
            // Not biased: acknowledgements, commits, side messages and the tick all get their turn.
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown { connected },
                ev = link.events.recv() => match ev {
                    Some(Ok(ev)) => {
                        // Take what else is waiting too, then refill the window once: one store read
                        // for a batch of acknowledgements instead of one per acknowledgement.
                        let mut acked = false;
                        let mut next = Some(Ok(ev));
                        let mut taken = 0;
                        while let Some(item) = next.take() {
                            match item {
                                Ok(ev) => match self.on_event(st, link, limits, &mut connected, ev) {
                                    Ok(a) => acked |= a,
                                    Err(ended) => return ended,
                                },
                                Err(e) => {
                                    return Ended::Lost {
                                        incoming_too_large: incoming_too_large(&e),
                                        error: e.to_string(),
                                        established: connected,
                                    };
                                }
                            }
                            taken += 1;
                            if taken < EVENT_BATCH {
                                next = link.events.try_recv().ok();
                            }
                        }
                        if acked {
                            let lim = self.limits_now(st, &full);
                            self.publish_side_due(st, &link.client, &lim);
                            if let Err(ended) = self.try_fill(st, &link.client, &lim) {
                                return ended;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        return Ended::Lost {
                            incoming_too_large: incoming_too_large(&e),
                            error: e.to_string(),
                            established: connected,
                        };
                    }
                    None => {
                        return Ended::Lost {
                            error: "the MQTT event loop ended".into(),
                            established: connected,
                            incoming_too_large: false,
                        };
                    }
                },
                batch = st.batches.recv(), if connected => match batch {
                    Ok(batch) => {
                        if let Err(e) = self.fast_path(st, &link.client, limits, &batch) {
                            return e;
                        }
                    }
                    // Missed batches are read back from the store by `fill`.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ended::StoreGone,
                },
                changed = self.committed.changed(), if connected => {
                    if changed.is_err() {
                        return Ended::StoreGone;
                    }
                    // Batches already handed out go from memory first.
                    while let Ok(batch) = st.batches.try_recv() {
                        if let Err(e) = self.fast_path(st, &link.client, limits, &batch) {
                            return e;
                        }
                    }
                    if let Err(e) = self.try_fill(st, &link.client, limits) {
                        return e;
                    }
                }
                Some(side) = self.side.recv(), if connected && st.held.is_none() && st.tracker.in_flight() < limits.side_limit() => {
                    if side.retain {
                        if side.payload.is_empty() {
                            st.retained.remove(&side.topic);
                        } else {
                            st.retained.insert(side.topic.clone(), side.payload.clone());
                        }
                    }
                    if let Err(e) = self.sparkplug_side(st, &link.client, limits, &side) {
                        return e;
                    }
                    st.held = Some(side);
                    self.publish_held(st, &link.client, limits);
                }
                _ = tick.tick() => {
                    if let Err(ended) = self.on_tick(st, link, limits, connected, &mut last_tick) {
                        return ended;
                    }
                }
            }
            // A busy event stream (acknowledgements at a high rate, a flood of commands) can keep the
            // biased select from ever reaching the tick: run it from here when it is due.
            if last_tick.elapsed() >= TICK {
                let lim = self.limits_now(st, &full);
                if let Err(ended) = self.on_tick(st, link, &lim, connected, &mut last_tick) {
                    return ended;
                }
            }
        }
    }

    /// The full limits, or one message at a time while isolating; ends the isolation once everything
    /// that was in flight at the drops is through.
    fn limits_now(&self, st: &mut State, full: &Limits) -> Limits {
        let (retained, acked) = (&st.retained, &st.acked);
        let settled = st
            .isolation
            .as_mut()
            .map(|iso| iso.settled(acked, |t| retained.contains_key(t)));
        match settled {
            Some(true) => {
                st.isolation = None;
                tracing::debug!("isolation over: the full window is open again");
                *full
            }
            Some(false) => full.isolating(),
            None => *full,
        }
    }

    /// Every [`TICK`]: the loop's heartbeat, retries, the status message, a coalesced rebirth, and
    /// the progress watchdog.
    fn on_tick(
        &mut self,
        st: &mut State,
        link: &Link,
        limits: &Limits,
        connected: bool,
        last_tick: &mut Instant,
    ) -> Result<(), Ended> {
        let now = Instant::now();
        *last_tick = now;
        self.stats.beat(now);
        if !connected {
            return Ok(());
        }
        self.publish_side_due(st, &link.client, limits);
        self.try_fill(st, &link.client, limits)?;
        let rebirth = st.intake.tick(now) == Action::Rebirth;
        let status_due = rebirth || st.status_pending || now >= st.status_due;
        if status_due {
            st.status_due = now + self.cfg.status_interval;
            self.publish_status(st, &link.client, limits, "online", false);
        }
        self.publish_high_water(st, &link.client, limits, false);
        self.sparkplug_tick(st, &link.client, limits, status_due, now)?;
        let head = *self.committed.borrow();
        // Sparkplug readings held for an offline primary host are not waiting on the broker.
        let sending_readings = st.sparkplug.as_ref().is_none_or(|sp| sp.born());
        let busy = st.tracker.in_flight() > 0
            || (sending_readings && st.acked.readings < head.readings)
            || st.acked.events < head.events;
        self.stats.set_busy(busy);
        if !busy {
            self.stats.progress(now);
        }
        let stalled_for = self.stats.stalled_for(now);
        if stalled_for > self.cfg.stall_timeout {
            return Err(Ended::Stalled { stalled_for });
        }
        Ok(())
    }

    /// Handles one event; returns whether it acknowledged something (the caller refills the window).
    fn on_event(
        &mut self,
        st: &mut State,
        link: &Link,
        limits: &Limits,
        connected: &mut bool,
        ev: Event,
    ) -> Result<bool, Ended> {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                *connected = true;
                self.on_connack(st, &link.client, limits)?;
            }
            Event::Incoming(Packet::Publish(p))
                if st.sparkplug.is_some()
                    && p.topic.starts_with(crate::sparkplug::topic::NAMESPACE) =>
            {
                self.sparkplug_incoming(st, &link.client, limits, &p.topic, &p.payload)?;
            }
            Event::Incoming(Packet::Publish(p)) => {
                if p.topic == self.topics.command()
                    && st.intake.handle(p.retain, &p.payload, Instant::now()) == Action::Rebirth
                {
                    self.publish_status(st, &link.client, limits, "online", false);
                }
            }
            ev => return Ok(self.track(st, &ev)),
        }
        Ok(false)
    }

    fn on_connack(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
    ) -> Result<(), Ended> {
        let now = Instant::now();
        self.stats.connected.store(true, Relaxed);
        self.stats.progress(now);
        if self.stats.connects.fetch_add(1, Relaxed) > 0 {
            self.stats.reconnects.fetch_add(1, Relaxed);
        }
        if let Some(n) = st.burst.ok() {
            tracing::info!(suppressed = n, url = %self.cfg.url, "connected to the broker again");
        } else {
            tracing::info!(url = %self.cfg.url, "connected to the broker");
        }
        st.backoff.reset();
        st.stall_log.ok();
        // A new client: nothing of the previous connection is in flight. Start again from the cursors.
        st.tracker.reset();
        st.next = st.acked;
        let paused = st.commands_paused_until.is_some_and(|t| now < t);
        if !paused {
            st.commands_paused_until = None;
            let _ = client.try_subscribe(self.topics.command(), QoS::AtLeastOnce);
        }
        st.status_due = now + self.cfg.status_interval;
        // The high-water message goes out after the first status, whatever the last one said.
        st.high_water_sent = None;
        self.publish_status(st, client, limits, "online", false);
        self.sparkplug_connected(st, client, limits)?;
        // Retained side topics go out again as the window allows (a clean session forgot whatever
        // was in flight); a side message held from the last connection goes first.
        st.republish = st.retained.keys().cloned().collect();
        self.publish_side_due(st, client, limits);
        self.try_fill(st, client, limits)
    }

    /// [`Forwarder::fill`], keeping the forwarder alive through store errors (retried by the tick). A
    /// publish the client refused ends the connection.
    pub(super) fn try_fill(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
    ) -> Result<(), Ended> {
        match self.fill(st, client, limits) {
            Ok(()) => {
                st.fill_burst.ok();
                Ok(())
            }
            Err(FillError::Store(e)) => {
                if st.fill_burst.error() {
                    tracing::warn!(error = %e, "cannot read from the store; retrying");
                }
                Ok(())
            }
            Err(FillError::Refused) => Err(Ended::Lost {
                error: "the connection ended while publishing (the client refused a publish)"
                    .into(),
                established: false,
                incoming_too_large: false,
            }),
        }
    }

    /// Publishes from `next` while the data window has room: events first (rare and urgent), then
    /// readings. Reads the store synchronously: a fetch takes milliseconds.
    fn fill(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
    ) -> Result<(), FillError> {
        let committed: Committed = *self.committed.borrow_and_update();
        let epoch = self.reader.epoch_str();
        loop {
            let room = limits.window.saturating_sub(st.tracker.in_flight());
            if room == 0 {
                return Ok(());
            }
            if st.next.events < committed.events {
                let events = self
                    .reader
                    .events_after(st.next.events, room)
                    .map_err(FillError::Store)?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    st.next.events = committed.events;
                    continue;
                };
                let window = st
                    .tracker
                    .open_window(Stream::Events, last, events.len() as u32);
                let topic = self.topics.alarms();
                for e in &events {
                    let payload = payload::encode_event(&self.agent_id, &epoch, e);
                    let key = MessageKey::Data {
                        stream: Stream::Events,
                        device: None,
                        lo: e.seq,
                        hi: e.seq,
                    };
                    if !limits.fits(&topic, payload.len()) {
                        self.quarantine(st, key, "too_large", Some(payload.len()));
                        self.skip(st, window);
                        continue;
                    }
                    if st.quarantine.contains(&key) {
                        self.skip(st, window);
                        continue;
                    }
                    client
                        .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                        .map_err(|_| FillError::Refused)?;
                    st.tracker.sent(Some(window), key);
                    self.stats.messages_published.fetch_add(1, Relaxed);
                }
                st.next.events = last;
                continue;
            }
            if st.next.readings < committed.readings && st.sparkplug.is_some() {
                return self.fill_sparkplug(st, client, limits, room, committed.readings);
            }
            if st.next.readings < committed.readings {
                // Behind (more than a message's worth waiting) with part of the window still in
                // flight: wait until half the window is free, then fill it with full messages. Filling
                // one freed slot after each acknowledgement sent one device's tick per message.
                let waiting = committed.readings - st.next.readings;
                if waiting > self.cfg.max_readings_per_message as u64
                    && st.tracker.in_flight() > 0
                    && room < limits.window.div_ceil(2)
                {
                    return Ok(());
                }
                let want = room
                    .saturating_mul(self.cfg.max_readings_per_message)
                    .min(MAX_FETCH);
                let from = st.next.readings;
                // A catch-up read (up to MAX_FETCH rows read and encoded) runs off this worker's other
                // tasks (drivers, the MQTT event loop); a small one inline (handing the worker's
                // tasks to another thread costs more than reading a few hundred rows).
                let large = waiting >= OFF_WORKER_ROWS;
                let packed = off_worker(large, || {
                    let rows = self.reader.readings_after(from, want)?;
                    let mut packer = payload::Packer::with_format(
                        &self.agent_id,
                        &epoch,
                        self.cfg.max_readings_per_message,
                        self.cfg.max_message_size as usize,
                        self.cfg.json,
                    );
                    let (mut hi, mut packed) = (from, 0u64);
                    for r in &rows {
                        if !packer.push(r, room) {
                            break;
                        }
                        hi = r.seq;
                        packed += 1;
                    }
                    Ok((rows.is_empty(), packer.finish(), hi, packed))
                });
                let (empty, messages, hi, packed) = packed.map_err(FillError::Store)?;
                if empty {
                    st.next.readings = committed.readings;
                    continue;
                }
                self.stats
                    .readings_from_store
                    // Counted, not `hi - from`: seqs skipped after an unclean stop are no readings.
                    .fetch_add(packed, Relaxed);
                self.publish_readings(st, client, limits, messages, hi)?;
                st.next.readings = hi;
                continue;
            }
            return Ok(());
        }
    }

    /// The fast path: while caught up (the batch starts right after what was published), pack the
    /// committed batch in memory instead of reading it back. What does not fit in the window, and any
    /// batch that does not follow on, is left to `fill` and the store.
    fn fast_path(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        batch: &crate::store::CommittedBatch,
    ) -> Result<(), Ended> {
        // Sparkplug packs its own DDATA (aliases, births) from the store: no fast path there.
        if st.sparkplug.is_some()
            || batch.readings.is_empty()
            || batch.first_seq != st.next.readings + 1
        {
            return Ok(());
        }
        // Events go first (rare and urgent, and a message the broker refuses must be the oldest one
        // in flight to be quarantined): with events waiting, `fill` takes this batch from the store.
        if st.next.events < self.committed.borrow().events {
            return Ok(());
        }
        let room = limits.window.saturating_sub(st.tracker.in_flight());
        if room == 0 {
            return Ok(());
        }
        let epoch = self.reader.epoch_str();
        let from = st.next.readings;
        let (messages, hi) = {
            let mut packer = payload::Packer::with_format(
                &self.agent_id,
                &epoch,
                self.cfg.max_readings_per_message,
                self.cfg.max_message_size as usize,
                self.cfg.json,
            );
            let mut hi = from;
            for (seq, r) in batch.iter() {
                if !packer.push_reading(seq, r, room) {
                    break;
                }
                hi = seq;
            }
            (packer.finish(), hi)
        };
        self.stats
            .readings_from_memory
            .fetch_add(hi - from, Relaxed);
        match self.publish_readings(st, client, limits, messages, hi) {
            Ok(()) => Ok(()),
            Err(_) => Err(Ended::Lost {
                error: "the connection ended while publishing (the client refused a publish)"
                    .into(),
                established: false,
                incoming_too_large: false,
            }),
        }
    }

    /// Publishes packed reading messages as one acknowledgement window ending at `hi`, and moves
    /// `next` to `hi`.
    fn publish_readings(
        &mut self,
        st: &mut State,
        client: &AsyncClient,
        limits: &Limits,
        messages: Vec<payload::DataMessage>,
        hi: u64,
    ) -> Result<(), FillError> {
        let window = st
            .tracker
            .open_window(Stream::Readings, hi, messages.len() as u32);
        for m in messages {
            let topic = self.topics.data(&m.device);
            let key = MessageKey::Data {
                stream: Stream::Readings,
                device: Some(m.device.as_str().into()),
                lo: m.lo,
                hi: m.hi,
            };
            if !limits.fits(&topic, m.payload.len()) {
                self.quarantine(st, key, "too_large", Some(m.payload.len()));
                self.skip(st, window);
                continue;
            }
            if st.quarantine.contains(&key) {
                self.skip(st, window);
                continue;
            }
            client
                .try_publish(topic, QoS::AtLeastOnce, false, m.payload)
                .map_err(|_| FillError::Refused)?;
            st.tracker.sent(Some(window), key);
            self.stats.messages_published.fetch_add(1, Relaxed);
        }
        st.next.readings = hi;
        Ok(())
    }

    /// A message of `window` that is not published counts as delivered.
    pub(super) fn skip(&self, st: &mut State, window: super::tracker::WindowId) {
        if let Some((stream, seq)) = st.tracker.skip(window) {
            self.advance(st, stream, seq);
        }
    }
}

/// Runs blocking work (a store read of up to `MAX_FETCH` rows and its encoding) without holding up the
/// other tasks of this worker thread: on the multi-thread runtime (the agent's) the worker hands its
/// tasks to another thread meanwhile (`block_in_place`); on a current-thread runtime (some tests) it
/// runs inline, as there is no other thread to hand them to.
fn off_worker<R>(large: bool, work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if large => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Rows waiting from which a read from the store runs off the worker (see [`off_worker`]).
const OFF_WORKER_ROWS: u64 = 4096;
