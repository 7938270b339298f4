//! Mitutoyo Digimatic output through its USB/RS-232 interfaces (USB-ITN, DP-1VR, U-WAVE receivers...):
//! `01A+0000.123` = two-digit channel, a data letter (`A`), the sign, and the value with its decimal point.
//! No unit is sent: the device's `instrument_unit` (or the tag's unit) says what it is.
//! An error comes as `01E001`: the channel, the letter `E` and the instrument's error code.

use super::{Fault, Measurement, Parsed, generic_error, normalize_channel, parse_number, shorten};

pub fn parse(frame: &str) -> Parsed {
    let t = frame.trim();
    if let Some(reason) = generic_error(t) {
        return Err(Fault::Instrument(reason));
    }
    let bytes = t.as_bytes();
    if let [c1, c2, b'E', code @ ..] = bytes
        && c1.is_ascii_digit()
        && c2.is_ascii_digit()
        && !code.is_empty()
        && code.len() <= 8
        && code.iter().all(u8::is_ascii_alphanumeric)
    {
        // ASCII checked above, so these are char boundaries.
        let channel = normalize_channel(t.get(..2).unwrap_or_default());
        let code = t.get(3..).unwrap_or_default();
        return Err(Fault::Instrument(format!(
            "instrument error E{code} (channel {channel})"
        )));
    }
    let well_formed_head = matches!(
        bytes,
        [c1, c2, letter, sign, ..]
            if c1.is_ascii_digit() && c2.is_ascii_digit() && letter.is_ascii_uppercase()
                && (*sign == b'+' || *sign == b'-')
    );
    if !well_formed_head {
        return Err(Fault::Malformed(format!(
            "mitutoyo: expected \"CCA±value\" (e.g. 01A+0000.123), got \"{}\"",
            shorten(t)
        )));
    }
    // The head is four ASCII bytes, so these are char boundaries.
    let channel = t.get(..2).unwrap_or_default();
    let number = t.get(3..).unwrap_or_default();
    let value = parse_number(number, Default::default())
        .map_err(|e| Fault::Malformed(format!("mitutoyo: {e}")))?;
    Ok(vec![Measurement {
        channel: Some(normalize_channel(channel)),
        ..Measurement::value(value)
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_with_channel_and_sign() {
        let m = parse("01A+0000.123").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].channel.as_deref(), Some("1"));
        assert_eq!(m[0].value, Some(0.123));
        assert_eq!(parse("02A-0012.500").unwrap()[0].value, Some(-12.5));
        assert_eq!(
            parse("12A+00.12345").unwrap()[0].channel.as_deref(),
            Some("12")
        );
        assert_eq!(parse(" 01A+0000.123 ").unwrap()[0].value, Some(0.123));
    }

    #[test]
    fn garbage_and_bad_numbers_are_malformed() {
        for bad in [
            "",
            "01A",
            "01A+",
            "01A+00.0.1",
            "1A+0.1",
            "01a+0.1",
            "01A 0.1",
            "XXXXXXXXX",
        ] {
            assert!(
                matches!(parse(bad), Err(Fault::Malformed(_))),
                "{bad:?} -> {:?}",
                parse(bad)
            );
        }
        let Err(Fault::Malformed(reason)) = parse("01A+00x0.123") else {
            panic!("must fail")
        };
        assert!(reason.contains("unparsable number"), "{reason}");
    }

    #[test]
    fn error_replies_are_instrument_faults() {
        assert!(matches!(parse("ERR 1"), Err(Fault::Instrument(_))));
        assert_eq!(
            parse("01E001"),
            Err(Fault::Instrument(
                "instrument error E001 (channel 1)".into()
            ))
        );
        assert_eq!(
            parse("12E9"),
            Err(Fault::Instrument("instrument error E9 (channel 12)".into()))
        );
        // Not an error: the head is not channel + E + code.
        for bad in ["01E", "01E-", "1E001"] {
            assert!(matches!(parse(bad), Err(Fault::Malformed(_))), "{bad:?}");
        }
    }
}
