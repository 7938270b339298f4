//! One Modbus link (a TCP connection, a serial port, or an RTU-over-TCP connection) and its transactions:
//! connect with a timeout, every request under a timeout, drop and re-establish the link after faults, with
//! backoff on failed connects.
//!
//! Fault policy:
//! - **Modbus TCP:** after a timeout, an I/O error or a protocol error (transaction id / function code
//!   mismatch, wrong reply length) the connection is dropped: a late reply would otherwise be read as the
//!   answer to the next request. The next transaction reconnects at once; if that connect fails, further
//!   attempts wait an exponential backoff with jitter ([`crate::device::Backoff`]), and transactions in the
//!   meantime fail fast with "not connected" instead of waiting.
//! - **RTU (serial or over TCP):** the link is a bus shared by several units, and a unit that does not answer
//!   says nothing about the line. A timeout therefore keeps the link, and stale bytes (a late reply) are
//!   discarded before the next request is written ([`DiscardStale`]). Only I/O and framing errors reopen
//!   the link at once, and so do three timeouts in a row with no answer from any unit in between (a dead
//!   gateway connection or an unplugged adapter looks like that). A reply from another unit (the late
//!   answer of a unit that timed out, arriving after the next request went out) is discarded and the
//!   request asked again within its own timeout, so a slow unit does not spoil the next unit's
//!   transaction.
//! - A Modbus exception is an answer: the link stays up.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use super::config::{Endpoint, SerialSettings, Timing};
use super::decode::Area;
use crate::device::Backoff;
use crate::report::io_reason;

/// What a read returned.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// Why a transaction gave no data. Device refusals ([`TxError::Exception`]: the device answered, the link
/// is fine) are kept apart from link failures, as tokio-modbus does. The display form is the quality reason
/// for the tags of the request (short, stable wording: historians group by it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TxError {
    /// The device refused the request (it answered, the link is fine).
    #[error("exception: {}", exception_name(*.0))]
    Exception(ExceptionCode),
    /// No reply within the request timeout.
    #[error("timeout: no reply within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// I/O error on the link (its stable reason, see [`crate::report::io_reason`]).
    #[error("transport: {0}")]
    Transport(String),
    /// A reply that does not belong to the request or is malformed.
    #[error("protocol: {0}")]
    Protocol(ProtocolFault),
    /// Connecting failed just now.
    #[error("not connected: {0}")]
    Connect(ConnectFailure),
    /// The link is down and the next connect attempt is not due yet: nothing was sent.
    #[error("not connected: {0}")]
    NotConnected(LinkDown),
}

/// Why a connect attempt failed. `endpoint` is the endpoint's display form (`10.0.0.5:502`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// The OS refused or failed the connect (or the serial port would not open); `reason` is the stable
    /// wording of [`crate::report::io_reason`].
    #[error("{endpoint}: {reason}")]
    Io { endpoint: String, reason: String },
    #[error("{endpoint}: connect timed out after {}", humantime::format_duration(*timeout))]
    TimedOut { endpoint: String, timeout: Duration },
}

/// Why a transaction was not even sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkDown {
    /// The last connect failed and the next attempt is not due yet (the retry timing goes to the log,
    /// never into the reason: one cause, one reason text).
    #[error(transparent)]
    Connect(ConnectFailure),
    #[error("link down")]
    Down,
    #[error("the bus task has stopped")]
    BusStopped,
    /// The device may not use its bus (another device opened it with other line settings); the text says
    /// which (see [`super::bus::BusConflict`]).
    #[error("{0}")]
    Refused(String),
}

impl TxError {
    /// The quality reason for the tags of the request: the display form.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// A reply that does not answer the request: the link is dropped, since later replies cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolFault {
    #[error("device answered {got} register(s) for a read of {want}")]
    RegisterCount { got: usize, want: usize },
    #[error("device answered {got} bit(s) for a read of {want}")]
    BitCount { got: usize, want: usize },
    #[error("reply of function {function} to a {area} read")]
    WrongFunction {
        function: tokio_modbus::FunctionCode,
        area: Area,
    },
    /// tokio-modbus's message (the transaction id or unit that did not match).
    #[error("reply header does not match the request ({0})")]
    HeaderMismatch(String),
    #[error("reply function code does not match the request (function {0})")]
    FunctionCodeMismatch(tokio_modbus::FunctionCode),
}

/// `IllegalDataAddress`, `ServerDeviceBusy`, ... or `code 0x0C` for codes outside the standard.
pub fn exception_name(code: ExceptionCode) -> String {
    match code {
        ExceptionCode::Custom(c) => format!("code 0x{c:02X}"),
        other => format!("{other:?}"),
    }
}

/// The result of one transaction and what happened to the link on the way, for the device's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct TxOutcome {
    pub result: Result<ReadData, TxError>,
    /// Requests that went out on the wire (0 when the link was down; more than 1 when late replies of other
    /// units made the driver ask again).
    pub requests: u32,
    /// The link was re-established (not the first connect) for this transaction.
    pub reconnected: bool,
}

/// One read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub unit_id: u8,
    pub area: Area,
    pub start: u16,
    pub count: u16,
}

impl std::fmt::Display for ReadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unit {} {} {}..={}",
            self.unit_id,
            self.area,
            self.start,
            u32::from(self.start) + u32::from(self.count).max(1) - 1
        )
    }
}

/// Attempts of one RTU transaction when replies of other units (late answers) get in the way.
const MAX_ATTEMPTS_AFTER_LATE_REPLIES: u32 = 4;

/// Consecutive timeouts (with no answer in between) after which an RTU link is reopened.
const BUS_TIMEOUTS_BEFORE_REOPEN: u32 = 3;

/// A link to one endpoint. Not shared: the owner runs one transaction at a time (the bus task for RTU links,
/// the device's poll loop for Modbus TCP).
pub struct Link {
    endpoint: Endpoint,
    connect_timeout: Duration,
    ctx: Option<Context>,
    backoff: Backoff,
    /// No connect attempt before this instant (set after a failed connect).
    retry_at: Option<Instant>,
    last_connect_error: Option<ConnectFailure>,
    ever_connected: bool,
    /// End of the last frame on the line, for the inter-frame delay.
    last_frame_end: Option<Instant>,
    timeouts_in_row: u32,
}

impl Link {
    pub fn new(endpoint: Endpoint, timing: &Timing) -> Self {
        Link {
            endpoint,
            connect_timeout: timing.connect_timeout,
            ctx: None,
            backoff: Backoff::new(timing.reconnect_min, timing.reconnect_max),
            retry_at: None,
            last_connect_error: None,
            ever_connected: false,
            last_frame_end: None,
            timeouts_in_row: 0,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Runs one read: connects if needed, waits the inter-frame delay, sends under `timeout`.
    pub async fn read(
        &mut self,
        req: ReadRequest,
        timeout: Duration,
        inter_frame_delay: Duration,
    ) -> TxOutcome {
        let mut reconnected = false;
        if self.ctx.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                // The retry timing goes to the log, never into the reason: one cause, one reason text.
                let wait = at.saturating_duration_since(Instant::now());
                let why = match &self.last_connect_error {
                    Some(failure) => LinkDown::Connect(failure.clone()),
                    None => LinkDown::Down,
                };
                tracing::trace!(endpoint = %self.endpoint, "modbus: {why} (next attempt in {})",
                    humantime::format_duration(round_ms(wait)));
                return TxOutcome {
                    result: Err(TxError::NotConnected(why)),
                    requests: 0,
                    reconnected: false,
                };
            }
            match tokio::time::timeout(self.connect_timeout, connect(&self.endpoint)).await {
                Ok(Ok(ctx)) => {
                    self.ctx = Some(ctx);
                    self.retry_at = None;
                    self.last_connect_error = None;
                    reconnected = self.ever_connected;
                    self.ever_connected = true;
                    self.timeouts_in_row = 0;
                }
                Ok(Err(e)) => {
                    return self.connect_failed(ConnectFailure::Io {
                        endpoint: self.endpoint.to_string(),
                        reason: io_reason(&e),
                    });
                }
                Err(_) => {
                    return self.connect_failed(ConnectFailure::TimedOut {
                        endpoint: self.endpoint.to_string(),
                        timeout: self.connect_timeout,
                    });
                }
            }
        }
        if let Some(end) = self.last_frame_end {
            tokio::time::sleep_until(end + inter_frame_delay).await;
        }
        let Some(ctx) = self.ctx.as_mut() else {
            // Unreachable: connected just above. Reported rather than panicking.
            return TxOutcome {
                result: Err(TxError::NotConnected(LinkDown::Down)),
                requests: 0,
                reconnected,
            };
        };
        ctx.set_slave(Slave(req.unit_id));
        let request = match req.area {
            Area::Coil => Request::ReadCoils(req.start, req.count),
            Area::DiscreteInput => Request::ReadDiscreteInputs(req.start, req.count),
            Area::HoldingRegister => Request::ReadHoldingRegisters(req.start, req.count),
            Area::InputRegister => Request::ReadInputRegisters(req.start, req.count),
        };
        // The whole transaction, retries included, gets the unit's timeout: a unit costs at most that.
        let deadline = Instant::now() + timeout;
        let mut attempts = 0u32;
        let reply = loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = tokio::time::timeout(left, ctx.call(request.clone())).await;
            self.last_frame_end = Some(Instant::now());
            // On an RTU bus, a reply from another unit is the late answer to an earlier request that timed
            // out. The line is fine, but this request's own answer may have been thrown away behind it: ask
            // again while the unit's time lasts (each late reply is consumed by one attempt).
            let late_reply = matches!(
                &reply,
                Ok(Err(tokio_modbus::Error::Protocol(
                    tokio_modbus::ProtocolError::HeaderMismatch { .. }
                )))
            );
            if late_reply
                && self.endpoint.is_bus()
                && attempts < MAX_ATTEMPTS_AFTER_LATE_REPLIES
                && Instant::now() + inter_frame_delay < deadline
            {
                tracing::debug!(%req, "modbus: late reply of another unit discarded; asking again");
                tokio::time::sleep(inter_frame_delay).await;
                continue;
            }
            break reply;
        };
        let result = match reply {
            Ok(Ok(Ok(response))) => match check_reply(req, response) {
                Ok(data) => {
                    self.answered();
                    Ok(data)
                }
                Err(e) => {
                    self.drop_link();
                    Err(TxError::Protocol(e))
                }
            },
            Ok(Ok(Err(code))) => {
                self.answered();
                Err(TxError::Exception(code))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                self.drop_link();
                Err(TxError::Transport(transport_reason(&e)))
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                self.drop_link();
                Err(TxError::Protocol(protocol_summary(&e)))
            }
            Err(_) => {
                self.timeouts_in_row = self.timeouts_in_row.saturating_add(1);
                if !self.endpoint.is_bus() || self.timeouts_in_row >= BUS_TIMEOUTS_BEFORE_REOPEN {
                    self.drop_link();
                }
                Err(TxError::Timeout(timeout))
            }
        };
        TxOutcome {
            result,
            requests: attempts,
            reconnected,
        }
    }

    fn answered(&mut self) {
        self.backoff.reset();
        self.timeouts_in_row = 0;
    }

    /// Drops the link; the next transaction reconnects at once (backoff applies to failed connects).
    fn drop_link(&mut self) {
        self.ctx = None;
        self.timeouts_in_row = 0;
    }

    fn connect_failed(&mut self, failure: ConnectFailure) -> TxOutcome {
        self.ctx = None;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        self.last_connect_error = Some(failure.clone());
        TxOutcome {
            result: Err(TxError::Connect(failure)),
            requests: 0,
            reconnected: false,
        }
    }
}

/// tokio-modbus 0.17 reports the end of a TCP stream as `io::Error::last_os_error()`, i.e. whatever errno
/// is left over in the thread (none: "Success (os error 0)"; EAGAIN, EINPROGRESS: "Operation now in
/// progress (os error 115)"). An async transaction never sees those for real, so on a transaction they
/// mean the peer closed the connection.
fn transport_reason(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::WouldBlock || matches!(e.raw_os_error(), Some(0 | 11 | 114 | 115))
    {
        "connection closed by peer".to_string()
    } else {
        io_reason(e)
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// A short form of a tokio-modbus protocol error (its Debug form includes the whole decoded reply).
fn protocol_summary(e: &tokio_modbus::ProtocolError) -> ProtocolFault {
    match e {
        tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => {
            ProtocolFault::HeaderMismatch(message.clone())
        }
        tokio_modbus::ProtocolError::FunctionCodeMismatch { request, .. } => {
            ProtocolFault::FunctionCodeMismatch(*request)
        }
    }
}

/// Checks that the reply is the right kind and size (never trusting the device) and extracts the data.
fn check_reply(req: ReadRequest, response: Response) -> Result<ReadData, ProtocolFault> {
    let want = usize::from(req.count);
    match (req.area, response) {
        (Area::HoldingRegister, Response::ReadHoldingRegisters(words))
        | (Area::InputRegister, Response::ReadInputRegisters(words)) => {
            if words.len() == want {
                Ok(ReadData::Words(words))
            } else {
                Err(ProtocolFault::RegisterCount {
                    got: words.len(),
                    want,
                })
            }
        }
        (Area::Coil, Response::ReadCoils(mut bits))
        | (Area::DiscreteInput, Response::ReadDiscreteInputs(mut bits)) => {
            // Bits come in whole bytes: the tail of the last byte is padding.
            if bits.len() >= want && bits.len() < want + 8 {
                bits.truncate(want);
                Ok(ReadData::Bits(bits))
            } else {
                Err(ProtocolFault::BitCount {
                    got: bits.len(),
                    want,
                })
            }
        }
        (_, other) => Err(ProtocolFault::WrongFunction {
            function: other.function_code(),
            area: req.area,
        }),
    }
}

async fn connect(endpoint: &Endpoint) -> io::Result<Context> {
    // The unit id is set per request; the one given here is only the initial value.
    let slave = Slave(1);
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let stream = tcp_connect(host, *port).await?;
            Ok(tokio_modbus::client::tcp::attach_slave(stream, slave))
        }
        Endpoint::RtuOverTcp { host, port } => {
            let stream = tcp_connect(host, *port).await?;
            Ok(tokio_modbus::client::rtu::attach_slave(
                DiscardStale::new(stream),
                slave,
            ))
        }
        Endpoint::Rtu(settings) => {
            let port = open_serial(settings)?;
            Ok(tokio_modbus::client::rtu::attach_slave(
                DiscardStale::new(port),
                slave,
            ))
        }
    }
}

async fn tcp_connect(host: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    // Request/response traffic: Nagle would hold a request back waiting for the previous ACK.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a serial port in the configured line settings and empties its buffers.
pub fn open_serial(s: &SerialSettings) -> io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPort as _;
    let builder = s.format().builder(&s.path);
    let port = tokio_serial::SerialStream::open(&builder).map_err(io::Error::from)?;
    port.clear(tokio_serial::ClearBuffer::All)
        .map_err(io::Error::from)?;
    Ok(port)
}

/// Wraps an RTU transport so that bytes already received when a new request is written are thrown away.
/// RTU frames carry no transaction id: a reply that arrives after its request timed out would otherwise be
/// taken as the answer to the next request (to another unit, perhaps). A master may only have one
/// transaction in flight, so anything waiting in the input before a request is stale.
#[derive(Debug)]
pub struct DiscardStale<T> {
    inner: T,
    /// Set once a reply has been read; the next write first drains the input.
    discard_before_write: bool,
}

impl<T> DiscardStale<T> {
    pub fn new(inner: T) -> Self {
        DiscardStale {
            inner,
            discard_before_write: true,
        }
    }
}

impl<T: AsyncRead + Unpin> DiscardStale<T> {
    /// Reads and drops whatever is ready now, without waiting. Bounded, so a babbling line cannot keep the
    /// writer here forever.
    fn drain(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        let mut scratch = [0u8; 256];
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break, // end of stream
                Poll::Ready(Ok(())) => {
                    tracing::debug!(bytes = buf.filled().len(), "modbus: discarded stale input");
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DiscardStale<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.discard_before_write = true;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for DiscardStale<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.discard_before_write {
            self.discard_before_write = false;
            if let Err(e) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn stale_input_is_dropped_before_the_next_write() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut link = DiscardStale::new(a);
        // A first exchange: request, reply.
        link.write_all(b"req1").await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"rep1").await.unwrap();
        link.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"rep1");
        // A late reply lands while nobody is reading; the next request must not see it.
        b.write_all(b"late").await.unwrap();
        tokio::task::yield_now().await;
        link.write_all(b"req2").await.unwrap();
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"req2");
        b.write_all(b"rep2").await.unwrap();
        link.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"rep2");
    }

    #[test]
    fn replies_are_checked_against_the_request() {
        let req = ReadRequest {
            unit_id: 1,
            area: Area::HoldingRegister,
            start: 0,
            count: 2,
        };
        assert_eq!(
            check_reply(req, Response::ReadHoldingRegisters(vec![1, 2])),
            Ok(ReadData::Words(vec![1, 2]))
        );
        let short = check_reply(req, Response::ReadHoldingRegisters(vec![1])).unwrap_err();
        assert_eq!(short, ProtocolFault::RegisterCount { got: 1, want: 2 });
        assert_eq!(
            TxError::Protocol(short).reason(),
            "protocol: device answered 1 register(s) for a read of 2"
        );
        assert_eq!(
            check_reply(req, Response::ReadInputRegisters(vec![1, 2]))
                .unwrap_err()
                .to_string(),
            "reply of function 4 to a holding-register read"
        );
        let bits = ReadRequest {
            area: Area::Coil,
            count: 3,
            ..req
        };
        assert_eq!(
            check_reply(
                bits,
                Response::ReadCoils(vec![true, false, true, false, false, false, false, false])
            ),
            Ok(ReadData::Bits(vec![true, false, true]))
        );
        assert!(check_reply(bits, Response::ReadCoils(vec![true])).is_err());
    }

    #[test]
    fn a_stale_errno_at_the_end_of_a_stream_reads_as_a_closed_connection() {
        for e in [
            io::Error::from_raw_os_error(0),
            io::Error::from_raw_os_error(115),
            io::Error::from_raw_os_error(11),
            io::Error::from(io::ErrorKind::UnexpectedEof),
        ] {
            assert_eq!(transport_reason(&e), "connection closed by peer");
        }
        assert_eq!(
            transport_reason(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            "connection refused"
        );
    }

    #[test]
    fn reasons_name_the_fault() {
        assert_eq!(
            TxError::Exception(ExceptionCode::IllegalDataAddress).reason(),
            "exception: IllegalDataAddress"
        );
        assert_eq!(
            TxError::Exception(ExceptionCode::Custom(0x0C)).reason(),
            "exception: code 0x0C"
        );
        assert_eq!(
            TxError::Timeout(Duration::from_millis(500)).reason(),
            "timeout: no reply within 500ms"
        );
        let refused = ConnectFailure::Io {
            endpoint: "10.0.0.5:502".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            TxError::Connect(refused.clone()).reason(),
            "not connected: 10.0.0.5:502: connection refused"
        );
        assert_eq!(
            TxError::NotConnected(LinkDown::Connect(refused)).reason(),
            "not connected: 10.0.0.5:502: connection refused",
            "the same cause reads the same while the link waits for its next attempt"
        );
        assert_eq!(
            TxError::Connect(ConnectFailure::TimedOut {
                endpoint: "plc:502".into(),
                timeout: Duration::from_secs(3)
            })
            .reason(),
            "not connected: plc:502: connect timed out after 3s"
        );
    }
}
