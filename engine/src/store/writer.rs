//! The write path: the writer lock and the commit protocol, in one place.
//!
//! A transaction appends its records above the committed end, where no
//! reader looks. [`Transaction::commit`] then, in this order:
//!
//! 1. appends a commit marker that names the transaction's id, first
//!    offset, record count and the CRC of its records' CRCs;
//! 2. if the index would pass 3/4 full, builds a larger index block after
//!    the marker (unpublished, so readers keep using the old one);
//! 3. stores the new committed end (the commit point: from here on a crash
//!    of the process keeps the transaction), then the new index offset;
//! 4. points the index slots at the new records (readers now see them);
//! 5. stores the counters, `indexed_end = committed end`, and clears
//!    `write_pending`;
//! 6. gives the writer lock up (or keeps it as a lease, `lease.rs`);
//! 7. with [`Durability::Sync`], waits until the file is synced past the
//!    commit's end, syncing itself unless another thread or process is
//!    about to (`group_commit.rs`). Only then does `commit` return.
//!
//! A writer that dies before step 3 leaves garbage above the committed end,
//! which the next writer overwrites. One that dies between 3 and 5 leaves
//! `indexed_end < commit_end`; the next writer replays the records in
//! between (see `recovery.rs`). Between steps 3 and 7 a Sync commit is
//! visible to every reader but not yet durable: a power loss then may
//! lose it, together with every commit after it (the log is kept as a
//! prefix, and a later commit's sync covers all earlier ones), and it was
//! never reported durable.

use std::sync::Arc;

use carboy_format::Expiry;
use carboy_format::header::live;
use carboy_format::record::{self, Commit, Kind, Record};
use carboy_format::slot::MAX_OFFSET;
use parking_lot::RwLockWriteGuard;

use super::Shared;
use super::file_state::{FileState, IndexView};
use super::index::{self, Counters, Probe};
use super::new_file::STREAM_CHUNK;
use super::pending::{Pending, PendingSet};
use crate::Durability;
use crate::clock::Clock;
use crate::error::{Error, Result};

/// Holds the in-process write lock and the exclusive flock.
pub(crate) struct WriteGuard<'s> {
    pub(crate) shared: &'s Shared,
    _rw: RwLockWriteGuard<'s, ()>,
    _held: super::reentry::Held,
    pub(crate) fs: Arc<FileState>,
    /// False until the files passed the checks of the acquisition: a lock
    /// taken for a write that failed there is given up, never kept as a
    /// lease (which would skip the checks next time). A Sync commit also
    /// sets it false while syncs are shared, to hand the lock straight to
    /// the next process (see `Transaction::commit`).
    lease_ok: bool,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.lease_ok {
            self.shared.release_exclusive();
        } else {
            let _ = self.shared.lock.unlock();
        }
    }
}

impl Shared {
    /// Takes the writer lock (in-process, then flock), moves to the
    /// current file if a compaction replaced it, and finishes whatever a
    /// writer that died left half done.
    ///
    /// When the flock is taken afresh (not an idle lease taken over), the
    /// lock file, the data file and its length are checked first
    /// (`environment.rs`); under a lease no system call is made.
    pub(crate) fn write_lock(&self) -> Result<WriteGuard<'_>> {
        if let Some(cause) = self.latched.lock().clone() {
            return Err(Error::Latched {
                path: self.data_path.clone(),
                cause,
            });
        }
        super::reentry::check(self, true)?;
        let rw = self.rw.write();
        let fresh = self.acquire_exclusive()?;
        let mut guard = WriteGuard {
            shared: self,
            _rw: rw,
            _held: super::reentry::Held::new(self, true),
            fs: self.file.load_full(),
            lease_ok: false,
        };
        guard.fs = if fresh {
            self.adopt_checked(&guard.fs)?
        } else {
            self.adopt_current_file_locked(&guard.fs)?
        };
        guard.lease_ok = true;
        super::recovery::recover_locked(&guard.fs)?;
        Ok(guard)
    }

    /// [`write_lock`](Self::write_lock) if it need not wait: `None` when
    /// the in-process write lock is held (by any thread, this one
    /// included) or when this process holds no idle lease and another
    /// process holds the flock. Makes no system call that can wait for
    /// another process: under an idle lease none at all; otherwise one
    /// non-blocking `flock` and the checks of a fresh acquisition.
    pub(crate) fn try_write_lock(&self) -> Result<Option<WriteGuard<'_>>> {
        if let Some(cause) = self.latched.lock().clone() {
            return Err(Error::Latched {
                path: self.data_path.clone(),
                cause,
            });
        }
        // A thread that holds a transaction or a snapshot of this
        // namespace finds `rw` taken: "would wait", not an error.
        let Some(rw) = self.rw.try_write() else {
            return Ok(None);
        };
        let fresh = if self.take_idle_lease() {
            false
        } else if self
            .lock
            .try_lock_exclusive()
            .map_err(|e| Error::io("lock", &self.lock_path, e))?
        {
            true
        } else {
            return Ok(None);
        };
        let mut guard = WriteGuard {
            shared: self,
            _rw: rw,
            _held: super::reentry::Held::new(self, true),
            fs: self.file.load_full(),
            lease_ok: false,
        };
        guard.fs = if fresh {
            self.adopt_checked(&guard.fs)?
        } else {
            self.adopt_current_file_locked(&guard.fs)?
        };
        guard.lease_ok = true;
        super::recovery::recover_locked(&guard.fs)?;
        Ok(Some(guard))
    }
}

/// A write transaction: reads see its own writes, and its writes become
/// visible to everyone at once or not at all (after a crash too).
///
/// It holds the namespace's writer lock from [`Store::transaction`]
/// until it is committed or dropped, so keep it short. Dropping it without
/// committing discards its writes.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let store = carboy::Store::open(dir.path().join("counters.carboy"))?;
/// let mut txn = store.transaction()?;
/// let n = txn.get(b"hits")?.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
/// txn.put(b"hits", &(n + 1).to_le_bytes())?;
/// txn.commit()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`Store::transaction`]: crate::Store::transaction
pub struct Transaction<'s> {
    guard: WriteGuard<'s>,
    durability: Durability,
    clock: &'s dyn Clock,
    /// Committed end when the transaction began: its first block goes here.
    start: u64,
    /// Where the next block goes.
    cursor: u64,
    /// The pages of this transaction's records below this offset were
    /// released from the process's memory (a large transaction's: see
    /// `append`).
    released: u64,
    alloc_end: u64,
    /// The records this transaction wrote.
    pending: PendingSet,
    records: u32,
    records_crc: crc32fast::Hasher,
    /// Bytes of this transaction's records that a later record of the same
    /// transaction replaced.
    dead: u64,
    /// Failed syncs of this process before the transaction began
    /// ([`GroupCommit::failures`](super::group_commit::GroupCommit::failures)).
    sync_failures: u64,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("path", &self.guard.fs.path())
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl<'s> Transaction<'s> {
    pub(crate) fn begin(
        guard: WriteGuard<'s>,
        durability: Durability,
        clock: &'s dyn Clock,
    ) -> Transaction<'s> {
        let fs = &guard.fs;
        let start = fs.commit_end();
        let alloc_end = fs.load(live::ALLOC_END).max(start);
        let sync_failures = guard.shared.group.failures();
        Transaction {
            guard,
            durability,
            clock,
            start,
            cursor: start,
            released: start,
            alloc_end,
            pending: PendingSet::default(),
            records: 0,
            records_crc: crc32fast::Hasher::new(),
            dead: 0,
            sync_failures,
        }
    }

    fn fs(&self) -> &FileState {
        &self.guard.fs
    }

    /// The value of `key` as this transaction sees it: its own writes first,
    /// then the committed state. Expired values read as absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        Ok(self.get_with_expiry(key)?.map(|(value, _)| value))
    }

    /// [`get`](Self::get), with the value's expiry.
    ///
    /// ```
    /// use carboy::Expiry;
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
    /// let mut txn = store.transaction()?;
    /// txn.put_with_expiry(b"k", b"v", Expiry::AtUnixMs(u64::MAX))?;
    /// assert_eq!(txn.get_with_expiry(b"k")?, Some((&b"v"[..], Expiry::AtUnixMs(u64::MAX))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_with_expiry(&self, key: &[u8]) -> Result<Option<(&[u8], Expiry)>> {
        let now = self.clock.now_unix_ms();
        let fs = self.fs();
        let hash = fs.hash(key);
        let rec =
            if let Some(&Pending { offset, .. }) = self.pending.get(fs, self.cursor, key, hash) {
                fs.record(offset, self.cursor)?
            } else {
                match index::probe(fs, fs.index()?, hash, key, Some(self.start))? {
                    Probe::Found { record, .. } => record,
                    _ => return Ok(None),
                }
            };
        if rec.kind != Kind::Put || rec.expiry.is_expired_at(now) {
            return Ok(None);
        }
        Ok(Some((rec.value, rec.expiry)))
    }

    /// True when [`get`](Self::get) would return a value.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `value`, with no expiry.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_with_expiry(key, value, Expiry::Never)
    }

    /// Sets `key` to `value`, readable until `expiry`.
    pub fn put_with_expiry(&mut self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<()> {
        check_sizes(key, value)?;
        self.append(Kind::Put, key, value, expiry)
    }

    /// Removes `key`; returns whether it was present (and not expired).
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        check_sizes(key, &[])?;
        let now = self.clock.now_unix_ms();
        let fs = self.fs();
        let hash = fs.hash(key);
        let newest =
            if let Some(&Pending { offset, .. }) = self.pending.get(fs, self.cursor, key, hash) {
                Some(fs.record(offset, self.cursor)?)
            } else {
                match index::probe(fs, fs.index()?, hash, key, Some(self.start))? {
                    Probe::Found { record, .. } => Some(record),
                    _ => None,
                }
            };
        let Some(rec) = newest else {
            return Ok(false);
        };
        if rec.kind != Kind::Put {
            return Ok(false);
        }
        let was_visible = !rec.expiry.is_expired_at(now);
        self.append(Kind::Delete, key, &[], Expiry::Never)?;
        Ok(was_visible)
    }

    /// Makes room for `end` bytes, extending the file with real blocks.
    fn reserve(&mut self, end: u64) -> Result<()> {
        if end <= self.alloc_end {
            return Ok(());
        }
        if end > MAX_OFFSET {
            return Err(Error::FileTooLarge {
                path: self.fs().path().to_path_buf(),
                wanted: end,
                max: MAX_OFFSET,
            });
        }
        let step = (self.alloc_end / 8).clamp(1 << 20, 1 << 30);
        let new_end = end
            .max(self.alloc_end + step)
            .next_multiple_of(1 << 16)
            .min(MAX_OFFSET);
        let fs = &self.guard.fs;
        // Grow by a step, so that growth is amortized; when the disk (or a
        // file-size limit) cannot take the step, take only what is needed.
        let exact = end.next_multiple_of(1 << 16).min(MAX_OFFSET);
        let new_end = match fs.map.allocate(self.alloc_end, new_end) {
            Ok(()) => new_end,
            Err(_) if exact < new_end => {
                fs.map
                    .allocate(self.alloc_end, exact)
                    .map_err(|e| Error::io("extend (fallocate)", fs.path(), e))?;
                exact
            }
            Err(e) => return Err(Error::io("extend (fallocate)", fs.path(), e)),
        };
        fs.store(live::ALLOC_END, new_end);
        self.alloc_end = new_end;
        Ok(())
    }

    fn append(&mut self, kind: Kind, key: &[u8], value: &[u8], expiry: Expiry) -> Result<()> {
        let len = record::put_len(key.len(), value.len(), expiry).ok_or(Error::KeyTooLong {
            len: key.len(),
            max: record::MAX_KEY_LEN,
        })?;
        let offset = self.cursor;
        self.reserve(offset + len + record::COMMIT_LEN)?;
        if self.records == 0 {
            self.fs().store(live::WRITE_PENDING, 1);
        }
        let fs = &self.guard.fs;
        let crc = fs
            .map
            .fill(offset, len, self.alloc_end, |out| {
                match kind {
                    Kind::Put => record::encode_put(out, key, value, expiry),
                    _ => record::encode_delete(out, key),
                }
                .map(|_| record::stored_crc(out).unwrap_or_default())
            })
            .map_err(|e| Error::io("write", fs.path(), e))?
            .map_err(|e| fs.corruption(offset, e))?;
        self.records_crc.update(&crc.to_le_bytes());
        self.records += 1;
        self.cursor += len;
        if self.cursor - self.released >= STREAM_CHUNK {
            // A large transaction (a bulk load): its records are not read
            // again before the commit except by key lookups, so their pages
            // leave this process's memory behind the cursor rather than
            // adding up to the transaction's size. They stay in the page
            // cache, dirty, and any access faults them back in
            // (`MappedFile::release`).
            fs.map.release(self.released, self.cursor);
            self.released = self.cursor;
        }
        let hash = fs.hash(key);
        if let Some(old_len) =
            self.pending
                .insert(fs, self.cursor, key, hash, offset, len, kind, expiry)
        {
            self.dead += old_len;
        }
        Ok(())
    }

    /// Makes every write of this transaction visible, all at once, and
    /// durable per the store's [`Durability`].
    ///
    /// With [`Durability::Sync`] it returns once the commit survives power
    /// loss. Other threads and processes see the commit a little earlier,
    /// from the moment the writer lock is given up, while its `fdatasync`
    /// is still to come (that is what lets commits share one). An error
    /// [`Error::CommitNotDurable`] means the commit was applied, but the
    /// sync failed: it may not survive a power loss.
    pub fn commit(mut self) -> Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        // On an error before the commit point `records` is still set and
        // dropping `self` discards the writes; after it, `records` is 0.
        let end = self.commit_inner()?;
        if self.durability != Durability::Sync {
            return Ok(());
        }
        let shared = self.guard.shared;
        let fs = Arc::clone(&self.guard.fs);
        let failures = self.sync_failures;
        // While syncs are shared, other processes will want the lock as
        // soon as their own sync returns: hand it over now rather than
        // through the lease thread then.
        if shared.syncs_shared() {
            self.guard.lease_ok = false;
        }
        // Gives the writer lock up (or keeps it as an idle lease) before
        // the sync, so that other writers commit meanwhile.
        drop(self);
        match shared.make_durable(&fs, end, failures) {
            Ok(()) => {
                shared.group.count_commit();
                Ok(())
            }
            Err(e) => Err(Error::CommitNotDurable {
                path: shared.data_path.clone(),
                cause: e.to_string(),
            }),
        }
    }

    /// Steps 1 to 5 of the commit protocol; returns the committed end.
    fn commit_inner(&mut self) -> Result<u64> {
        let fs = Arc::clone(&self.guard.fs);
        let txn_id = fs.load(live::TXN_ID) + 1;
        let marker = Commit {
            txn_id,
            txn_start: self.start,
            unix_ms: self.clock.now_unix_ms(),
            records: self.records,
            records_crc: self.records_crc.clone().finalize(),
        };
        let at = self.cursor;
        fs.map
            .fill(at, record::COMMIT_LEN, self.alloc_end, |out| {
                marker.encode(out)
            })
            .map_err(|e| Error::io("write", fs.path(), e))?
            .map_err(|e| fs.corruption(at, e))?;
        let mut end = at + record::COMMIT_LEN;

        // Grow the index if this commit could take it past 3/4 full.
        let old_idx = fs.index()?;
        let used = fs.load(live::USED_SLOTS);
        let mut counters = Counters::default();
        // The slot sum goes on being exact if it was (or a new index is
        // built, whose sum the rehash finds).
        let sum_exact = fs.load(live::SLOT_SUM_TXN) == fs.load(live::TXN_ID);
        let mut sum_base = None;
        let mut idx = old_idx;
        let new_keys = self.pending.keys() as u64;
        if index::needs_growth(old_idx, used, new_keys) {
            let live_keys = fs.load(live::LIVE_KEYS);
            let log2 = index::log2_for(live_keys + new_keys);
            let new_idx = IndexView { offset: end, log2 };
            self.reserve(end + new_idx.len())?;
            let header = record::encode_index_header(log2).map_err(|e| fs.corruption(end, e))?;
            fs.map
                .write(end, &header, self.alloc_end)
                .and_then(|()| {
                    fs.map.zero(
                        end + record::INDEX_HEADER_LEN as u64,
                        new_idx.len() - record::INDEX_HEADER_LEN as u64,
                        self.alloc_end,
                    )
                })
                .map_err(|e| Error::io("write", fs.path(), e))?;
            let (new_used, new_sum) = index::rehash(&fs, old_idx, new_idx, self.start)?;
            sum_base = Some(new_sum);
            counters.used_slots = new_used as i64 - used as i64;
            counters.dead_bytes += old_idx.len() as i64;
            end += new_idx.len();
            idx = new_idx;
        }

        // The commit point. From here on the transaction is committed: it
        // must not be discarded, and a failure to publish is left for the
        // next writer's replay (and latches this store).
        fs.store(live::COMMIT_END, end);
        self.records = 0;
        fs.store(live::TXN_ID, txn_id);
        fs.store(live::LAST_COMMIT_MS, marker.unix_ms);
        if idx != old_idx {
            fs.store(live::INDEX_OFFSET, idx.offset);
        }
        for p in self.pending.newest() {
            let rec = Record {
                kind: p.kind,
                expiry: p.expiry,
                key: PendingSet::key(&fs, p, end),
                value: &[],
                len: p.len,
            };
            index::publish_record(&fs, idx, p.offset, &rec, p.hash, end, &mut counters)
                .map_err(|e| self.guard.shared.latch_err(e))?;
        }
        counters.dead_bytes += (self.dead + record::COMMIT_LEN) as i64;
        apply_counters(&fs, counters);
        let base = sum_base.or(sum_exact.then(|| fs.load(live::SLOT_SUM)));
        if let Some(base) = base {
            index::set_slot_sum(&fs, base.wrapping_add(counters.slot_sum), txn_id);
        }
        fs.store(live::INDEXED_END, end);
        fs.store(live::WRITE_PENDING, 0);
        if self.durability == Durability::Sync {
            self.guard.shared.note_sync_commit();
        }
        Ok(end)
    }

    /// Throws away what this transaction wrote (nothing was published).
    fn discard(&mut self) {
        if self.records == 0 {
            return;
        }
        let fs = &self.guard.fs;
        // Zero what was appended so no stale record lingers above the
        // committed end. Best effort: the commit marker chain already keeps
        // a scan from accepting these records.
        let _ = fs
            .map
            .zero(self.start, self.cursor - self.start, self.alloc_end);
        if self.cursor - self.start >= STREAM_CHUNK {
            fs.map.release(self.start, self.cursor);
        }
        fs.store(live::WRITE_PENDING, 0);
        self.records = 0;
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Adds `c` to the counter live words.
pub(crate) fn apply_counters(fs: &FileState, c: Counters) {
    let add = |word: usize, delta: i64| {
        let v = fs.load(word) as i64 + delta;
        fs.store(word, v.max(0) as u64);
    };
    add(live::LIVE_KEYS, c.live_keys);
    add(live::USED_SLOTS, c.used_slots);
    add(live::EXPIRING_KEYS, c.expiring_keys);
    add(live::DEAD_BYTES, c.dead_bytes);
}

/// Refuses keys and values over the format's limits.
pub(crate) fn check_sizes(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > record::MAX_KEY_LEN {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max: record::MAX_KEY_LEN,
        });
    }
    if value.len() > record::MAX_VALUE_LEN {
        return Err(Error::ValueTooLong {
            len: value.len(),
            max: record::MAX_VALUE_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Durability, Options, Store};

    /// The writer lock as another process would hold it: a `flock` on a
    /// description of the lock file of our own.
    fn foreign_flock(store: &Store) -> std::fs::File {
        let file = std::fs::File::open(&store.shared.lock_path).unwrap();
        file.try_lock().expect("the writer lock is free");
        file
    }

    #[test]
    fn try_transaction_never_waits_for_another_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.carboy")).unwrap();
        // Another "process" holds the writer lock: would wait.
        let other = foreign_flock(&store);
        assert!(store.try_transaction().unwrap().is_none());
        drop(other);
        // Free: a fresh flock, the usual checks, a commit.
        let mut txn = store.try_transaction().unwrap().expect("free");
        txn.put(b"k", b"1").unwrap();
        // Another thread of this process finds it taken.
        std::thread::scope(|s| {
            let busy = s.spawn(|| store.try_transaction().map(|t| t.is_none()));
            assert!(busy.join().unwrap().unwrap(), "beside another thread's");
        });
        txn.commit().unwrap();
        assert_eq!(store.get_owned(b"k").unwrap().as_deref(), Some(&b"1"[..]));
        // Kept as an idle lease: the next one takes it over (no flock;
        // a foreign one is refused meanwhile).
        assert!(store.shared.holds_lease());
        let f = std::fs::File::open(&store.shared.lock_path).unwrap();
        assert!(f.try_lock().is_err(), "the lease holds the flock");
        let mut txn = store.try_transaction().unwrap().expect("the lease");
        txn.put(b"k", b"2").unwrap();
        txn.commit().unwrap();
        assert_eq!(store.get_owned(b"k").unwrap().as_deref(), Some(&b"2"[..]));
        // A snapshot of this thread: would wait, not an error.
        let snap = store.snapshot().unwrap();
        assert!(store.try_transaction().unwrap().is_none());
        drop(snap);
    }

    #[test]
    fn try_transaction_refuses_sync_durability() {
        let dir = tempfile::tempdir().unwrap();
        let store = Options::new()
            .durability(Durability::Sync)
            .open(dir.path().join("s.carboy"))
            .unwrap();
        assert!(store.try_transaction().unwrap().is_none());
        store.put(b"k", b"v").unwrap();
        assert!(
            store.try_transaction().unwrap().is_none(),
            "under a lease too"
        );
    }
}
