//! The lock file beside every data file (`<data file>.lock`).
//!
//! Writers hold an exclusive `flock` on it; it is never replaced, so the
//! lock means the same thing across compactions. Its first page holds:
//!
//! ```text
//! 0        8         12         16 .. 64    64            72       76
//! | magic  | version | reserved | zero ...  | generation  | wanted | zero ... | 4096
//! ```
//!
//! `generation` is a live word (8-byte atomic access only): the generation
//! of the data file currently at the path. Compaction raises it before it
//! renames the new file into place.

use crate::{FORMAT_VERSION, FormatError, error::Hex, read_u32};

/// The magic number at offset 0 of every lock file.
pub const MAGIC: [u8; 8] = *b"\x89CBL\r\n\x1a\n";
/// Size of the lock file.
pub const SIZE: u64 = 4096;
/// Offset of `magic`.
pub const OFF_MAGIC: usize = 0;
/// Offset of `version` (u32).
pub const OFF_VERSION: usize = OFF_MAGIC + 8;
/// Offset of the live word `generation` (u64).
pub const OFF_GENERATION: usize = 64;
/// Offset of the live word `wanted` (u32, 4-byte atomic access only): how
/// many processes are waiting for the lock. A process that keeps the lock
/// between commits (a lease) gives it up as soon as this is nonzero.
pub const OFF_WANTED: usize = OFF_GENERATION + 8;

/// Encodes the static part of a fresh lock file (the first 16 bytes).
pub fn encode() -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b
}

/// Checks the static part of a lock file.
///
/// An all-zero prefix means "not yet initialized" and is reported as
/// `Ok(false)`; a valid one as `Ok(true)`.
pub fn decode(buf: &[u8]) -> Result<bool, FormatError> {
    let head = buf.get(..16).ok_or(FormatError::Truncated {
        what: "lock file",
        needed: 16,
        available: buf.len() as u64,
    })?;
    if head.iter().all(|&b| b == 0) {
        return Ok(false);
    }
    if head[..8] != MAGIC {
        return Err(FormatError::BadMagic {
            what: "lock file",
            found: Hex(head[..8].to_vec()),
            expected: Hex(MAGIC.to_vec()),
        });
    }
    let version = read_u32(head, OFF_VERSION).unwrap_or_default();
    if version == 0 || version > FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_states() {
        let mut page = vec![0u8; SIZE as usize];
        assert!(!decode(&page).unwrap());
        page[..16].copy_from_slice(&encode());
        assert!(decode(&page).unwrap());
        page[0] = b'X';
        assert!(matches!(decode(&page), Err(FormatError::BadMagic { .. })));
        assert!(decode(&page[..4]).is_err());
    }
}
