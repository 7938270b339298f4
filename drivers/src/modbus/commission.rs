//! Commissioning: read a window of registers (or bits) once and show it decoded as every type in every byte
//! order, so an engineer can find the address, type and order of a value on a new device by looking for a
//! number they know (the display of the instrument, a setpoint).

use std::fmt::Write as _;
use std::time::Duration;

use super::config::{Endpoint, Timing};
use super::decode::{self, Area, ByteOrder, DataType, Raw};
use super::transport::{Link, ReadData, ReadRequest, TxError};

/// One read to make.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOnce {
    pub endpoint: Endpoint,
    pub unit_id: u8,
    pub area: Area,
    pub address: u16,
    /// Registers or bits to read (at most 125 / 2000).
    pub count: u16,
    pub timeout: Duration,
}

/// Why a commissioning read gave no data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadOnceError {
    #[error("count must be between 1 and {} for {area}", area.protocol_max())]
    Count { area: Area },
    #[error("the window runs past address 65535")]
    PastEnd,
    /// The transaction failed: `{endpoint} {request}: {reason}`.
    #[error("{endpoint} {request}: {error}")]
    Transaction {
        endpoint: Endpoint,
        request: ReadRequest,
        error: TxError,
    },
}

/// Reads once. Errs with a readable message on timeout, exception, or link failure.
pub async fn read_once(r: &ReadOnce) -> Result<ReadData, ReadOnceError> {
    if r.count == 0 || r.count > r.area.protocol_max() {
        return Err(ReadOnceError::Count { area: r.area });
    }
    if u32::from(r.address) + u32::from(r.count) > 65_536 {
        return Err(ReadOnceError::PastEnd);
    }
    let timing = Timing {
        poll_interval: Duration::from_secs(1),
        timeout: r.timeout,
        connect_timeout: r.timeout.max(Duration::from_secs(3)),
        inter_frame_delay: Duration::ZERO,
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
    };
    let mut link = Link::new(r.endpoint.clone(), &timing);
    let req = ReadRequest {
        unit_id: r.unit_id,
        area: r.area,
        start: r.address,
        count: r.count,
    };
    link.read(req, r.timeout, Duration::ZERO)
        .await
        .result
        .map_err(|error| ReadOnceError::Transaction {
            endpoint: r.endpoint.clone(),
            request: req,
            error,
        })
}

/// One value decoded from the window: the type at `address` in each order that reads it differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub address: u16,
    pub ty: DataType,
    /// `(order, value)` for each distinct order (two for 16-bit types and strings, four otherwise).
    pub values: Vec<(ByteOrder, Raw)>,
}

/// The orders that read `ty` differently.
fn distinct_orders(ty: DataType) -> &'static [ByteOrder] {
    match ty {
        DataType::U32
        | DataType::I32
        | DataType::F32
        | DataType::U64
        | DataType::I64
        | DataType::F64 => &ByteOrder::ALL,
        _ => &[ByteOrder::Abcd, ByteOrder::Badc],
    }
}

/// Decodes `words` (read from `start`) as each of `types` at every address where it fits. A string is
/// decoded once, over the whole window. `bool` and `bit` are left out: the raw table shows the bits.
pub fn decode_window(start: u16, words: &[u16], types: &[DataType]) -> Vec<Decoded> {
    let mut rows = Vec::new();
    for &ty in types {
        let width = match ty {
            DataType::Bool | DataType::Bit => continue,
            DataType::String => words.len(),
            other => usize::from(other.fixed_registers().unwrap_or(1)),
        };
        if width == 0 || width > words.len() {
            continue;
        }
        let last_offset = if ty == DataType::String {
            0
        } else {
            words.len() - width
        };
        for offset in 0..=last_offset {
            let Some(slice) = words.get(offset..offset + width) else {
                continue;
            };
            let values = distinct_orders(ty)
                .iter()
                .filter_map(|&order| {
                    decode::decode_registers(slice, ty, order, 0)
                        .ok()
                        .map(|v| (order, v))
                })
                .collect();
            rows.push(Decoded {
                address: start.saturating_add(offset as u16),
                ty,
                values,
            });
        }
    }
    rows
}

/// The whole commissioning report as a text table.
pub fn render(r: &ReadOnce, data: &ReadData, types: &[DataType]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} unit {} {} {}..={} ({} {})",
        r.endpoint,
        r.unit_id,
        r.area,
        r.address,
        u32::from(r.address) + u32::from(r.count) - 1,
        r.count,
        if r.area.is_register() {
            "registers"
        } else {
            "bits"
        }
    );
    match data {
        ReadData::Bits(bits) => {
            let _ = writeln!(out, "\n{:>7}  value", "address");
            for (i, b) in bits.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{:>7}  {}",
                    u32::from(r.address) + i as u32,
                    u8::from(*b)
                );
            }
        }
        ReadData::Words(words) => {
            let _ = writeln!(
                out,
                "\n{:>7}  {:>6}  {:>6}  {:>6}  {:<19}  ascii",
                "address", "hex", "u16", "i16", "bits 15..0"
            );
            for (i, w) in words.iter().enumerate() {
                let [hi, lo] = w.to_be_bytes();
                let ascii: String = [hi, lo]
                    .iter()
                    .map(|&c| {
                        if c.is_ascii_graphic() || c == b' ' {
                            c as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "{:>7}  0x{:04X}  {:>6}  {:>6}  {:04b} {:04b} {:04b} {:04b}  {ascii}",
                    u32::from(r.address) + i as u32,
                    w,
                    w,
                    *w as i16,
                    w >> 12,
                    (w >> 8) & 0xF,
                    (w >> 4) & 0xF,
                    w & 0xF
                );
            }
            let rows = decode_window(r.address, words, types);
            if !rows.is_empty() {
                let _ = writeln!(
                    out,
                    "\n{:>7}  {:<6}  {:>24}  {:>24}  {:>24}  {:>24}",
                    "address", "type", "abcd", "cdab", "badc", "dcba"
                );
            }
            for row in rows {
                let cell = |order: ByteOrder| {
                    row.values
                        .iter()
                        .find(|(o, _)| *o == order)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_else(|| "=".to_string())
                };
                let _ = writeln!(
                    out,
                    "{:>7}  {:<6}  {:>24}  {:>24}  {:>24}  {:>24}",
                    row.address,
                    row.ty.name(),
                    cell(ByteOrder::Abcd),
                    cell(ByteOrder::Cdab),
                    cell(ByteOrder::Badc),
                    cell(ByteOrder::Dcba)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_float_shows_up_in_its_order() {
        // 12.56f32 in cdab order at address 101, between other registers.
        let words = [7, 0xF5C3, 0x4148, 9];
        let rows = decode_window(100, &words, &[DataType::F32]);
        assert_eq!(rows.len(), 3, "f32 fits at 100, 101, 102");
        let at101 = rows.iter().find(|r| r.address == 101).unwrap();
        let cdab = at101
            .values
            .iter()
            .find(|(o, _)| *o == ByteOrder::Cdab)
            .unwrap();
        assert_eq!(cdab.1, Raw::Float(12.56));
    }

    #[test]
    fn all_types_and_the_rendered_table() {
        let words = [0x4142, 0x4344, 0x0001, 0xFFFF];
        let rows = decode_window(0, &words, &DataType::ALL);
        let kinds: Vec<_> = rows.iter().map(|r| (r.ty, r.address)).collect();
        assert!(kinds.contains(&(DataType::U64, 0)));
        assert!(kinds.contains(&(DataType::String, 0)));
        assert!(!kinds.iter().any(|(t, _)| *t == DataType::Bit));
        let r = ReadOnce {
            endpoint: Endpoint::Tcp {
                host: "h".into(),
                port: 502,
            },
            unit_id: 1,
            area: Area::HoldingRegister,
            address: 0,
            count: 4,
            timeout: Duration::from_secs(1),
        };
        let text = render(&r, &ReadData::Words(words.to_vec()), &DataType::ALL);
        assert!(text.contains("0x4142"), "{text}");
        assert!(text.contains("\"ABCD\""), "{text}");
        assert!(text.contains("65535"), "{text}");
        assert!(text.contains("  -1"), "{text}");
    }
}
