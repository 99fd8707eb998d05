//! The records a transaction has written but not yet published, in log
//! order, findable by key.
//!
//! Keys are not copied: each entry remembers where its key lies in the
//! (unpublished) log, and a small map from the key's bucket hash (the
//! file's SipHash, computed anyway for publishing) to the newest entry with
//! that hash finds it; entries whose hashes collide are chained.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use carboy_format::Expiry;
use carboy_format::record::Kind;

use super::file_state::FileState;

/// One record written by the transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) kind: Kind,
    pub(crate) expiry: Expiry,
    pub(crate) hash: u64,
    /// Where the key's bytes are, and how many.
    key_at: u64,
    key_len: u16,
    /// The previous entry with the same hash (`u32::MAX`: none).
    prev_same_hash: u32,
    /// A later record of the same transaction replaced this one.
    superseded: bool,
}

/// Hashes that are already uniformly random (the file's keyed SipHash):
/// used as they are.
#[derive(Default)]
pub(crate) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The transaction's unpublished records.
#[derive(Debug, Default)]
pub(crate) struct PendingSet {
    entries: Vec<Pending>,
    newest_by_hash: HashMap<u64, u32, BuildHasherDefault<Identity>>,
    superseded: usize,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity")
    }
}

impl PendingSet {
    /// Number of distinct keys written.
    pub(crate) fn keys(&self) -> usize {
        self.entries.len() - self.superseded
    }

    /// The key bytes of `p`, read back from the log below `bound`.
    pub(crate) fn key<'f>(fs: &'f FileState, p: &Pending, bound: u64) -> &'f [u8] {
        fs.map
            .bytes(p.key_at, u64::from(p.key_len), bound)
            .unwrap_or_default()
    }

    /// The newest record written for `key` (whose hash is `hash`).
    pub(crate) fn get(
        &self,
        fs: &FileState,
        bound: u64,
        key: &[u8],
        hash: u64,
    ) -> Option<&Pending> {
        let mut i = *self.newest_by_hash.get(&hash)?;
        while i != u32::MAX {
            let p = self.entries.get(i as usize)?;
            if !p.superseded && Self::key(fs, p, bound) == key {
                return Some(p);
            }
            i = p.prev_same_hash;
        }
        None
    }

    /// Records a new record for `key`; returns the length of the record it
    /// supersedes, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert(
        &mut self,
        fs: &FileState,
        bound: u64,
        key: &[u8],
        hash: u64,
        offset: u64,
        len: u64,
        kind: Kind,
        expiry: Expiry,
    ) -> Option<u64> {
        let key_at = offset
            + carboy_format::record::PREFIX_LEN as u64
            + if expiry == Expiry::Never { 0 } else { 8 };
        let mut replaced = None;
        let head = self.newest_by_hash.get(&hash).copied().unwrap_or(u32::MAX);
        let mut i = head;
        while i != u32::MAX {
            let Some(p) = self.entries.get(i as usize) else {
                break;
            };
            let next = p.prev_same_hash;
            if !p.superseded && Self::key(fs, p, bound) == key {
                replaced = Some(p.len);
                self.entries[i as usize].superseded = true;
                self.superseded += 1;
                break;
            }
            i = next;
        }
        let index = self.entries.len() as u32;
        self.entries.push(Pending {
            offset,
            len,
            kind,
            expiry,
            hash,
            key_at,
            key_len: key.len() as u16,
            prev_same_hash: head,
            superseded: false,
        });
        self.newest_by_hash.insert(hash, index);
        replaced
    }

    /// The newest record of each key, in log order.
    pub(crate) fn newest(&self) -> impl Iterator<Item = &Pending> {
        self.entries.iter().filter(|p| !p.superseded)
    }
}
