//! Modbus data areas, value types and byte orders, and the decoding of register/bit contents into values.
//!
//! Byte orders name the position of the value's bytes `A B C D ...` (A = most significant) on the wire,
//! register by register, each register being transmitted high byte first:
//!
//! | order  | 32-bit registers | meaning                                     |
//! |--------|------------------|---------------------------------------------|
//! | `abcd` | `AB` `CD`        | big endian (Modbus standard, "high word first") |
//! | `cdab` | `CD` `AB`        | word swapped ("low word first")             |
//! | `badc` | `BA` `DC`        | byte swapped within each register           |
//! | `dcba` | `DC` `BA`        | fully little endian                         |
//!
//! 64-bit values generalise the same way (`cdab` reverses the order of all four registers, `badc` swaps the
//! bytes inside each register). For 16-bit values only the byte swap matters (`abcd` = `cdab`,
//! `badc` = `dcba`). Strings hold two characters per register, first character in the high byte for
//! `abcd`/`cdab` and in the low byte for `badc`/`dcba`.

use std::fmt;

use serde::Deserialize;

/// The four Modbus data areas (tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Area {
    /// True for the two register areas (16-bit words); false for the bit areas.
    pub fn is_register(self) -> bool {
        matches!(self, Area::InputRegister | Area::HoldingRegister)
    }

    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Area::Coil => "coil",
            Area::DiscreteInput => "discrete-input",
            Area::InputRegister => "input-register",
            Area::HoldingRegister => "holding-register",
        }
    }

    /// The Modbus read function code for the area.
    pub fn function_code(self) -> u8 {
        match self {
            Area::Coil => 0x01,
            Area::DiscreteInput => 0x02,
            Area::HoldingRegister => 0x03,
            Area::InputRegister => 0x04,
        }
    }

    /// The largest quantity one read request may ask for (Modbus application protocol v1.1b3, 6.1-6.4).
    pub fn protocol_max(self) -> u16 {
        if self.is_register() { 125 } else { 2000 }
    }

    pub fn parse(text: &str) -> Option<Area> {
        match text {
            "coil" => Some(Area::Coil),
            "discrete-input" => Some(Area::DiscreteInput),
            "input-register" => Some(Area::InputRegister),
            "holding-register" => Some(Area::HoldingRegister),
            _ => None,
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The value type of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A coil or discrete input; on a register: true when the register is not zero.
    Bool,
    /// Bit `bit` (0 = least significant) of one register.
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// `length` registers of text, two characters per register.
    String,
}

impl DataType {
    /// Every type, in the order the commissioning table shows them.
    pub const ALL: [DataType; 11] = [
        DataType::Bool,
        DataType::Bit,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
        DataType::String,
    ];

    /// Registers one value occupies; `None` for strings (their length is configured).
    pub fn fixed_registers(self) -> Option<u16> {
        match self {
            DataType::Bool | DataType::Bit | DataType::U16 | DataType::I16 => Some(1),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(2),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(4),
            DataType::String => None,
        }
    }

    /// True when the value is a number (SPC can chart it).
    pub fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::Bit | DataType::String)
    }

    /// True when the byte order changes how the value is read.
    pub fn order_matters(self) -> bool {
        !matches!(self, DataType::Bool | DataType::Bit)
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Bit => "bit",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }

    pub fn parse(text: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.name() == text)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte/word order of multi-byte values (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    #[default]
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl ByteOrder {
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::Abcd,
        ByteOrder::Cdab,
        ByteOrder::Badc,
        ByteOrder::Dcba,
    ];

    fn word_swap(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }

    fn byte_swap(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }

    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Abcd => "abcd",
            ByteOrder::Cdab => "cdab",
            ByteOrder::Badc => "badc",
            ByteOrder::Dcba => "dcba",
        }
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded value before scaling, keeping full precision of every type (u64 above i64, NaN floats) so the
/// commissioning table can show exactly what the device holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Unsigned(v) => write!(f, "{v}"),
            Raw::Signed(v) => write!(f, "{v}"),
            // Plain notation where it reads well, scientific otherwise (a misread float can be 1e38).
            Raw::Float(v) if *v == 0.0 || (1e-4..1e12).contains(&v.abs()) => write!(f, "{v}"),
            Raw::Float(v) => write!(f, "{v:e}"),
            Raw::Bool(v) => write!(f, "{v}"),
            Raw::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// Why registers gave no value: a device answered with fewer registers than asked (or a bad plan), or sent
/// a number that is not one (NaN and infinities flag a sensor fault on many devices).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{ty} needs {need} register(s), got {got}")]
    WrongLength {
        ty: DataType,
        need: usize,
        got: usize,
    },
    #[error("{0} needs at least one register")]
    NoRegister(DataType),
    #[error("bit {0} is outside 0..=15")]
    BitOutOfRange(u8),
    #[error("device sent {0}")]
    NotFinite(f64),
    #[error("value {0} is not a finite number")]
    ScaledNotFinite(f64),
}

/// Decodes a value of `ty` from `words` (exactly the registers of the value, in wire order). `bit` is used
/// by [`DataType::Bit`]; the number of registers of a string is `words.len()`.
pub fn decode_registers(
    words: &[u16],
    ty: DataType,
    order: ByteOrder,
    bit: u8,
) -> Result<Raw, DecodeError> {
    let need = ty.fixed_registers().unwrap_or(words.len() as u16) as usize;
    if words.len() != need || need == 0 {
        return Err(DecodeError::WrongLength {
            ty,
            need,
            got: words.len(),
        });
    }
    let Some(&first) = words.first() else {
        return Err(DecodeError::NoRegister(ty));
    };
    Ok(match ty {
        DataType::Bool => Raw::Bool(first != 0),
        DataType::Bit => {
            if bit > 15 {
                return Err(DecodeError::BitOutOfRange(bit));
            }
            Raw::Bool(first & (1 << bit) != 0)
        }
        DataType::U16 => Raw::Unsigned(u64::from(swap16(first, order))),
        DataType::I16 => Raw::Signed(i64::from(swap16(first, order) as i16)),
        DataType::U32 => Raw::Unsigned(u64::from(be_u32(&ordered_bytes::<4>(words, order)))),
        DataType::I32 => Raw::Signed(i64::from(be_u32(&ordered_bytes::<4>(words, order)) as i32)),
        DataType::F32 => Raw::Float(f32_as_f64(f32::from_bits(be_u32(&ordered_bytes::<4>(
            words, order,
        ))))),
        DataType::U64 => Raw::Unsigned(u64::from_be_bytes(ordered_bytes::<8>(words, order))),
        DataType::I64 => Raw::Signed(i64::from_be_bytes(ordered_bytes::<8>(words, order))),
        DataType::F64 => Raw::Float(f64::from_bits(u64::from_be_bytes(ordered_bytes::<8>(
            words, order,
        )))),
        DataType::String => Raw::Text(decode_text(words, order)),
    })
}

/// Decodes one coil or discrete input.
pub fn decode_bit(bit: bool) -> Raw {
    Raw::Bool(bit)
}

/// An f32 widened through its shortest decimal form: 12.56f32 becomes 12.56, not 12.5600004196167, so a
/// reading shows what the device's display shows. NaN and infinities pass through.
fn f32_as_f64(v: f32) -> f64 {
    v.to_string().parse::<f64>().unwrap_or(f64::from(v))
}

fn swap16(word: u16, order: ByteOrder) -> u16 {
    if order.byte_swap() {
        word.swap_bytes()
    } else {
        word
    }
}

fn be_u32(bytes: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*bytes)
}

/// The value's bytes in big-endian order, undoing the configured word and byte order. `words` has exactly
/// N/2 registers (checked by the caller).
fn ordered_bytes<const N: usize>(words: &[u16], order: ByteOrder) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N / 2;
    for (i, slot) in out.chunks_exact_mut(2).enumerate() {
        let src = if order.word_swap() { n - 1 - i } else { i };
        let word = words.get(src).copied().unwrap_or(0);
        slot.copy_from_slice(&swap16(word, order).to_be_bytes());
    }
    out
}

/// Two characters per register; trailing NULs and blanks (padding) are dropped, invalid UTF-8 is replaced.
fn decode_text(words: &[u16], order: ByteOrder) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| swap16(*w, order).to_be_bytes())
        .collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or(&bytes))
        .trim_end()
        .to_string()
}

/// Encodes a value into registers in the given order: the inverse of [`decode_registers`], used by tests and
/// test servers to lay out known register contents.
pub fn encode_registers(raw: &Raw, ty: DataType, order: ByteOrder) -> Vec<u16> {
    let bytes: Vec<u8> = match (ty, raw) {
        (DataType::U16, Raw::Unsigned(v)) => (*v as u16).to_be_bytes().to_vec(),
        (DataType::I16, Raw::Signed(v)) => (*v as i16).to_be_bytes().to_vec(),
        (DataType::U32, Raw::Unsigned(v)) => (*v as u32).to_be_bytes().to_vec(),
        (DataType::I32, Raw::Signed(v)) => (*v as i32).to_be_bytes().to_vec(),
        (DataType::F32, Raw::Float(v)) => (*v as f32).to_be_bytes().to_vec(),
        (DataType::U64, Raw::Unsigned(v)) => v.to_be_bytes().to_vec(),
        (DataType::I64, Raw::Signed(v)) => v.to_be_bytes().to_vec(),
        (DataType::F64, Raw::Float(v)) => v.to_be_bytes().to_vec(),
        (DataType::Bool, Raw::Bool(b)) => vec![0, u8::from(*b)],
        (DataType::String, Raw::Text(t)) => {
            let mut b = t.as_bytes().to_vec();
            if b.len() % 2 == 1 {
                b.push(0);
            }
            b
        }
        _ => Vec::new(),
    };
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .map(|w| swap16(w, order))
        .collect();
    if order.word_swap() && ty != DataType::String {
        words.reverse();
    }
    words
}

/// Turns a decoded value into a reading's value: `raw * scale + offset` as f64 when `linear` is set,
/// integers exactly (i64, or u64 above i64's range: see [`crate::reading::Value`]), floats as f64. Errs (bad
/// quality) on NaN/infinite floats, which devices use to flag a sensor fault.
pub fn to_value(
    raw: Raw,
    linear: Option<(f64, f64)>,
) -> Result<crate::reading::Value, DecodeError> {
    use crate::reading::Value;
    let scaled = |x: f64| -> Result<Value, DecodeError> {
        let (scale, offset) = linear.unwrap_or((1.0, 0.0));
        let y = x * scale + offset;
        if y.is_finite() {
            Ok(Value::F64(y))
        } else {
            Err(DecodeError::ScaledNotFinite(x))
        }
    };
    match raw {
        Raw::Float(x) if !x.is_finite() => Err(DecodeError::NotFinite(x)),
        Raw::Float(x) => scaled(x),
        Raw::Unsigned(u) if linear.is_some() => scaled(u as f64),
        Raw::Signed(i) if linear.is_some() => scaled(i as f64),
        Raw::Unsigned(u) => Ok(Value::from_u64(u)),
        Raw::Signed(i) => Ok(Value::I64(i)),
        Raw::Bool(b) => Ok(Value::Bool(b)),
        Raw::Text(t) => Ok(Value::Str(std::sync::Arc::from(t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_of_a_32_bit_value() {
        // 0x11223344 laid out in each order.
        let cases = [
            (ByteOrder::Abcd, [0x1122, 0x3344]),
            (ByteOrder::Cdab, [0x3344, 0x1122]),
            (ByteOrder::Badc, [0x2211, 0x4433]),
            (ByteOrder::Dcba, [0x4433, 0x2211]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_registers(&words, DataType::U32, order, 0).unwrap(),
                Raw::Unsigned(0x1122_3344),
                "{order}"
            );
            assert_eq!(
                encode_registers(&Raw::Unsigned(0x1122_3344), DataType::U32, order),
                words
            );
        }
    }

    #[test]
    fn orders_of_a_64_bit_value() {
        let v = 0x1122_3344_5566_7788u64;
        let cases = [
            (ByteOrder::Abcd, [0x1122, 0x3344, 0x5566, 0x7788]),
            (ByteOrder::Cdab, [0x7788, 0x5566, 0x3344, 0x1122]),
            (ByteOrder::Badc, [0x2211, 0x4433, 0x6655, 0x8877]),
            (ByteOrder::Dcba, [0x8877, 0x6655, 0x4433, 0x2211]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_registers(&words, DataType::U64, order, 0).unwrap(),
                Raw::Unsigned(v),
                "{order}"
            );
        }
    }

    #[test]
    fn every_type_round_trips_in_every_order() {
        let samples = [
            (DataType::U16, Raw::Unsigned(54321)),
            (DataType::I16, Raw::Signed(-1234)),
            (DataType::U32, Raw::Unsigned(4_000_000_000)),
            (DataType::I32, Raw::Signed(-2_000_000_000)),
            (DataType::U64, Raw::Unsigned(u64::MAX - 7)),
            (DataType::I64, Raw::Signed(i64::MIN + 3)),
            (DataType::F32, Raw::Float(12.5)),
            (DataType::F64, Raw::Float(-0.000_123_456_789)),
            (DataType::String, Raw::Text("PRESS-07".into())),
        ];
        for (ty, raw) in samples {
            for order in ByteOrder::ALL {
                let words = encode_registers(&raw, ty, order);
                assert_eq!(
                    decode_registers(&words, ty, order, 0).unwrap(),
                    raw,
                    "{ty} {order}"
                );
            }
        }
    }

    #[test]
    fn known_float_and_bits() {
        // 12.56f32 = 0x4148F5C3
        assert_eq!(
            decode_registers(&[0x4148, 0xF5C3], DataType::F32, ByteOrder::Abcd, 0).unwrap(),
            Raw::Float(12.56)
        );
        assert_eq!(Raw::Float(-3.05e12).to_string(), "-3.05e12");
        assert_eq!(Raw::Float(-1234.5).to_string(), "-1234.5");
        assert_eq!(
            decode_registers(&[0b1000_0000_0000_0100], DataType::Bit, ByteOrder::Abcd, 2).unwrap(),
            Raw::Bool(true)
        );
        assert_eq!(
            decode_registers(&[0b1000_0000_0000_0100], DataType::Bit, ByteOrder::Abcd, 3).unwrap(),
            Raw::Bool(false)
        );
        assert_eq!(
            decode_registers(&[0x8000], DataType::Bit, ByteOrder::Abcd, 15).unwrap(),
            Raw::Bool(true)
        );
        assert!(decode_registers(&[1], DataType::Bit, ByteOrder::Abcd, 16).is_err());
        assert_eq!(
            decode_registers(&[0x0100], DataType::I16, ByteOrder::Badc, 0).unwrap(),
            Raw::Signed(1)
        );
    }

    #[test]
    fn strings_trim_padding_and_survive_garbage() {
        assert_eq!(
            decode_registers(
                &[0x4142, 0x4300, 0x0000],
                DataType::String,
                ByteOrder::Abcd,
                0
            )
            .unwrap(),
            Raw::Text("ABC".into())
        );
        assert_eq!(
            decode_registers(&[0x4241, 0x2043], DataType::String, ByteOrder::Badc, 0).unwrap(),
            Raw::Text("ABC".into())
        );
        let garbage = decode_registers(&[0xFFFE, 0x8081], DataType::String, ByteOrder::Abcd, 0);
        assert!(matches!(garbage, Ok(Raw::Text(_))));
    }

    #[test]
    fn values_scale_and_refuse_non_numbers() {
        use crate::reading::Value;
        assert_eq!(to_value(Raw::Unsigned(1234), None), Ok(Value::I64(1234)));
        assert_eq!(
            to_value(Raw::Unsigned(1234), Some((0.1, -100.0))),
            Ok(Value::F64(1234.0 * 0.1 - 100.0))
        );
        assert_eq!(
            to_value(Raw::Signed(-5), Some((2.0, 0.0))),
            Ok(Value::F64(-10.0))
        );
        // The reason texts readers see (`decode: ...`) are the errors' display forms.
        assert_eq!(
            to_value(Raw::Float(f64::NAN), None)
                .unwrap_err()
                .to_string(),
            "device sent NaN"
        );
        assert!(to_value(Raw::Float(f64::INFINITY), Some((1.0, 0.0))).is_err());
        assert_eq!(
            to_value(Raw::Signed(i64::MAX), Some((f64::MAX, 0.0))),
            Err(DecodeError::ScaledNotFinite(i64::MAX as f64))
        );
        assert_eq!(
            to_value(Raw::Unsigned(u64::MAX), None),
            Ok(Value::U64(u64::MAX))
        );
        assert_eq!(
            to_value(Raw::Unsigned(12_345_678_901_234_567_890), None),
            Ok(Value::U64(12_345_678_901_234_567_890))
        );
        assert_eq!(
            to_value(Raw::Signed(i64::MIN), None),
            Ok(Value::I64(i64::MIN))
        );
        assert_eq!(
            to_value(Raw::Unsigned(u64::MAX), Some((1.0, 0.0))),
            Ok(Value::F64(u64::MAX as f64))
        );
        assert_eq!(to_value(Raw::Bool(true), None), Ok(Value::Bool(true)));
    }

    #[test]
    fn wrong_register_count_is_an_error_not_a_panic() {
        assert!(decode_registers(&[1], DataType::F64, ByteOrder::Abcd, 0).is_err());
        assert!(decode_registers(&[], DataType::String, ByteOrder::Abcd, 0).is_err());
        assert!(decode_registers(&[1, 2, 3], DataType::U32, ByteOrder::Abcd, 0).is_err());
    }
}
