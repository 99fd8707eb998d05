//! Locks and get-or-create maps for caches: Beaker's `synchronization` and
//! `util.SyncDict`, for threads and for processes.
//!
//! A cache over carboy needs three kinds of exclusion, and this module has
//! one tool for each:
//!
//! | need | tool | excludes |
//! |---|---|---|
//! | "only one thread creates this value" | [`SyncDict`], [`WeakSyncDict`] | threads |
//! | a lock per name (key, region) | [`NameLocks`] (reentrant mutex), [`NameRwLocks`] | threads |
//! | "only one process creates this key" (the dogpile lock) | [`StripeLocks`] | threads and processes |
//! | a read/write lock a cache is configured with | [`Synchronizer`]: [`MutexLock`], [`FileLock`], [`NullLock`]; [`AnyLock`] to choose at run time | threads; threads and processes; nothing |
//!
//! **Maps.** [`SyncDict::get_or_insert_with`] returns a key's value, or
//! runs one caller's creator while everyone else asking for that key waits
//! for its result: exactly one creation, whatever the contention;
//! [`SyncDict::get_or_create`] does the same with a creator that may fail.
//! The `_valid_` variants treat a value that fails a check (expired) as
//! missing. A creator that fails or panics leaves the key free for the
//! next caller.
//! [`WeakSyncDict`] hands out `Arc`s and forgets a value once every `Arc`
//! is dropped. Creators run with no lock held.
//!
//! **Name locks.** [`NameLocks`] and [`NameRwLocks`] make a lock per name
//! on demand and drop it as soon as nobody holds or waits for it, so a
//! lock per cache key costs nothing once the key is done.
//!
//! **Between processes.** Both file-based locks rest on locks the kernel
//! ties to an *open file description* (`flock` for [`FileLock`],
//! `F_OFD_SETLKW` byte ranges for [`StripeLocks`]): two descriptions
//! conflict whether they belong to one process or two, and a description's
//! locks end when it is closed, which includes its process being killed.
//! So each thread's outermost acquisition opens its own description:
//! threads are excluded by the same kernel mechanism as processes, no lock
//! outlives a dead process, and nothing is left to clean by hand. Lock
//! files are created on demand (their directory too, if a temp cleaner
//! removed it) and never deleted; an acquisition that finds its file was
//! replaced while it waited starts over on the new one.
//!
//! [`StripeLocks`] bounds the files: one lock file per namespace, `N`
//! stripes (1024 by default) as bytes of it, the stripe of a key picked by
//! the caller's hash. Beaker's one file per key filled disks with inodes.
//!
//! **Rules shared by every lock here**, per thread: taking a lock again in
//! the mode held is counted, not waited for; reading while writing is
//! allowed; writing while only reading is refused with
//! [`Error::LockUpgrade`](crate::Error::LockUpgrade), since it would wait
//! for itself. Guards are not `Send`. Writers are preferred over new
//! readers in the in-process locks; `flock` makes no such promise.
//!
//! **Not detected:** deadlocks between two locks (a thread holding stripe
//! A and waiting for B while another holds B and waits for A). Creators
//! should not take a second creation lock while holding one.
//!
//! Linux only, like the rest of carboy: [`StripeLocks`] needs open file
//! description locks (Linux 3.15+), and none of the file locks work on
//! NFS or Lustre ([`Error::LockUnsupported`](crate::Error::LockUnsupported)).
//!
//! ```
//! use carboy::sync::{StripeLocks, SyncDict};
//! use std::sync::Arc;
//!
//! let dir = tempfile::tempdir()?;
//! // Threads of this process: one creation per key.
//! let memo: SyncDict<String, Arc<Vec<u8>>> = SyncDict::new();
//! // Processes: one creator per key's stripe at a time.
//! let creation = StripeLocks::open(dir.path().join("users.carboy.create-lock"), 1024)?;
//!
//! let key = "user:1".to_string();
//! let hash = 0x5eed_u64; // the caller's hash of the key
//! let value = memo.get_or_create(key, || {
//!     let _stripe = creation.lock(hash)?; // other processes wait here
//!     // ...look in the store again, else compute and store...
//!     Ok::<_, carboy::Error>(Arc::new(b"alice".to_vec()))
//! })?;
//! assert_eq!(&value[..], b"alice");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod any_lock;
mod file_lock;
mod lock_files;
mod name_locks;
mod null_lock;
mod reentrant_rw;
mod stripe_locks;
mod sync_dict;
mod synchronizer;
#[cfg(test)]
pub(crate) mod test_support;

pub use any_lock::{AnyGuard, AnyLock};
pub use file_lock::{FileLock, FileLockGuard};
pub use name_locks::{NameGuard, NameLocks, NameRwGuard, NameRwLocks};
pub use null_lock::{NullGuard, NullLock};
pub use stripe_locks::{OwnedStripe, OwnedTry, StripeGuard, StripeLocks};
pub use sync_dict::{Holding, StrongValue, SyncDict, SyncDictOf, WeakSyncDict, WeakValue};
pub use synchronizer::{MutexGuard, MutexLock, Synchronizer};
