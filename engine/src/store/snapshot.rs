//! Consistent reads: a shared flock (across processes) plus the in-process
//! read side of the store's lock, so that no commit lands while it lives.

use std::sync::Arc;

use carboy_format::record::Kind;
use carboy_format::slot;
use parking_lot::RwLockReadGuard;

use super::Store;
use super::file_state::{FileState, IndexView};
use super::index::{self, Probe};
use crate::error::{Error, Result};

/// A consistent, read-only view of a namespace.
///
/// Writers in every process wait while a snapshot lives, so keep it short.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
/// store.put(b"a", b"1")?;
/// store.put(b"b", b"2")?;
/// let snap = store.snapshot()?;
/// assert_eq!(snap.len()?, 2);
/// assert_eq!(snap.get(b"a")?, Some(&b"1"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Snapshot<'s> {
    store: &'s Store,
    _rw: RwLockReadGuard<'s, ()>,
    _held: super::reentry::Held,
    /// Whether this snapshot holds (a share of) the shared flock, rather
    /// than relying on the process's idle lease.
    counted: bool,
    pub(super) fs: Arc<FileState>,
    pub(super) idx: IndexView,
    pub(super) bound: u64,
    pub(super) now: u64,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.fs.path())
            .field("committed_end", &self.bound)
            .finish_non_exhaustive()
    }
}

/// One key and its value, copied out of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// When it expires.
    pub expiry: carboy_format::Expiry,
}

impl<'s> Snapshot<'s> {
    pub(crate) fn new(store: &'s Store) -> Result<Snapshot<'s>> {
        let shared = &*store.shared;
        super::reentry::check(shared, false)?;
        loop {
            // Recursive only inside another snapshot of this thread (which
            // must not queue behind a waiting writer); otherwise queue, so
            // that a stream of snapshots cannot starve writers.
            let rw = if super::reentry::holds_read(shared) {
                shared.rw.read_recursive()
            } else {
                shared.rw.read()
            };
            // With an idle lease this process holds the exclusive lock,
            // which keeps every writer out just as well (and stays held
            // while `rw` is).
            let counted = !shared.holds_lease();
            let mut fresh = false;
            if counted {
                let mut holders = shared.shared_holders.lock();
                if *holders == 0 {
                    shared
                        .lock
                        .lock_shared()
                        .map_err(|e| Error::io("lock (shared)", &shared.lock_path, e))?;
                    fresh = true;
                }
                *holders += 1;
            }
            let mut snap = Snapshot {
                store,
                _rw: rw,
                _held: super::reentry::Held::new(shared, false),
                counted,
                fs: shared.file.load_full(),
                idx: super::file_state::IndexView { offset: 0, log2: 4 },
                bound: 0,
                now: store.clock().now_unix_ms(),
            };
            let fs = &snap.fs;
            if fresh {
                // Before the header page is read (dropping `snap` on an
                // error gives the shared lock back).
                shared.check_for_snapshot(fs)?;
            }
            let generation = u64::from_le(
                shared
                    .lock
                    .generation()
                    .load(std::sync::atomic::Ordering::Acquire),
            );
            let needs_writer = generation != fs.header.generation
                || fs.load(carboy_format::header::live::WRITE_PENDING) != 0
                || fs.load(carboy_format::header::live::INDEXED_END) != fs.commit_end();
            if needs_writer {
                // A compaction moved the file, or a writer died mid-commit:
                // let the writer path sort it out, then look again.
                drop(snap);
                drop(shared.write_lock()?);
                continue;
            }
            snap.bound = fs.commit_end();
            snap.idx = fs.index()?;
            return Ok(snap);
        }
    }

    /// The value of `key` in this snapshot, borrowed from the file.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        match index::probe(&self.fs, self.idx, self.fs.hash(key), key, Some(self.bound))? {
            Probe::Found { record, .. }
                if record.kind == Kind::Put && !record.expiry.is_expired_at(self.now) =>
            {
                Ok(Some(record.value))
            }
            _ => Ok(None),
        }
    }

    /// Number of live keys in this snapshot.
    pub fn len(&self) -> Result<u64> {
        let mut n = 0;
        for entry in self.raw_iter() {
            if entry?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// True when the snapshot holds no live key.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every slot's record, `None` for those not live.
    fn raw_iter(&self) -> impl Iterator<Item = Result<Option<Entry>>> + '_ {
        (0..self.idx.capacity()).map(move |b| self.entry_at(b))
    }

    fn entry_at(&self, bucket: u64) -> Result<Option<Entry>> {
        let s = index::load_slot(&self.fs, self.idx, bucket)?;
        if s == slot::EMPTY {
            return Ok(None);
        }
        let rec = self.fs.record(slot::offset(s), self.bound)?;
        if rec.kind != Kind::Put || rec.expiry.is_expired_at(self.now) {
            return Ok(None);
        }
        Ok(Some(Entry {
            key: rec.key.to_vec(),
            value: rec.value.to_vec(),
            expiry: rec.expiry,
        }))
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let shared = &*self.store.shared;
        let mut holders = shared.shared_holders.lock();
        *holders = holders.saturating_sub(1);
        if *holders == 0 {
            let _ = shared.lock.unlock();
        }
    }
}

impl<'s> IntoIterator for Snapshot<'s> {
    type Item = Result<Entry>;
    type IntoIter = Iter<'s>;
    fn into_iter(self) -> Iter<'s> {
        Iter {
            snapshot: self,
            bucket: 0,
        }
    }
}

/// An iterator over a snapshot's live entries; it owns the snapshot (and
/// so its lock) until dropped.
pub struct Iter<'s> {
    snapshot: Snapshot<'s>,
    bucket: u64,
}

impl std::fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        while self.bucket < self.snapshot.idx.capacity() {
            let b = self.bucket;
            self.bucket += 1;
            match self.snapshot.entry_at(b) {
                Ok(None) => continue,
                Ok(Some(e)) => return Some(Ok(e)),
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }
}
