//! Gauge protocols: each a small pure parser from one frame of text to measurements.
//!
//! A parser never panics and never allocates without bound; it returns either the measurements in the
//! frame, an empty list (a frame that is not a reading, e.g. an echo of the request, to be ignored), or a
//! [`Fault`] that says why the frame is unusable.

pub mod line;
pub mod mahr;
pub mod mitutoyo;
pub mod mitutoyo_id;
pub mod sylvac;

use std::fmt;

use super::units::Unit;

pub use line::LineProtocol;

/// What a measurement is: the current value or a held extreme (Mitutoyo ID-H max/min/TIR modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Value,
    Max,
    Min,
    Tir,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Value => "value",
            Field::Max => "max",
            Field::Min => "min",
            Field::Tir => "tir",
        }
    }
}

/// One value a frame carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Channel, feature number or instrument id, normalized by [`normalize_channel`]; `None` when the
    /// protocol has none.
    pub channel: Option<String>,
    pub field: Field,
    /// `None` for status-only frames (e.g. a go/no-go gauge's `NG` through the `line` protocol).
    pub value: Option<f64>,
    /// The unit the frame states, if it states one.
    pub unit: Option<Unit>,
    /// Tolerance mark (`below`, `within`, `above`) or a `status` capture.
    pub status: Option<String>,
}

impl Measurement {
    pub fn value(value: f64) -> Self {
        Measurement {
            channel: None,
            field: Field::Value,
            value: Some(value),
            unit: None,
            status: None,
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(ch) = &self.channel {
            write!(f, "channel {ch}:")?;
            sep = " ";
        }
        if let Some(v) = self.value {
            write!(f, "{sep}{v}")?;
            sep = " ";
            if let Some(u) = &self.unit {
                write!(f, " {u}")?;
            }
        }
        if self.field != Field::Value {
            write!(f, "{sep}({})", self.field.name())?;
            sep = " ";
        }
        if let Some(s) = &self.status {
            write!(f, "{sep}[{s}]")?;
        }
        Ok(())
    }
}

/// Why a frame gave no usable value. An instrument's refusal is kept apart from a frame that is not one;
/// the text is the reading's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The instrument answered with an error (Sylvac `ERR3`, a `line` error pattern): counted as an exception.
    #[error("{0}")]
    Instrument(String),
    /// The frame is not what the protocol sends (garbage, wrong format, unparsable number): an error.
    #[error("{0}")]
    Malformed(String),
}

pub type Parsed = Result<Vec<Measurement>, Fault>;

/// The protocols a device can speak.
#[derive(Debug, Clone)]
pub enum Protocol {
    Mitutoyo,
    MitutoyoId,
    Sylvac,
    Mahr,
    Line(LineProtocol),
}

/// Names as written in the config, in the order `listen` tries them.
pub const PROTOCOL_NAMES: &[&str] = &["mitutoyo", "mitutoyo-id", "sylvac", "mahr", "line"];

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Mitutoyo => "mitutoyo",
            Protocol::MitutoyoId => "mitutoyo-id",
            Protocol::Sylvac => "sylvac",
            Protocol::Mahr => "mahr",
            Protocol::Line(_) => "line",
        }
    }

    /// Parses one decoded frame (terminator and surrounding CR/LF already removed).
    pub fn parse(&self, frame: &str) -> Parsed {
        match self {
            Protocol::Mitutoyo => mitutoyo::parse(frame),
            Protocol::MitutoyoId => mitutoyo_id::parse(frame),
            Protocol::Sylvac => sylvac::parse(frame),
            Protocol::Mahr => mahr::parse(frame),
            Protocol::Line(p) => p.parse(frame),
        }
    }

    /// The request a poll sends when the config names none (`None`: the protocol has no standard one).
    pub fn default_request(&self) -> Option<&'static [u8]> {
        match self {
            Protocol::Sylvac | Protocol::Mahr => Some(b"?\r"),
            Protocol::Mitutoyo | Protocol::MitutoyoId | Protocol::Line(_) => None,
        }
    }
}

/// Channels compare as numbers when they are numbers (`01` = `1`), else as text.
pub fn normalize_channel(text: &str) -> String {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let stripped = t.trim_start_matches('0');
        if stripped.is_empty() {
            "0".to_string()
        } else {
            stripped.to_string()
        }
    } else {
        t.to_string()
    }
}

/// How a protocol writes its numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NumberStyle {
    /// `,` is the decimal separator (European instruments) instead of `.`.
    pub decimal_comma: bool,
    /// `1.5E-03` is allowed.
    pub exponent: bool,
}

/// The longest number text accepted; gauges print well under this.
const MAX_NUMBER_LEN: usize = 40;

/// Text that is not a number as [`parse_number`] reads numbers; it holds the (shortened) text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparsable number \"{0}\"")]
pub struct UnparsableNumber(pub String);

/// Parses a decimal as gauges print it: optional `+`/`-` (spaces may follow the sign), digits with at most
/// one decimal separator, optionally an exponent. Strict on purpose: `inf`, `NaN`, `0x10`, `1.2.3` and
/// empty text are errors, never a value.
pub fn parse_number(text: &str, style: NumberStyle) -> Result<f64, UnparsableNumber> {
    let t = text.trim();
    let err = || UnparsableNumber(shorten(t));
    if t.is_empty() || t.len() > MAX_NUMBER_LEN {
        return Err(err());
    }
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("").trim_start()),
        Some(b'+') => (false, t.get(1..).unwrap_or("").trim_start()),
        _ => (false, t),
    };
    let sep = if style.decimal_comma { b',' } else { b'.' };
    let mut normalized = String::with_capacity(rest.len() + 1);
    if negative {
        normalized.push('-');
    }
    let mut digits = 0usize;
    let mut seen_sep = false;
    let mut bytes = rest.bytes().peekable();
    while let Some(&b) = bytes.peek() {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                normalized.push(b as char);
            }
            _ if b == sep && !seen_sep => {
                seen_sep = true;
                normalized.push('.');
            }
            _ => break,
        }
        bytes.next();
    }
    if digits == 0 {
        return Err(err());
    }
    if let Some(&(b'e' | b'E')) = bytes.peek() {
        if !style.exponent {
            return Err(err());
        }
        bytes.next();
        normalized.push('e');
        if let Some(&s @ (b'+' | b'-')) = bytes.peek() {
            normalized.push(s as char);
            bytes.next();
        }
        let mut exp_digits = 0;
        while let Some(&b @ b'0'..=b'9') = bytes.peek() {
            exp_digits += 1;
            normalized.push(b as char);
            bytes.next();
        }
        if exp_digits == 0 {
            return Err(err());
        }
    }
    if bytes.next().is_some() {
        return Err(err());
    }
    match normalized.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(if v == 0.0 { 0.0 } else { v }),
        _ => Err(err()),
    }
}

/// Splits `"+12.345 mm"` / `"12.345mm"` / `"-0.5"` into the number text and the unit text that follows it.
pub fn split_number_unit(text: &str) -> (&str, Option<&str>) {
    let t = text.trim();
    // Spaces belong to the number only between a leading sign and the digits (`- 0.5`).
    let mut only_sign = true;
    let mut end = t.len();
    for (i, c) in t.char_indices() {
        let part_of_number = match c {
            '0'..='9' | '.' | ',' => {
                only_sign = false;
                true
            }
            '+' | '-' => i == 0,
            ' ' => only_sign,
            _ => false,
        };
        if !part_of_number {
            end = i;
            break;
        }
    }
    let (num, unit) = t.split_at(end);
    let unit = unit.trim();
    (num, (!unit.is_empty()).then_some(unit))
}

/// Text after a number that can be a unit (`mm`, `in`, `"`, `µm`, `°`, `N/mm`), not more data or noise.
pub fn plausible_unit(text: &str) -> bool {
    let n = text.chars().count();
    (1..=8).contains(&n)
        && text
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, '"' | '\'' | '°' | 'µ' | '/' | '%'))
}

/// A frame that is obviously an error report (`ERR`, `Err 5`, `ERROR: ...`), as many instruments send.
pub fn generic_error(frame: &str) -> Option<String> {
    let t = frame.trim();
    let head = t.get(..3)?;
    head.eq_ignore_ascii_case("err")
        .then(|| format!("instrument error \"{}\"", shorten(t)))
}

/// Caps text quoted in a reason so a garbage frame cannot make a huge reason string.
pub fn shorten(text: &str) -> String {
    const MAX: usize = 48;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MAX).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Result<f64, UnparsableNumber> {
        parse_number(s, NumberStyle::default())
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(num("+0000.123"), Ok(0.123));
        assert_eq!(num("-0012.500"), Ok(-12.5));
        assert_eq!(num("- 12.5"), Ok(-12.5));
        assert_eq!(num("  7"), Ok(7.0));
        assert_eq!(num(".5"), Ok(0.5));
        assert_eq!(num("5."), Ok(5.0));
        assert_eq!(num("-0.000"), Ok(0.0));
        assert!(
            num("-0.000").unwrap().is_sign_positive(),
            "no negative zero"
        );
        for bad in [
            "", "+", "-", ".", "1.2.3", "inf", "NaN", "0x10", "1e5", "12a", "1 2", "--1",
        ] {
            assert!(num(bad).is_err(), "{bad:?} must not parse");
        }
        let style = NumberStyle {
            decimal_comma: true,
            exponent: true,
        };
        assert_eq!(parse_number("-1,5E-03", style), Ok(-0.0015));
        assert!(parse_number("1.5", style).is_err());
        assert!(parse_number("1e", style).is_err());
        assert!(
            num(&"9".repeat(400)).is_err(),
            "over-long numbers are refused"
        );
    }

    #[test]
    fn numbers_and_units_split() {
        assert_eq!(split_number_unit(" +12.345 mm"), ("+12.345", Some("mm")));
        assert_eq!(split_number_unit("12.345mm"), ("12.345", Some("mm")));
        assert_eq!(split_number_unit("- 0.5"), ("- 0.5", None));
        assert_eq!(split_number_unit("0.5 µm"), ("0.5", Some("µm")));
        assert_eq!(split_number_unit("in"), ("", Some("in")));
    }

    #[test]
    fn units_are_told_from_noise() {
        for u in ["mm", "IN", "\"", "µm", "°", "N/mm", "%"] {
            assert!(plausible_unit(u), "{u}");
        }
        for u in ["", "<", "1", "mm mm", ";2", "toolongunit"] {
            assert!(!plausible_unit(u), "{u}");
        }
    }

    #[test]
    fn channels_compare_as_numbers() {
        assert_eq!(normalize_channel("01"), "1");
        assert_eq!(normalize_channel("00"), "0");
        assert_eq!(normalize_channel(" A "), "A");
    }

    #[test]
    fn display_is_readable() {
        let m = Measurement {
            channel: Some("1".into()),
            field: Field::Max,
            value: Some(0.5),
            unit: Some(Unit::parse("mm")),
            status: Some("within".into()),
        };
        assert_eq!(m.to_string(), "channel 1: 0.5 mm (max) [within]");
    }
}
