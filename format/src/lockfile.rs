//! The lock file beside every data file (`<data file>.lock`).
//!
//! Writers hold an exclusive `flock` on it; it is never replaced, so the
//! lock means the same thing across compactions. Its first page holds:
//!
//! ```text
//! 0        8         12         16 .. 64    64            72       76 .. 128   128 .. 160           160 .. 4096
//! | magic  | version | reserved | zero ...  | generation  | wanted | zero ...  | group-commit words | zero ...
//! ```
//!
//! `generation` is a live word (8-byte atomic access only): the generation
//! of the data file currently at the path. Compaction raises it before it
//! renames the new file into place.
//!
//! The group-commit words (128..160, a cache line of their own, so that
//! commits do not disturb readers loading `generation`) are 4-byte live
//! words through which the processes making `Durability::Sync` commits
//! share their `fdatasync` calls: who waits for a sync in flight, how many
//! commits the last one covered and how long it took. Byte
//! [`SYNC_LOCK_BYTE`] carries the *sync lock*, an open-file-description
//! byte-range lock held by the one process whose sync is in flight.

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
/// Offset of the live word `sync_seq` (u32, 4-byte atomic access only, a
/// futex word): how many group-commit syncs have finished, wrapping.
/// Committers waiting for a sync in flight sleep on it.
pub const OFF_SYNC_SEQ: usize = 128;
/// Offset of the live word `sync_waiters` (u32): how many threads sleep on
/// `sync_seq`; a finished sync wakes them only when it is nonzero.
pub const OFF_SYNC_WAITERS: usize = OFF_SYNC_SEQ + 4;
/// Offset of the live word `sync_commits` (u32, a futex word): how many
/// `Durability::Sync` commits have passed their commit point, wrapping.
pub const OFF_SYNC_COMMITS: usize = OFF_SYNC_WAITERS + 4;
/// Offset of the live word `sync_covered` (u32): the value of
/// `sync_commits` when the last sync took the end it covers.
pub const OFF_SYNC_COVERED: usize = OFF_SYNC_COMMITS + 4;
/// Offset of the live word `sync_group` (u32): how many commits the last
/// sync covered.
pub const OFF_SYNC_GROUP: usize = OFF_SYNC_COVERED + 4;
/// Offset of the live word `sync_active` (u32): how many commits arrived
/// from the end of the sync before the last one up to the end of the last
/// one (those it covered, and those that came while it ran).
pub const OFF_SYNC_ACTIVE: usize = OFF_SYNC_GROUP + 4;
/// Offset of the live word `sync_micros` (u32): how long the last sync
/// took, in microseconds.
pub const OFF_SYNC_MICROS: usize = OFF_SYNC_ACTIVE + 4;
/// Offset of the live word `gathering` (u32): nonzero while the process
/// about to sync waits for more commits to join it; committers then wake it
/// through `sync_commits`.
pub const OFF_GATHERING: usize = OFF_SYNC_MICROS + 4;
/// End of the group-commit words.
pub const SYNC_WORDS_END: usize = OFF_GATHERING + 4;
/// The byte of the lock file whose open-file-description write lock
/// (`F_OFD_SETLK`) is the *sync lock*: held by the process that is about to
/// sync or syncing for the group. It locks no data; the byte was chosen
/// inside the group-commit line only to be easy to remember.
pub const SYNC_LOCK_BYTE: u64 = OFF_SYNC_SEQ as u64;

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
