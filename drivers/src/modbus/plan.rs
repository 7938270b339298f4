//! The request plan: a device's tags merged into the fewest read requests, computed once when the device
//! is parsed.
//!
//! Tags are grouped by unit id and area and sorted by address. A tag joins the current request when it
//! starts at most `max_gap` unused registers (or bits) after the request's end and the request stays within
//! `max_registers` / `max_bits` (at most 125 / 2000, the protocol limits). Overlapping tags (e.g. several
//! bits of one status word) share the registers they read. A gap is read and thrown away, so a larger
//! `max_gap` trades bytes on the wire for fewer round trips; keep it 0 on devices whose register map has
//! holes that answer with an exception.

use std::fmt::Write as _;

use super::config::{DeviceConfig, TagConfig};
use super::decode::Area;

/// One read request of the plan and the tags it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub unit_id: u8,
    pub area: Area,
    pub start: u16,
    /// Registers or bits to read.
    pub count: u16,
    /// Indices into the device's tag list.
    pub tags: Vec<usize>,
}

impl Block {
    /// One past the last address read.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Merges `tags` into read requests (see the module documentation).
pub fn plan(tags: &[TagConfig], max_gap: u16, max_registers: u16, max_bits: u16) -> Vec<Block> {
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| {
        let t = &tags[i];
        (t.unit_id, t.area, t.address, t.end())
    });
    let mut blocks: Vec<Block> = Vec::new();
    let mut current: Option<(Block, u32)> = None; // block and its end (exclusive)
    for i in order {
        let t = &tags[i];
        let cap = u32::from(if t.area.is_register() {
            max_registers.clamp(1, 125)
        } else {
            max_bits.clamp(1, 2000)
        });
        if let Some((block, end)) = current.as_mut() {
            let same_table = block.unit_id == t.unit_id && block.area == t.area;
            let new_end = (*end).max(t.end());
            if same_table
                && u32::from(t.address) <= *end + u32::from(max_gap)
                && new_end - u32::from(block.start) <= cap
            {
                *end = new_end;
                block.count = (new_end - u32::from(block.start)) as u16;
                block.tags.push(i);
                continue;
            }
        }
        if let Some((block, _)) = current.take() {
            blocks.push(block);
        }
        current = Some((
            Block {
                unit_id: t.unit_id,
                area: t.area,
                start: t.address,
                count: t.count,
                tags: vec![i],
            },
            t.end(),
        ));
    }
    if let Some((block, _)) = current {
        blocks.push(block);
    }
    blocks
}

/// The plan as text for `lineside check --plan`.
pub fn describe(spec: &DeviceConfig, blocks: &[Block]) -> String {
    let mut out = String::new();
    let t = &spec.timing;
    let _ = writeln!(
        out,
        "modbus {}: {} tag(s) in {} read request(s) every {} (timeout {}, max_gap {}, inter-frame delay {})",
        spec.endpoint,
        spec.tags.len(),
        blocks.len(),
        humantime::format_duration(t.poll_interval),
        humantime::format_duration(t.timeout),
        spec.max_gap,
        short(t.inter_frame_delay),
    );
    if spec.endpoint.is_bus() {
        let _ = writeln!(
            out,
            "  RTU bus: one transaction at a time, shared with every device that names the same {}",
            if matches!(spec.endpoint, super::config::Endpoint::Rtu(_)) {
                "serial port"
            } else {
                "gateway address"
            }
        );
    }
    let _ = writeln!(
        out,
        "  a request answered IllegalDataAddress/IllegalDataValue is split and re-read until the refused registers are isolated; the split is kept (see /status notes) and merging retried every {}",
        humantime::format_duration(super::poll::MERGE_RETRY)
    );
    for (n, b) in blocks.iter().enumerate() {
        let what = if b.area.is_register() {
            "registers"
        } else {
            "bits"
        };
        let used: u32 = used_span(&spec.tags, b);
        let _ = write!(
            out,
            "  #{:<3} unit {:<3} {:<16} {:>5}..={:<5} FC{:02X} {:>4} {what}",
            n + 1,
            b.unit_id,
            b.area.name(),
            b.start,
            b.end() - 1,
            b.area.function_code(),
            b.count,
        );
        if used < u32::from(b.count) {
            let _ = write!(out, " ({} unused)", u32::from(b.count) - used);
        }
        let names: Vec<String> = b
            .tags
            .iter()
            .filter_map(|&i| spec.tags.get(i))
            .map(|t| format!("{}@{}", t.name, t.address))
            .collect();
        let _ = writeln!(out, ": {}", names.join(", "));
    }
    out
}

/// A duration to the microsecond ("2.005ms"), where humantime would print "2ms 5us 208ns".
fn short(d: std::time::Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        humantime::format_duration(d).to_string()
    } else {
        let ms = d.as_secs_f64() * 1e3;
        format!("{ms:.3}ms")
    }
}

/// Registers/bits of the block that some tag uses.
fn used_span(tags: &[TagConfig], b: &Block) -> u32 {
    let mut used = vec![false; usize::from(b.count)];
    for t in b.tags.iter().filter_map(|&i| tags.get(i)) {
        let from = usize::from(t.address.saturating_sub(b.start));
        let to = (from + usize::from(t.count)).min(used.len());
        for u in used.iter_mut().take(to).skip(from) {
            *u = true;
        }
    }
    used.iter().filter(|u| **u).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::parse as parse_config;

    fn spec(tags: &str, extra: &str) -> DeviceConfig {
        parse_config(
            toml::from_str(&format!(
                "transport = 'tcp'\naddress = 'x:502'\n{extra}\n{tags}"
            ))
            .unwrap(),
        )
        .unwrap()
    }

    fn ranges(s: &DeviceConfig) -> Vec<(u8, Area, u16, u16)> {
        plan(&s.tags, s.max_gap, s.max_registers, s.max_bits)
            .iter()
            .map(|b| (b.unit_id, b.area, b.start, b.count))
            .collect()
    }

    const TAGS: &str = "\
        [[tag]]\nname='a'\naddress=0\n\
        [[tag]]\nname='b'\naddress=1\ntype='f32'\n\
        [[tag]]\nname='c'\naddress=5\n\
        [[tag]]\nname='d'\naddress=1\ntype='bit'\nbit=3\n\
        [[tag]]\nname='e'\naddress=0\nunit_id=2\n\
        [[tag]]\nname='f'\narea='coil'\naddress=10\n\
        [[tag]]\nname='g'\narea='coil'\naddress=12\n";

    #[test]
    fn contiguous_tags_merge_and_gaps_split() {
        let s = spec(TAGS, "");
        assert_eq!(
            ranges(&s),
            [
                (1, Area::Coil, 10, 1),
                (1, Area::Coil, 12, 1),
                (1, Area::HoldingRegister, 0, 3),
                (1, Area::HoldingRegister, 5, 1),
                (2, Area::HoldingRegister, 0, 1),
            ]
        );
    }

    #[test]
    fn max_gap_merges_across_holes() {
        let s = spec(TAGS, "max_gap = 2");
        assert_eq!(
            ranges(&s),
            [
                (1, Area::Coil, 10, 3),
                (1, Area::HoldingRegister, 0, 6),
                (2, Area::HoldingRegister, 0, 1),
            ]
        );
        let text = describe(&s, &plan(&s.tags, 2, 125, 2000));
        assert!(text.contains("in 3 read request(s)"), "{text}");
        assert!(text.contains("(2 unused)"), "{text}");
        assert!(text.contains("a@0, d@1, b@1, c@5"), "{text}");
    }

    #[test]
    fn requests_never_exceed_the_caps() {
        let mut tags = String::new();
        for i in 0..300 {
            tags.push_str(&format!("[[tag]]\nname='r{i}'\naddress={i}\n"));
        }
        for i in 0..2500 {
            tags.push_str(&format!("[[tag]]\nname='c{i}'\narea='coil'\naddress={i}\n"));
        }
        tags.push_str("[[tag]]\nname='tail'\naddress=65532\ntype='u64'\n");
        let s = spec(&tags, "max_gap = 10");
        let blocks = plan(&s.tags, s.max_gap, s.max_registers, s.max_bits);
        for b in &blocks {
            assert!(b.count <= if b.area.is_register() { 125 } else { 2000 });
        }
        let counts: Vec<u16> = blocks.iter().map(|b| b.count).collect();
        assert_eq!(counts, [2000, 500, 125, 125, 50, 4]);
        assert_eq!(blocks.last().unwrap().end(), 65536);
        // Every tag is in exactly one block.
        let mut all: Vec<usize> = blocks.iter().flat_map(|b| b.tags.clone()).collect();
        all.sort();
        assert_eq!(all, (0..s.tags.len()).collect::<Vec<_>>());

        let small = spec(&tags, "max_registers = 10\nmax_bits = 100");
        let blocks = plan(&small.tags, 0, small.max_registers, small.max_bits);
        assert!(
            blocks
                .iter()
                .all(|b| b.count <= if b.area.is_register() { 10 } else { 100 })
        );
    }
}
