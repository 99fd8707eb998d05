//! Blocks of the log: records (put, delete), commit markers and index tables.
//!
//! Every block starts at an offset that is a multiple of [`ALIGN`](crate::ALIGN)
//! with the same 12-byte prefix:
//!
//! ```text
//! 0      4      5       6         8           12
//! | crc  | kind | flags | key_len | value_len | [expires_ms: u64 if flags & EXPIRES] key value | zero pad to 8
//! ```
//!
//! `crc` is the CRC32 of the block from byte 4 to the end of its body (the
//! padding is not covered). For an index block only the 16-byte block header
//! is covered, since its slots change in place.

use crate::{Expiry, FormatError, align_up, read_u32, read_u64};

/// Length of the common block prefix.
pub const PREFIX_LEN: usize = 12;
/// Offset of `crc` (u32).
pub const OFF_CRC: usize = 0;
/// Offset of `kind` (u8).
pub const OFF_KIND: usize = OFF_CRC + 4;
/// Offset of `flags` (u8).
pub const OFF_FLAGS: usize = OFF_KIND + 1;
/// Offset of `key_len` (u16).
pub const OFF_KEY_LEN: usize = OFF_FLAGS + 1;
/// Offset of `value_len` (u32).
pub const OFF_VALUE_LEN: usize = OFF_KEY_LEN + 2;
/// Offset of the optional `expires_ms` (u64), present when
/// [`FLAG_EXPIRES`] is set.
pub const OFF_EXPIRES: usize = OFF_VALUE_LEN + 4;

/// `flags` bit: an 8-byte expiry follows the prefix.
pub const FLAG_EXPIRES: u8 = 0x01;
/// All `flags` bits this version defines.
pub const KNOWN_FLAGS: u8 = FLAG_EXPIRES;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Longest value, in bytes (1 GiB).
pub const MAX_VALUE_LEN: usize = 1 << 30;

/// Length of a commit marker's body.
pub const COMMIT_BODY_LEN: usize = 32;
/// Length of an index block's header (prefix + 4 zero bytes); slots follow.
pub const INDEX_HEADER_LEN: usize = 16;
/// Smallest index capacity, as a power of two.
pub const MIN_INDEX_LOG2: u32 = 4;
/// Largest index capacity, as a power of two (slot offsets have 40 bits).
pub const MAX_INDEX_LOG2: u32 = 36;

/// What a block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A key and its value (and optional expiry).
    Put = 1,
    /// A key removed.
    Delete = 2,
    /// The end of a transaction: every block since the previous commit
    /// marker belongs to it.
    Commit = 3,
    /// An index table (open addressing, linear probing).
    Index = 4,
}

impl Kind {
    /// Decodes the `kind` byte.
    #[inline]
    pub fn from_byte(b: u8) -> Result<Kind, FormatError> {
        match b {
            1 => Ok(Kind::Put),
            2 => Ok(Kind::Delete),
            3 => Ok(Kind::Commit),
            4 => Ok(Kind::Index),
            other => Err(FormatError::InvalidField {
                field: "kind",
                value: other.into(),
                reason: "must be 1 (put), 2 (delete), 3 (commit) or 4 (index)",
            }),
        }
    }
}

/// A decoded, verified put or delete record, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// [`Kind::Put`] or [`Kind::Delete`].
    pub kind: Kind,
    /// When the value expires.
    pub expiry: Expiry,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for a delete).
    pub value: &'a [u8],
    /// Length of the whole block including padding; the next block starts
    /// this many bytes later.
    pub len: u64,
}

/// The parsed prefix of any block, before its body is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Stored checksum.
    pub crc: u32,
    /// Block kind.
    pub kind: Kind,
    /// Flags byte.
    pub flags: u8,
    /// Key length.
    pub key_len: u16,
    /// Value length; for an index block, its capacity as a power of two.
    pub value_len: u32,
}

impl Prefix {
    /// Parses the 12-byte prefix and validates kind, flags and lengths.
    #[inline]
    pub fn decode(buf: &[u8]) -> Result<Prefix, FormatError> {
        let Some(head) = buf.first_chunk::<PREFIX_LEN>() else {
            return Err(FormatError::Truncated {
                what: "block prefix",
                needed: PREFIX_LEN as u64,
                available: buf.len() as u64,
            });
        };
        let field = |at: usize, len: usize| &head[at..at + len];
        let crc = u32::from_le_bytes(field(OFF_CRC, 4).try_into().unwrap_or_default());
        let kind = Kind::from_byte(head[OFF_KIND])?;
        let flags = head[OFF_FLAGS];
        let key_len = u16::from_le_bytes(field(OFF_KEY_LEN, 2).try_into().unwrap_or_default());
        let value_len = u32::from_le_bytes(field(OFF_VALUE_LEN, 4).try_into().unwrap_or_default());
        // The common case first, in one test: a put record, no unknown flag.
        if kind == Kind::Put && flags & !FLAG_EXPIRES == 0 && value_len as usize <= MAX_VALUE_LEN {
            return Ok(Prefix {
                crc,
                kind,
                flags,
                key_len,
                value_len,
            });
        }
        if flags & !KNOWN_FLAGS != 0 || (flags != 0 && kind != Kind::Put) {
            return Err(FormatError::InvalidField {
                field: "flags",
                value: flags.into(),
                reason: "unknown flag bits, or flags on a block that is not a put",
            });
        }
        match kind {
            Kind::Put if value_len as usize > MAX_VALUE_LEN => {
                return Err(FormatError::InvalidField {
                    field: "value_len",
                    value: value_len.into(),
                    reason: "longer than 1 GiB",
                });
            }
            Kind::Delete if value_len != 0 => {
                return Err(FormatError::InvalidField {
                    field: "value_len",
                    value: value_len.into(),
                    reason: "a delete record has no value",
                });
            }
            Kind::Commit if key_len != 0 || value_len as usize != COMMIT_BODY_LEN => {
                return Err(FormatError::InvalidField {
                    field: "value_len",
                    value: value_len.into(),
                    reason: "a commit marker has no key and a 32-byte body",
                });
            }
            Kind::Index
                if key_len != 0 || !(MIN_INDEX_LOG2..=MAX_INDEX_LOG2).contains(&value_len) =>
            {
                return Err(FormatError::InvalidField {
                    field: "value_len",
                    value: value_len.into(),
                    reason: "an index block has no key and a capacity of 2^4..=2^36 slots",
                });
            }
            _ => {}
        }
        Ok(Prefix {
            crc,
            kind,
            flags,
            key_len,
            value_len,
        })
    }

    /// Bytes covered by the checksum, counted from the block start.
    #[inline]
    pub fn covered_len(&self) -> u64 {
        match self.kind {
            Kind::Index => INDEX_HEADER_LEN as u64,
            _ => {
                let ext = if self.flags & FLAG_EXPIRES != 0 { 8 } else { 0 };
                PREFIX_LEN as u64 + ext + u64::from(self.key_len) + u64::from(self.value_len)
            }
        }
    }

    /// Length of the whole block including padding.
    #[inline]
    pub fn block_len(&self) -> u64 {
        match self.kind {
            Kind::Index => INDEX_HEADER_LEN as u64 + (8u64 << self.value_len),
            // covered_len is at most 12 + 8 + 64 KiB + 1 GiB: no overflow.
            _ => align_up(self.covered_len()).unwrap_or(u64::MAX),
        }
    }
}

/// Length of a put record's block, or `None` when the key or value is too long.
pub fn put_len(key_len: usize, value_len: usize, expiry: Expiry) -> Option<u64> {
    if key_len > MAX_KEY_LEN || value_len > MAX_VALUE_LEN {
        return None;
    }
    let ext = if matches!(expiry, Expiry::Never) {
        0
    } else {
        8
    };
    align_up(PREFIX_LEN as u64 + ext + key_len as u64 + value_len as u64)
}

/// Length of a delete record's block, or `None` when the key is too long.
pub fn delete_len(key_len: usize) -> Option<u64> {
    put_len(key_len, 0, Expiry::Never)
}

/// Length of a commit marker's block.
pub const COMMIT_LEN: u64 = match align_up((PREFIX_LEN + COMMIT_BODY_LEN) as u64) {
    Some(n) => n,
    None => 0,
};

/// Length of an index block with `2^log2` slots.
pub const fn index_len(log2: u32) -> u64 {
    INDEX_HEADER_LEN as u64 + (8u64 << log2)
}

fn write_prefix(out: &mut [u8], kind: Kind, flags: u8, key_len: u16, value_len: u32) {
    out[OFF_KIND] = kind as u8;
    out[OFF_FLAGS] = flags;
    out[OFF_KEY_LEN..OFF_KEY_LEN + 2].copy_from_slice(&key_len.to_le_bytes());
    out[OFF_VALUE_LEN..OFF_VALUE_LEN + 4].copy_from_slice(&value_len.to_le_bytes());
}

fn seal(out: &mut [u8], covered: usize, total: usize) {
    let crc = crc32fast::hash(&out[OFF_KIND..covered]);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    out[covered..total].fill(0);
}

fn too_small(what: &'static str, needed: u64, out: &[u8]) -> FormatError {
    FormatError::Truncated {
        what,
        needed,
        available: out.len() as u64,
    }
}

/// Encodes a put record into `out`, returning the block length.
pub fn encode_put(
    out: &mut [u8],
    key: &[u8],
    value: &[u8],
    expiry: Expiry,
) -> Result<usize, FormatError> {
    encode_keyed(out, Kind::Put, key, value, expiry)
}

/// Encodes a delete record into `out`, returning the block length.
pub fn encode_delete(out: &mut [u8], key: &[u8]) -> Result<usize, FormatError> {
    encode_keyed(out, Kind::Delete, key, &[], Expiry::Never)
}

fn encode_keyed(
    out: &mut [u8],
    kind: Kind,
    key: &[u8],
    value: &[u8],
    expiry: Expiry,
) -> Result<usize, FormatError> {
    let total = put_len(key.len(), value.len(), expiry).ok_or(FormatError::InvalidField {
        field: "key_len",
        value: key.len().max(value.len()) as u64,
        reason: "key longer than 65535 bytes or value longer than 1 GiB",
    })? as usize;
    if out.len() < total {
        return Err(too_small("record buffer", total as u64, out));
    }
    let (flags, mut at) = match expiry {
        Expiry::Never => (0, PREFIX_LEN),
        Expiry::AtUnixMs(t) => {
            out[OFF_EXPIRES..OFF_EXPIRES + 8].copy_from_slice(&t.to_le_bytes());
            (FLAG_EXPIRES, PREFIX_LEN + 8)
        }
    };
    write_prefix(out, kind, flags, key.len() as u16, value.len() as u32);
    out[at..at + key.len()].copy_from_slice(key);
    at += key.len();
    out[at..at + value.len()].copy_from_slice(value);
    at += value.len();
    seal(out, at, total);
    Ok(total)
}

/// The stored checksum of the block at the start of `buf` (no validation).
pub fn stored_crc(buf: &[u8]) -> Option<u32> {
    read_u32(buf, OFF_CRC)
}

/// Decodes and verifies a put or delete record at the start of `buf`.
///
/// `buf` may extend past the record. Fails on a checksum mismatch, a
/// truncated record, or a block of another kind.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, FormatError> {
    decode_with_prefix(Prefix::decode(buf)?, buf)
}

/// [`decode`] for a caller that already parsed the block's prefix from the
/// start of `buf` (the read path does, to learn how many bytes to borrow).
pub fn decode_with_prefix(p: Prefix, buf: &[u8]) -> Result<Record<'_>, FormatError> {
    decode_with_prefix_using(p, buf, &Crc::new())
}

/// [`decode_with_prefix`] with a [`Crc`] made beforehand: for callers that
/// verify many records (every point read does).
#[inline]
pub fn decode_with_prefix_using<'a>(
    p: Prefix,
    buf: &'a [u8],
    crc: &Crc,
) -> Result<Record<'a>, FormatError> {
    if !matches!(p.kind, Kind::Put | Kind::Delete) {
        return Err(FormatError::InvalidField {
            field: "kind",
            value: p.kind as u64,
            reason: "expected a put or delete record",
        });
    }
    let covered = p.covered_len() as usize;
    let Some(body) = buf.get(..covered) else {
        return Err(FormatError::Truncated {
            what: "record",
            needed: covered as u64,
            available: buf.len() as u64,
        });
    };
    let computed = crc.of(body.get(OFF_KIND..).unwrap_or_default());
    if computed != p.crc {
        return Err(FormatError::Checksum {
            what: "record",
            stored: p.crc,
            computed,
        });
    }
    let (expiry, at) = if p.flags & FLAG_EXPIRES != 0 {
        (
            Expiry::AtUnixMs(read_u64(body, OFF_EXPIRES).unwrap_or_default()),
            PREFIX_LEN + 8,
        )
    } else {
        (Expiry::Never, PREFIX_LEN)
    };
    // covered = at + key_len + value_len (covered_len), so both ends are
    // inside `body`.
    let (key, value) = body
        .get(at..)
        .unwrap_or_default()
        .split_at_checked(p.key_len as usize)
        .unwrap_or_default();
    Ok(Record {
        kind: p.kind,
        expiry,
        key,
        value,
        len: p.block_len(),
    })
}

/// The block checksum (CRC32, IEEE), with the fastest implementation for
/// this CPU chosen once, when it is made, instead of at every call (the
/// `crc32fast` crate detects CPU features in each `Hasher::new`).
///
/// ```
/// let crc = carboy_format::record::Crc::new();
/// assert_eq!(crc.of(b"123456789"), 0xCBF4_3926);
/// ```
#[derive(Clone, Debug)]
pub struct Crc {
    start: crc32fast::Hasher,
}

impl Crc {
    /// Chooses the implementation (a CPU feature check).
    pub fn new() -> Crc {
        Crc {
            start: crc32fast::Hasher::new(),
        }
    }

    /// CRC32 of `bytes`.
    #[inline]
    pub fn of(&self, bytes: &[u8]) -> u32 {
        let mut h = self.start.clone();
        h.update(bytes);
        h.finalize()
    }
}

impl Default for Crc {
    fn default() -> Crc {
        Crc::new()
    }
}

/// The body of a commit marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Transaction id: one more than the previous commit's.
    pub txn_id: u64,
    /// Log offset of the transaction's first block (or of this marker when
    /// the transaction is empty).
    pub txn_start: u64,
    /// Unix milliseconds of the commit.
    pub unix_ms: u64,
    /// Number of put and delete records in the transaction.
    pub records: u32,
    /// CRC32 over the stored `crc` fields (4 bytes each, in log order) of
    /// the transaction's records: ties the marker to exactly those records.
    pub records_crc: u32,
}

impl Commit {
    /// Encodes the commit marker into `out`, returning the block length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FormatError> {
        let total = COMMIT_LEN as usize;
        if out.len() < total {
            return Err(too_small("commit buffer", total as u64, out));
        }
        write_prefix(out, Kind::Commit, 0, 0, COMMIT_BODY_LEN as u32);
        let b = PREFIX_LEN;
        out[b..b + 8].copy_from_slice(&self.txn_id.to_le_bytes());
        out[b + 8..b + 16].copy_from_slice(&self.txn_start.to_le_bytes());
        out[b + 16..b + 24].copy_from_slice(&self.unix_ms.to_le_bytes());
        out[b + 24..b + 28].copy_from_slice(&self.records.to_le_bytes());
        out[b + 28..b + 32].copy_from_slice(&self.records_crc.to_le_bytes());
        seal(out, b + COMMIT_BODY_LEN, total);
        Ok(total)
    }

    /// Decodes and verifies a commit marker at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Commit, FormatError> {
        let p = Prefix::decode(buf)?;
        if p.kind != Kind::Commit {
            return Err(FormatError::InvalidField {
                field: "kind",
                value: p.kind as u64,
                reason: "expected a commit marker",
            });
        }
        let covered = PREFIX_LEN + COMMIT_BODY_LEN;
        let body = buf.get(..covered).ok_or(FormatError::Truncated {
            what: "commit marker",
            needed: covered as u64,
            available: buf.len() as u64,
        })?;
        let computed = crc32fast::hash(&body[OFF_KIND..]);
        if computed != p.crc {
            return Err(FormatError::Checksum {
                what: "commit marker",
                stored: p.crc,
                computed,
            });
        }
        let b = PREFIX_LEN;
        Ok(Commit {
            txn_id: read_u64(body, b).unwrap_or_default(),
            txn_start: read_u64(body, b + 8).unwrap_or_default(),
            unix_ms: read_u64(body, b + 16).unwrap_or_default(),
            records: read_u32(body, b + 24).unwrap_or_default(),
            records_crc: read_u32(body, b + 28).unwrap_or_default(),
        })
    }
}

/// Encodes the 16-byte header of an index block with `2^log2` slots.
/// The slots that follow must be zero (empty) when the block is written.
pub fn encode_index_header(log2: u32) -> Result<[u8; INDEX_HEADER_LEN], FormatError> {
    if !(MIN_INDEX_LOG2..=MAX_INDEX_LOG2).contains(&log2) {
        return Err(FormatError::InvalidField {
            field: "value_len",
            value: log2.into(),
            reason: "index capacity must be 2^4..=2^36 slots",
        });
    }
    let mut out = [0u8; INDEX_HEADER_LEN];
    write_prefix(&mut out, Kind::Index, 0, 0, log2);
    seal(&mut out, INDEX_HEADER_LEN, INDEX_HEADER_LEN);
    Ok(out)
}

/// Decodes and verifies an index block header, returning its capacity as a
/// power of two.
pub fn decode_index_header(buf: &[u8]) -> Result<u32, FormatError> {
    let p = Prefix::decode(buf)?;
    if p.kind != Kind::Index {
        return Err(FormatError::InvalidField {
            field: "kind",
            value: p.kind as u64,
            reason: "expected an index block",
        });
    }
    let head = buf.get(..INDEX_HEADER_LEN).ok_or(FormatError::Truncated {
        what: "index header",
        needed: INDEX_HEADER_LEN as u64,
        available: buf.len() as u64,
    })?;
    let computed = crc32fast::hash(&head[OFF_KIND..]);
    if computed != p.crc {
        return Err(FormatError::Checksum {
            what: "index header",
            stored: p.crc,
            computed,
        });
    }
    Ok(p.value_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_round_trip_with_and_without_expiry() {
        for expiry in [Expiry::Never, Expiry::AtUnixMs(123_456)] {
            let n = put_len(3, 4, expiry).unwrap() as usize;
            let mut buf = vec![0xAA; n + 5];
            assert_eq!(encode_put(&mut buf, b"abc", b"wxyz", expiry).unwrap(), n);
            let r = decode(&buf).unwrap();
            assert_eq!(
                (r.kind, r.expiry, r.key, r.value, r.len),
                (Kind::Put, expiry, &b"abc"[..], &b"wxyz"[..], n as u64)
            );
        }
    }

    #[test]
    fn delete_round_trip() {
        let mut buf = vec![0; delete_len(2).unwrap() as usize];
        encode_delete(&mut buf, b"ab").unwrap();
        let r = decode(&buf).unwrap();
        assert_eq!(
            (r.kind, r.key, r.value),
            (Kind::Delete, &b"ab"[..], &b""[..])
        );
    }

    #[test]
    fn every_covered_byte_flip_is_detected() {
        let n = put_len(5, 9, Expiry::AtUnixMs(77)).unwrap() as usize;
        let mut buf = vec![0; n];
        encode_put(&mut buf, b"hello", b"123456789", Expiry::AtUnixMs(77)).unwrap();
        let covered = 12 + 8 + 5 + 9;
        for i in 0..covered {
            for bit in 0..8 {
                let mut c = buf.clone();
                c[i] ^= 1 << bit;
                assert!(
                    decode(&c).is_err(),
                    "flip of bit {bit} at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let mut buf = vec![0; put_len(3, 3, Expiry::Never).unwrap() as usize];
        encode_put(&mut buf, b"key", b"val", Expiry::Never).unwrap();
        for cut in 0..18 {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&buf[..18]).is_ok());
    }

    #[test]
    fn commit_round_trip() {
        let c = Commit {
            txn_id: 5,
            txn_start: 4096,
            unix_ms: 99,
            records: 2,
            records_crc: 0xDEAD_BEEF,
        };
        let mut buf = [0u8; COMMIT_LEN as usize];
        assert_eq!(c.encode(&mut buf).unwrap(), 48);
        assert_eq!(Commit::decode(&buf).unwrap(), c);
        buf[20] ^= 1;
        assert!(Commit::decode(&buf).is_err());
    }

    #[test]
    fn index_header_round_trip_and_bounds() {
        let h = encode_index_header(10).unwrap();
        assert_eq!(decode_index_header(&h).unwrap(), 10);
        assert_eq!(index_len(10), 16 + 8 * 1024);
        assert!(encode_index_header(3).is_err());
        assert!(encode_index_header(37).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        assert!(put_len(MAX_KEY_LEN + 1, 0, Expiry::Never).is_none());
        assert!(put_len(0, MAX_VALUE_LEN + 1, Expiry::Never).is_none());
        let mut buf = [0u8; 64];
        assert!(encode_put(&mut buf, &[0; 100], b"", Expiry::Never).is_err());
    }

    #[test]
    fn zeros_are_not_a_block() {
        assert!(Prefix::decode(&[0u8; 64]).is_err());
    }
}
