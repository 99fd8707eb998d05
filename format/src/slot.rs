//! Index slots: one little-endian `u64` per slot, read and written only
//! through 8-byte atomic operations.
//!
//! ```text
//! bit 63          40 39                       0
//!     |   tag (24)  |  record offset / 8 (40)  |
//! ```
//!
//! A slot of all zeros is empty. The tag is the top 24 bits of the key's
//! hash; the bucket is `hash & (capacity - 1)`, probed linearly.

/// An empty slot.
pub const EMPTY: u64 = 0;
/// Bits of the slot that hold the record offset divided by 8.
pub const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Largest record offset a slot can address (8 TiB - 8).
pub const MAX_OFFSET: u64 = OFFSET_MASK << 3;

/// The tag of a hash: its top 24 bits.
pub const fn tag(hash: u64) -> u64 {
    hash >> OFFSET_BITS
}

/// The home bucket of a hash in a table of `2^log2` slots.
pub const fn bucket(hash: u64, log2: u32) -> u64 {
    hash & ((1u64 << log2) - 1)
}

/// Packs a record offset and a hash into a slot.
///
/// Returns `None` when the offset is zero, unaligned or too large.
pub const fn pack(offset: u64, hash: u64) -> Option<u64> {
    if offset == 0 || !offset.is_multiple_of(8) || offset > MAX_OFFSET {
        return None;
    }
    Some((tag(hash) << OFFSET_BITS) | (offset >> 3))
}

/// The record offset of a slot (0 for an empty slot).
pub const fn offset(slot: u64) -> u64 {
    (slot & OFFSET_MASK) << 3
}

/// The tag stored in a slot.
pub const fn slot_tag(slot: u64) -> u64 {
    slot >> OFFSET_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack() {
        let h = 0xABCD_EF01_2345_6789;
        let s = pack(4096, h).unwrap();
        assert_eq!(offset(s), 4096);
        assert_eq!(slot_tag(s), tag(h));
        assert_eq!(tag(h), 0xABCDEF);
        assert_eq!(s, 0xABCD_EF00_0000_0200);
        assert_ne!(s, EMPTY);
    }

    #[test]
    fn invalid_offsets_are_refused() {
        assert_eq!(pack(0, 1), None);
        assert_eq!(pack(12, 1), None);
        assert_eq!(pack(MAX_OFFSET + 8, 1), None);
        assert!(pack(MAX_OFFSET, 1).is_some());
    }

    #[test]
    fn bucket_masks_low_bits() {
        assert_eq!(bucket(0xFFFF, 4), 0xF);
        assert_eq!(bucket(0x1_0000, 4), 0);
    }
}
