//! A set of block offsets in a log, iterated in log order: one bit per
//! 8-byte unit (every block starts at a multiple of 8).
//!
//! Compaction marks the records the index points at, then copies them in
//! log order, so that it reads the old file front to back and can drop
//! each page behind it. The set costs `len / 64` bytes for a log of `len`
//! bytes at most (1.6%), and less for a sparse one: the bits are zeroed
//! pages that only become memory once a bit in them is set.

/// Offsets in `base..limit`, multiples of 8.
pub(crate) struct OffsetSet {
    base: u64,
    limit: u64,
    words: Vec<u64>,
}

impl OffsetSet {
    /// An empty set for offsets in `base..limit` (`base` a multiple of 8).
    pub(crate) fn new(base: u64, limit: u64) -> OffsetSet {
        let units = limit.saturating_sub(base).div_ceil(8);
        OffsetSet {
            base,
            limit,
            words: vec![0; units.div_ceil(64) as usize],
        }
    }

    /// Adds `offset`; false (and nothing added) when it is outside
    /// `base..limit` or not a multiple of 8.
    pub(crate) fn insert(&mut self, offset: u64) -> bool {
        if offset < self.base || offset >= self.limit || !offset.is_multiple_of(8) {
            return false;
        }
        let unit = (offset - self.base) / 8;
        match self.words.get_mut((unit / 64) as usize) {
            Some(word) => {
                *word |= 1 << (unit % 64);
                true
            }
            None => false,
        }
    }

    /// Every offset in the set, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(move |(i, &word)| {
            let first = self.base + i as u64 * 64 * 8;
            Bits(word).map(move |bit| first + u64::from(bit) * 8)
        })
    }
}

/// The set bits of a word, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_what_was_inserted_in_order_and_refuses_the_rest() {
        let mut set = OffsetSet::new(4096, 4096 + 8 * 200);
        for off in [
            4096 + 8 * 130,
            4096,
            4096 + 8 * 63,
            4096 + 8 * 64,
            4096 + 8 * 199,
        ] {
            assert!(set.insert(off), "{off}");
        }
        assert!(set.insert(4096), "a second insert is harmless");
        for off in [4088, 4100, 4096 + 8 * 200, u64::MAX - 7] {
            assert!(!set.insert(off), "{off}");
        }
        let all: Vec<u64> = set.iter().collect();
        assert_eq!(
            all,
            [
                4096,
                4096 + 8 * 63,
                4096 + 8 * 64,
                4096 + 8 * 130,
                4096 + 8 * 199
            ]
        );
        assert_eq!(OffsetSet::new(4096, 4096).iter().count(), 0);
    }
}
