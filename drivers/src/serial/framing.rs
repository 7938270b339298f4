//! Line assembly: bytes from the port → frames, with a length cap and resynchronisation.
//!
//! The framer is a pure state machine (no I/O, no clock): the driver feeds it whatever a read returned,
//! in any split, and gets complete frames or framing errors back. A line longer than the cap is reported
//! once and then discarded up to the next terminator, where the framer picks up again (resync). Time-based
//! decisions (an incomplete frame that never finishes) are the caller's, through [`Framer::discard_partial`].

use std::fmt;

/// What ends a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminator {
    /// CR or LF, whichever comes (CRLF gives an empty frame in between, which is skipped). The default:
    /// it copes with instruments that end lines with CR, LF or CRLF.
    CrOrLf,
    /// An exact byte sequence (e.g. `=` or `\r\n` or `ETX`).
    Bytes(Vec<u8>),
}

impl Terminator {
    /// `None`/empty text means [`Terminator::CrOrLf`].
    pub fn from_config(text: Option<&str>) -> Terminator {
        match text {
            None | Some("") => Terminator::CrOrLf,
            Some(t) => Terminator::Bytes(t.as_bytes().to_vec()),
        }
    }

    /// How the terminator reads in a plan or a log line.
    pub fn describe(&self) -> String {
        match self {
            Terminator::CrOrLf => "CR or LF".to_string(),
            Terminator::Bytes(b) => format!("\"{}\"", escape(b)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete frame, without its terminator and without surrounding CR/LF; never empty.
    Frame(Vec<u8>),
    Error(FrameError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More than `max` bytes without a terminator; bytes are dropped until the next terminator.
    TooLong { max: usize },
    /// A byte no gauge sends in a text line: a parity, baud-rate or data-bits mismatch, or line noise.
    InvalidByte { byte: u8, offset: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { max } => write!(
                f,
                "framing: line longer than {max} bytes without a terminator (dropped up to the next terminator)"
            ),
            FrameError::InvalidByte { byte, offset } => write!(
                f,
                "framing: invalid byte 0x{byte:02X} at offset {offset} (parity, baud rate or data bits mismatch, or line noise)"
            ),
        }
    }
}

/// Splits a byte stream into frames. See the module docs.
#[derive(Debug)]
pub struct Framer {
    terminator: Terminator,
    max: usize,
    buf: Vec<u8>,
    /// True while dropping the rest of an over-long line.
    discarding: bool,
}

impl Framer {
    /// `max` is the longest frame accepted, terminator excluded (at least 1).
    pub fn new(terminator: Terminator, max: usize) -> Self {
        let max = max.max(1);
        Framer {
            terminator,
            max,
            buf: Vec::with_capacity(max.min(4096) + 8),
            discarding: false,
        }
    }

    /// Feeds bytes; complete frames and errors are appended to `out` in order.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<FrameEvent>) {
        for &b in bytes {
            self.push_byte(b, out);
        }
    }

    fn push_byte(&mut self, b: u8, out: &mut Vec<FrameEvent>) {
        let content_len = match &self.terminator {
            Terminator::CrOrLf => {
                if b == b'\r' || b == b'\n' {
                    self.finish(self.buf.len(), out);
                    return;
                }
                self.buf.push(b);
                self.buf.len()
            }
            Terminator::Bytes(t) => {
                self.buf.push(b);
                if !t.is_empty() && self.buf.ends_with(t) {
                    let len = self.buf.len() - t.len();
                    self.finish(len, out);
                    return;
                }
                // Bytes that may still turn out to be the start of the terminator are not content yet.
                self.buf.len().saturating_sub(t.len().saturating_sub(1))
            }
        };
        if content_len > self.max {
            if !self.discarding {
                self.discarding = true;
                out.push(FrameEvent::Error(FrameError::TooLong { max: self.max }));
            }
            // Keep only what could be the beginning of a terminator, so memory stays bounded.
            let keep = match &self.terminator {
                Terminator::CrOrLf => 0,
                Terminator::Bytes(t) => t.len().saturating_sub(1),
            };
            let drop = self.buf.len().saturating_sub(keep);
            self.buf.drain(..drop);
        }
    }

    fn finish(&mut self, content_len: usize, out: &mut Vec<FrameEvent>) {
        let content = self.buf.get(..content_len).unwrap_or(&[]);
        if !self.discarding {
            let trimmed = trim_line_ends(content);
            if !trimmed.is_empty() {
                out.push(FrameEvent::Frame(trimmed.to_vec()));
            }
        }
        self.buf.clear();
        self.discarding = false;
    }

    /// Bytes of an incomplete frame held right now (0 when idle).
    pub fn pending(&self) -> usize {
        if self.discarding {
            return 0;
        }
        trim_line_ends(&self.buf).len()
    }

    /// Drops an incomplete frame (e.g. a reply that stopped half-way, before a new request) and ends a
    /// discard. Returns the bytes dropped, if there were any that were not just line ends.
    pub fn discard_partial(&mut self) -> Option<Vec<u8>> {
        let dropped = if self.discarding {
            None
        } else {
            let t = trim_line_ends(&self.buf);
            (!t.is_empty()).then(|| t.to_vec())
        };
        self.buf.clear();
        self.discarding = false;
        dropped
    }
}

fn trim_line_ends(mut s: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Turns a frame into text, or says which byte cannot be part of a gauge's line. Printable ASCII and TAB
/// always pass. Bytes ≥ 0x80 cannot come from a 7-bit port at all (a parity or data-bits mismatch); on an
/// 8-bit port UTF-8 passes, and so do Latin-1 `°` and `µ`, which some gauges print. Control bytes never pass.
pub fn decode(frame: &[u8], seven_bit: bool) -> Result<String, FrameError> {
    if let Some(offset) = frame
        .iter()
        .position(|&b| (b < 0x20 && b != b'\t') || b == 0x7F || (seven_bit && b >= 0x80))
    {
        let byte = frame.get(offset).copied().unwrap_or(0);
        return Err(FrameError::InvalidByte { byte, offset });
    }
    if frame.is_ascii() {
        // ASCII is valid UTF-8.
        return Ok(frame.iter().map(|&b| b as char).collect());
    }
    match std::str::from_utf8(frame) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => {
            let mut text = String::with_capacity(frame.len() + 2);
            for (offset, &b) in frame.iter().enumerate() {
                match b {
                    0x00..=0x7F => text.push(b as char),
                    0xB0 => text.push('°'),
                    0xB5 => text.push('µ'),
                    _ => return Err(FrameError::InvalidByte { byte: b, offset }),
                }
            }
            Ok(text)
        }
    }
}

/// Shows bytes the way an engineer reads them in a terminal: printable ASCII as is, `\r`, `\n`, `\t`,
/// `\\`, `\"` escaped, everything else as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7E => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02X}")),
        }
    }
    s
}

/// A request or terminator string with an escape [`unescape`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    #[error("bad escape \\x{0}: write two hex digits, e.g. \\x05")]
    Hex(String),
    #[error("unknown escape \\{0}; use \\r \\n \\t \\0 \\\\ \\\" or \\xNN")]
    Unknown(char),
    #[error("a trailing backslash escapes nothing")]
    Trailing,
}

/// The inverse of [`escape`] for request strings typed on a command line (`"?\r"`, `"GA01\r\n"`,
/// `"\x05"`).
pub fn unescape(text: &str) -> Result<Vec<u8>, EscapeError> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some('"') => out.push(b'"'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 2)
                    .ok_or(EscapeError::Hex(hex))?;
                out.push(byte);
            }
            Some(other) => {
                return Err(EscapeError::Unknown(other));
            }
            None => return Err(EscapeError::Trailing),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, bytes: &[u8]) -> Vec<FrameEvent> {
        let mut out = Vec::new();
        f.push(bytes, &mut out);
        out
    }

    fn frame(s: &str) -> FrameEvent {
        FrameEvent::Frame(s.as_bytes().to_vec())
    }

    #[test]
    fn cr_lf_crlf_all_end_a_line_and_empty_lines_are_skipped() {
        let mut f = Framer::new(Terminator::CrOrLf, 64);
        assert_eq!(
            frames(&mut f, b"a\rb\nc\r\n\r\nd"),
            [frame("a"), frame("b"), frame("c")]
        );
        assert_eq!(f.pending(), 1);
        assert_eq!(frames(&mut f, b"\r"), [frame("d")]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let input = b"01A+0000.123\r01A-0012.500\r\n01A+0000.001\r";
        let mut whole = Framer::new(Terminator::CrOrLf, 64);
        let expected = frames(&mut whole, input);
        assert_eq!(expected.len(), 3);
        for split in 0..input.len() {
            let mut f = Framer::new(Terminator::CrOrLf, 64);
            let mut got = frames(&mut f, &input[..split]);
            got.extend(frames(&mut f, &input[split..]));
            assert_eq!(got, expected, "split at {split}");
        }
        let mut f = Framer::new(Terminator::CrOrLf, 64);
        let got: Vec<_> = input.iter().flat_map(|b| frames(&mut f, &[*b])).collect();
        assert_eq!(got, expected, "byte by byte");
    }

    #[test]
    fn multi_byte_terminator_split_across_reads() {
        let mut f = Framer::new(Terminator::Bytes(b"\r\n".to_vec()), 16);
        assert!(frames(&mut f, b"GN01,+1.5\r").is_empty());
        assert_eq!(frames(&mut f, b"\nX\r"), [frame("GN01,+1.5")]);
        assert_eq!(frames(&mut f, b"\n"), [frame("X")]);
        let mut f = Framer::new(Terminator::Bytes(b"=".to_vec()), 64);
        assert_eq!(
            frames(&mut f, b"1 +1.00 mm;2 -0.50 mm =\r"),
            [frame("1 +1.00 mm;2 -0.50 mm ")]
        );
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_the_framer_resyncs() {
        let mut f = Framer::new(Terminator::CrOrLf, 8);
        let mut out = frames(&mut f, b"0123456789abcdef");
        out.extend(frames(&mut f, &[b'x'; 10_000]));
        assert_eq!(out, [FrameEvent::Error(FrameError::TooLong { max: 8 })]);
        assert_eq!(f.pending(), 0);
        assert_eq!(frames(&mut f, b"zz\r1.5\r"), [frame("1.5")]);
        // Exactly max is fine.
        assert_eq!(frames(&mut f, b"12345678\r"), [frame("12345678")]);
    }

    #[test]
    fn over_long_with_a_sequence_terminator_still_finds_it() {
        let mut f = Framer::new(Terminator::Bytes(b"\r\n".to_vec()), 4);
        let mut out = frames(&mut f, b"abcdefgh\r");
        out.extend(frames(&mut f, b"\nok\r\n"));
        assert_eq!(
            out,
            [
                FrameEvent::Error(FrameError::TooLong { max: 4 }),
                frame("ok")
            ]
        );
    }

    #[test]
    fn discard_partial_returns_what_was_dropped() {
        let mut f = Framer::new(Terminator::CrOrLf, 64);
        frames(&mut f, b"\n01A+00");
        assert_eq!(f.discard_partial(), Some(b"01A+00".to_vec()));
        assert_eq!(f.discard_partial(), None);
        assert_eq!(frames(&mut f, b"1.0\r"), [frame("1.0")]);
    }

    #[test]
    fn decode_rejects_noise_and_parity_marks() {
        assert_eq!(decode(b" 12.345", true).unwrap(), " 12.345");
        assert_eq!(
            decode(b"12\xB35", true),
            Err(FrameError::InvalidByte {
                byte: 0xB3,
                offset: 2
            })
        );
        assert_eq!(
            decode(b"1\x002", false),
            Err(FrameError::InvalidByte { byte: 0, offset: 1 })
        );
        assert_eq!(decode("12.5 µm".as_bytes(), false).unwrap(), "12.5 µm");
        assert_eq!(decode(b"12.5 \xB5m", false).unwrap(), "12.5 µm");
        assert_eq!(decode(b"90\xB0", false).unwrap(), "90°");
        assert!(decode(b"\xFF\xFE", false).is_err());
        let msg = decode(b"\x07", false).unwrap_err().to_string();
        assert!(msg.contains("0x07") && msg.contains("parity"), "{msg}");
    }

    #[test]
    fn escape_and_unescape_round_trip() {
        let raw = b"?\r\n\x05\"a\\";
        assert_eq!(escape(raw), "?\\r\\n\\x05\\\"a\\\\");
        assert_eq!(unescape(&escape(raw)).unwrap(), raw);
        assert_eq!(unescape("GA01\\r\\n").unwrap(), b"GA01\r\n");
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x5").is_err());
        assert!(unescape("\\").is_err());
    }
}
