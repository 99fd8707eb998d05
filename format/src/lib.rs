//! The on-disk format of carboy namespace files.
//!
//! This crate is the executable form of `FORMAT.md`: every byte layout of a
//! carboy data file and lock file is a named constant or a pure encode/decode
//! function here. It does no I/O, holds no `unsafe`, and its decoders never
//! panic on any input (the fuzz targets prove it): every read is a checked
//! `get(..)`, every length is validated before arithmetic uses it.
//!
//! All integers are little-endian. Nothing on disk is a `usize`.
//!
//! The layers above use it like this:
//!
//! ```
//! use carboy_format::{record, Expiry};
//!
//! let mut buf = vec![0u8; record::put_len(3, 5, Expiry::Never).unwrap() as usize];
//! let n = record::encode_put(&mut buf, b"key", b"value", Expiry::Never).unwrap();
//! let rec = record::decode(&buf[..n]).unwrap();
//! assert_eq!(rec.key, b"key");
//! assert_eq!(rec.value, b"value");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod hash;
pub mod header;
pub mod lockfile;
pub mod record;
pub mod slot;

mod error;

pub use error::FormatError;
pub use hash::{KeyHasher, key_hash};

/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Every block in the data file (records, commit markers, index tables)
/// starts at a multiple of this many bytes.
pub const ALIGN: u64 = 8;

/// Rounds `n` up to the next multiple of [`ALIGN`], or `None` on overflow.
pub const fn align_up(n: u64) -> Option<u64> {
    match n.checked_add(ALIGN - 1) {
        Some(v) => Some(v & !(ALIGN - 1)),
        None => None,
    }
}

/// When a stored value stops being readable.
///
/// Stored in a record as an absolute time in milliseconds since the Unix
/// epoch; a record whose expiry is at or before "now" reads as absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Expiry {
    /// The value never expires.
    #[default]
    Never,
    /// The value expires at this many milliseconds since the Unix epoch.
    AtUnixMs(u64),
}

impl Expiry {
    /// True when a value with this expiry is expired at `now_ms`.
    pub const fn is_expired_at(self, now_ms: u64) -> bool {
        match self {
            Expiry::Never => false,
            Expiry::AtUnixMs(t) => t <= now_ms,
        }
    }
}

/// Reads a little-endian `u16` at `at`, or `None` when out of bounds.
pub(crate) fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads a little-endian `u32` at `at`, or `None` when out of bounds.
pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads a little-endian `u64` at `at`, or `None` when out of bounds.
pub(crate) fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0), Some(0));
        assert_eq!(align_up(1), Some(8));
        assert_eq!(align_up(8), Some(8));
        assert_eq!(align_up(13), Some(16));
        assert_eq!(align_up(u64::MAX), None);
    }

    #[test]
    fn expiry_boundary_is_inclusive() {
        assert!(!Expiry::Never.is_expired_at(u64::MAX));
        assert!(Expiry::AtUnixMs(10).is_expired_at(10));
        assert!(!Expiry::AtUnixMs(10).is_expired_at(9));
    }
}
