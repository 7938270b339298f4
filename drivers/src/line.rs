//! Serial-line settings shared by every driver that opens a serial port (Modbus RTU, gauges): parity,
//! flow control, the accepted baud range, how a setting reads (`9600 8E1`), and the conversion to a
//! tokio-serial builder. One place, so the drivers cannot drift apart.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

/// Baud rates accepted in a config: from old 50-baud teleprinter-era gauges to fast USB adapters.
pub const BAUD_RANGE: RangeInclusive<u32> = 50..=4_000_000;

/// A baud rate outside [`BAUD_RANGE`]; its text is the config message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be between {} and {}", BAUD_RANGE.start(), BAUD_RANGE.end())]
pub struct BaudOutOfRange(pub u32);

/// Checks a baud rate against [`BAUD_RANGE`].
pub fn check_baud(baud: u32) -> Result<(), BaudOutOfRange> {
    if BAUD_RANGE.contains(&baud) {
        Ok(())
    } else {
        Err(BaudOutOfRange(baud))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

impl Parity {
    /// `N`, `E`, `O` as in `8N1`.
    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowControl {
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// The character format of a line: baud, data bits, parity, stop bits, flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineFormat {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl LineFormat {
    /// `9600 7E2` (plus ` xon/xoff` or ` rts/cts`).
    pub fn describe(&self) -> String {
        let flow = match self.flow_control {
            FlowControl::None => "",
            FlowControl::Software => " xon/xoff",
            FlowControl::Hardware => " rts/cts",
        };
        format!(
            "{} {}{}{}{flow}",
            self.baud,
            self.data_bits,
            self.parity.letter(),
            self.stop_bits
        )
    }

    /// Bits on the line per character (start + data + parity + stop).
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// A tokio-serial builder for `path` in this format. The builder's timeout only matters for blocking
    /// reads, which the async stream never does; it is set anyway (its default is 0).
    pub fn builder(&self, path: &str) -> tokio_serial::SerialPortBuilder {
        let data_bits = match self.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let parity = match self.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let stop_bits = match self.stop_bits {
            2 => tokio_serial::StopBits::Two,
            _ => tokio_serial::StopBits::One,
        };
        let flow = match self.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        };
        tokio_serial::new(path, self.baud)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(flow)
            .timeout(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_as_on_a_data_sheet() {
        let f = LineFormat {
            baud: 4800,
            data_bits: 7,
            parity: Parity::Even,
            stop_bits: 2,
            flow_control: FlowControl::None,
        };
        assert_eq!(f.describe(), "4800 7E2");
        assert_eq!(f.bits_per_char(), 11);
        let f = LineFormat {
            flow_control: FlowControl::Hardware,
            parity: Parity::None,
            ..f
        };
        assert_eq!(f.describe(), "4800 7N2 rts/cts");
    }

    #[test]
    fn one_baud_range() {
        assert!(check_baud(50).is_ok());
        assert!(check_baud(4_000_000).is_ok());
        assert_eq!(
            check_baud(0).unwrap_err().to_string(),
            "must be between 50 and 4000000"
        );
        assert!(check_baud(4_000_001).is_err());
    }
}
