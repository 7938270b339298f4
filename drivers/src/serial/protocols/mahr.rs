//! Mahr gauges and column amplifiers, request `?\r`:
//! - single value with unit (C1208/1216/1240, Millimar): `xxx.xxx<unit>` such as `+012.345mm`;
//! - multi-feature (C1202): `1 ±XXX.XX unit;2 ±XXX.XX unit;3 ... =`, one feature per `;`, the frame
//!   closed by `=`. Features map to tags by `channel` (the feature number).
//!
//! An error comes as `E` and the instrument's error number (`E03`), or as text starting with `Err`.

use super::{
    Fault, Measurement, Parsed, generic_error, normalize_channel, parse_number, plausible_unit,
    shorten, split_number_unit,
};
use crate::serial::units::Unit;

/// More features than any amplifier has: a frame with more parts is garbage.
const MAX_FEATURES: usize = 64;

pub fn parse(frame: &str) -> Parsed {
    let t = frame.trim();
    if let Some(reason) = generic_error(t) {
        return Err(Fault::Instrument(reason));
    }
    if let Some(code) = t.strip_prefix('E')
        && (1..=4).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Fault::Instrument(format!("instrument error E{code}")));
    }
    // The closing `=` of a multi-feature frame.
    let body = t.strip_suffix('=').map(str::trim_end).unwrap_or(t);
    if body.is_empty() {
        return Err(Fault::Malformed(format!(
            "mahr: no value in \"{}\"",
            shorten(t)
        )));
    }
    let parts: Vec<&str> = body
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .take(MAX_FEATURES + 1)
        .collect();
    if parts.len() > MAX_FEATURES {
        return Err(Fault::Malformed(format!(
            "mahr: more than {MAX_FEATURES} features in one frame"
        )));
    }
    let multi = parts.len() > 1 || parts.first().is_some_and(|p| feature_split(p).is_some());
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let (channel, rest) = if multi {
            match feature_split(part) {
                Some((ch, rest)) => (Some(normalize_channel(ch)), rest),
                None => {
                    return Err(Fault::Malformed(format!(
                        "mahr: expected \"<feature> ±value unit\", got \"{}\"",
                        shorten(part)
                    )));
                }
            }
        } else {
            (None, part)
        };
        let (number, unit) = split_number_unit(rest);
        let value = parse_number(number, Default::default())
            .map_err(|e| Fault::Malformed(format!("mahr: {e} in \"{}\"", shorten(part))))?;
        if let Some(u) = unit
            && !plausible_unit(u)
        {
            return Err(Fault::Malformed(format!(
                "mahr: unexpected text after the value in \"{}\"",
                shorten(part)
            )));
        }
        out.push(Measurement {
            channel,
            unit: unit.map(Unit::parse),
            ..Measurement::value(value)
        });
    }
    Ok(out)
}

/// `"1 +012.34 mm"` → `("1", "+012.34 mm")`: a feature number, whitespace, then a value.
fn feature_split(part: &str) -> Option<(&str, &str)> {
    let (head, rest) = part.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let starts_like_a_value = rest
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-' || c == '.');
    (!head.is_empty()
        && head.len() <= 3
        && head.bytes().all(|b| b.is_ascii_digit())
        && starts_like_a_value)
        .then_some((head, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_value_with_unit() {
        let m = parse("+012.345mm").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].channel.as_deref(), m[0].value), (None, Some(12.345)));
        assert_eq!(m[0].unit.as_ref().map(|u| u.name()), Some("mm"));
        assert_eq!(
            parse("  -0.00120 in").unwrap()[0]
                .unit
                .as_ref()
                .map(|u| u.name()),
            Some("in")
        );
        assert_eq!(parse("1.5").unwrap()[0].unit, None);
        assert_eq!(
            parse("12 mm").unwrap()[0].value,
            Some(12.0),
            "an integer value, not a feature"
        );
    }

    #[test]
    fn multi_feature_frames() {
        let m = parse("1 +012.34 mm;2 -000.12 mm;3 +001.00 in =").unwrap();
        let got: Vec<_> = m
            .iter()
            .map(|m| {
                (
                    m.channel.clone().unwrap(),
                    m.value.unwrap(),
                    m.unit.as_ref().unwrap().name().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("1".to_string(), 12.34, "mm".to_string()),
                ("2".to_string(), -0.12, "mm".to_string()),
                ("3".to_string(), 1.0, "in".to_string())
            ]
        );
        let one = parse("1 +5.00 mm =").unwrap();
        assert_eq!(one[0].channel.as_deref(), Some("1"));
        assert_eq!(parse("1 +5.00 mm;2 -1.00 mm;").unwrap().len(), 2);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "=",
            "mm",
            "1 +1.0 mm;x",
            "1 +1.0 mm;2 abc",
            "1.0.0mm",
            "1 +1.0 mm;;2 +x",
            "1.0 m m",
        ] {
            assert!(
                matches!(parse(bad), Err(Fault::Malformed(_))),
                "{bad:?} -> {:?}",
                parse(bad)
            );
        }
        let many = vec!["1 +1.0 mm"; 100].join(";");
        assert!(matches!(parse(&many), Err(Fault::Malformed(_))));
        assert!(matches!(parse("Error 4"), Err(Fault::Instrument(_))));
    }

    #[test]
    fn error_numbers_are_instrument_faults() {
        assert_eq!(
            parse("E03"),
            Err(Fault::Instrument("instrument error E03".into()))
        );
        assert_eq!(
            parse(" E1 "),
            Err(Fault::Instrument("instrument error E1".into()))
        );
        for bad in ["E", "E03x", "E12345"] {
            assert!(matches!(parse(bad), Err(Fault::Malformed(_))), "{bad:?}");
        }
    }
}
