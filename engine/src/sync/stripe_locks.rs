//! [`StripeLocks`]: cross-process creation locks for the keys of a
//! namespace, a bounded number of byte-range locks on one lock file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::thread::ThreadId;

use parking_lot::Mutex;

use super::lock_files::{lock_current, open_lock_file, registry_key};
use super::sync_dict::WeakSyncDict;
use crate::error::{Error, Result};
use crate::file::{RangeLock, lock_byte, range_lock_unsupported, unlock_byte};

/// One shared state per lock file in this process.
static OPEN: LazyLock<WeakSyncDict<PathBuf, Shared>> = LazyLock::new(WeakSyncDict::new);

#[derive(Debug)]
struct Held {
    /// The open file description that holds the stripe's byte lock.
    file: File,
    /// Guards of the thread on this stripe.
    depth: u32,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    stripes: u32,
    /// Stripes held, by thread.
    held: Mutex<HashMap<(ThreadId, u32), Held>>,
    /// Unlocked descriptions of the lock file, kept by dropped
    /// [`OwnedStripe`]s for the next one (at most [`POOL`]).
    pool: Mutex<Vec<Description>>,
}

/// An open description of the lock file.
#[derive(Debug)]
struct Description {
    file: File,
}

impl Description {
    fn open(path: &Path) -> Result<Description> {
        Ok(Description {
            file: open_lock_file(path)?,
        })
    }

    /// True while the file this describes is still linked in a
    /// directory: one `fstat`, no path walk (a third of a `stat` of the
    /// path on a 2-core VM: 0.34 µs against 0.96 µs). A file removed (by
    /// a cleaner of temporary files, say) or replaced by a rename over
    /// its path has no link left, so a description of it is stale. A file
    /// renamed away to another path keeps its link and goes unnoticed:
    /// nothing in carboy does that, and a lock file moved by hand is
    /// outside what these locks guard against.
    fn still_linked(&self, path: &Path) -> Result<bool> {
        match self.file.metadata() {
            Ok(meta) => Ok(meta.nlink() > 0),
            Err(e) => Err(Error::io("stat lock file", path, e)),
        }
    }
}

/// How many unlocked descriptions a lock file keeps for owned stripes:
/// about the number of stripes a process holds at once as owned guards.
const POOL: usize = 16;

/// Cross-process creation locks for the keys of one namespace: `stripes`
/// byte-range locks on **one** lock file, the stripe of a key chosen from
/// its hash.
///
/// This is the dogpile lock of a cache: the first process (or thread) to
/// miss a key locks the key's stripe and creates the value while the
/// others wait for that stripe, then find the value. Keys that share a
/// stripe wait for each other too; with the default 1024 stripes that is
/// rare. Unlike Beaker's one lock file per key, there is one file per
/// namespace, whatever the number of keys, and no lock outlives its
/// process: nothing to clean by hand.
///
/// **How.** Stripe `s` is byte `s` of the file, locked with Linux's open
/// file description locks (`F_OFD_SETLKW`). Such a lock conflicts with every
/// other open file description, in this process or another, and the kernel
/// drops it when its description is closed, which includes the process
/// dying. Each outermost acquisition opens its own description, so threads
/// of one process exclude each other through the kernel as processes do. A
/// thread may lock a stripe it already holds (a creator that creates
/// another key of the same stripe): that is counted, not locked again.
/// The file stays empty (locks past its end are allowed).
///
/// **Owned stripes.** [`try_lock_owned`](Self::try_lock_owned) takes a
/// stripe without waiting and hands back an [`OwnedStripe`] that is `Send`
/// and `'static`: it belongs to no thread (an async task keeps it across
/// worker threads). It has an open file description of its own, so it
/// conflicts with every thread's stripe and every other owned stripe, in
/// this process or another; it is not counted in a thread's reentrancy (a
/// thread that holds an owned stripe and then locks the same stripe with
/// [`lock`](Self::lock) waits for it, like anyone else). Dropped, it
/// unlocks and keeps its description for the next one (up to 16 per lock
/// file), which saves the `open` and `close`.
///
/// **Cost.** An acquisition that misses this thread's held stripes costs an
/// `open`, one `fcntl`, two `stat`s and, on release, an `fcntl` and a
/// `close`: about 5 µs uncontended on a 2-core VM, on the miss path only.
///
/// Every process must open a namespace's lock file with the same number of
/// stripes, or keys map to different stripes and are created more than
/// once (never wrongly, only twice). Within one process this is checked.
///
/// Linux only (open file description locks, Linux 3.15+); like the rest of
/// carboy.
///
/// # Examples
///
/// ```
/// use carboy::sync::StripeLocks;
///
/// let dir = tempfile::tempdir()?;
/// let locks = StripeLocks::open(dir.path().join("users.carboy.create-lock"), 1024)?;
/// let hash = 0xfeed_beef_u64; // the key's hash, from the caller
/// {
///     let guard = locks.lock(hash)?; // blocks while another thread or process holds it
///     assert_eq!(guard.stripe(), (hash % 1024) as u32);
///     // ...look again for the value, create it, store it...
/// }
/// assert!(locks.try_lock(hash)?.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StripeLocks {
    shared: Arc<Shared>,
}

impl StripeLocks {
    /// The stripe count carboy's cache layer uses unless told otherwise.
    pub const DEFAULT_STRIPES: u32 = 1024;

    /// Opens (creating if needed, with its directory) the lock file at
    /// `path`, with `stripes` stripes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] if `stripes` is 0, or if this process already
    /// has `path` open with another stripe count; [`Error::Io`] if the file
    /// cannot be made or opened.
    ///
    /// # Examples
    ///
    /// ```
    /// use carboy::sync::StripeLocks;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("ns.create-lock");
    /// let locks = StripeLocks::open(&path, StripeLocks::DEFAULT_STRIPES)?;
    /// assert_eq!(locks.stripes(), 1024);
    /// assert!(StripeLocks::open(&path, 0).is_err());
    /// assert!(StripeLocks::open(&path, 8).is_err()); // already open with 1024 here
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, stripes: u32) -> Result<StripeLocks> {
        if stripes == 0 {
            return Err(Error::InvalidOption {
                name: "stripes",
                reason: "a stripe lock file needs at least 1 stripe".to_string(),
            });
        }
        let path = registry_key(path.as_ref())?;
        let shared = OPEN.get_or_create(path.clone(), || {
            drop(open_lock_file(&path)?);
            Ok::<_, Error>(Shared {
                path: path.clone(),
                stripes,
                held: Mutex::new(HashMap::new()),
                pool: Mutex::new(Vec::new()),
            })
        })?;
        if shared.stripes != stripes {
            return Err(Error::InvalidOption {
                name: "stripes",
                reason: format!(
                    "{} is already open in this process with {} stripes, not {stripes}; \
                     every user of a lock file must use the same count",
                    path.display(),
                    shared.stripes
                ),
            });
        }
        Ok(StripeLocks { shared })
    }

    /// The lock file's path (absolute).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The number of stripes.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert_eq!(carboy::sync::StripeLocks::open(dir.path().join("l"), 4)?.stripes(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn stripes(&self) -> u32 {
        self.shared.stripes
    }

    /// The stripe of a key whose hash is `hash`: `hash % stripes`.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 1024)?;
    /// assert_eq!(locks.stripe_for(1024 + 5), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn stripe_for(&self, hash: u64) -> u32 {
        // The remainder is below `stripes`, a u32.
        (hash % u64::from(self.shared.stripes)) as u32
    }

    /// Locks the stripe of `hash`, waiting while another thread or process
    /// holds it. Returns at once if this thread already holds it.
    ///
    /// Nothing detects a deadlock: two threads (or processes) that each
    /// hold one stripe and wait for the other's wait forever. Creators that
    /// create other keys should not hold a stripe while they do.
    ///
    /// # Errors
    ///
    /// [`Error::StripeLock`] if `fcntl` fails; [`Error::LockUnsupported`]
    /// if the kernel or filesystem has no open file description locks;
    /// [`Error::Io`] if the lock file cannot be opened.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 16)?;
    /// let outer = locks.lock(3)?;
    /// let inner = locks.lock(19)?; // stripe 3 again, same thread: counted
    /// assert_eq!(inner.stripe(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self, hash: u64) -> Result<StripeGuard<'_>> {
        self.acquire(hash, true)?.ok_or_else(|| {
            let stripe = self.stripe_for(hash);
            self.error("lock", stripe, io::Error::from(io::ErrorKind::WouldBlock))
        })
    }

    /// Locks the stripe of `hash` if nobody else holds it; `Ok(None)` if
    /// another thread or process does.
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 16)?;
    /// let held = locks.lock(3)?;
    /// let other = locks.clone();
    /// let busy = std::thread::scope(|s| s.spawn(|| other.try_lock(3).map(|g| g.is_none())).join());
    /// assert!(busy.unwrap()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self, hash: u64) -> Result<Option<StripeGuard<'_>>> {
        self.acquire(hash, false)
    }

    /// Locks the stripe of `hash` without waiting, for whoever holds the
    /// returned [`OwnedStripe`] (`Send`, `'static`: a task may keep it
    /// across threads); `Ok(None)` if any thread or process, including
    /// this thread through [`lock`](Self::lock) or another owned stripe,
    /// holds it. Dropping the guard unlocks it.
    ///
    /// Never waits on another process: one non-blocking `fcntl` and one
    /// `fstat` (is the locked file still linked, not removed or replaced
    /// since it was opened?), plus an `open` when no description is
    /// pooled.
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 16)?;
    /// let owned = locks.try_lock_owned(3)?.expect("free");
    /// // Another thread, or this one, finds the stripe taken.
    /// assert!(locks.try_lock(3)?.is_none());
    /// assert!(locks.try_lock_owned(19)?.is_none());
    /// // The guard can go to another thread, which releases it.
    /// std::thread::spawn(move || drop(owned)).join().unwrap();
    /// assert!(locks.try_lock(3)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock_owned(&self, hash: u64) -> Result<Option<OwnedStripe>> {
        let stripe = self.stripe_for(hash);
        let path = &self.shared.path;
        let mut pooled = self.shared.pool.lock().pop();
        for _ in 0..MAX_OWNED_TRIES {
            let file = match pooled.take() {
                Some(file) => file,
                None => Description::open(path)?,
            };
            match lock_byte(&file.file, u64::from(stripe), false) {
                Ok(RangeLock::Acquired) => {}
                Ok(RangeLock::Busy) => {
                    self.keep(file);
                    return Ok(None);
                }
                Err(e) if range_lock_unsupported(&e) => {
                    return Err(Error::LockUnsupported {
                        path: path.clone(),
                        what: "open file description byte-range lock",
                        source: e,
                    });
                }
                Err(e) => return Err(self.error("lock", stripe, e)),
            }
            if file.still_linked(path)? {
                return Ok(Some(OwnedStripe {
                    shared: Arc::clone(&self.shared),
                    file: Some(file),
                    stripe,
                }));
            }
            // A pooled description of a file since removed or replaced
            // (or one replaced as we opened it): closing releases it; the
            // pool goes too, all of it opened on the old file.
            drop(file);
            self.shared.pool.lock().clear();
        }
        Err(self.error(
            "lock",
            stripe,
            io::Error::other("the lock file was removed or replaced while locking it"),
        ))
    }

    /// Keeps an unlocked description for the next owned stripe.
    fn keep(&self, file: Description) {
        keep(&self.shared, file);
    }

    fn acquire(&self, hash: u64, wait: bool) -> Result<Option<StripeGuard<'_>>> {
        let stripe = self.stripe_for(hash);
        let me = std::thread::current().id();
        if let Some(h) = self.shared.held.lock().get_mut(&(me, stripe)) {
            h.depth += 1;
            return Ok(Some(self.guard(me, stripe)));
        }
        let Some(file) = self.lock_stripe(stripe, wait)? else {
            return Ok(None);
        };
        self.shared
            .held
            .lock()
            .insert((me, stripe), Held { file, depth: 1 });
        Ok(Some(self.guard(me, stripe)))
    }

    /// Opens a new description of the lock file and locks the stripe's
    /// byte, starting over if the file at the path was replaced meanwhile.
    fn lock_stripe(&self, stripe: u32, wait: bool) -> Result<Option<File>> {
        let path = &self.shared.path;
        lock_current(
            path,
            |file| match lock_byte(file, u64::from(stripe), wait) {
                Ok(RangeLock::Acquired) => Ok(true),
                Ok(RangeLock::Busy) => Ok(false),
                Err(e) if range_lock_unsupported(&e) => Err(Error::LockUnsupported {
                    path: path.clone(),
                    what: "open file description byte-range lock",
                    source: e,
                }),
                Err(e) => Err(self.error("lock", stripe, e)),
            },
            |cause| self.error("lock", stripe, cause),
        )
    }

    fn error(&self, op: &'static str, stripe: u32, source: io::Error) -> Error {
        Error::StripeLock {
            op,
            path: self.shared.path.clone(),
            stripe,
            source,
        }
    }

    fn guard(&self, thread: ThreadId, stripe: u32) -> StripeGuard<'_> {
        StripeGuard {
            locks: self,
            thread,
            stripe,
            not_send: PhantomData,
        }
    }

    fn release(&self, thread: ThreadId, stripe: u32) {
        let mut held = self.shared.held.lock();
        let Some(h) = held.get_mut(&(thread, stripe)) else {
            return;
        };
        h.depth -= 1;
        if h.depth == 0 {
            let gone = held.remove(&(thread, stripe));
            drop(held);
            if let Some(gone) = gone {
                // Unlock explicitly: a child forked without exec may share
                // the description, and closing ours alone would not release.
                // If this fails, closing releases it anyway.
                let _ = unlock_byte(&gone.file, u64::from(stripe));
            }
        }
    }
}

/// A held stripe of a [`StripeLocks`]; releases it when dropped (and the
/// kernel releases it if the process dies first).
///
/// Not `Send`: the stripe belongs to the thread that locked it.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 8)?;
/// assert_eq!(locks.lock(13)?.stripe(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StripeGuard<'a> {
    locks: &'a StripeLocks,
    thread: ThreadId,
    stripe: u32,
    not_send: PhantomData<*const ()>,
}

impl StripeGuard<'_> {
    /// The stripe held.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 8)?;
    /// assert_eq!(locks.lock(2)?.stripe(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn stripe(&self) -> u32 {
        self.stripe
    }
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        self.locks.release(self.thread, self.stripe);
    }
}

/// Attempts of [`StripeLocks::try_lock_owned`] when the lock file is
/// replaced under it.
const MAX_OWNED_TRIES: u32 = 4;

fn keep(shared: &Shared, file: Description) {
    let mut pool = shared.pool.lock();
    if pool.len() < POOL {
        pool.push(file);
    }
}

/// A stripe of a [`StripeLocks`] held by whoever owns this guard
/// ([`StripeLocks::try_lock_owned`]): `Send` and `'static`, unlike a
/// [`StripeGuard`]. It holds the stripe through an open file description
/// of its own, so it conflicts with every other holder, threads of this
/// process included; dropping it unlocks the stripe (and the kernel does,
/// if the process dies first).
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let locks = carboy::sync::StripeLocks::open(dir.path().join("l"), 8)?;
/// let owned = locks.try_lock_owned(13)?.expect("free");
/// assert_eq!(owned.stripe(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OwnedStripe {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    file: Option<Description>,
    stripe: u32,
}

impl OwnedStripe {
    /// The stripe held.
    #[must_use]
    pub fn stripe(&self) -> u32 {
        self.stripe
    }
}

impl Drop for OwnedStripe {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        // Unlock explicitly (a forked child may share the description);
        // a description that fails to unlock is closed, which releases it.
        if unlock_byte(&file.file, u64::from(self.stripe)).is_ok() {
            keep(&self.shared, file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{elsewhere, hammer, wait_until_blocked_on};
    use std::os::unix::fs::MetadataExt;
    use std::thread;

    fn open(dir: &tempfile::TempDir, stripes: u32) -> StripeLocks {
        StripeLocks::open(dir.path().join("ns.create-lock"), stripes).unwrap()
    }

    #[test]
    fn same_stripe_excludes_other_threads_different_stripes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        let held = locks.lock(5).unwrap();
        elsewhere(|| {
            assert!(locks.try_lock(5).unwrap().is_none(), "same hash");
            assert!(locks.try_lock(5 + 16).unwrap().is_none(), "same stripe");
            let other = locks.try_lock(6).unwrap();
            assert_eq!(other.map(|g| g.stripe()), Some(6), "another stripe");
        });
        drop(held);
        elsewhere(|| assert!(locks.try_lock(5).unwrap().is_some()));
        assert_eq!(std::fs::metadata(locks.path()).unwrap().len(), 0);
    }

    #[test]
    fn blocking_lock_excludes_threads() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 1024);
        let total = hammer(4, 100, |n, critical| {
            // A different hash each round, always stripe 7.
            let _g = locks.lock(7 + 1024 * n).unwrap();
            critical();
        });
        assert_eq!(total, 400);
        assert!(locks.shared.held.lock().is_empty());
    }

    #[test]
    fn a_thread_relocks_its_own_stripe_and_releases_on_the_last_guard() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 8);
        let outer = locks.lock(1).unwrap();
        let inner = locks.try_lock(9).unwrap().expect("own stripe refused");
        drop(outer);
        elsewhere(|| assert!(locks.try_lock(1).unwrap().is_none(), "released early"));
        drop(inner);
        elsewhere(|| assert!(locks.try_lock(1).unwrap().is_some(), "never released"));
    }

    #[test]
    fn stripe_counts_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let err = StripeLocks::open(dir.path().join("l"), 0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    name: "stripes",
                    ..
                }
            ),
            "{err:?}"
        );
        let locks = StripeLocks::open(dir.path().join("l"), 64).unwrap();
        let err = StripeLocks::open(dir.path().join("l"), 32).unwrap_err();
        assert!(err.to_string().contains("64 stripes"), "{err}");
        // The same count shares the state: nesting across handles works.
        let again = StripeLocks::open(dir.path().join("l"), 64).unwrap();
        let _a = locks.lock(3).unwrap();
        assert!(again.try_lock(3).unwrap().is_some());
        // Once every handle is gone, another count may be used.
        drop(_a);
        drop((locks, again));
        assert_eq!(
            StripeLocks::open(dir.path().join("l"), 32)
                .unwrap()
                .stripes(),
            32
        );
    }

    #[test]
    fn every_stripe_maps_to_its_own_byte() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 1024);
        let guards: Vec<_> = (0..1024).map(|h| locks.lock(h).unwrap()).collect();
        elsewhere(|| {
            for h in [0u64, 1, 511, 1023, 1024, 4095] {
                assert!(locks.try_lock(h).unwrap().is_none(), "hash {h}");
            }
        });
        drop(guards);
        elsewhere(|| assert!(locks.try_lock(1023).unwrap().is_some()));
    }

    #[test]
    fn a_waiter_moves_to_a_lock_file_replaced_while_it_waited() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        let old_inode = std::fs::metadata(locks.path()).unwrap().ino();
        // Another description holds stripe 2 of the current file.
        let holder = open_lock_file(locks.path()).unwrap();
        assert_eq!(lock_byte(&holder, 2, false).unwrap(), RangeLock::Acquired);
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _g = locks.lock(2).unwrap();
                // What the guard holds is the file now at the path.
                let now = open_lock_file(locks.path()).unwrap();
                lock_byte(&now, 2, false).unwrap()
            });
            wait_until_blocked_on(old_inode);
            // A cleaner removes the file, then the holder lets go: the
            // waiter gets the old file's lock, sees it is stale, and takes
            // the new file's.
            std::fs::remove_file(locks.path()).unwrap();
            drop(holder);
            assert_eq!(waiter.join().unwrap(), RangeLock::Busy);
        });
        assert!(locks.path().exists());
    }

    #[test]
    fn owned_stripes_conflict_with_thread_stripes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        // A thread's stripe makes the owned one busy, on this thread too.
        let held = locks.lock(5).unwrap();
        assert!(locks.try_lock_owned(5).unwrap().is_none(), "same thread");
        elsewhere(|| assert!(locks.try_lock_owned(21).unwrap().is_none()));
        assert_eq!(
            locks.try_lock_owned(6).unwrap().map(|g| g.stripe()),
            Some(6)
        );
        drop(held);
        // An owned stripe makes threads' and other owned attempts busy.
        let owned = locks.try_lock_owned(5).unwrap().expect("free again");
        assert!(locks.try_lock(5).unwrap().is_none(), "same thread");
        elsewhere(|| assert!(locks.try_lock(5).unwrap().is_none()));
        assert!(locks.try_lock_owned(5).unwrap().is_none());
        // Not in the reentrancy table.
        assert!(locks.shared.held.lock().is_empty());
        // Released on another thread, where the guard travelled.
        thread::spawn(move || drop(owned)).join().unwrap();
        elsewhere(|| assert!(locks.try_lock(5).unwrap().is_some()));
    }

    #[test]
    fn a_blocked_thread_gets_the_stripe_when_the_owned_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        let inode = std::fs::metadata(locks.path()).unwrap().ino();
        let owned = locks.try_lock_owned(2).unwrap().unwrap();
        thread::scope(|s| {
            let waiter = s.spawn(|| locks.lock(2).map(|g| g.stripe()).unwrap());
            wait_until_blocked_on(inode);
            drop(owned);
            assert_eq!(waiter.join().unwrap(), 2);
        });
    }

    #[test]
    fn owned_stripes_exclude_each_other_and_reuse_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 1024);
        let total = hammer(4, 100, |n, critical| {
            let g = loop {
                if let Some(g) = locks.try_lock_owned(7 + 1024 * n).unwrap() {
                    break g;
                }
                thread::yield_now();
            };
            critical();
            drop(g);
        });
        assert_eq!(total, 400);
        let pooled = locks.shared.pool.lock().len();
        assert!((1..=POOL).contains(&pooled), "{pooled} pooled");
        // Many at once: the pool keeps at most POOL.
        let many: Vec<_> = (0..40)
            .map(|h| locks.try_lock_owned(h).unwrap().unwrap())
            .collect();
        drop(many);
        assert_eq!(locks.shared.pool.lock().len(), POOL);
    }

    #[test]
    fn an_owned_stripe_moves_to_a_replaced_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        drop(locks.try_lock_owned(1).unwrap().unwrap());
        assert_eq!(locks.shared.pool.lock().len(), 1);
        // The pooled description is of the old file: the new one is taken.
        std::fs::remove_file(locks.path()).unwrap();
        let g = locks.try_lock_owned(1).unwrap().unwrap();
        let now = open_lock_file(locks.path()).unwrap();
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Busy);
        drop(g);
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Acquired);
    }

    #[test]
    fn an_owned_stripe_moves_to_a_lock_file_renamed_over_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        drop(locks.try_lock_owned(1).unwrap().unwrap());
        assert_eq!(locks.shared.pool.lock().len(), 1);
        // The file at the path is replaced by a rename: the pooled
        // description's file has no link left.
        let other = dir.path().join("replacement");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, locks.path()).unwrap();
        let g = locks.try_lock_owned(1).unwrap().unwrap();
        let now = open_lock_file(locks.path()).unwrap();
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Busy);
        drop(g);
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Acquired);
    }

    const _: () = {
        const fn send_and_static<T: Send + 'static>() {}
        send_and_static::<OwnedStripe>();
    };

    #[test]
    fn a_missing_directory_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let locks = StripeLocks::open(dir.path().join("locks/ns.create-lock"), 4).unwrap();
        std::fs::remove_dir_all(dir.path().join("locks")).unwrap();
        let g = locks.lock(0).unwrap();
        assert!(locks.path().exists());
        elsewhere(|| assert!(locks.try_lock(0).unwrap().is_none()));
        drop(g);
    }
}
