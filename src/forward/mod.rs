//! Store-and-forward over MQTT.
//!
//! The store is the outbox. The forwarder publishes from each stream's cursor with QoS 1 and moves the
//! cursor only over the contiguous prefix the broker acknowledged (see [`tracker`]). rumqttc forgets
//! everything in flight when it reconnects with a clean session, so after every ConnAck we simply
//! start again from the cursor: delivery is at-least-once, and subscribers de-duplicate on
//! (agent, seq).

mod payload;
mod tls;
pub mod topics;
mod tracker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use lineside_drivers::device::{Backoff, ErrorBurst};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use payload::{encode_reading, rfc3339};
pub use topics::Topics;
use tracker::Tracker;

use crate::config::{BrokerUrl, MqttConfig};
use crate::store::{Acker, Committed, StoreReader, Stream};

/// Most rows read from the store per fetch.
const MAX_FETCH: usize = 20_000;
/// Request-channel slots for side messages, beyond the data window (the channel holds inflight + 64).
const SIDE_SLOTS: usize = 32;

#[derive(Debug, Default)]
pub struct ForwarderStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub messages_published: AtomicU64,
    /// Readings the broker acknowledged (counted when the cursor moves).
    pub readings_forwarded: AtomicU64,
    pub events_forwarded: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// A request that arrived on the command topic and is for someone other than the forwarder.
#[derive(Debug, Clone)]
pub struct Command {
    pub body: serde_json::Value,
    /// Where it came from: "mqtt" (the command topic) or "station" (the operator station).
    pub via: String,
}

/// Something else the agent publishes through the forwarder's connection (SPC points, retained alarm
/// state). These are not in the store's streams: they are derived and can be re-derived.
#[derive(Debug, Clone)]
pub struct SidePublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Publishes the held side message; keeps it held when the client refuses it.
fn publish_side(client: &AsyncClient, tracker: &mut Tracker, held: &mut Option<SidePublish>) {
    if let Some(side) = held.take() {
        match client.try_publish(
            side.topic.clone(),
            QoS::AtLeastOnce,
            side.retain,
            side.payload.clone(),
        ) {
            Ok(()) => tracker.sent(None),
            Err(_) => *held = Some(side),
        }
    }
}

enum FillError {
    Store(rusqlite::Error),
    /// The client's request channel refused a publish (it should never be full: the window is smaller).
    Refused,
}

pub struct Forwarder {
    pub cfg: MqttConfig,
    pub agent_id: String,
    pub topics: Topics,
    pub reader: StoreReader,
    pub acker: Acker,
    pub committed: watch::Receiver<Committed>,
    pub stats: Arc<ForwarderStats>,
    /// Builds the status message body (online state, version, counters).
    pub status: Arc<dyn Fn(&str) -> serde_json::Value + Send + Sync>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub side: mpsc::Receiver<SidePublish>,
}

impl Forwarder {
    pub fn mqtt_options(&self) -> Result<MqttOptions> {
        let url = BrokerUrl::parse(&self.cfg.url).map_err(anyhow::Error::msg)?;
        let client_id = self
            .cfg
            .client_id
            .clone()
            .unwrap_or_else(|| format!("lineside-{}", self.agent_id));
        let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
        opts.set_keep_alive(self.cfg.keep_alive);
        opts.set_clean_session(true);
        opts.set_inflight(self.cfg.inflight);
        opts.set_request_channel_capacity(self.cfg.inflight as usize + 64);
        let max = (self.cfg.max_message_size as usize + 4096).max(64 * 1024);
        opts.set_max_packet_size(max, max);
        let will = serde_json::to_vec(
            &serde_json::json!({"agent": self.agent_id, "state": "offline", "reason": "connection lost"}),
        )?;
        opts.set_last_will(LastWill::new(
            self.topics.status(),
            will,
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &self.cfg.username {
            opts.set_credentials(user.clone(), tls::password(&self.cfg)?.unwrap_or_default());
        }
        if url.tls {
            let tls = tls::client_config(&self.cfg).context("MQTT TLS setup")?;
            opts.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        Ok(opts)
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let opts = self.mqtt_options()?;
        let (client, mut eventloop) = AsyncClient::new(opts, self.cfg.inflight as usize + 64);
        let mut tracker = Tracker::default();
        let mut backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut burst = ErrorBurst::new(Duration::from_secs(60));
        let mut connected = false;
        let mut acked = Committed {
            readings: self.reader.cursor(Stream::Readings)?,
            events: self.reader.cursor(Stream::Events)?,
        };
        let mut next = acked;
        let mut fill_burst = ErrorBurst::new(Duration::from_secs(60));
        // Side messages (SPC points, retained alarm state) get their own slice of the request channel so
        // they can never crowd out data; one refused is held and retried, not dropped.
        let side_limit = self.cfg.inflight as usize + SIDE_SLOTS;
        let mut held: Option<SidePublish> = None;
        // The latest payload of every retained side topic, re-published after each reconnect: a clean
        // session forgets whatever was in flight when the connection dropped.
        let mut retained: std::collections::HashMap<String, Vec<u8>> =
            std::collections::HashMap::new();
        // Retries a fill that failed (or a wake-up that was missed) without waiting for the next commit.
        let mut retry_tick = tokio::time::interval(Duration::from_millis(500));
        retry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(self.cfg.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        self.stats.connected.store(true, Relaxed);
                        if self.stats.connects.fetch_add(1, Relaxed) > 0 {
                            self.stats.reconnects.fetch_add(1, Relaxed);
                        }
                        if let Some(n) = burst.ok() {
                            tracing::info!(suppressed = n, url = %self.cfg.url, "connected to the broker again");
                        } else {
                            tracing::info!(url = %self.cfg.url, "connected to the broker");
                        }
                        backoff.reset();
                        // Clean session: nothing in flight survives. Start again from the cursors.
                        tracker.reset();
                        next = acked;
                        let _ = client.try_subscribe(self.topics.command(), QoS::AtLeastOnce);
                        self.publish_status(&client, &mut tracker, "online");
                        for (topic, payload) in &retained {
                            if client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone()).is_ok() {
                                tracker.sent(None);
                            }
                        }
                        self.try_fill(&client, &mut tracker, &mut next, &mut fill_burst);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => tracker.outgoing(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some((stream, seq)) = tracker.acked(ack.pkid) {
                            self.advance(stream, seq, &mut acked);
                        }
                        self.try_fill(&client, &mut tracker, &mut next, &mut fill_burst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => self.command(&client, &mut tracker, &p.payload),
                    Ok(_) => {}
                    Err(e) => {
                        connected = false;
                        self.stats.connected.store(false, Relaxed);
                        self.stats.connect_errors.fetch_add(1, Relaxed);
                        tracker.reset();
                        let msg = e.to_string();
                        if burst.error() {
                            tracing::warn!(error = %msg, url = %self.cfg.url, "broker connection failed; readings stay in the store and are sent after reconnecting");
                        }
                        if let Ok(mut slot) = self.stats.last_error.lock() {
                            *slot = Some(msg);
                        }
                        let delay = backoff.next_delay();
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                },
                changed = self.committed.changed(), if connected => {
                    if changed.is_err() {
                        break; // the store stopped
                    }
                    self.try_fill(&client, &mut tracker, &mut next, &mut fill_burst);
                }
                Some(side) = self.side.recv(), if connected && held.is_none() && tracker.in_flight() < side_limit => {
                    if side.retain {
                        retained.insert(side.topic.clone(), side.payload.clone());
                    }
                    held = Some(side);
                    publish_side(&client, &mut tracker, &mut held);
                }
                _ = status_tick.tick(), if connected => self.publish_status(&client, &mut tracker, "online"),
                _ = retry_tick.tick(), if connected => {
                    publish_side(&client, &mut tracker, &mut held);
                    self.try_fill(&client, &mut tracker, &mut next, &mut fill_burst);
                }
            }
        }
        if connected {
            self.drain_and_disconnect(&client, &mut eventloop, &mut tracker, &mut acked)
                .await;
        }
        self.stats.connected.store(false, Relaxed);
        Ok(())
    }

    /// At shutdown: say offline, wait briefly for the acknowledgements still due (so the cursor is
    /// current), then disconnect cleanly.
    async fn drain_and_disconnect(
        &mut self,
        client: &AsyncClient,
        eventloop: &mut rumqttc::EventLoop,
        tracker: &mut Tracker,
        acked: &mut Committed,
    ) {
        self.publish_status(client, tracker, "offline");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tracker.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => tracker.outgoing(pkid),
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some((stream, seq)) = tracker.acked(ack.pkid) {
                        self.advance(stream, seq, acked);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }

    fn advance(&self, stream: Stream, seq: u64, acked: &mut Committed) {
        let slot = match stream {
            Stream::Readings => &mut acked.readings,
            Stream::Events => &mut acked.events,
        };
        if seq > *slot {
            let counter = match stream {
                Stream::Readings => &self.stats.readings_forwarded,
                Stream::Events => &self.stats.events_forwarded,
            };
            counter.fetch_add(seq - *slot, Relaxed);
            *slot = seq;
            self.acker.ack(stream, seq);
        }
    }

    fn publish_status(&self, client: &AsyncClient, tracker: &mut Tracker, state: &str) {
        let body = (self.status)(state);
        if let Ok(payload) = serde_json::to_vec(&body)
            && client
                .try_publish(self.topics.status(), QoS::AtLeastOnce, true, payload)
                .is_ok()
        {
            tracker.sent(None);
        }
    }

    fn command(&self, client: &AsyncClient, tracker: &mut Tracker, payload: &[u8]) {
        let body: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "ignored a command that is not JSON");
                return;
            }
        };
        match body.get("cmd").and_then(|c| c.as_str()) {
            Some("rebirth") => self.publish_status(client, tracker, "online"),
            Some(_) => {
                let _ = self.commands.send(Command {
                    body,
                    via: "mqtt".into(),
                });
            }
            None => tracing::warn!("ignored a command without a \"cmd\" field"),
        }
    }

    /// [`Forwarder::fill`], keeping the forwarder alive through store errors: a failed read is retried by
    /// the retry tick; a publish the client refused leaves the window bookkeeping unreliable, so the
    /// connection is dropped and everything unacknowledged is sent again after the reconnect.
    fn try_fill(
        &mut self,
        client: &AsyncClient,
        tracker: &mut Tracker,
        next: &mut Committed,
        burst: &mut ErrorBurst,
    ) {
        match self.fill(client, tracker, next) {
            Ok(()) => {
                burst.ok();
            }
            Err(FillError::Store(e)) => {
                if burst.error() {
                    tracing::warn!(error = %e, "cannot read from the store; retrying");
                }
            }
            Err(FillError::Refused) => {
                tracing::error!(
                    "the MQTT client refused a publish; reconnecting to resend from the cursor"
                );
                let _ = client.try_disconnect();
            }
        }
    }

    /// Publishes from `next` while the in-flight window has room: events first (rare and urgent), then
    /// readings. Reads the store synchronously: a fetch takes milliseconds, and the forwarder is one task
    /// on a multi-threaded runtime.
    fn fill(
        &mut self,
        client: &AsyncClient,
        tracker: &mut Tracker,
        next: &mut Committed,
    ) -> Result<(), FillError> {
        let limit = self.cfg.inflight as usize;
        let committed = *self.committed.borrow_and_update();
        loop {
            let room = limit.saturating_sub(tracker.in_flight());
            if room == 0 {
                return Ok(());
            }
            if next.events < committed.events {
                let events = self
                    .reader
                    .events_after(next.events, room)
                    .map_err(FillError::Store)?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    next.events = committed.events;
                    continue;
                };
                let window = tracker.open_window(Stream::Events, last, events.len() as u32);
                for e in &events {
                    let payload = payload::encode_event(&self.agent_id, e);
                    client
                        .try_publish(self.topics.alarms(), QoS::AtLeastOnce, false, payload)
                        .map_err(|_| FillError::Refused)?;
                    tracker.sent(Some(window));
                }
                self.stats
                    .messages_published
                    .fetch_add(events.len() as u64, Relaxed);
                next.events = last;
                continue;
            }
            if next.readings < committed.readings {
                let want = (room * self.cfg.max_readings_per_message).min(MAX_FETCH);
                let rows = self
                    .reader
                    .readings_after(next.readings, want)
                    .map_err(FillError::Store)?;
                if rows.is_empty() {
                    next.readings = committed.readings;
                    continue;
                }
                let mut packer = payload::Packer::new(
                    &self.agent_id,
                    self.cfg.max_readings_per_message,
                    self.cfg.max_message_size as usize,
                );
                let mut hi = next.readings;
                for r in &rows {
                    if !packer.push(r, room) {
                        break;
                    }
                    hi = r.seq;
                }
                let messages = packer.finish();
                let window = tracker.open_window(Stream::Readings, hi, messages.len() as u32);
                for m in messages {
                    client
                        .try_publish(
                            self.topics.data(&m.device),
                            QoS::AtLeastOnce,
                            false,
                            m.payload,
                        )
                        .map_err(|_| FillError::Refused)?;
                    tracker.sent(Some(window));
                    self.stats.messages_published.fetch_add(1, Relaxed);
                }
                next.readings = hi;
                continue;
            }
            return Ok(());
        }
    }
}
