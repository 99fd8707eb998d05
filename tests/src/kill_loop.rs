//! The transactions of the kill loop (`tests/crash_kill.rs`): each version
//! sets three batch keys to the same version (all or nothing), one of a
//! rotating set of single keys, and sometimes deletes a key.

use super::versioned_value;

/// Keys written by every transaction, all to the same version.
pub const BATCH: [&[u8]; 3] = [b"batch/a", b"batch/b", b"batch/c"];
/// Number of rotating single keys.
pub const SINGLES: u64 = 40;
/// The writer compacts after every this many commits.
pub const COMPACT_EVERY: u64 = 61;

/// The rotating key written by `version`.
pub fn single(version: u64) -> Vec<u8> {
    format!("single/{}", version % SINGLES).into_bytes()
}

/// Every put of transaction `version`.
pub fn writes(version: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut w: Vec<(Vec<u8>, Vec<u8>)> = BATCH
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_vec(), versioned_value(i as u32, version)))
        .collect();
    w.push((single(version), versioned_value(100, version)));
    w.push((
        format!("gone/{}", version % 5).into_bytes(),
        versioned_value(200, version),
    ));
    w
}

/// The key transaction `version` deletes after its puts, if any.
pub fn deletion(version: u64) -> Option<Vec<u8>> {
    version
        .is_multiple_of(3)
        .then(|| format!("gone/{}", version % 5).into_bytes())
}
