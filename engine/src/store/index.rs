//! The index: open addressing with linear probing over 8-byte atomic slots.
//!
//! The probe loop is [`probe`]; everything that reads or writes slots goes
//! through it. Slots only ever go from empty to a record offset, or from one
//! record offset to a newer one for the same key (a delete is a record
//! too), so a lock-free reader walking a probe chain can never miss a key
//! that was present before its walk began.

use std::sync::atomic::{AtomicU64, Ordering};

use carboy_format::header::live;
use carboy_format::record::{Kind, Record};
use carboy_format::slot;

use super::file_state::{FileState, IndexView};
use crate::error::Result;

/// Where a key is, or where it would go.
pub(crate) enum Probe<'a> {
    /// The key's slot (number `bucket`) and its newest record.
    Found {
        slot: &'a AtomicU64,
        bucket: u64,
        offset: u64,
        record: Record<'a>,
    },
    /// The key is absent; this is the first empty slot on its chain.
    Vacant { slot: &'a AtomicU64 },
    /// Every slot is taken and none holds the key (the table is kept below
    /// 3/4 full, so this means a damaged file).
    Full,
}

/// Walks the probe chain of `key` in `idx`.
///
/// Records must lie below `bound`; when `bound` is `None` the committed end
/// is re-read after each slot load (the reader's path: a slot is published
/// only after the end that covers its record, so the end loaded after the
/// slot covers it).
pub(crate) fn probe<'a>(
    fs: &'a FileState,
    idx: IndexView,
    hash: u64,
    key: &[u8],
    bound: Option<u64>,
) -> Result<Probe<'a>> {
    let mask = idx.capacity() - 1;
    let index_end = idx.offset + idx.len();
    let slots = fs
        .map
        .words(idx.slot_offset(0), idx.capacity(), index_end)
        .ok_or_else(|| fs.corruption(idx.offset, "index slots outside the file"))?;
    let want = slot::tag(hash);
    let mut bucket = slot::bucket(hash, idx.log2);
    for _ in 0..idx.capacity() {
        // In bounds: `bucket <= mask < slots.len()`.
        let word = &slots[bucket as usize];
        let s = u64::from_le(word.load(Ordering::Acquire));
        if s == slot::EMPTY {
            return Ok(Probe::Vacant { slot: word });
        }
        if slot::slot_tag(s) == want {
            let offset = slot::offset(s);
            // The record's first line is read next; its second (a record
            // of a 16-byte key and a 100-byte value spans two or three)
            // would otherwise be asked for only once the first has arrived
            // and told the record's length.
            fs.map.prefetch(offset + 64);
            if offset < index_end && offset >= idx.offset {
                return Err(fs.corruption(
                    idx.slot_offset(bucket),
                    format!("slot points into its own index at {offset}"),
                ));
            }
            let limit = bound.unwrap_or_else(|| fs.commit_end());
            let record = fs.record(offset, limit)?;
            if record.key == key {
                return Ok(Probe::Found {
                    slot: word,
                    bucket,
                    offset,
                    record,
                });
            }
        }
        bucket = (bucket + 1) & mask;
    }
    Ok(Probe::Full)
}

/// Asks the CPU for the cache line of the home slot of `hash` in `idx`,
/// without waiting for it (a batch of lookups overlaps its misses so).
pub(crate) fn prefetch_slot(fs: &FileState, idx: IndexView, hash: u64) {
    fs.map
        .prefetch(idx.slot_offset(slot::bucket(hash, idx.log2)));
}

/// Asks the CPU for the first two cache lines of the record that the home
/// slot of `hash` points to, if its tag matches, without waiting for them.
/// A hint: the slot is read again, and the record checked, by [`probe`].
pub(crate) fn prefetch_record(fs: &FileState, idx: IndexView, hash: u64) {
    let bucket = slot::bucket(hash, idx.log2);
    if let Ok(s) = load_slot(fs, idx, bucket)
        && s != slot::EMPTY
        && slot::slot_tag(s) == slot::tag(hash)
    {
        fs.map.prefetch(slot::offset(s));
        fs.map.prefetch(slot::offset(s) + 64);
    }
}

/// Running changes to the counters kept in the live words.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) live_keys: i64,
    pub(crate) used_slots: i64,
    pub(crate) expiring_keys: i64,
    pub(crate) dead_bytes: i64,
    /// Change to the wrapping sum of the slots (`slot_sum`, FORMAT.md
    /// §4.4), wrapping.
    pub(crate) slot_sum: u64,
}

impl Counters {
    fn add_record(&mut self, rec: &Record<'_>, sign: i64) {
        // A delete record counts nowhere: it is dead weight from the
        // moment it is written.
        if rec.kind == Kind::Put {
            self.live_keys += sign;
            if rec.expiry != carboy_format::Expiry::Never {
                self.expiring_keys += sign;
            }
        }
    }
}

/// Points the slot for the record at `offset` (already written, below
/// `bound`) at it, updating `counters`.
pub(crate) fn publish(
    fs: &FileState,
    idx: IndexView,
    offset: u64,
    bound: u64,
    counters: &mut Counters,
) -> Result<()> {
    let rec = fs.record(offset, bound)?;
    publish_record(fs, idx, offset, &rec, fs.hash(rec.key), bound, counters)
}

/// [`publish`] for a record whose fields and key hash the caller already
/// knows (the writer, which just encoded it): saves reading, verifying and
/// hashing it again. Only `kind`, `expiry`, `key` and `len` of `rec` are used.
pub(crate) fn publish_record(
    fs: &FileState,
    idx: IndexView,
    offset: u64,
    rec: &Record<'_>,
    hash: u64,
    bound: u64,
    counters: &mut Counters,
) -> Result<()> {
    let value = slot::pack(offset, hash)
        .ok_or_else(|| fs.corruption(offset, "record offset cannot be addressed by a slot"))?;
    match probe(fs, idx, hash, rec.key, Some(bound))? {
        Probe::Found {
            slot,
            offset: old,
            record: old_rec,
            ..
        } => {
            if old == offset {
                return Ok(()); // replayed: already published
            }
            counters.add_record(&old_rec, -1);
            if old_rec.kind == Kind::Put {
                counters.dead_bytes += old_rec.len as i64;
            }
            let was = u64::from_le(slot.load(Ordering::Relaxed));
            counters.slot_sum = counters.slot_sum.wrapping_add(value).wrapping_sub(was);
            slot.store(value.to_le(), Ordering::Release);
        }
        Probe::Vacant { slot } => {
            counters.used_slots += 1;
            counters.slot_sum = counters.slot_sum.wrapping_add(value);
            slot.store(value.to_le(), Ordering::Release);
        }
        Probe::Full => {
            return Err(fs.corruption(idx.offset, "index is full: no slot left for a new key"));
        }
    }
    counters.add_record(rec, 1);
    if rec.kind == Kind::Delete {
        counters.dead_bytes += rec.len as i64;
    }
    Ok(())
}

/// Stores the exact sum of the current index's slots, as of `txn_id`
/// (FORMAT.md §4.4).
pub(crate) fn set_slot_sum(fs: &FileState, sum: u64, txn_id: u64) {
    fs.store(live::SLOT_SUM, sum);
    fs.store(live::SLOT_SUM_TXN, txn_id);
}

/// Copies every slot of `old` whose record is a put into the empty table
/// `new` (both below `bound`), returning the number of slots used and
/// their wrapping sum.
pub(crate) fn rehash(
    fs: &FileState,
    old: IndexView,
    new: IndexView,
    bound: u64,
) -> Result<(u64, u64)> {
    let new_end = new.offset + new.len();
    let mask = new.capacity() - 1;
    let (mut used, mut sum) = (0, 0u64);
    for entry in entries(fs, old, bound) {
        let (s, rec) = entry?;
        if rec.kind != Kind::Put {
            continue;
        }
        let hash = fs.hash(rec.key);
        let mut bucket = slot::bucket(hash, new.log2);
        loop {
            let at = new.slot_offset(bucket);
            let word = fs
                .map
                .word(at, new_end)
                .ok_or_else(|| fs.corruption(at, "index slot outside its index block"))?;
            if word.load(Ordering::Relaxed) == 0 {
                word.store(s.to_le(), Ordering::Relaxed);
                used += 1;
                sum = sum.wrapping_add(s);
                break;
            }
            bucket = (bucket + 1) & mask;
        }
    }
    Ok((used, sum))
}

/// Every occupied slot of `idx`, in slot order, with its record (verified,
/// below `bound`). Stops at the first error.
pub(crate) fn entries<'a>(
    fs: &'a FileState,
    idx: IndexView,
    bound: u64,
) -> impl Iterator<Item = Result<(u64, Record<'a>)>> + 'a {
    (0..idx.capacity())
        .map(move |b| {
            let s = load_slot(fs, idx, b)?;
            if s == slot::EMPTY {
                return Ok(None);
            }
            Ok(Some((s, fs.record(slot::offset(s), bound)?)))
        })
        .filter_map(Result::transpose)
}

/// Loads slot `bucket` of `idx`.
pub(crate) fn load_slot(fs: &FileState, idx: IndexView, bucket: u64) -> Result<u64> {
    let at = idx.slot_offset(bucket);
    let word = fs
        .map
        .word(at, idx.offset + idx.len())
        .ok_or_else(|| fs.corruption(at, "index slot outside its index block"))?;
    Ok(u64::from_le(word.load(Ordering::Acquire)))
}

/// The smallest capacity (as a power of two) that holds `keys` at most
/// half full.
pub(crate) fn log2_for(keys: u64) -> u32 {
    let want = keys
        .saturating_mul(2)
        .max(1 << carboy_format::record::MIN_INDEX_LOG2);
    let log2 = 64 - (want - 1).leading_zeros();
    log2.clamp(
        carboy_format::record::MIN_INDEX_LOG2,
        carboy_format::record::MAX_INDEX_LOG2,
    )
}

/// The smallest capacity (as a power of two) that holds `keys` at most
/// 3/4 full: the fullest a table may be before it grows.
pub(crate) fn log2_for_full(keys: u64) -> u32 {
    let mut log2 = carboy_format::record::MIN_INDEX_LOG2;
    while log2 < carboy_format::record::MAX_INDEX_LOG2
        && keys.saturating_mul(4) > (1u64 << log2) * 3
    {
        log2 += 1;
    }
    log2
}

/// True when adding `new_keys` could take the table past 3/4 full.
pub(crate) fn needs_growth(idx: IndexView, used: u64, new_keys: u64) -> bool {
    used.saturating_add(new_keys).saturating_mul(4) > idx.capacity() * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_for_keeps_half_full() {
        assert_eq!(log2_for(0), 4);
        assert_eq!(log2_for(8), 4);
        assert_eq!(log2_for(9), 5);
        assert_eq!(log2_for(1_000_000), 21);
    }

    #[test]
    fn log2_for_full_allows_three_quarters() {
        assert_eq!(log2_for_full(0), 4);
        assert_eq!(log2_for_full(12), 4);
        assert_eq!(log2_for_full(13), 5);
        assert_eq!(log2_for_full(1_000_000), 21);
        assert_eq!(log2_for_full(1_200_000), 21);
        assert_eq!(log2_for_full(1_600_000), 22);
    }

    #[test]
    fn growth_threshold_is_three_quarters() {
        let idx = IndexView {
            offset: 4096,
            log2: 4,
        };
        assert!(!needs_growth(idx, 12, 0));
        assert!(needs_growth(idx, 12, 1));
    }
}
