//! Per-tag state indexed by tag id, bounded against a damaged `tags` table.
//!
//! Tag ids are SQLite rowids handed out from 1 and never deleted, so they are dense and a vector
//! indexed by id is the cheapest table (no hashing on the writer's path, 48 bytes a tag in the
//! readers). But the ids come from a file: a damaged or hand-edited row with id 2^40 (or a negative
//! one) must not make a process allocate by it and abort. Ids within [`SLACK`] of the dense part grow
//! it; anything else is kept in a small map beside it. Everything that keeps per-tag state by id
//! (the writer's counters, the readers' names) goes through this one type.

use std::collections::HashMap;

/// How far past the dense part an id may be and still extend it: the vector never grows by more
/// than this many empty slots for one id.
const SLACK: usize = 4096;

#[derive(Debug, Clone)]
pub struct TagSlots<T> {
    dense: Vec<T>,
    outliers: HashMap<i64, T>,
}

impl<T> Default for TagSlots<T> {
    fn default() -> Self {
        TagSlots {
            dense: Vec::new(),
            outliers: HashMap::new(),
        }
    }
}

impl<T: Default> TagSlots<T> {
    /// The dense index of `id`, when it has or may have one.
    fn dense_index(&self, id: i64) -> Option<usize> {
        usize::try_from(id)
            .ok()
            .filter(|&i| i < self.dense.len().saturating_add(SLACK))
    }

    pub fn get(&self, id: i64) -> Option<&T> {
        match usize::try_from(id).ok().filter(|&i| i < self.dense.len()) {
            Some(i) => self.dense.get(i),
            None => self.outliers.get(&id),
        }
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut T> {
        match usize::try_from(id).ok().filter(|&i| i < self.dense.len()) {
            Some(i) => self.dense.get_mut(i),
            None => self.outliers.get_mut(&id),
        }
    }

    /// The slot of `id`, made (default) when it has none.
    pub fn slot(&mut self, id: i64) -> &mut T {
        match self.dense_index(id) {
            Some(i) => {
                if i >= self.dense.len() {
                    let old = self.dense.len();
                    self.dense.resize_with(i + 1, T::default);
                    // An outlier that the dense part has now reached moves in.
                    if !self.outliers.is_empty() {
                        for j in old..=i {
                            if let Some(v) = self.outliers.remove(&(j as i64)) {
                                self.dense[j] = v;
                            }
                        }
                    }
                }
                &mut self.dense[i]
            }
            None => self.outliers.entry(id).or_default(),
        }
    }

    /// Makes room for ids up to `max_id` in one allocation (growing slot by slot would double the
    /// capacity), within the same bound as [`TagSlots::slot`].
    pub fn reserve_up_to(&mut self, max_id: i64) {
        if let Some(i) = self.dense_index(max_id) {
            self.dense
                .reserve_exact((i + 1).saturating_sub(self.dense.len()));
        }
    }

    /// Every slot with its id: the dense part in id order, then the outliers (in no order).
    pub fn iter(&self) -> impl Iterator<Item = (i64, &T)> {
        self.dense
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64, v))
            .chain(self.outliers.iter().map(|(&id, v)| (id, v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i64, &mut T)> {
        self.dense
            .iter_mut()
            .enumerate()
            .map(|(i, v)| (i as i64, v))
            .chain(self.outliers.iter_mut().map(|(&id, v)| (id, v)))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.dense.iter_mut().chain(self.outliers.values_mut())
    }

    pub fn is_empty(&self) -> bool {
        self.dense.is_empty() && self.outliers.is_empty()
    }

    pub fn clear(&mut self) {
        self.dense.clear();
        self.outliers.clear();
    }

    pub fn shrink_to_fit(&mut self) {
        self.dense.shrink_to_fit();
        self.outliers.shrink_to_fit();
    }

    /// Slots held in the dense part (for tests of the bound).
    #[cfg(test)]
    pub fn dense_len(&self) -> usize {
        self.dense.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_ids_index_a_vector() {
        let mut s = TagSlots::<u32>::default();
        for id in 1..=1000 {
            *s.slot(id) += id as u32;
        }
        assert_eq!(s.dense_len(), 1001);
        assert_eq!(s.get(500), Some(&500));
        assert_eq!(s.get(1001), None);
        assert_eq!(s.iter().filter(|(_, v)| **v > 0).count(), 1000);
    }

    #[test]
    fn huge_and_negative_ids_do_not_grow_the_vector() {
        let mut s = TagSlots::<u64>::default();
        for id in [i64::MAX, 1 << 40, -1, i64::MIN, 5] {
            *s.slot(id) += 1;
        }
        assert_eq!(s.dense_len(), 6);
        assert_eq!(s.get(i64::MAX), Some(&1));
        assert_eq!(s.get(-1), Some(&1));
        assert_eq!(s.get(i64::MIN), Some(&1));
        assert_eq!(s.get(1 << 40), Some(&1));
        assert_eq!(s.get(5), Some(&1));
        assert_eq!(s.iter().map(|(_, v)| *v).sum::<u64>(), 5);
        s.reserve_up_to(i64::MAX);
        assert_eq!(s.dense_len(), 6);
    }

    #[test]
    fn an_outlier_the_dense_part_reaches_moves_in_with_its_value() {
        let mut s = TagSlots::<u64>::default();
        *s.slot(SLACK as i64 + 10) = 7; // too far from an empty vector: an outlier
        assert_eq!(s.dense_len(), 0);
        for id in 0..SLACK as i64 {
            s.slot(id);
        }
        // Now within reach: the dense part grows to it and takes its value along.
        assert_eq!(*s.slot(SLACK as i64 + 10), 7);
        assert_eq!(s.dense_len(), SLACK + 11);
        assert_eq!(
            s.iter().filter(|(id, _)| *id == SLACK as i64 + 10).count(),
            1
        );
        assert_eq!(s.get(SLACK as i64 + 10), Some(&7));
    }
}
