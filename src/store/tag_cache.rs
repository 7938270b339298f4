//! The writer's tag-id cache keyed by allocation identity.
//!
//! A driver builds one `Arc<str>` per device, tag and unit when it starts and clones it into every
//! reading, so the addresses of those three allocations name a (device, tag, unit) for as long as the
//! cache holds a clone of each (an address cannot be reused while its allocation is alive). Looking a
//! reading up is then a hash of three words instead of two string hashes and a unit scan. A reading
//! whose strings were allocated afresh simply misses and takes the string path once; the cache is
//! emptied when it grows past [`MAX_ENTRIES`], so a driver that allocates per reading cannot make it
//! grow without bound.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use lineside_drivers::Reading;

/// Entries before the cache starts over.
const MAX_ENTRIES: usize = 1 << 16;

type Key = (usize, usize, usize);
/// The device, tag and unit allocations a key was made from.
type Held = (Arc<str>, Arc<str>, Option<Arc<str>>);

#[derive(Default)]
pub(super) struct TagCache {
    ids: HashMap<Key, i64, BuildHasherDefault<WordHasher>>,
    /// Keeps the keyed allocations alive, so their addresses stay theirs.
    held: Vec<Held>,
}

fn key(r: &Reading) -> Key {
    (
        Arc::as_ptr(&r.device) as *const u8 as usize,
        Arc::as_ptr(&r.tag) as *const u8 as usize,
        r.unit
            .as_ref()
            .map_or(0, |u| Arc::as_ptr(u) as *const u8 as usize),
    )
}

impl TagCache {
    pub fn get(&self, r: &Reading) -> Option<i64> {
        self.ids.get(&key(r)).copied()
    }

    pub fn insert(&mut self, r: &Reading, id: i64) {
        if self.ids.len() >= MAX_ENTRIES {
            self.clear();
        }
        self.ids.insert(key(r), id);
        self.held
            .push((r.device.clone(), r.tag.clone(), r.unit.clone()));
    }

    pub fn clear(&mut self) {
        self.ids.clear();
        self.held.clear();
    }
}

/// A hasher for keys made of machine words (addresses): multiply-rotate, no per-byte work.
#[derive(Default)]
pub(super) struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lineside_drivers::{Quality, Value};

    fn reading(device: &Arc<str>, tag: &Arc<str>, unit: Option<&Arc<str>>) -> Reading {
        Reading {
            device: device.clone(),
            tag: tag.clone(),
            ts: chrono::Utc::now(),
            value: Some(Value::F64(1.0)),
            quality: Quality::Good,
            unit: unit.cloned(),
        }
    }

    #[test]
    fn same_allocations_hit_fresh_ones_miss() {
        let d: Arc<str> = Arc::from("plc");
        let t: Arc<str> = Arc::from("temp");
        let u: Arc<str> = Arc::from("C");
        let mut c = TagCache::default();
        c.insert(&reading(&d, &t, Some(&u)), 7);
        assert_eq!(c.get(&reading(&d, &t, Some(&u))), Some(7));
        // Same text, other unit or other allocation: not this entry.
        assert_eq!(c.get(&reading(&d, &t, None)), None);
        let t2: Arc<str> = Arc::from("temp");
        assert_eq!(c.get(&reading(&d, &t2, Some(&u))), None);
    }

    #[test]
    fn a_dropped_allocation_cannot_alias_a_cached_key() {
        let d: Arc<str> = Arc::from("plc");
        let mut c = TagCache::default();
        {
            let t: Arc<str> = Arc::from("a");
            c.insert(&reading(&d, &t, None), 1);
        }
        // The cache still holds "a", so a new allocation gets another address.
        let t: Arc<str> = Arc::from("b");
        assert_eq!(c.get(&reading(&d, &t, None)), None);
    }

    #[test]
    fn bounded() {
        let d: Arc<str> = Arc::from("plc");
        let mut c = TagCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            let t: Arc<str> = Arc::from(format!("t{i}").as_str());
            c.insert(&reading(&d, &t, None), i as i64);
        }
        assert!(c.ids.len() <= MAX_ENTRIES && c.held.len() <= MAX_ENTRIES);
    }
}
