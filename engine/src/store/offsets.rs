//! Record offsets, kept compactly for the passes over a whole log
//! (compaction, verify, salvage), so that what a pass remembers is small
//! beside the file and it can read the file front to back, dropping each
//! page behind it (`MappedFile::release`).
//!
//! * [`OffsetSet`]: a set of offsets, iterated in log order; one bit per
//!   8-byte unit (every block starts at a multiple of 8).
//! * [`NewestByKey`]: the newest record of each key, by key, without
//!   copying keys: the key is read back from the log when two hashes agree.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasherDefault;

use super::file_state::FileState;
use super::pending::Identity;
use crate::error::Result;

/// Offsets in `base..limit`, multiples of 8. Costs `(limit - base) / 64`
/// bytes at most (1.6% of the log), and less for a sparse set: the bits
/// are zeroed pages that only become memory once a bit in them is set.
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

    /// Whether `offset` is in the set.
    pub(crate) fn contains(&self, offset: u64) -> bool {
        if offset < self.base || !offset.is_multiple_of(8) {
            return false;
        }
        let unit = (offset - self.base) / 8;
        self.words
            .get((unit / 64) as usize)
            .is_some_and(|w| w >> (unit % 64) & 1 == 1)
    }

    /// Every offset in the set, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(move |(i, &word)| {
            let first = self.base + i as u64 * 64 * 8;
            Bits(word).map(move |bit| first + u64::from(bit) * 8)
        })
    }
}

/// The offset of the newest record of each key of a log, by key.
///
/// A map from the key's hash (the file's keyed SipHash) to the offset; two
/// records are of the same key when their hashes agree *and* their keys,
/// read back from the log, do. Distinct keys whose hashes agree (about one
/// pair in 2^64) go to a small map of copied keys. About 20 to 40 bytes a
/// key, against the 30 to 70 of a map keyed by borrowed key slices.
pub(crate) struct NewestByKey {
    by_hash: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    collided: HashMap<Vec<u8>, u64>,
    /// Older records read back to compare keys since the last
    /// [`take_reads`](Self::take_reads).
    reads: u64,
}

impl NewestByKey {
    /// An empty map with room for `keys` keys.
    pub(crate) fn with_capacity(keys: usize) -> NewestByKey {
        NewestByKey {
            by_hash: HashMap::with_capacity_and_hasher(keys, BuildHasherDefault::default()),
            collided: HashMap::new(),
            reads: 0,
        }
    }

    /// True, once, when [`insert`](Self::insert) has read `at_least`
    /// older records back (at random places in the log) since the last
    /// time. Each such read faults its page, and the cached pages around
    /// it, into the process: a caller streaming through the file releases
    /// what lies behind it then.
    pub(crate) fn take_reads(&mut self, at_least: u64) -> bool {
        let due = self.reads >= at_least;
        if due {
            self.reads = 0;
        }
        due
    }

    /// Records that the verified record at `offset` in `fs`, whose key
    /// hashes to `hash`, is the newest of its key so far (records are
    /// inserted in log order). Keys are read back, below `bound`, only
    /// when another record's hash is the same.
    pub(crate) fn insert(
        &mut self,
        fs: &FileState,
        bound: u64,
        hash: u64,
        offset: u64,
    ) -> Result<()> {
        match self.by_hash.entry(hash) {
            Entry::Vacant(e) => {
                e.insert(offset);
            }
            Entry::Occupied(mut e) => {
                self.reads += 1;
                let key = fs.key_at(offset, bound)?;
                if fs.key_at(*e.get(), bound)? == key {
                    e.insert(offset);
                } else {
                    self.collided.insert(key.to_vec(), offset);
                }
            }
        }
        Ok(())
    }

    /// The newest record of every key, in no particular order.
    pub(crate) fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_hash.values().chain(self.collided.values()).copied()
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
            assert!(!set.contains(off), "{off}");
        }
        assert!(set.contains(4096 + 8 * 64));
        assert!(!set.contains(4096 + 8 * 65));
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
