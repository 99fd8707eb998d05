//! [`StripeLocks`]: cross-process creation locks for the keys of a
//! namespace, a bounded number of byte-range locks on one lock file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::lock_files::{lock_current, open_lock_file, registry_key};
use super::sync_dict::WeakSyncDict;
use crate::error::{Error, Result};
use crate::file::{
    RangeLock, StripeWords, current_pid, file_id, lock_byte, range_lock_unsupported, unlock_byte,
};

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
    /// The words of the lock file last opened at the path.
    words: Mutex<Arc<StripeWords>>,
    /// Stripes kept locked between owned guards (the lease).
    idle: Mutex<Idle>,
}

impl Shared {
    /// The words of `file` (a description of the lock file): the ones
    /// mapped already if it is the same file, else a new mapping.
    fn words_for(&self, file: &File) -> Result<Arc<StripeWords>> {
        let id = file_id(file).map_err(|e| Error::io("stat lock file", &self.path, e))?;
        let mut current = self.words.lock();
        if current.id() != id {
            *current = Arc::new(
                StripeWords::map(file, self.stripes)
                    .map_err(|e| Error::io("map lock file", &self.path, e))?,
            );
        }
        Ok(Arc::clone(&current))
    }

    /// An unlocked description of the lock file from the pool, if it holds
    /// one of this process.
    fn pooled(&self) -> Option<Description> {
        let file = self.pool.lock().pop()?;
        if file.pid == current_pid() {
            return Some(file);
        }
        self.forget_inherited();
        None
    }

    /// In a child forked without exec: forgets the descriptions and idle
    /// stripes of the parent, without unlocking anything (they are the
    /// parent's locks; closing our copies of its descriptions leaves them).
    fn forget_inherited(&self) {
        let pid = current_pid();
        self.pool.lock().retain(|d| d.pid == pid);
        let mut idle = self.idle.lock();
        idle.stripes.retain(|_, i| i.file.pid == pid);
        if idle.thread != Some(pid) {
            idle.thread = None;
        }
    }
}

/// The stripes this process keeps locked while no guard uses them.
#[derive(Debug, Default)]
struct Idle {
    stripes: HashMap<u32, IdleStripe>,
    /// The process whose lease thread runs (a forked child has none).
    thread: Option<u32>,
}

#[derive(Debug)]
struct IdleStripe {
    /// The description that holds the stripe's byte.
    file: Description,
    /// Idle at the lease thread's last periodic look.
    looked: bool,
}

/// An open description of the lock file.
#[derive(Debug)]
struct Description {
    file: File,
    /// The process that opened it: a child forked without exec shares its
    /// parent's descriptions, and must not use them as its own.
    pid: u32,
    /// The words of the file it describes.
    words: Arc<StripeWords>,
}

impl Description {
    fn open(shared: &Shared) -> Result<Description> {
        let file = open_lock_file(&shared.path)?;
        let words = shared.words_for(&file)?;
        Ok(Description {
            file,
            pid: current_pid(),
            words,
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
        // A plain `fstat` (std's metadata asks `statx` for more, slower).
        match rustix::fs::fstat(&self.file) {
            Ok(stat) => Ok(stat.st_nlink > 0),
            Err(e) => Err(Error::io("stat lock file", path, e.into())),
        }
    }
}

/// How many unlocked descriptions a lock file keeps for owned stripes:
/// about the number of stripes a process holds at once as owned guards.
const POOL: usize = 16;

/// How many stripes a lock file keeps idle at most (each on a description
/// of its own: one open file each). Past it, a released stripe is unlocked.
const IDLE_MAX: usize = 32;

/// How long a non-blocking try waits for a process that holds the stripe
/// idle to give it up, before answering busy. The holder's lease thread
/// answers in about a thread wake-up; this bounds the wait when that
/// process is stopped or starved.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// How often a lease thread looks at its idle stripes when nothing wakes
/// it; a stripe idle at two looks in a row is unlocked, so an idle lease
/// lasts at most about twice this once nobody uses the stripe here (what a
/// process that does not announce itself, such as an older carboy, waits
/// at worst).
const LEASE_POLL: Duration = Duration::from_secs(1);

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
/// The file holds one page of shared words per 512 stripes (see
/// *Leases*); the locks are on its first bytes.
///
/// **Owned stripes.** [`try_lock_owned`](Self::try_lock_owned) takes a
/// stripe without waiting and hands back an [`OwnedStripe`] that is `Send`
/// and `'static`: it belongs to no thread (an async task keeps it across
/// worker threads). It has an open file description of its own, so it
/// conflicts with every thread's stripe and every other owned stripe, in
/// this process or another; it is not counted in a thread's reentrancy (a
/// thread that holds an owned stripe and then locks the same stripe with
/// [`lock`](Self::lock) waits for it, like anyone else).
///
/// **Leases.** A dropped owned stripe that nobody waits for is not
/// unlocked: this process keeps it locked and *idle* (up to 32 stripes per
/// lock file, one open file each), and the next owned stripe or thread of
/// this process that wants it takes it over with no locking call. Another
/// process never waits long for it:
///
/// * whoever is about to block on a stripe counts itself in the stripe's
///   `wanted` word of the lock file and wakes the holders' lease threads,
///   and a holder that finds a stripe wanted unlocks it, at the end of its
///   use or at once if it is idle;
/// * a non-blocking try ([`try_lock`](Self::try_lock),
///   [`try_lock_owned`](Self::try_lock_owned)) that finds the stripe held
///   looks at its `idle` word; if the holder says it keeps it idle, the try
///   asks it to let go the same way and waits for the byte, up to 50 ms
///   (the holder's lease thread answers in about a thread wake-up), so
///   busy still means *in use*;
/// * a stripe idle at two looks of the lease thread in a row, about a
///   second apart, is unlocked (what a process that does not announce
///   itself, such as an older carboy, waits at worst);
/// * a holder that dies releases its locks with its descriptions, as any
///   holder; its `idle` marks are cleared by the next process to lock the
///   stripe.
///
/// Take-over checks that the lock file is still linked, as a fresh lock
/// does. A child forked without exec shares its parent's descriptions, so
/// it never takes over or unlocks its parent's idle stripes (it tells them
/// apart by process id, cached and reset in the child by a fork handler).
/// A process stopped (`SIGSTOP`) while it keeps a stripe idle delays
/// another process's lock of that stripe until it runs again, as if it
/// held it; a try gives up after 50 ms and answers busy.
///
/// **Cost.** An owned stripe taken over from this process's lease: no
/// locking call, one `fstat`; released while nobody waits: no system call.
/// Otherwise an acquisition that misses this thread's held stripes costs
/// an `open` (unless a description is pooled), one `fcntl`, and one or two
/// `stat`s, and its release an `fcntl`: about 5 µs uncontended on a 2-core
/// VM for a thread's stripe, 1.5 µs for an owned one.
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
            let file = open_lock_file(&path)?;
            let words = StripeWords::map(&file, stripes)
                .map_err(|e| Error::io("map lock file", &path, e))?;
            Ok::<_, Error>(Shared {
                path: path.clone(),
                stripes,
                held: Mutex::new(HashMap::new()),
                pool: Mutex::new(Vec::new()),
                words: Mutex::new(Arc::new(words)),
                idle: Mutex::new(Idle::default()),
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
    /// another thread or process does (one that keeps it idle is asked to
    /// let go and waited for, up to 50 ms: see *Leases*).
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
    /// holds it in use. Dropping the guard releases it (kept idle for the
    /// next use here while nobody waits: see *Leases* at [`StripeLocks`]).
    ///
    /// Never waits for a holder that uses the stripe; waits up to 50 ms
    /// for another process that keeps it idle to let go. A stripe kept
    /// idle here: taken over with one `fstat` (is the lock file still
    /// linked?). Otherwise one non-blocking `fcntl` and one `fstat`, plus
    /// an `open` when no description is pooled.
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
        Ok(match self.owned_attempt(hash, true)? {
            OwnedTry::Held(owned) => Some(owned),
            OwnedTry::Busy | OwnedTry::Leased => None,
        })
    }

    /// As [`try_lock_owned`](Self::try_lock_owned), but never waits, not
    /// even for another process that keeps the stripe idle: that answer is
    /// [`OwnedTry::Leased`], and a [`lock`](Self::lock) or
    /// [`try_lock`](Self::try_lock) on a thread that may wait gets the
    /// stripe shortly. For callers that must not block, such as an async
    /// task on a runtime's worker.
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use carboy::sync::{OwnedTry, StripeLocks};
    /// let dir = tempfile::tempdir()?;
    /// let locks = StripeLocks::open(dir.path().join("l"), 16)?;
    /// let OwnedTry::Held(owned) = locks.try_lock_owned_now(3)? else { panic!("free") };
    /// assert!(matches!(locks.try_lock_owned_now(19)?, OwnedTry::Busy));
    /// drop(owned);
    /// assert!(matches!(locks.try_lock_owned_now(3)?, OwnedTry::Held(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock_owned_now(&self, hash: u64) -> Result<OwnedTry> {
        self.owned_attempt(hash, false)
    }

    /// An owned stripe of `hash`, waiting up to [`IDLE_WAIT`] for another
    /// process that keeps it idle if `wait_idle`.
    fn owned_attempt(&self, hash: u64, wait_idle: bool) -> Result<OwnedTry> {
        let stripe = self.stripe_for(hash);
        let owned = |file| {
            Ok(OwnedTry::Held(OwnedStripe {
                shared: Arc::clone(&self.shared),
                file: Some(file),
                stripe,
            }))
        };
        if let Some(file) = take_idle(&self.shared, stripe)? {
            return owned(file);
        }
        let path = &self.shared.path;
        let mut pooled = self.shared.pooled();
        for _ in 0..MAX_OWNED_TRIES {
            let file = match pooled.take() {
                Some(file) => file,
                None => Description::open(&self.shared)?,
            };
            let got = match lock_byte(&file.file, u64::from(stripe), false) {
                Ok(RangeLock::Acquired) => true,
                Ok(RangeLock::Busy) => {
                    let holder = file.words.idle_holder(stripe);
                    if holder == current_pid() {
                        // Kept idle here since we looked: take it over.
                        self.keep(file);
                        return match take_idle(&self.shared, stripe)? {
                            Some(idle) => owned(idle),
                            None => Ok(OwnedTry::Busy),
                        };
                    }
                    if !wait_idle {
                        self.keep(file);
                        return Ok(if holder != 0 {
                            OwnedTry::Leased
                        } else {
                            OwnedTry::Busy
                        });
                    }
                    wait_for_idle_holder(&file.file, &file.words, stripe)
                        .map_err(|e| self.lock_failed(stripe, e))?
                }
                Err(e) => return Err(self.lock_failed(stripe, e)),
            };
            if !got {
                self.keep(file);
                return Ok(OwnedTry::Busy);
            }
            if file.still_linked(path)? {
                file.words.clear_stale(stripe);
                return owned(file);
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
        let file = match take_idle(&self.shared, stripe)? {
            Some(idle) => idle.file,
            None => match self.lock_stripe(stripe, wait)? {
                Some(file) => file,
                None => return Ok(None),
            },
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
        let byte = u64::from(stripe);
        let file = lock_current(
            path,
            |file| {
                let locked = match lock_byte(file, byte, false) {
                    Ok(RangeLock::Busy) => {
                        // Held elsewhere: ask a holder that keeps it idle
                        // to let go, then wait (or not) for it.
                        let words = self.shared.words_for(file)?;
                        if wait {
                            words.announce(stripe);
                            let waited = lock_byte(file, byte, true);
                            words.unannounce(stripe);
                            waited
                        } else {
                            match wait_for_idle_holder(file, &words, stripe) {
                                Ok(true) => Ok(RangeLock::Acquired),
                                Ok(false) => Ok(RangeLock::Busy),
                                Err(e) => Err(e),
                            }
                        }
                    }
                    other => other,
                };
                match locked {
                    Ok(RangeLock::Acquired) => Ok(true),
                    Ok(RangeLock::Busy) => Ok(false),
                    Err(e) => Err(self.lock_failed(stripe, e)),
                }
            },
            |cause| self.error("lock", stripe, cause),
        )?;
        if let Some(file) = &file {
            // Ours now: whatever a holder that died left in the words goes.
            self.shared.words_for(file)?.clear_stale(stripe);
        }
        Ok(file)
    }

    /// The error of a locking call on `stripe` that failed with `e`: the
    /// lock kind missing here, or the call's own failure.
    fn lock_failed(&self, stripe: u32, e: io::Error) -> Error {
        if range_lock_unsupported(&e) {
            return Error::LockUnsupported {
                path: self.shared.path.clone(),
                what: "open file description byte-range lock",
                source: e,
            };
        }
        self.error("lock", stripe, e)
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

/// What [`StripeLocks::try_lock_owned_now`] answers.
#[derive(Debug)]
pub enum OwnedTry {
    /// The stripe, held until the guard is dropped.
    Held(OwnedStripe),
    /// A thread or task of this process, or another process, uses it.
    Busy,
    /// Another process holds it but does not use it now (it keeps it idle
    /// after use: see *Leases* at [`StripeLocks`]). A thread that waits for
    /// it, or a [`StripeLocks::try_lock`], asks that process to let go and
    /// gets it shortly.
    Leased,
}

/// A stripe of a [`StripeLocks`] held by whoever owns this guard
/// ([`StripeLocks::try_lock_owned`]): `Send` and `'static`, unlike a
/// [`StripeGuard`]. It holds the stripe through an open file description
/// of its own, so it conflicts with every other holder, threads of this
/// process included; dropping it releases the stripe: unlocked if anyone
/// waits for it, else kept locked and idle for this process's next use
/// (see *Leases* at [`StripeLocks`]); the kernel unlocks it if the process
/// dies first.
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
        release_owned(&self.shared, file, self.stripe);
    }
}

/// Takes over `stripe` if this process keeps it idle: no locking call,
/// one `fstat` (is the file still linked, as for a fresh lock?).
fn take_idle(shared: &Shared, stripe: u32) -> Result<Option<Description>> {
    let mut idle = shared.idle.lock();
    if idle.stripes.is_empty() {
        return Ok(None);
    }
    let Some(taken) = idle.stripes.remove(&stripe) else {
        return Ok(None);
    };
    drop(idle);
    let pid = current_pid();
    if taken.file.pid != pid {
        // A forked child's copy of its parent's lease: not ours.
        shared.forget_inherited();
        return Ok(None);
    }
    taken.file.words.clear_idle(stripe, pid);
    if taken.file.still_linked(&shared.path)? {
        return Ok(Some(taken.file));
    }
    // The lock file was removed or replaced since: closing the description
    // releases its lock on the old file, and the caller locks the new one.
    shared.pool.lock().clear();
    Ok(None)
}

/// Releases an owned stripe: keeps it locked and idle (the lease) while
/// nobody waits for it and the lease thread runs, else unlocks it.
fn release_owned(shared: &Arc<Shared>, file: Description, stripe: u32) {
    let pid = current_pid();
    if file.pid != pid {
        // Made before a fork, dropped in the child: the lock is the
        // parent's, which unlocks it; closing our copy leaves it.
        return;
    }
    {
        let mut idle = shared.idle.lock();
        if idle.stripes.len() < IDLE_MAX
            && !file.words.wanted(stripe)
            && start_lease_thread(shared, &mut idle, pid)
        {
            file.words.set_idle(stripe, pid);
            idle.stripes.insert(
                stripe,
                IdleStripe {
                    file,
                    looked: false,
                },
            );
            return;
        }
    }
    // Unlock explicitly (a forked child may share the description); a
    // description that fails to unlock is closed, which releases it.
    if unlock_byte(&file.file, u64::from(stripe)).is_ok() {
        keep(shared, file);
    }
}

/// With `idle` locked: makes sure this process's lease thread runs; false
/// if none could be started (then nothing is kept idle).
fn start_lease_thread(shared: &Arc<Shared>, idle: &mut Idle, pid: u32) -> bool {
    if idle.thread == Some(pid) {
        return true;
    }
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("carboy-stripes".into())
        .spawn(move || lease_thread(weak));
    if spawned.is_ok() {
        idle.thread = Some(pid);
    }
    spawned.is_ok()
}

/// Unlocks the idle stripes that someone waits for, at once (a waiter's
/// announcement wakes it), and, at a look every [`LEASE_POLL`], those idle
/// since the previous look and all of them if the lock file was removed or
/// replaced. Exits once nothing is idle (the next lease starts it again) or
/// every [`StripeLocks`] of the file is gone (closing the descriptions
/// released their locks).
fn lease_thread(weak: Weak<Shared>) {
    let mut last_look = Instant::now();
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let words = Arc::clone(&shared.words.lock());
        let seen = words.seq();
        let look = last_look.elapsed() >= LEASE_POLL;
        if look {
            last_look = Instant::now();
        }
        let pid = current_pid();
        let mut idle = shared.idle.lock();
        let replaced = look
            && idle
                .stripes
                .values()
                .next()
                .is_some_and(|i| !i.file.still_linked(&shared.path).unwrap_or(false));
        let go: Vec<u32> = idle
            .stripes
            .iter()
            .filter(|(s, i)| replaced || i.file.words.wanted(**s) || (look && i.looked))
            .map(|(s, _)| *s)
            .collect();
        for stripe in go {
            if let Some(gone) = idle.stripes.remove(&stripe) {
                // Unlocked first, then said: a waiter woken by the word
                // finds the byte free.
                let unlocked = unlock_byte(&gone.file.file, u64::from(stripe)).is_ok();
                gone.file.words.clear_idle(stripe, pid);
                if unlocked && !replaced {
                    keep(&shared, gone.file);
                }
            }
        }
        if replaced {
            shared.pool.lock().clear();
        }
        if look {
            for i in idle.stripes.values_mut() {
                i.looked = true;
            }
        }
        if idle.stripes.is_empty() {
            idle.thread = None;
            return;
        }
        drop(idle);
        drop(shared);
        words.wait_seq(seen, LEASE_POLL);
    }
}

/// After a non-blocking try found `stripe` busy: if the process holding
/// it says it keeps it idle, asks it to let go (counts this caller as
/// waiting, waking its lease thread) and waits up to [`IDLE_WAIT`] for the
/// byte. True once `file` holds it; false if the holder uses it (or took
/// it back), or did not let go in time.
fn wait_for_idle_holder(file: &File, words: &StripeWords, stripe: u32) -> io::Result<bool> {
    let me = current_pid();
    let holder = words.idle_holder(stripe);
    if holder == 0 || holder == me {
        return Ok(false);
    }
    let byte = u64::from(stripe);
    words.announce(stripe);
    let deadline = Instant::now() + IDLE_WAIT;
    let got = loop {
        let holder = words.idle_holder(stripe);
        if holder == 0 {
            // Given up (the byte is free) or taken back into use (busy).
            break lock_byte(file, byte, false).map(|r| r == RangeLock::Acquired);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Ok(false);
        }
        // Woken when the word changes; a holder that died idle leaves it
        // as it was, so the byte is tried again every millisecond.
        words.wait_idle(stripe, holder, left.min(Duration::from_millis(1)));
        match lock_byte(file, byte, false) {
            Ok(RangeLock::Acquired) => break Ok(true),
            Ok(RangeLock::Busy) => {}
            Err(e) => break Err(e),
        }
    };
    words.unannounce(stripe);
    got
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
        // One page of words (16 stripes); the locks lie on bytes 0..16.
        assert_eq!(std::fs::metadata(locks.path()).unwrap().len(), 4096);
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
            // Blocked in the kernel, announced: the release must unlock
            // rather than keep the stripe idle.
            let waiter = s.spawn(|| locks.lock(2).map(|g| g.stripe()).unwrap());
            wait_until_blocked_on(inode);
            drop(owned);
            assert_eq!(waiter.join().unwrap(), 2);
        });
        assert!(locks.shared.idle.lock().stripes.is_empty());
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
        // Released owned stripes stay locked and idle (one here), their
        // descriptions kept; the others' unlocked descriptions are pooled.
        assert_eq!(locks.shared.idle.lock().stripes.len(), 1);
        let pooled = locks.shared.pool.lock().len();
        assert!(pooled <= POOL, "{pooled} pooled");
        // Many at once: at most IDLE_MAX stay idle, at most POOL pooled.
        let many: Vec<_> = (0..IDLE_MAX as u64 + POOL as u64 + 8)
            .map(|h| locks.try_lock_owned(h).unwrap().unwrap())
            .collect();
        drop(many);
        assert_eq!(locks.shared.idle.lock().stripes.len(), IDLE_MAX);
        assert_eq!(locks.shared.pool.lock().len(), POOL);
    }

    #[test]
    fn a_released_owned_stripe_stays_locked_until_taken_again_here() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        let raw = open_lock_file(locks.path()).unwrap();
        drop(locks.try_lock_owned(3).unwrap().unwrap());
        // Still locked for any other description, and marked idle.
        assert_eq!(lock_byte(&raw, 3, false).unwrap(), RangeLock::Busy);
        let words = Arc::clone(&locks.shared.words.lock());
        assert_eq!(words.idle_holder(3), current_pid());
        // Taken over here, by an owned stripe or a thread: no longer idle.
        let again = locks.try_lock_owned(3).unwrap().unwrap();
        assert_eq!(words.idle_holder(3), 0);
        assert!(locks.shared.idle.lock().stripes.is_empty());
        assert!(locks.try_lock_owned(3).unwrap().is_none(), "taken twice");
        drop(again);
        let thread = locks.try_lock(3).unwrap().expect("idle stripe refused");
        assert!(locks.shared.idle.lock().stripes.is_empty());
        assert_eq!(lock_byte(&raw, 3, false).unwrap(), RangeLock::Busy);
        // A thread's stripe is unlocked on release, not kept idle.
        drop(thread);
        assert_eq!(lock_byte(&raw, 3, false).unwrap(), RangeLock::Acquired);
    }

    #[test]
    fn an_owned_stripe_moves_to_a_replaced_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        drop(locks.try_lock_owned(1).unwrap().unwrap());
        drop(locks.try_lock_owned(2).unwrap().unwrap());
        assert_eq!(locks.shared.idle.lock().stripes.len(), 2);
        // The idle descriptions are of the old file: the new one is taken.
        std::fs::remove_file(locks.path()).unwrap();
        let g = locks.try_lock_owned(1).unwrap().unwrap();
        let now = open_lock_file(locks.path()).unwrap();
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Busy);
        drop(g);
        // Kept idle, on the new file, with its words.
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Busy);
        let words = Arc::clone(&locks.shared.words.lock());
        assert_eq!(words.id(), file_id(&now).unwrap());
        assert_eq!(words.idle_holder(1), current_pid());
        // Stripe 2's idle lease on the old file is not taken over either.
        let g2 = locks.try_lock_owned(2).unwrap().unwrap();
        assert_eq!(lock_byte(&now, 2, false).unwrap(), RangeLock::Busy);
        drop(g2);
    }

    #[test]
    fn an_owned_stripe_moves_to_a_lock_file_renamed_over_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let locks = open(&dir, 16);
        drop(locks.try_lock_owned(1).unwrap().unwrap());
        assert_eq!(locks.shared.idle.lock().stripes.len(), 1);
        // The file at the path is replaced by a rename: the pooled
        // description's file has no link left.
        let other = dir.path().join("replacement");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, locks.path()).unwrap();
        let g = locks.try_lock_owned(1).unwrap().unwrap();
        let now = open_lock_file(locks.path()).unwrap();
        assert_eq!(lock_byte(&now, 1, false).unwrap(), RangeLock::Busy);
        drop(g);
        let words = Arc::clone(&locks.shared.words.lock());
        assert_eq!(words.id(), file_id(&now).unwrap());
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
