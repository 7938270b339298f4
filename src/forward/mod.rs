//! Store-and-forward over MQTT.
//!
//! The store is the outbox. The forwarder publishes from each stream's cursor with QoS 1 and moves the
//! cursor only over the contiguous prefix the broker acknowledged (see [`tracker`]).
//!
//! Every connection is a [`link::Link`]: a fresh rumqttc client and event loop, polled by a task that
//! does nothing else, never cancelled mid-poll and never reused after its connection ends. After each
//! ConnAck the forwarder starts again from the acknowledged cursors: delivery is at-least-once, and
//! subscribers de-duplicate on (agent, seq).
//!
//! Around that: a progress watchdog (connected, data waiting, nothing acknowledged for
//! `mqtt.stall_timeout` → rebuild the connection), a size check on everything published (side and
//! status messages are cut down rather than refused: [`degrade`]), one-at-a-time sending after a drop
//! to find a message the broker refuses ([`isolation`]), a quarantine for it ([`quarantine`]), and the
//! command intake ([`intake`]). The encoding lives in [`payload`] only.

mod degrade;
pub mod high_water;
pub mod intake;
mod isolation;
mod link;
mod options;
mod payload;
mod quarantine;
mod session;
mod side;
mod sparkplug;
pub mod stats;
mod tls;
mod tracker;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Result;
use lineside_drivers::device::{Backoff, ErrorBurst};
use rumqttc::MqttOptions;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use crate::bus::Topics;
pub use payload::{DataMessage, Packer, encode_reading};
pub use stats::{ForwarderStats, Progress};

use crate::bus::{CommandSender, SidePublish};
use crate::config::MqttConfig;
use crate::store::{Acker, Committed, Store, StoreReader, Stream};
use isolation::Isolation;
use link::Link;
use options::Limits;
use quarantine::Quarantine;
use session::Ended;
use tracker::{MessageKey, Tracker};

/// Event kind announcing a message the cursor skipped.
pub const QUARANTINED: &str = "agent.message_quarantined";
/// Connection drops on an oversized incoming message before the command subscription is paused.
const INCOMING_STRIKES: u32 = 2;
/// How long the command subscription stays paused after that.
const COMMANDS_PAUSE: Duration = Duration::from_secs(300);

pub type StatusFn = Arc<dyn Fn(&str) -> serde_json::Value + Send + Sync>;

pub struct Forwarder {
    pub cfg: MqttConfig,
    pub agent_id: String,
    pub topics: Topics,
    /// `Store::forwarding_reader`: nothing above the durable high-water marks.
    pub reader: StoreReader,
    pub acker: Acker,
    /// `Store::watch_durable`: what may be published (committed and covered by the high-water marks).
    pub committed: watch::Receiver<Committed>,
    pub stats: Arc<ForwarderStats>,
    /// Builds the status message body (online state, version, counters).
    pub status: StatusFn,
    /// Accepted commands, to SPC.
    pub commands: CommandSender,
    pub side: mpsc::Receiver<SidePublish>,
    /// For the agent events the forwarder raises (quarantine, command rejections).
    pub store: Arc<Store>,
}

/// What outlives one connection.
struct State {
    tracker: Tracker,
    /// Acknowledged cursors.
    acked: Committed,
    /// Published up to (≥ `acked` while connected).
    next: Committed,
    quarantine: Quarantine,
    /// Set after a drop with several messages in flight: one message at a time until they are through.
    isolation: Option<Isolation>,
    /// The latest payload of every retained side topic, re-published after each reconnect.
    retained: HashMap<String, Vec<u8>>,
    /// Retained side topics still to re-publish on this connection, as the window allows.
    republish: VecDeque<String>,
    /// A side message the client refused, retried first.
    held: Option<SidePublish>,
    /// How large side and status messages may be (configured, and learned from refusals).
    side_sizes: degrade::SideSizes,
    intake: intake::Intake,
    fill_burst: ErrorBurst,
    backoff: Backoff,
    /// Connection errors, for logging once per burst.
    burst: ErrorBurst,
    stall_log: ErrorBurst,
    status_due: Instant,
    /// A status message that did not fit in the window and waits.
    status_pending: bool,
    /// The marks the last high-water message on this connection carried (None: none yet).
    high_water_sent: Option<Committed>,
    /// A status message went out since the last high-water message: one is due when there is room.
    high_water_due: bool,
    incoming_strikes: u32,
    commands_paused_until: Option<Instant>,
    /// The Sparkplug edge node, with `mqtt.encoding = "sparkplug"` (see `crate::sparkplug::uplink`).
    sparkplug: Option<crate::sparkplug::uplink::Uplink>,
    /// Committed batches once the high-water marks cover them, for the fast path.
    batches: tokio::sync::broadcast::Receiver<Arc<crate::store::CommittedBatch>>,
}

impl Forwarder {
    pub fn mqtt_options(&self) -> Result<MqttOptions> {
        options::mqtt_options(&self.cfg, &self.agent_id, &self.topics)
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        let opts = self.mqtt_options()?;
        let limits = Limits::new(&self.cfg);
        self.stats.set_stall_timeout(self.cfg.stall_timeout);
        self.stats.beat(Instant::now());
        let acked = Committed {
            readings: self.reader.cursor(Stream::Readings)?,
            events: self.reader.cursor(Stream::Events)?,
        };
        let mut st = State {
            tracker: Tracker::default(),
            acked,
            next: acked,
            quarantine: Quarantine::default(),
            isolation: None,
            retained: HashMap::new(),
            republish: VecDeque::new(),
            held: None,
            side_sizes: degrade::SideSizes::default(),
            intake: intake::Intake::new(
                self.commands.clone(),
                self.cfg.max_command_size as usize,
                self.stats.clone(),
                self.store.clone(),
            ),
            fill_burst: ErrorBurst::new(Duration::from_secs(60)),
            backoff: Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max),
            burst: ErrorBurst::new(Duration::from_secs(60)),
            stall_log: ErrorBurst::new(Duration::from_secs(600)),
            status_due: Instant::now(),
            status_pending: false,
            high_water_sent: None,
            high_water_due: false,
            incoming_strikes: 0,
            commands_paused_until: None,
            sparkplug: self.sparkplug_uplink()?,
            batches: self.store.subscribe_durable(),
        };
        loop {
            let mut conn_opts = opts.clone();
            if let Some(sp) = st.sparkplug.as_mut() {
                // Each connection registers an NDEATH with the next bdSeq as its will.
                sp.prepare_connect(&mut conn_opts);
            }
            let mut link = Link::open(conn_opts, limits.total + 64);
            let ended = self.serve(&mut st, &mut link, &limits, &shutdown).await;
            self.stats.connected.store(false, Relaxed);
            if let Some(sp) = st.sparkplug.as_mut() {
                sp.disconnected();
            }
            let delay = match ended {
                Ended::Shutdown { connected } => {
                    if connected {
                        self.drain_and_disconnect(&mut st, &mut link).await;
                    }
                    link.close().await;
                    break;
                }
                Ended::StoreGone => {
                    link.close().await;
                    break;
                }
                Ended::Lost {
                    error,
                    established,
                    incoming_too_large,
                } => {
                    link.close().await;
                    self.lost(&mut st, error, established, incoming_too_large);
                    st.backoff.next_delay()
                }
                Ended::HostOffline => {
                    // Sparkplug: the primary host went offline; the NDEATH is out. Reconnect and wait
                    // for its STATE (data stays in the store meanwhile).
                    link.close().await;
                    st.tracker.reset();
                    self.cfg.reconnect_min
                }
                Ended::Stalled { stalled_for } => {
                    link.close().await;
                    let n = self.stats.stall_recoveries.fetch_add(1, Relaxed) + 1;
                    if st.stall_log.error() {
                        tracing::warn!(
                            stalled_s = stalled_for.as_secs(),
                            in_flight = st.tracker.in_flight(),
                            recoveries = n,
                            "the broker acknowledged nothing for longer than mqtt.stall_timeout while \
                             connected; rebuilding the connection (logged once per 10 minutes)"
                        );
                    }
                    st.tracker.reset();
                    self.cfg.reconnect_min
                }
            };
            // Waiting to reconnect is the loop working as meant (a broker that is down is not a
            // forwarder fault): keep beating for the watchdog's health check while waiting.
            let until = tokio::time::Instant::now() + delay;
            let mut stop = false;
            while !stop && tokio::time::Instant::now() < until {
                self.stats.beat(Instant::now());
                let step = until.min(tokio::time::Instant::now() + Duration::from_secs(1));
                tokio::select! {
                    _ = shutdown.cancelled() => stop = true,
                    _ = tokio::time::sleep_until(step) => {}
                }
            }
            if stop {
                break;
            }
            self.stats.beat(Instant::now());
        }
        self.stats.stopped();
        Ok(())
    }

    /// The Sparkplug edge node when the data stream is to be Sparkplug B.
    fn sparkplug_uplink(&self) -> Result<Option<crate::sparkplug::uplink::Uplink>> {
        if self.cfg.encoding != crate::config::Encoding::Sparkplug {
            return Ok(None);
        }
        let sp = self.cfg.sparkplug.as_ref().ok_or_else(|| {
            anyhow::anyhow!("mqtt.encoding = \"sparkplug\" needs a [sparkplug] section")
        })?;
        let base = format!("{}/{}", self.cfg.topic_prefix, self.agent_id);
        Ok(Some(crate::sparkplug::uplink::Uplink::new(
            sp,
            &self.agent_id,
            &base,
        )?))
    }

    /// The connection ended with an error: count it, log it once per burst, and find out whether the
    /// broker refused a message: with exactly one message in flight, that one gets a strike; with
    /// several, nobody can tell which, so the next connections isolate them ([`isolation`]).
    fn lost(&mut self, st: &mut State, error: String, established: bool, incoming_too_large: bool) {
        self.stats.connect_errors.fetch_add(1, Relaxed);
        if established {
            match st.tracker.in_flight() {
                0 => {}
                1 => {
                    if let Some(suspect) = st.tracker.oldest_unacked().cloned()
                        && st.quarantine.strike(&suspect)
                    {
                        self.quarantine(st, suspect, "refused_by_broker", None);
                    }
                }
                n => {
                    let retained = &st.retained;
                    let iso = st.isolation.get_or_insert_with(|| {
                        self.stats.isolations.fetch_add(1, Relaxed);
                        tracing::debug!(
                            in_flight = n,
                            "the connection dropped with several messages in flight; sending them \
                             one at a time until they are through"
                        );
                        Isolation::default()
                    });
                    for key in st.tracker.in_flight_keys() {
                        iso.suspect(key, |t| retained.contains_key(t));
                    }
                }
            }
        }
        st.tracker.reset();
        if incoming_too_large {
            st.incoming_strikes += 1;
            if st.incoming_strikes >= INCOMING_STRIKES {
                st.incoming_strikes = 0;
                st.commands_paused_until = Some(Instant::now() + COMMANDS_PAUSE);
                tracing::error!(
                    limit = options::INCOMING_MAX,
                    "the broker keeps sending a message larger than the agent reads on the command \
                     topic (a retained one?); commands are not subscribed for 5 minutes"
                );
            }
        }
        if st.burst.error() {
            tracing::warn!(error = %error, url = %self.cfg.url, "broker connection failed; readings stay in the store and are sent after reconnecting");
        }
        if let Ok(mut slot) = self.stats.last_error.lock() {
            *slot = Some(error);
        }
    }

    /// Skips a message from now on: stored data stays in the store and the cursor passes it (announced
    /// with an event); a side or status message is dropped and later ones are cut down further (they
    /// are derived and will be derived again).
    fn quarantine(
        &mut self,
        st: &mut State,
        key: MessageKey,
        reason: &'static str,
        bytes: Option<usize>,
    ) {
        match &key {
            MessageKey::Data {
                stream,
                device,
                lo,
                hi,
            } => {
                self.stats.quarantined.fetch_add(1, Relaxed);
                let stream_name = match stream {
                    Stream::Readings => "readings",
                    Stream::Events => "events",
                };
                tracing::error!(
                    stream = stream_name,
                    first_seq = lo,
                    last_seq = hi,
                    device = device.as_deref().unwrap_or(""),
                    bytes,
                    reason,
                    "a message cannot be delivered; it stays in the store and the stream moves on"
                );
                let body = json!({
                    "stream": stream_name,
                    "first_seq": lo,
                    "last_seq": hi,
                    "device": device.as_deref(),
                    "bytes": bytes,
                    "reason": reason,
                    "severity": "alarm",
                });
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store
                        .append_event(QUARANTINED, chrono::Utc::now(), body)
                        .await
                    {
                        tracing::error!(error = %e, "cannot store the quarantine event");
                    }
                });
                st.quarantine.hold(key.clone());
            }
            MessageKey::Side(topic) => {
                // Dropped; a retained one is kept and goes out again cut down to the lower cap.
                self.side_refused(st, topic);
            }
            MessageKey::Status => self.side_refused(st, &self.topics.status()),
        }
        if let Some(iso) = st.isolation.as_mut() {
            iso.through(&key);
        }
    }

    /// At shutdown: say offline, wait briefly for the acknowledgements still due (so the cursor is
    /// current), then disconnect cleanly.
    async fn drain_and_disconnect(&mut self, st: &mut State, link: &mut Link) {
        if let Some(sp) = st.sparkplug.as_mut() {
            // Sparkplug: an NDEATH before the DISCONNECT (which suppresses the will).
            let death = sp.death();
            if link
                .client
                .try_publish(
                    death.topic.clone(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    death.payload,
                )
                .is_ok()
            {
                st.tracker.sent(None, MessageKey::Side(death.topic));
            }
        }
        self.publish_status(st, &link.client, &Limits::new(&self.cfg), "offline", true);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while st.tracker.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, link.events.recv()).await {
                Ok(Some(Ok(ev))) => {
                    self.track(st, &ev);
                }
                Ok(_) | Err(_) => break,
            }
        }
        let _ = link.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(ev)) = link.events.recv().await {
                if matches!(ev, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Books an outgoing publish or an acknowledgement; returns true for an acknowledgement.
    fn track(&mut self, st: &mut State, ev: &rumqttc::Event) -> bool {
        use rumqttc::{Event, Outgoing, Packet};
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                st.tracker.outgoing(*pkid);
                false
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(acked) = st.tracker.acked(ack.pkid) {
                    self.stats.acked(Instant::now());
                    st.quarantine.acked(&acked.key);
                    if let Some(iso) = st.isolation.as_mut() {
                        iso.through(&acked.key);
                    }
                    if let Some((stream, seq)) = acked.cursor {
                        self.advance(st, stream, seq);
                    }
                }
                true
            }
            _ => false,
        }
    }

    fn advance(&self, st: &mut State, stream: Stream, seq: u64) {
        let slot = match stream {
            Stream::Readings => &mut st.acked.readings,
            Stream::Events => &mut st.acked.events,
        };
        if seq > *slot {
            let counter = match stream {
                Stream::Readings => &self.stats.readings_forwarded,
                Stream::Events => &self.stats.events_forwarded,
            };
            counter.fetch_add(seq - *slot, Relaxed);
            *slot = seq;
            self.acker.ack(stream, seq);
            st.quarantine.passed(stream, seq);
        }
    }
}
