//! Sylvac Opto-RS / Proximity: request `?\r`, reply `[+|-| ]int.frac` (a space is a plus sign), in
//! tolerance mode with a mark `<` (below), `=` (within) or `>` (above); some models append the unit.
//! Errors come as `ERRn`: 0 sensor, 1 bad command, 2 parity, 3 out of range.

use super::{Fault, Measurement, Parsed, parse_number, plausible_unit, shorten, split_number_unit};
use crate::serial::units::Unit;

fn error_text(code: &str) -> &'static str {
    match code {
        "0" => "sensor error",
        "1" => "bad command",
        "2" => "parity error",
        "3" => "out of range",
        _ => "instrument error",
    }
}

fn mark(c: char) -> Option<&'static str> {
    match c {
        '<' => Some("below"),
        '=' => Some("within"),
        '>' => Some("above"),
        _ => None,
    }
}

pub fn parse(frame: &str) -> Parsed {
    // Only line ends are trimmed on the left: a leading space is the plus sign.
    let t = frame.trim_end();
    let head = t.trim_start();
    if head.len() >= 3 && head.get(..3).is_some_and(|h| h.eq_ignore_ascii_case("err")) {
        let code = head.get(3..).unwrap_or_default().trim();
        let code = if code.is_empty() { "?" } else { code };
        return Err(Fault::Instrument(format!(
            "ERR{}: {}",
            shorten(code),
            error_text(code)
        )));
    }
    let mut body = head;
    let mut status = None;
    // The tolerance mark may lead or trail the value.
    if let Some(c) = body.chars().next()
        && let Some(m) = mark(c)
    {
        status = Some(m);
        body = body.get(c.len_utf8()..).unwrap_or_default().trim_start();
    } else if let Some(c) = body.chars().next_back()
        && let Some(m) = mark(c)
    {
        status = Some(m);
        body = body
            .get(..body.len() - c.len_utf8())
            .unwrap_or_default()
            .trim_end();
    }
    let (number, unit) = split_number_unit(body);
    let value = parse_number(number, Default::default())
        .map_err(|e| Fault::Malformed(format!("sylvac: {e} in \"{}\"", shorten(frame.trim()))))?;
    if let Some(u) = unit
        && !plausible_unit(u)
    {
        return Err(Fault::Malformed(format!(
            "sylvac: unexpected text after the value in \"{}\"",
            shorten(frame.trim())
        )));
    }
    Ok(vec![Measurement {
        unit: unit.map(Unit::parse),
        status: status.map(str::to_string),
        ..Measurement::value(value)
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_including_the_space() {
        assert_eq!(parse(" 12.345").unwrap()[0].value, Some(12.345));
        assert_eq!(parse("+12.345").unwrap()[0].value, Some(12.345));
        assert_eq!(parse("-0.004").unwrap()[0].value, Some(-0.004));
        assert_eq!(parse("  000.000").unwrap()[0].value, Some(0.0));
    }

    #[test]
    fn tolerance_marks_and_units() {
        let m = parse("+12.345<").unwrap();
        assert_eq!(
            (m[0].value, m[0].status.as_deref()),
            (Some(12.345), Some("below"))
        );
        assert_eq!(
            parse("= 1.000").unwrap()[0].status.as_deref(),
            Some("within")
        );
        assert_eq!(
            parse("-1.000 >").unwrap()[0].status.as_deref(),
            Some("above")
        );
        let u = parse("+0.4921 IN").unwrap();
        assert_eq!(u[0].unit.as_ref().map(|u| u.name()), Some("in"));
        assert_eq!(
            parse(" 1.5mm").unwrap()[0].unit.as_ref().map(|u| u.name()),
            Some("mm")
        );
    }

    #[test]
    fn errors_name_the_cause() {
        assert_eq!(
            parse("ERR3"),
            Err(Fault::Instrument("ERR3: out of range".into()))
        );
        assert_eq!(
            parse("ERR0"),
            Err(Fault::Instrument("ERR0: sensor error".into()))
        );
        assert_eq!(
            parse("ERR2"),
            Err(Fault::Instrument("ERR2: parity error".into()))
        );
        assert_eq!(
            parse("Err1"),
            Err(Fault::Instrument("ERR1: bad command".into()))
        );
        assert_eq!(
            parse("ERR"),
            Err(Fault::Instrument("ERR?: instrument error".into()))
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "?",
            "abc",
            "12.3.4",
            "<>",
            "1.0 mm mm",
            "+1.0;2",
            "1.0 <=",
        ] {
            assert!(
                matches!(parse(bad), Err(Fault::Malformed(_))),
                "{bad:?} -> {:?}",
                parse(bad)
            );
        }
    }
}
