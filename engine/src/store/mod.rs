//! The namespace store: one data file, shared by threads and processes.
//!
//! Files of this module, by concern:
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the public [`Store`] API and the read path |
//! | `file_state.rs` | one opened data file and checked reads of it |
//! | `index.rs` | the probe loop and slot publishing |
//! | `writer.rs` | the writer lock and the commit protocol |
//! | `group_commit.rs` | making Sync commits durable, sharing one `fdatasync` among many |
//! | `lease.rs` | keeping the writer lock between commits while nobody waits |
//! | `reentry.rs` | refusing calls that would wait for the calling thread itself |
//! | `options.rs` | [`Options`] and [`Durability`]: how a store is opened |
//! | `scan.rs` | reading the log back as recovery does |
//! | `recovery.rs` | dead-writer replay, index rebuild |
//! | `open_checks.rs` | what an open checks before trusting a file (committed end, index count and sum) and the read-only [`inspect_recovery`] |
//! | `set_aside.rs` | commits recovery copies aside before reusing their space |
//! | `boot.rs` | the boot id that tells a reboot |
//! | `open.rs` | lock file, registry, recovery on open, following compactions |
//! | `new_file.rs` | files built beside their path and renamed into place; temporary paths; streaming passes that release the pages behind them |
//! | `environment.rs` | noticing files removed, replaced or truncated under the store |
//! | `snapshot.rs` | consistent reads and iteration under a shared lock |
//! | `maintain.rs` | compaction, statistics |
//! | `verify.rs` | deep verification |
//! | `walk.rs` | walking a damaged log block by block |
//! | `salvage.rs` | a clean file from a damaged one |
//! | `offsets.rs`, `pending.rs` | offset sets and per-key newest records for streaming passes; a transaction's pending writes |
//!
//! `options.rs` and `mod.rs` name each other (`Options::open` builds a
//! [`Store`], as `std::fs::OpenOptions::open` builds a `File`); no other
//! two files of the store import each other.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use carboy_format::Expiry;
use carboy_format::header::live;
use carboy_format::record::Kind;
use parking_lot::{Mutex, RwLock};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::file::LockFile;

mod boot;
mod environment;
mod file_state;
mod group_commit;
mod index;
mod lease;
mod maintain;
mod new_file;
mod offsets;
mod open;
mod open_checks;
mod options;
mod pending;
mod recovery;
mod reentry;
mod salvage;
mod scan;
mod set_aside;
mod snapshot;
mod verify;
mod walk;
mod writer;

use file_state::FileState;
use index::Probe;

pub use group_commit::SyncStats;
pub use maintain::{CompactReport, Stats};
pub use open_checks::{RecoveryPlan, inspect_recovery};
pub use options::{Durability, Options};
pub use salvage::{SalvageReport, salvage};
pub use set_aside::{SetAside, set_aside_files};
pub use snapshot::{Entries, Entry, EntryRef, Iter, Snapshot};
pub use verify::{Problem, VerifyReport};
pub use writer::Transaction;

/// State shared by every handle of one namespace in this process.
pub(crate) struct Shared {
    lock: LockFile,
    lock_path: PathBuf,
    /// The lock file's presence slot (`environment.rs`).
    lock_slot: u64,
    data_path: PathBuf,
    /// The data file in use; replaced when a compaction moves the path to
    /// a new file.
    file: ArcSwap<FileState>,
    /// In-process side of the locks: writers take it exclusively,
    /// snapshots shared (flock alone cannot tell threads apart).
    rw: RwLock<()>,
    /// Snapshots of this process holding the shared flock.
    shared_holders: Mutex<usize>,
    /// Set when a write failed part way; cleared by [`Store::recover`].
    latched: Mutex<Option<String>>,
    /// The lock-file generation this process last reconciled with.
    checked_gen: AtomicU64,
    /// Serializes reloads after a compaction.
    reload: Mutex<()>,
    /// Serializes marking and clearing this process's presence on the data
    /// file as handles come and go.
    presence: Mutex<()>,
    /// This process holds the exclusive flock between writes (a lease;
    /// see `lease.rs`). Changed only under `rw` held for writing.
    held: std::sync::atomic::AtomicBool,
    /// Whether the lease thread runs.
    lease_thread: Mutex<bool>,
    /// This `Shared`, for the lease thread.
    me: std::sync::Weak<Shared>,
    /// Open `Store` handles on this namespace in this process; the lease
    /// thread gives the lock up when it falls to zero.
    handles: std::sync::atomic::AtomicUsize,
    /// This process's side of group commit (`group_commit.rs`).
    group: group_commit::GroupCommit,
    /// What opening the namespace in this process repaired.
    repairs: Mutex<Vec<String>>,
}

impl Shared {
    /// Latches the store after a failed `op` and returns the error.
    pub(crate) fn latch(&self, op: &'static str, e: std::io::Error) -> Error {
        let err = Error::io(op, &self.data_path, e);
        *self.latched.lock() = Some(err.to_string());
        err
    }

    /// Latches the store with `err` as the cause and returns it.
    pub(crate) fn latch_err(&self, err: Error) -> Error {
        *self.latched.lock() = Some(err.to_string());
        err
    }
}

/// A namespace: one carboy data file, open for reading and writing.
///
/// `Store` is cheap to clone and `Send + Sync`; every clone, and every
/// `Store` opened on the same file in this process, shares one mapping and
/// one lock. Other processes may open the same file at the same time.
///
/// Point reads ([`get`](Store::get), [`get_owned`](Store::get_owned),
/// [`contains`](Store::contains)) take no lock and make no system call in
/// the steady state. Writes are serialized across threads and processes.
///
/// ```
/// use carboy::Store;
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path().join("greetings.carboy"))?;
/// store.put(b"en", b"hello")?;
/// assert_eq!(store.get(b"en")?.as_deref(), Some(&b"hello"[..]));
/// assert!(store.delete(b"en")?);
/// assert!(store.get(b"en")?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Store {
    shared: Arc<Shared>,
    durability: Durability,
    clock: Arc<dyn Clock>,
}

impl Clone for Store {
    fn clone(&self) -> Store {
        self.shared
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Store {
            shared: Arc::clone(&self.shared),
            durability: self.durability,
            clock: Arc::clone(&self.clock),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let left = self
            .shared
            .handles
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            - 1;
        if left == 0 {
            self.shared.leave();
            // Let the lease thread give the lock up now, not at its next look.
            self.shared.lock.wake_lease_holders();
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.data_path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// A value borrowed from the mapped file, without copying.
///
/// It keeps the file it points into alive (even if a compaction replaces
/// it meanwhile); it derefs to `&[u8]`.
pub struct ValueRef<'s> {
    file: arc_swap::Guard<Arc<FileState>>,
    offset: u64,
    len: u64,
    expiry: Expiry,
    _store: std::marker::PhantomData<&'s Store>,
}

impl ValueRef<'_> {
    /// When the value expires.
    pub fn expiry(&self) -> Expiry {
        self.expiry
    }
}

impl std::ops::Deref for ValueRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // The range was read and verified when the guard was made, below
        // the committed end, and `file` keeps the mapping alive.
        self.file
            .map
            .bytes(self.offset, self.len, self.offset + self.len)
            .unwrap_or_default()
    }
}

impl AsRef<[u8]> for ValueRef<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueRef")
            .field("len", &self.len)
            .field("expiry", &self.expiry)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the namespace file at `path` with default
    /// [`Options`]. Every thread and process that opens the same file
    /// shares it; [`Options`] sets durability, creation and the clock.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Store::open(dir.path().join("users.carboy"))?;
    /// store.put(b"user:1", b"alice")?;
    /// assert_eq!(store.get(b"user:1")?.as_deref(), Some(&b"alice"[..]));
    /// assert!(store.get(b"user:2")?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Options::new().open(path)
    }

    /// Opens (or creates) namespace `name` in the data directory `dir`
    /// with default [`Options`]. Any name works: it maps to a file name
    /// that stays inside `dir` ([`name::file_name`](crate::name::file_name)).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let sessions = carboy::Store::open_namespace(dir.path(), "sessions/eu")?;
    /// sessions.put_for(b"sid:1", b"{}", std::time::Duration::from_secs(1800))?;
    /// assert!(sessions.contains(b"sid:1")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_namespace(dir: impl AsRef<Path>, name: &str) -> Result<Store> {
        Options::new().open_namespace(dir, name)
    }

    pub(crate) fn open_with(path: &Path, name: Option<&str>, opts: &Options) -> Result<Store> {
        let (shared, just_opened) = open::open_shared(path, name, opts)?;
        let reopened = shared
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            == 0;
        let store = Store {
            shared,
            durability: opts.durability,
            clock: Arc::clone(&opts.clock),
        };
        if reopened {
            // (On failure, dropping `store` takes the presence back.)
            store.shared.enter(name, opts, just_opened)?;
        }
        // Every handle was dropped and this is a new open: a latch set by a
        // failed write is cleared the way `recover` clears it, as if the
        // process had opened the file afresh (a lease thread may still have
        // been holding the shared state a moment longer).
        if reopened && store.shared.latched.lock().is_some() {
            store.recover()?;
        }
        Ok(store)
    }

    /// The data file's path (made absolute when the store was opened).
    pub fn path(&self) -> &Path {
        &self.shared.data_path
    }

    /// This handle's durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Borrows the value of `key` from the mapped file, or `None` when it
    /// is absent or expired. The bytes are checked against their CRC first.
    pub fn get(&self, key: &[u8]) -> Result<Option<ValueRef<'_>>> {
        let file = self.shared.current_file()?;
        let idx = file.index()?;
        let hash = file.hash(key);
        let (offset, len, expiry) = match index::probe(&file, idx, hash, key, None)? {
            Probe::Found { offset, record, .. } => {
                if record.kind != Kind::Put {
                    return Ok(None);
                }
                if record.expiry != Expiry::Never
                    && record.expiry.is_expired_at(self.clock.now_unix_ms())
                {
                    return Ok(None);
                }
                let value_at = record.value.as_ptr() as u64 - record.key.as_ptr() as u64
                    + key_offset(offset, record.expiry);
                (value_at, record.value.len() as u64, record.expiry)
            }
            _ => return Ok(None),
        };
        Ok(Some(ValueRef {
            file,
            offset,
            len,
            expiry,
            _store: std::marker::PhantomData,
        }))
    }

    /// Looks up every key of `keys`, calling `f(i, value)` for `keys[i]`,
    /// in order, with its value borrowed from the mapped file (`None` when
    /// the key is absent or expired). Every value is checked against its
    /// CRC first, as with [`get`](Store::get).
    ///
    /// The same answers as a `get` per key, in less time when the keys are
    /// not in the CPU's caches: a `get` waits for two memory reads in turn
    /// (the key's index slot, then its record), whereas `get_many` first
    /// asks for the slots of up to 16 keys at once, then for their
    /// records, so that their waits overlap. On an error (a damaged
    /// record) it stops and returns it; `f` has then been called for the
    /// keys before.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
    /// store.put(b"a", b"1")?;
    /// store.put(b"c", b"3")?;
    /// let mut found = Vec::new();
    /// store.get_many(&[b"a", b"b", b"c"], |i, v| found.push((i, v.map(<[u8]>::to_vec))))?;
    /// assert_eq!(found, [(0, Some(b"1".to_vec())), (1, None), (2, Some(b"3".to_vec()))]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        mut f: impl FnMut(usize, Option<&[u8]>),
    ) -> Result<()> {
        let mut done = 0;
        for batch in keys.chunks(GET_MANY_BATCH) {
            let file = self.shared.current_file()?;
            let idx = file.index()?;
            let mut hashes = [0u64; GET_MANY_BATCH];
            for (h, key) in hashes.iter_mut().zip(batch) {
                *h = file.hash(key.as_ref());
                index::prefetch_slot(&file, idx, *h);
            }
            for h in &hashes[..batch.len()] {
                index::prefetch_record(&file, idx, *h);
            }
            let mut now = None;
            for (key, h) in batch.iter().zip(hashes) {
                let value = match index::probe(&file, idx, h, key.as_ref(), None)? {
                    Probe::Found { record, .. } if record.kind == Kind::Put => {
                        let expired = record.expiry != Expiry::Never
                            && record.expiry.is_expired_at(
                                *now.get_or_insert_with(|| self.clock.now_unix_ms()),
                            );
                        (!expired).then_some(record.value)
                    }
                    _ => None,
                };
                f(done, value);
                done += 1;
            }
        }
        Ok(())
    }

    /// The value of `key`, copied out.
    pub fn get_owned(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?.map(|v| v.to_vec()))
    }

    /// True when `key` has a value that has not expired.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `value`, with no expiry, as one commit.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_with_expiry(key, value, Expiry::Never)
    }

    /// Sets `key` to `value`, readable for `ttl` from now (per this
    /// store's clock).
    pub fn put_for(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<()> {
        let at = self
            .clock
            .now_unix_ms()
            .saturating_add(ttl.as_millis().min(u128::from(u64::MAX)) as u64);
        self.put_with_expiry(key, value, Expiry::AtUnixMs(at))
    }

    /// Sets `key` to `value`, readable until `expiry`, as one commit.
    pub fn put_with_expiry(&self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<()> {
        writer::check_sizes(key, value)?;
        let mut txn = self.transaction()?;
        txn.put_with_expiry(key, value, expiry)?;
        txn.commit()
    }

    /// Removes `key` as one commit; returns whether it was present.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        writer::check_sizes(key, &[])?;
        let mut txn = self.transaction()?;
        let existed = txn.delete(key)?;
        txn.commit()?;
        Ok(existed)
    }

    /// Starts a write transaction, waiting for the writer lock.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        let guard = self.shared.write_lock()?;
        Ok(Transaction::begin(guard, self.durability, &*self.clock))
    }

    /// Starts a write transaction if that needs no wait: `Ok(None)` when
    /// it would wait (another thread of this process writes or holds a
    /// snapshot, another process holds the writer lock), and always with
    /// [`Durability::Sync`], whose commit waits for an `fdatasync`.
    ///
    /// It never makes a system call that can wait for another process:
    /// while this process keeps the writer lock as an idle lease (after
    /// its last commit, as long as no other process asked for it) it
    /// makes none; otherwise one non-blocking `flock`, then the checks a
    /// fresh acquisition makes. The commit of such a transaction waits
    /// for nothing either. This is how async callers write on their own
    /// task and go to a thread only when they would wait.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
    /// let mut txn = store.try_transaction()?.expect("nobody else writes");
    /// txn.put(b"k", b"v")?;
    /// // Meanwhile, this thread's own transaction makes the next one wait.
    /// assert!(store.try_transaction()?.is_none());
    /// txn.commit()?;
    /// assert!(store.try_transaction()?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_transaction(&self) -> Result<Option<Transaction<'_>>> {
        // Only a commit that ends in the page cache waits for nothing.
        if self.durability != Durability::None {
            return Ok(None);
        }
        Ok(self
            .shared
            .try_write_lock()?
            .map(|guard| Transaction::begin(guard, self.durability, &*self.clock)))
    }

    /// A consistent view for iteration and repeated reads: it holds a
    /// shared lock, so writers (in every process) wait until it is dropped.
    pub fn snapshot(&self) -> Result<Snapshot<'_>> {
        Snapshot::new(self)
    }

    /// Iterates over every live entry, in no particular order, over a
    /// consistent snapshot.
    pub fn iter(&self) -> Result<Iter<'_>> {
        Ok(self.snapshot()?.into_iter())
    }

    /// Every live key, in no particular order.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.iter()?.map(|e| e.map(|e| e.key)).collect()
    }

    /// Number of live (present, unexpired) keys. Constant time unless some
    /// keys carry an expiry, in which case they are counted.
    pub fn len(&self) -> Result<u64> {
        let file = self.shared.current_file()?;
        if file.load(live::EXPIRING_KEYS) == 0 {
            return Ok(file.load(live::LIVE_KEYS));
        }
        drop(file);
        self.snapshot()?.len()
    }

    /// A number that changes whenever a commit, a compaction or a clear of
    /// this namespace has become fully visible, in any process. Reading it
    /// takes no lock and makes no system call.
    ///
    /// Read the stamp *before* the keys it guards: if the stamp is the same
    /// later on, nothing those reads saw has changed since. The cache layer
    /// uses it to keep an invalidation marker in memory and read it again
    /// only after a change.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
    /// let before = store.change_stamp()?;
    /// assert_eq!(store.change_stamp()?, before);
    /// store.put(b"k", b"v")?;
    /// assert_ne!(store.change_stamp()?, before);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn change_stamp(&self) -> Result<u128> {
        let file = self.shared.current_file()?;
        // `indexed_end` is stored (Release) after a commit's slots are
        // published, and only grows within one file; a compaction or clear
        // moves to a new file with a higher generation.
        let end = file.load(live::INDEXED_END);
        Ok((u128::from(file.header.generation) << 64) | u128::from(end))
    }

    /// True when [`len`](Store::len) is zero.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Flushes every commit so far, of every process, to the device
    /// (`fdatasync`), whatever this handle's durability. Returns at once
    /// when a sync already covered them all; shares one with the Sync
    /// commits being made meanwhile, like a commit.
    pub fn sync(&self) -> Result<()> {
        let guard = self.shared.write_lock()?;
        let fs = Arc::clone(&guard.fs);
        let end = fs.commit_end();
        let failures = self.shared.group.failures();
        drop(guard);
        self.shared.make_durable(&fs, end, failures)
    }

    /// How many [`Durability::Sync`] commits this process made durable on
    /// this namespace, and how many `fdatasync` calls that took: commits
    /// made at once by several threads or processes share them. Counts
    /// since the namespace was first opened in this process.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Options::new()
    ///     .durability(carboy::Durability::Sync)
    ///     .open(dir.path().join("s.carboy"))?;
    /// store.put(b"k", b"v")?;
    /// assert_eq!(store.sync_stats().commits, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sync_stats(&self) -> SyncStats {
        self.shared.group.stats()
    }

    /// Clears the latch set by a failed write: finishes any half-done
    /// commit, then syncs the data file and its directory, so that whatever
    /// the failed call left is durable before writes resume. Returns the
    /// cause that was latched, if any; on failure the store stays latched.
    pub fn recover(&self) -> Result<Option<String>> {
        let cause = self.shared.latched.lock().take();
        let result = self.shared.write_lock().and_then(|guard| {
            guard
                .fs
                .map
                .sync()
                .map_err(|e| Error::io("fsync", guard.fs.path(), e))?;
            new_file::sync_dir(&self.shared.data_path)
        });
        match result {
            Ok(()) => Ok(cause),
            Err(e) => {
                *self.shared.latched.lock() = cause;
                Err(e)
            }
        }
    }

    /// What opening this namespace in this process repaired, one sentence
    /// each: an index rebuilt from the log because it disagreed with the
    /// count or sum the header keeps, or because the live words were
    /// implausible; commits set aside by recovery after a reboot (see
    /// [`SetAside`]). Empty when nothing was repaired, including after an
    /// ordinary reboot or a dead writer's commit finished. Tools print it;
    /// services may log it.
    pub fn repairs(&self) -> Vec<String> {
        self.shared.repairs.lock().clone()
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }
}

/// Keys [`Store::get_many`] looks up together: their slots, then their
/// records, are asked for at once. Enough to cover the memory latency with
/// the misses the CPU can have in flight; more would only evict lines
/// asked for earlier before they are read.
const GET_MANY_BATCH: usize = 16;

/// Offset of the key of the record at `offset` with `expiry`.
fn key_offset(offset: u64, expiry: Expiry) -> u64 {
    let ext = if expiry == Expiry::Never { 0 } else { 8 };
    offset + carboy_format::record::PREFIX_LEN as u64 + ext
}
