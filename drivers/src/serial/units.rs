//! Units as gauges print them (`mm`, `MM`, `in`, `"`, `µm`, ...) and conversion to the unit a tag wants.
//!
//! Only units whose conversion is unambiguous are known; anything else is kept as text and must match the
//! tag's unit exactly (case-insensitively), so a reading is never silently mislabelled.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Length,
    Angle,
    Force,
}

#[derive(Debug, PartialEq)]
pub struct KnownUnit {
    /// Canonical spelling, used in readings.
    name: &'static str,
    dimension: Dimension,
    /// Factor to the dimension's base unit (m, rad, N).
    factor: f64,
    /// Spellings gauges use, compared case-insensitively.
    aliases: &'static [&'static str],
}

static KNOWN: &[KnownUnit] = &[
    KnownUnit {
        name: "mm",
        dimension: Dimension::Length,
        factor: 1e-3,
        aliases: &["mm", "millimeter", "millimetre"],
    },
    KnownUnit {
        name: "um",
        dimension: Dimension::Length,
        factor: 1e-6,
        aliases: &["um", "µm", "μm", "micron", "microns"],
    },
    KnownUnit {
        name: "cm",
        dimension: Dimension::Length,
        factor: 1e-2,
        aliases: &["cm"],
    },
    KnownUnit {
        name: "m",
        dimension: Dimension::Length,
        factor: 1.0,
        aliases: &["m"],
    },
    KnownUnit {
        name: "in",
        dimension: Dimension::Length,
        factor: 0.0254,
        aliases: &["in", "inch", "inches", "\"", "''"],
    },
    KnownUnit {
        name: "deg",
        dimension: Dimension::Angle,
        factor: std::f64::consts::PI / 180.0,
        aliases: &["deg", "°", "degree", "degrees"],
    },
    KnownUnit {
        name: "rad",
        dimension: Dimension::Angle,
        factor: 1.0,
        aliases: &["rad"],
    },
    KnownUnit {
        name: "N",
        dimension: Dimension::Force,
        factor: 1.0,
        aliases: &["n", "newton"],
    },
    KnownUnit {
        name: "kN",
        dimension: Dimension::Force,
        factor: 1e3,
        aliases: &["kn"],
    },
];

/// A unit as read from a frame or the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    Known(&'static KnownUnit),
    /// A unit lineside cannot convert; kept as written (trimmed).
    Other(String),
}

impl Unit {
    /// Recognizes a unit spelling; never fails (unknown spellings become [`Unit::Other`]).
    pub fn parse(text: &str) -> Unit {
        let t = text.trim();
        let lower = t.to_lowercase();
        KNOWN
            .iter()
            .find(|k| k.aliases.iter().any(|a| *a == lower))
            .map(Unit::Known)
            .unwrap_or_else(|| Unit::Other(t.to_string()))
    }

    /// The canonical name (`mm`, `in`, ...) or the text as written.
    pub fn name(&self) -> &str {
        match self {
            Unit::Known(k) => k.name,
            Unit::Other(s) => s,
        }
    }

    pub fn is_known(&self) -> bool {
        matches!(self, Unit::Known(_))
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Converts `value` from `from` to `to`, or says why it cannot (different dimensions, unknown units that
/// differ). The result of a real conversion is rounded to 12 significant digits so that e.g. 0.5 in is
/// 12.7 mm and not 12.700000000000001.
/// A value in a unit that cannot become the tag's unit; the text is the reading's reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unit: the instrument sent `{from}`, which cannot be converted to the tag's `{to}`")]
pub struct UnitMismatch {
    pub from: Unit,
    pub to: Unit,
}

pub fn convert(value: f64, from: &Unit, to: &Unit) -> Result<f64, UnitMismatch> {
    match (from, to) {
        (Unit::Known(a), Unit::Known(b)) if std::ptr::eq(*a, *b) => Ok(value),
        (Unit::Known(a), Unit::Known(b)) if a.dimension == b.dimension => {
            Ok(round_significant(value * a.factor / b.factor, 12))
        }
        (Unit::Other(a), Unit::Other(b)) if a.eq_ignore_ascii_case(b) => Ok(value),
        _ => Err(UnitMismatch {
            from: from.clone(),
            to: to.clone(),
        }),
    }
}

fn round_significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1 - magnitude);
    if !scale.is_finite() || scale == 0.0 {
        return x;
    }
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_are_recognized() {
        for s in ["mm", "MM", " Mm "] {
            assert_eq!(Unit::parse(s).name(), "mm");
        }
        for s in ["in", "IN", "inch", "\""] {
            assert_eq!(Unit::parse(s).name(), "in");
        }
        assert_eq!(Unit::parse("µm").name(), "um");
        assert_eq!(Unit::parse("°").name(), "deg");
        assert_eq!(Unit::parse("N").name(), "N");
        assert_eq!(Unit::parse("Nm"), Unit::Other("Nm".into()));
    }

    #[test]
    fn lengths_convert() {
        let mm = Unit::parse("mm");
        let inch = Unit::parse("in");
        let um = Unit::parse("um");
        assert_eq!(convert(0.5, &inch, &mm).unwrap(), 12.7);
        assert_eq!(convert(1.0, &inch, &mm).unwrap(), 25.4);
        assert_eq!(convert(25.4, &mm, &inch).unwrap(), 1.0);
        assert_eq!(convert(0.0123, &mm, &um).unwrap(), 12.3);
        assert_eq!(convert(-0.0001, &inch, &mm).unwrap(), -0.00254);
        assert_eq!(convert(3.0, &mm, &mm).unwrap(), 3.0);
    }

    #[test]
    fn incompatible_units_are_refused_with_a_reason() {
        let err = convert(1.0, &Unit::parse("deg"), &Unit::parse("mm"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`deg`") && err.contains("`mm`"), "{err}");
        assert!(convert(1.0, &Unit::parse("Nm"), &Unit::parse("mm")).is_err());
        assert_eq!(
            convert(2.0, &Unit::parse("nm"), &Unit::parse("NM")).unwrap(),
            2.0,
            "unknown units that match are accepted"
        );
    }
}
