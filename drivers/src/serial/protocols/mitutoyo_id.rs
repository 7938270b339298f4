//! Mitutoyo ID-H (and similar) command interface: request `GA**\r\n` (** = id 00-99), reply
//! `GN**,+0016.2345`; the letter after `G` says what the value is: `N` the current value, `X` the
//! maximum, `M` the minimum, `W` the TIR (range) in the gauge's peak-hold modes.

use super::{
    Fault, Field, Measurement, Parsed, generic_error, normalize_channel, parse_number, shorten,
};

/// The request for instrument `id` (0-99).
pub fn request(id: u8) -> Vec<u8> {
    format!("GA{:02}\r\n", id.min(99)).into_bytes()
}

pub fn parse(frame: &str) -> Parsed {
    let t = frame.trim();
    if let Some(reason) = generic_error(t) {
        return Err(Fault::Instrument(reason));
    }
    let bytes = t.as_bytes();
    // Our own request echoed back (some interfaces echo): not a reply, ignore it.
    if let [b'G', b'A', a, b, rest @ ..] = bytes
        && a.is_ascii_digit()
        && b.is_ascii_digit()
        && rest.is_empty()
    {
        return Ok(Vec::new());
    }
    let (field, id_ok) = match bytes {
        [b'G', kind, a, b, b',', ..] => (
            match kind {
                b'N' => Some(Field::Value),
                b'X' => Some(Field::Max),
                b'M' => Some(Field::Min),
                b'W' => Some(Field::Tir),
                _ => None,
            },
            a.is_ascii_digit() && b.is_ascii_digit(),
        ),
        _ => (None, false),
    };
    let Some(field) = field.filter(|_| id_ok) else {
        return Err(Fault::Malformed(format!(
            "mitutoyo-id: expected \"GN**,±value\" (or GX/GM/GW), got \"{}\"",
            shorten(t)
        )));
    };
    // The first five bytes are ASCII, so these are char boundaries.
    let id = t.get(2..4).unwrap_or_default();
    let number = t.get(5..).unwrap_or_default();
    let value = parse_number(number, Default::default())
        .map_err(|e| Fault::Malformed(format!("mitutoyo-id: {e}")))?;
    Ok(vec![Measurement {
        channel: Some(normalize_channel(id)),
        field,
        ..Measurement::value(value)
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_id() {
        assert_eq!(request(1), b"GA01\r\n");
        assert_eq!(request(42), b"GA42\r\n");
    }

    #[test]
    fn replies_with_id_and_mode() {
        let m = parse("GN01,+0016.2345").unwrap();
        assert_eq!(m[0].channel.as_deref(), Some("1"));
        assert_eq!(m[0].field, Field::Value);
        assert_eq!(m[0].value, Some(16.2345));
        assert_eq!(parse("GX01,-0000.0100").unwrap()[0].field, Field::Max);
        assert_eq!(parse("GM07,+1.0").unwrap()[0].field, Field::Min);
        let tir = parse("GW99,+0000.0042").unwrap();
        assert_eq!((tir[0].field, tir[0].value), (Field::Tir, Some(0.0042)));
    }

    #[test]
    fn echoes_are_ignored_and_garbage_is_malformed() {
        assert_eq!(parse("GA01"), Ok(Vec::new()));
        for bad in [
            "",
            "GN01",
            "GN01,",
            "GZ01,+1.0",
            "GNxx,+1.0",
            "GN01;+1.0",
            "GN01,+1.0.0",
            "G",
        ] {
            assert!(matches!(parse(bad), Err(Fault::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(parse("Err05"), Err(Fault::Instrument(_))));
    }
}
