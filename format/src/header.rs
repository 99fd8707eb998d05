//! The data file's header page: an immutable, checksummed part followed by
//! the live words that writers update in place (through atomics only).
//!
//! ```text
//! 0          8       12      16          32         48          56           64       66             1090   1532  1536
//! | magic    | ver   | hsize | hash_key  | file_id  | generation| created_ms | name_len | name (1024)  | 0... | crc | live words ... | 4096
//! ```
//!
//! Offsets are derived one from the previous, so the table in FORMAT.md and
//! these constants cannot drift apart silently (the golden test pins both).

use crate::{FORMAT_VERSION, FormatError, error::Hex, read_u16, read_u32, read_u64};

/// The magic number at offset 0 of every data file.
pub const MAGIC: [u8; 8] = *b"\x89CBY\r\n\x1a\n";
/// Size of the header page; the log starts right after it.
pub const HEADER_SIZE: u64 = 4096;
/// Longest namespace name stored in the header, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Offset of `magic` (8 bytes).
pub const OFF_MAGIC: usize = 0;
/// Offset of `format_version` (u32).
pub const OFF_VERSION: usize = OFF_MAGIC + 8;
/// Offset of `header_size` (u32, must be [`HEADER_SIZE`]).
pub const OFF_HEADER_SIZE: usize = OFF_VERSION + 4;
/// Offset of `hash_key` (16 bytes, the SipHash-1-3 key).
pub const OFF_HASH_KEY: usize = OFF_HEADER_SIZE + 4;
/// Offset of `file_id` (16 random bytes naming this file).
pub const OFF_FILE_ID: usize = OFF_HASH_KEY + 16;
/// Offset of `generation` (u64, bumped by each compaction).
pub const OFF_GENERATION: usize = OFF_FILE_ID + 16;
/// Offset of `created_ms` (u64, Unix milliseconds).
pub const OFF_CREATED_MS: usize = OFF_GENERATION + 8;
/// Offset of `name_len` (u16).
pub const OFF_NAME_LEN: usize = OFF_CREATED_MS + 8;
/// Offset of `name` ([`MAX_NAME_LEN`] bytes, zero padded).
pub const OFF_NAME: usize = OFF_NAME_LEN + 2;
/// Offset of `header_crc` (u32, CRC32 of bytes `0..OFF_HEADER_CRC`).
pub const OFF_HEADER_CRC: usize = 1532;
/// End of the immutable part.
pub const IMMUTABLE_LEN: usize = OFF_HEADER_CRC + 4;

/// Offsets of the live words: little-endian `u64`s in the header page that
/// change while the file is in use. They are read and written only through
/// 8-byte atomic operations, and are not covered by any checksum: every
/// reader validates them against the file's geometry before use.
pub mod live {
    use super::IMMUTABLE_LEN;

    /// First live word; cache line "rare" (written on index growth and
    /// compaction only).
    pub const BASE: usize = IMMUTABLE_LEN;
    /// Offset of the current index block.
    pub const INDEX_OFFSET: usize = BASE;
    /// Nonzero once compaction has replaced this file at its path.
    pub const SUPERSEDED: usize = BASE + 8;

    /// Cache line "commit" (written by every commit).
    pub const COMMIT_LINE: usize = BASE + 64;
    /// End of the committed log: every record a reader can reach lies below it.
    pub const COMMIT_END: usize = COMMIT_LINE;
    /// Log offset up to which the index reflects every committed record.
    pub const INDEXED_END: usize = COMMIT_LINE + 8;
    /// Id of the last committed transaction.
    pub const TXN_ID: usize = COMMIT_LINE + 16;
    /// Log offset known to be durable (fsynced).
    pub const SYNCED_END: usize = COMMIT_LINE + 24;
    /// Nonzero while a writer is between appending and publishing.
    pub const WRITE_PENDING: usize = COMMIT_LINE + 32;
    /// Unix milliseconds of the last commit.
    pub const LAST_COMMIT_MS: usize = COMMIT_LINE + 40;
    /// Length the file has been allocated to (by fallocate); writers extend
    /// the file before raising it, and never publish past it.
    pub const ALLOC_END: usize = COMMIT_LINE + 48;

    /// Cache line "counters" (written by every commit).
    pub const COUNTER_LINE: usize = BASE + 128;
    /// Keys whose newest record is a put (expired or not).
    pub const LIVE_KEYS: usize = COUNTER_LINE;
    /// Occupied slots in the current index.
    pub const USED_SLOTS: usize = COUNTER_LINE + 8;
    /// Live keys whose newest record carries an expiry.
    pub const EXPIRING_KEYS: usize = COUNTER_LINE + 16;
    /// Bytes of the log no longer reachable (overwritten, deleted, old
    /// indexes, commit markers).
    pub const DEAD_BYTES: usize = COUNTER_LINE + 24;
    /// First half of the boot id under which the index was last known good.
    pub const BOOT_ID_LO: usize = COUNTER_LINE + 32;
    /// Second half of that boot id.
    pub const BOOT_ID_HI: usize = COUNTER_LINE + 40;
    /// Wrapping sum of every slot of the current index, valid only while
    /// `slot_sum_txn` equals `txn_id` (FORMAT.md §2.2, §4.4).
    pub const SLOT_SUM: usize = COUNTER_LINE + 48;
    /// The `txn_id` at which `slot_sum` was last made exact.
    pub const SLOT_SUM_TXN: usize = COUNTER_LINE + 56;

    /// One past the last live word.
    pub const END: usize = BASE + 192;

    /// Every live word: its offset and its name in FORMAT.md.
    pub const ALL: [(usize, &str); 17] = [
        (INDEX_OFFSET, "index_offset"),
        (SUPERSEDED, "superseded"),
        (COMMIT_END, "commit_end"),
        (INDEXED_END, "indexed_end"),
        (TXN_ID, "txn_id"),
        (SYNCED_END, "synced_end"),
        (WRITE_PENDING, "write_pending"),
        (LAST_COMMIT_MS, "last_commit_ms"),
        (ALLOC_END, "alloc_end"),
        (LIVE_KEYS, "live_keys"),
        (USED_SLOTS, "used_slots"),
        (EXPIRING_KEYS, "expiring_keys"),
        (DEAD_BYTES, "dead_bytes"),
        (BOOT_ID_LO, "boot_id_lo"),
        (BOOT_ID_HI, "boot_id_hi"),
        (SLOT_SUM, "slot_sum"),
        (SLOT_SUM_TXN, "slot_sum_txn"),
    ];
}

// Layout invariants, checked at compile time.
const _: () = assert!(OFF_NAME + MAX_NAME_LEN <= OFF_HEADER_CRC);
const _: () = assert!(
    live::BASE.is_multiple_of(64),
    "live words start on a cache line"
);
const _: () = assert!(live::END as u64 <= HEADER_SIZE);

/// The immutable part of a data file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version the file was written with.
    pub version: u32,
    /// Key of the bucket hash (SipHash-1-3), random per file.
    pub hash_key: [u8; 16],
    /// Random identity of this file.
    pub file_id: [u8; 16],
    /// Compaction generation; matches the lock file's word when current.
    pub generation: u64,
    /// When the file was created, Unix milliseconds.
    pub created_ms: u64,
    /// The namespace name the file was created for (may be empty).
    pub name: Vec<u8>,
}

impl Header {
    /// Encodes the immutable part, including its checksum.
    ///
    /// Fails when the name is longer than [`MAX_NAME_LEN`].
    pub fn encode(&self) -> Result<[u8; IMMUTABLE_LEN], FormatError> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(FormatError::InvalidField {
                field: "name_len",
                value: self.name.len() as u64,
                reason: "longer than 1024 bytes",
            });
        }
        let mut b = [0u8; IMMUTABLE_LEN];
        b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&self.version.to_le_bytes());
        b[OFF_HEADER_SIZE..OFF_HEADER_SIZE + 4]
            .copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[OFF_HASH_KEY..OFF_HASH_KEY + 16].copy_from_slice(&self.hash_key);
        b[OFF_FILE_ID..OFF_FILE_ID + 16].copy_from_slice(&self.file_id);
        b[OFF_GENERATION..OFF_GENERATION + 8].copy_from_slice(&self.generation.to_le_bytes());
        b[OFF_CREATED_MS..OFF_CREATED_MS + 8].copy_from_slice(&self.created_ms.to_le_bytes());
        b[OFF_NAME_LEN..OFF_NAME_LEN + 2].copy_from_slice(&(self.name.len() as u16).to_le_bytes());
        b[OFF_NAME..OFF_NAME + self.name.len()].copy_from_slice(&self.name);
        let crc = crc32fast::hash(&b[..OFF_HEADER_CRC]);
        b[OFF_HEADER_CRC..OFF_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decodes and verifies the immutable part from the start of a file.
    ///
    /// Checks, in order: length, magic, version, header size, checksum,
    /// name length. The first failure is returned.
    pub fn decode(buf: &[u8]) -> Result<Header, FormatError> {
        if buf.len() < IMMUTABLE_LEN {
            // Still tell a foreign file from a short one when we can.
            if let Some(m) = buf.get(..8).filter(|m| *m != MAGIC) {
                return Err(bad_magic(m));
            }
            return Err(FormatError::Truncated {
                what: "header",
                needed: IMMUTABLE_LEN as u64,
                available: buf.len() as u64,
            });
        }
        let magic = &buf[OFF_MAGIC..OFF_MAGIC + 8];
        if magic != MAGIC {
            return Err(bad_magic(magic));
        }
        let version = read_u32(buf, OFF_VERSION).unwrap_or_default();
        if version == 0 || version > FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let stored = read_u32(buf, OFF_HEADER_CRC).unwrap_or_default();
        let computed = crc32fast::hash(&buf[..OFF_HEADER_CRC]);
        if stored != computed {
            return Err(FormatError::Checksum {
                what: "header",
                stored,
                computed,
            });
        }
        let header_size = read_u32(buf, OFF_HEADER_SIZE).unwrap_or_default();
        if u64::from(header_size) != HEADER_SIZE {
            return Err(FormatError::InvalidField {
                field: "header_size",
                value: header_size.into(),
                reason: "must be 4096",
            });
        }
        let name_len = read_u16(buf, OFF_NAME_LEN).unwrap_or_default() as usize;
        if name_len > MAX_NAME_LEN {
            return Err(FormatError::InvalidField {
                field: "name_len",
                value: name_len as u64,
                reason: "longer than 1024 bytes",
            });
        }
        let mut hash_key = [0u8; 16];
        hash_key.copy_from_slice(&buf[OFF_HASH_KEY..OFF_HASH_KEY + 16]);
        let mut file_id = [0u8; 16];
        file_id.copy_from_slice(&buf[OFF_FILE_ID..OFF_FILE_ID + 16]);
        Ok(Header {
            version,
            hash_key,
            file_id,
            generation: read_u64(buf, OFF_GENERATION).unwrap_or_default(),
            created_ms: read_u64(buf, OFF_CREATED_MS).unwrap_or_default(),
            name: buf[OFF_NAME..OFF_NAME + name_len].to_vec(),
        })
    }
}

fn bad_magic(found: &[u8]) -> FormatError {
    FormatError::BadMagic {
        what: "data file",
        found: Hex(found.to_vec()),
        expected: Hex(MAGIC.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: FORMAT_VERSION,
            hash_key: [7; 16],
            file_id: [9; 16],
            generation: 3,
            created_ms: 1_700_000_000_000,
            name: b"users".to_vec(),
        }
    }

    #[test]
    fn layout_constants_are_consistent() {
        assert_eq!(OFF_NAME + MAX_NAME_LEN, 1090);
        assert_eq!(live::BASE, 1536);
        assert_eq!(live::BOOT_ID_HI + 8, live::COUNTER_LINE + 48);
        assert_eq!(live::SLOT_SUM_TXN + 8, live::END);
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let b = h.encode().unwrap();
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let b = sample().encode().unwrap();
        for i in 0..IMMUTABLE_LEN {
            let mut c = b;
            c[i] ^= 0x40;
            assert!(Header::decode(&c).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn foreign_and_short_inputs_are_typed_errors() {
        assert!(matches!(
            Header::decode(b""),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            Header::decode(b"\x89PNG\r\n\x1a\n rest"),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            Header::decode(&[0u8; 4096]),
            Err(FormatError::BadMagic { .. })
        ));
        let mut b = sample().encode().unwrap();
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&b),
            Err(FormatError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        ));
    }

    #[test]
    fn overlong_name_is_refused() {
        let mut h = sample();
        h.name = vec![b'a'; MAX_NAME_LEN + 1];
        assert!(h.encode().is_err());
    }
}
