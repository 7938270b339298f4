//! One session on an open port: the trigger loop (stream, poll, dtr-pulse) that turns bytes into
//! readings until the port is lost or the agent stops.
//!
//! Every fault of the instrument or the line (timeout, garbage, over-long line, error reply, a DTR line
//! that cannot be driven) becomes bad-quality readings plus a counter; only a failing port ends a session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use super::config::{DeviceConfig, PollRequest, Trigger};
use super::framing::{FrameEvent, Framer, decode, escape};
use super::port::{LinePort, PortLost, level_name};
use super::protocols::{Fault, Measurement, shorten};
use super::tags::TagSet;
use crate::device::{DeviceContext, ErrorBurst};
use crate::reading::Reading;

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The agent is stopping (shutdown, or the store closed).
    Shutdown,
    /// The port failed (unplugged, I/O error); `got_data` says whether it delivered anything first.
    PortLost { reason: PortLost, got_data: bool },
}

/// What one frame amounts to.
enum Outcome {
    Measurements(Vec<Measurement>),
    /// Not a reading (e.g. an echo of the request).
    Ignored,
    Fault {
        reason: Arc<str>,
        instrument: bool,
    },
}

/// Result of waiting for a reply.
enum Reply {
    Measurements(Vec<Measurement>),
    Fault { reason: Arc<str> },
}

pub(crate) struct Session<'a, P: LinePort> {
    pub port: &'a mut P,
    pub cfg: &'a DeviceConfig,
    pub tags: &'a TagSet,
    pub ctx: &'a DeviceContext,
    pub burst: &'a mut ErrorBurst,
    pub name: &'a str,
    framer: Framer,
    pending: VecDeque<FrameEvent>,
    scratch: Vec<FrameEvent>,
    buf: Vec<u8>,
    got_data: bool,
    /// When the last byte arrived: a line still busy with an earlier reply is not ready for a request.
    last_byte: Instant,
    /// A partial line was dropped: the bytes up to the next terminator are the tail of an earlier reply,
    /// not the start of a new one.
    stale_tail: bool,
}

/// A session ends with this error type inside the loops.
type Flow<T> = Result<T, SessionEnd>;

impl<'a, P: LinePort> Session<'a, P> {
    pub fn new(
        port: &'a mut P,
        cfg: &'a DeviceConfig,
        tags: &'a TagSet,
        ctx: &'a DeviceContext,
        burst: &'a mut ErrorBurst,
        name: &'a str,
    ) -> Self {
        Session {
            port,
            cfg,
            tags,
            ctx,
            burst,
            name,
            framer: Framer::new(cfg.terminator.clone(), cfg.max_line),
            pending: VecDeque::new(),
            scratch: Vec::new(),
            buf: vec![0; 512],
            got_data: false,
            last_byte: Instant::now(),
            stale_tail: false,
        }
    }

    pub async fn run(mut self) -> SessionEnd {
        let result = match self.cfg.trigger.clone() {
            Trigger::Stream => self.stream().await,
            Trigger::Poll { interval, requests } => self.poll(interval, &requests).await,
            Trigger::DtrPulse { interval, pulse } => self.dtr_pulse(interval, pulse).await,
        };
        match result {
            Ok(()) => SessionEnd::Shutdown,
            Err(end) => end,
        }
    }

    // ---- triggers ----

    async fn stream(&mut self) -> Flow<()> {
        let mut last_byte = Instant::now();
        loop {
            while let Some(ev) = self.pending.pop_front() {
                let ts = Utc::now();
                let batch = match self.interpret(ev) {
                    Outcome::Measurements(ms) => {
                        self.recovered();
                        let readings = self.tags.readings(&ms, self.tags.all(), false, ts);
                        if readings.is_empty() {
                            tracing::debug!(device = %self.name, "frame for no configured tag: {ms:?}");
                        }
                        readings
                    }
                    Outcome::Ignored => continue,
                    Outcome::Fault { reason, .. } => self.tags.fault(self.tags.all(), &reason, ts),
                };
                self.publish(batch).await?;
            }
            let partial = self.framer.pending() > 0;
            let stale_at = last_byte + self.cfg.timeout;
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Ok(()),
                n = read_port(&mut *self.port, &mut self.buf) => {
                    let n = n.map_err(|r| self.lost(r))?;
                    last_byte = Instant::now();
                    self.feed(n);
                }
                _ = sleep_until(stale_at), if partial => {
                    let reason = self.drop_partial("incomplete line");
                    self.count_fault(&reason, false);
                    let batch = self.tags.fault(self.tags.all(), &reason, Utc::now());
                    self.publish(batch).await?;
                }
            }
        }
    }

    async fn poll(&mut self, interval: Duration, requests: &[PollRequest]) -> Flow<()> {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.idle_until_tick(&mut ticker).await?;
            for req in requests {
                let reply = self.request(&req.bytes).await?;
                let batch = self.reply_readings(reply, &req.tags);
                self.publish(batch).await?;
            }
        }
    }

    async fn dtr_pulse(&mut self, interval: Duration, pulse: Duration) -> Flow<()> {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let all: Vec<usize> = self.tags.all().collect();
        loop {
            self.idle_until_tick(&mut ticker).await?;
            self.start_exchange().await?;
            self.ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let reply = match self.port.set_dtr(false) {
                Ok(()) => {
                    let raise_at = Instant::now() + pulse;
                    self.wait_reply(raise_at + self.cfg.timeout, Some(raise_at))
                        .await?
                }
                Err(e) => {
                    // Some adapters (and pseudo-terminals) have no DTR line to drive.
                    let reason: Arc<str> = Arc::from(format!("dtr-pulse: cannot drop DTR: {e}"));
                    self.count_fault(&reason, false);
                    Reply::Fault { reason }
                }
            };
            let batch = self.reply_readings(reply, &all);
            self.publish(batch).await?;
        }
    }

    // ---- building blocks ----

    /// Waits for the next tick; meanwhile reads (and drops) what the instrument sends unasked, which also
    /// notices a port that disappears between requests. The bytes go through the framer so that the line
    /// position stays known: a reply cut off at its timeout must not leave its tail to answer the next
    /// request.
    async fn idle_until_tick(&mut self, ticker: &mut tokio::time::Interval) -> Flow<()> {
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
                _ = ticker.tick() => return Ok(()),
                n = read_port(&mut *self.port, &mut self.buf) => {
                    let n = n.map_err(|r| self.lost(r))?;
                    self.feed(n);
                    self.drop_unsolicited();
                }
            }
        }
    }

    /// Makes the line ready for a request: whatever complete frames are waiting are late or unsolicited
    /// and dropped. A line in the middle of a frame (a late reply still arriving) is read until its
    /// terminator, or until it stays quiet for the timeout; if its tail has still not come, the first frame
    /// after the request is taken as that tail and dropped (see [`Session::skip_tail`]): losing one reply
    /// is better than taking the tail of an old one (`500mm` of `73.` + `500mm`) as the new value.
    async fn start_exchange(&mut self) -> Flow<()> {
        self.drop_unsolicited();
        if let Some(stale) = self.framer.discard_partial() {
            tracing::debug!(device = %self.name, "dropped the start of a late reply \"{}\"", escape(&stale));
            self.stale_tail = true;
        }
        let give_up = Instant::now() + self.cfg.timeout;
        while self.stale_tail {
            let quiet_at = (self.last_byte + self.cfg.timeout).min(give_up);
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
                n = read_port(&mut *self.port, &mut self.buf) => {
                    let n = n.map_err(|r| self.lost(r))?;
                    self.feed(n);
                    self.drop_unsolicited();
                }
                _ = sleep_until(quiet_at) => break,
            }
        }
        if let Some(stale) = self.framer.discard_partial() {
            tracing::debug!(device = %self.name, "dropped stale bytes \"{}\"", escape(&stale));
            self.stale_tail = true;
        }
        Ok(())
    }

    /// True (and the flag cleared) when `ev` is the tail of a line whose start was dropped.
    fn skip_tail(&mut self, ev: &FrameEvent) -> bool {
        if !std::mem::take(&mut self.stale_tail) {
            return false;
        }
        match ev {
            FrameEvent::Frame(bytes) => {
                tracing::debug!(device = %self.name, "dropped the tail of a late reply \"{}\"", escape(bytes));
            }
            FrameEvent::Error(e) => {
                tracing::debug!(device = %self.name, "dropped the tail of a late reply: {e}");
            }
        }
        true
    }

    /// Drops the frames that arrived outside a request's reply window.
    fn drop_unsolicited(&mut self) {
        while let Some(ev) = self.pending.pop_front() {
            if self.skip_tail(&ev) {
                continue;
            }
            match ev {
                FrameEvent::Frame(bytes) => {
                    tracing::debug!(device = %self.name, "dropped unsolicited \"{}\"", escape(&bytes));
                }
                FrameEvent::Error(e) => {
                    tracing::debug!(device = %self.name, "dropped unsolicited: {e}");
                }
            }
        }
    }

    /// Sends one poll request and waits for its reply.
    async fn request(&mut self, bytes: &[u8]) -> Flow<Reply> {
        self.start_exchange().await?;
        let write = async {
            self.port.write_all(bytes).await?;
            self.port.flush().await
        };
        match tokio::time::timeout(self.cfg.timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.lost(PortLost::Write(e))),
            Err(_) => {
                self.ctx.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                let reason: Arc<str> = Arc::from(format!(
                    "timeout: the request could not be sent within {} (flow control holding it back?)",
                    humantime::format_duration(self.cfg.timeout)
                ));
                self.note_fault(&reason);
                return Ok(Reply::Fault { reason });
            }
        }
        self.ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.cfg.timeout;
        self.wait_reply(deadline, None).await
    }

    /// Waits until a frame that is a reply arrives, or `deadline`. A reply is a measurement or the
    /// instrument's error; a malformed frame (garbage, noise, a line the protocol does not know) is counted
    /// and skipped, and the wait goes on: the real answer often follows it. When the deadline passes with
    /// only malformed frames, the last one's reason is the reading's. With `raise_dtr_at`, DTR goes back to
    /// high at that moment (the end of a dtr-pulse) while the wait goes on.
    async fn wait_reply(
        &mut self,
        deadline: Instant,
        mut raise_dtr_at: Option<Instant>,
    ) -> Flow<Reply> {
        let mut dtr_fault: Option<Arc<str>> = None;
        let mut malformed: Option<Arc<str>> = None;
        let reply = loop {
            let mut answered = None;
            while let Some(ev) = self.pending.pop_front() {
                if self.skip_tail(&ev) {
                    continue;
                }
                match self.interpret(ev) {
                    Outcome::Ignored => continue,
                    Outcome::Measurements(ms) => {
                        answered = Some(Reply::Measurements(ms));
                        break;
                    }
                    Outcome::Fault {
                        reason,
                        instrument: true,
                    } => {
                        answered = Some(Reply::Fault { reason });
                        break;
                    }
                    Outcome::Fault {
                        reason,
                        instrument: false,
                    } => malformed = Some(reason),
                }
            }
            if let Some(r) = answered {
                break r;
            }
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Err(SessionEnd::Shutdown),
                n = read_port(&mut *self.port, &mut self.buf) => {
                    let n = n.map_err(|r| self.lost(r))?;
                    self.feed(n);
                }
                _ = sleep_until(raise_dtr_at.unwrap_or(deadline)), if raise_dtr_at.is_some() => {
                    raise_dtr_at = None;
                    if let Err(e) = self.port.set_dtr(true) {
                        dtr_fault = Some(Arc::from(format!(
                            "dtr-pulse: cannot raise DTR {} again: {e}", level_name(true)
                        )));
                    }
                }
                _ = sleep_until(deadline) => {
                    self.ctx.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                    let reason = if self.framer.pending() > 0 {
                        // The rest of this line may still come: it must not answer the next request.
                        self.stale_tail = true;
                        self.drop_partial("incomplete reply")
                    } else if let Some(why) = malformed.take() {
                        Arc::from(format!("no valid reply: {why}"))
                    } else {
                        Arc::from("timeout: no reply")
                    };
                    self.note_fault(&reason);
                    break Reply::Fault { reason };
                }
            }
        };
        if raise_dtr_at.is_some()
            && let Err(e) = self.port.set_dtr(true)
        {
            dtr_fault = Some(Arc::from(format!("dtr-pulse: cannot raise DTR again: {e}")));
        }
        if let Some(reason) = dtr_fault {
            // A DTR stuck low would stop every later request: report it over the reply.
            self.count_fault(&reason, false);
            return Ok(Reply::Fault { reason });
        }
        Ok(reply)
    }

    fn reply_readings(&mut self, reply: Reply, tags: &[usize]) -> Vec<Reading> {
        let ts = Utc::now();
        match reply {
            Reply::Measurements(ms) => {
                let readings = self.tags.readings(&ms, tags.iter().copied(), true, ts);
                if readings.iter().all(|r| r.quality.is_good()) {
                    self.recovered();
                } else if let Some(r) = readings.iter().find(|r| !r.quality.is_good()) {
                    // A reply that lacks a tag's value (wrong mode, wrong channel) is an error too.
                    let reason: Arc<str> = Arc::from(r.quality.reason().unwrap_or("bad reading"));
                    self.count_fault(&reason, false);
                }
                readings
            }
            Reply::Fault { reason } => self.tags.fault(tags.iter().copied(), &reason, ts),
        }
    }

    fn feed(&mut self, n: usize) {
        self.got_data = true;
        self.last_byte = Instant::now();
        let bytes = self.buf.get(..n).unwrap_or_default();
        self.framer.push(bytes, &mut self.scratch);
        self.pending.extend(self.scratch.drain(..));
    }

    /// Drops an incomplete frame and returns the reason (the caller counts it).
    fn drop_partial(&mut self, what: &str) -> Arc<str> {
        let dropped = self.framer.discard_partial().unwrap_or_default();
        let reason: Arc<str> = Arc::from(format!(
            "timeout: {what} \"{}\" (no terminator within {})",
            shorten(&escape(&dropped)),
            humantime::format_duration(self.cfg.timeout)
        ));
        reason
    }

    fn interpret(&mut self, ev: FrameEvent) -> Outcome {
        let outcome = match ev {
            FrameEvent::Error(e) => Outcome::Fault {
                reason: Arc::from(e.to_string()),
                instrument: false,
            },
            FrameEvent::Frame(bytes) => match decode(&bytes, self.cfg.port.data_bits == 7) {
                Err(e) => Outcome::Fault {
                    reason: Arc::from(format!("{e} in \"{}\"", shorten(&escape(&bytes)))),
                    instrument: false,
                },
                Ok(text) => match self.cfg.protocol.parse(&text) {
                    Ok(ms) if ms.is_empty() => Outcome::Ignored,
                    Ok(ms) => Outcome::Measurements(ms),
                    Err(Fault::Instrument(r)) => Outcome::Fault {
                        reason: Arc::from(r),
                        instrument: true,
                    },
                    Err(Fault::Malformed(r)) => Outcome::Fault {
                        reason: Arc::from(r),
                        instrument: false,
                    },
                },
            },
        };
        if let Outcome::Fault { reason, instrument } = &outcome {
            self.count_fault(reason, *instrument);
        }
        outcome
    }

    /// Counts a fault (`exceptions` for the instrument's own error replies, `errors` for the rest) and logs
    /// it once per burst.
    fn count_fault(&mut self, reason: &str, instrument: bool) {
        let counter = if instrument {
            &self.ctx.metrics.exceptions
        } else {
            &self.ctx.metrics.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.note_fault(reason);
    }

    /// Records and logs a fault whose counter the caller already moved (timeouts).
    fn note_fault(&mut self, reason: &str) {
        self.ctx.metrics.set_last_error(reason);
        if self.burst.error() {
            tracing::warn!(device = %self.name, "{reason}");
        }
    }

    fn recovered(&mut self) {
        if let Some(suppressed) = self.burst.ok() {
            tracing::info!(device = %self.name, suppressed, "readings are good again");
        }
    }

    fn lost(&self, reason: PortLost) -> SessionEnd {
        SessionEnd::PortLost {
            reason,
            got_data: self.got_data,
        }
    }

    async fn publish(&self, batch: Vec<Reading>) -> Flow<()> {
        self.ctx
            .publish(batch)
            .await
            .map_err(|_| SessionEnd::Shutdown)
    }
}

/// Reads once; end of file and errors mean the port is gone (a hung-up tty reads 0 or EIO).
async fn read_port<P: LinePort>(port: &mut P, buf: &mut [u8]) -> Result<usize, PortLost> {
    match port.read(buf).await {
        Ok(0) => Err(PortLost::Closed),
        Ok(n) => Ok(n),
        Err(e) => Err(PortLost::Read(e)),
    }
}
