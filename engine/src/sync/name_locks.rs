//! Locks looked up by name, inside one process: Beaker's `NameLock` and
//! its weak-valued registry.
//!
//! Each registry maps a name to a lock that exists only while something
//! uses it: a guard, or a thread waiting for one. The entry is removed when
//! the last of them goes, so a registry of short-lived names (one per cache
//! key, say) holds only the names in use, never all names ever locked.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::lock_api::ArcReentrantMutexGuard;
use parking_lot::{Mutex, RawMutex, RawThreadId, ReentrantMutex};

use super::reentrant_rw::{ReentrantRwLock, Upgrade};
use crate::error::{Error, Result};

/// Name to lock, holding each lock while anyone uses it.
#[derive(Debug)]
struct Registry<L> {
    map: Mutex<HashMap<Arc<str>, Arc<L>>>,
}

impl<L: Default> Registry<L> {
    fn new() -> Self {
        Registry {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The lock named `name`, made if nobody uses one by that name.
    fn acquire(&self, name: &str) -> (Arc<str>, Arc<L>) {
        let mut map = self.map.lock();
        if let Some((key, lock)) = map.get_key_value(name) {
            return (Arc::clone(key), Arc::clone(lock));
        }
        let key: Arc<str> = Arc::from(name);
        let lock = Arc::new(L::default());
        map.insert(Arc::clone(&key), Arc::clone(&lock));
        (key, lock)
    }

    /// Gives back a reference that [`acquire`](Self::acquire) handed out;
    /// drops the entry if it was the last one outside the map.
    ///
    /// References come from the map only under its mutex, which this holds
    /// while it counts (other clones are made from a reference already
    /// counted): a count of 1 means nobody but the map can hold the lock or
    /// get it, so the entry can go.
    fn release(&self, name: &str, lock: Arc<L>) {
        let mut map = self.map.lock();
        drop(lock);
        if map
            .get(name)
            .is_some_and(|entry| Arc::strong_count(entry) == 1)
        {
            map.remove(name);
        }
    }

    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Reentrant mutexes looked up by name (Beaker's `NameLock(name,
/// reentrant=True)`), for threads of one process.
///
/// Threads that lock the same name exclude each other; a thread that holds
/// a name may lock it again (each guard releases one level). Different names
/// never conflict. A name's lock exists only while a guard holds it or a
/// thread waits for it, so the registry holds no more entries than names in
/// use.
///
/// For processes, use [`FileLock`](super::FileLock) or
/// [`StripeLocks`](super::StripeLocks).
///
/// # Examples
///
/// ```
/// use carboy::sync::NameLocks;
///
/// let locks = NameLocks::new();
/// let outer = locks.lock("user:1");
/// let inner = locks.lock("user:1"); // the same thread: no deadlock
/// assert!(locks.try_lock("user:2").is_some()); // another name is free
/// assert_eq!(locks.len(), 1);
/// drop((inner, outer));
/// assert!(locks.is_empty()); // nothing is kept for names no one uses
/// ```
#[derive(Debug)]
pub struct NameLocks {
    registry: Registry<ReentrantMutex<()>>,
}

impl Default for NameLocks {
    fn default() -> Self {
        NameLocks::new()
    }
}

impl NameLocks {
    /// An empty registry. For one shared by a whole process, put it in a
    /// `static` (`static LOCKS: LazyLock<NameLocks> = LazyLock::new(NameLocks::new);`).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameLocks::new();
    /// assert!(locks.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> NameLocks {
        NameLocks {
            registry: Registry::new(),
        }
    }

    /// Locks `name`, waiting while another thread holds it. Returns at once
    /// if this thread already holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameLocks::new();
    /// let guard = locks.lock("report");
    /// assert_eq!(guard.name(), "report");
    /// ```
    pub fn lock(&self, name: &str) -> NameGuard<'_> {
        let (key, lock) = self.registry.acquire(name);
        let guard = ReentrantMutex::lock_arc(&lock);
        self.registry.release(name, lock);
        NameGuard {
            locks: self,
            name: key,
            guard: Some(guard),
        }
    }

    /// Locks `name` if no other thread holds it; `None` if one does.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameLocks::new();
    /// let held = locks.lock("report");
    /// let busy = std::thread::scope(|s| s.spawn(|| locks.try_lock("report").is_none()).join());
    /// assert!(busy.unwrap());
    /// ```
    pub fn try_lock(&self, name: &str) -> Option<NameGuard<'_>> {
        let (key, lock) = self.registry.acquire(name);
        let guard = ReentrantMutex::try_lock_arc(&lock);
        self.registry.release(name, lock);
        Some(NameGuard {
            locks: self,
            name: key,
            guard: Some(guard?),
        })
    }

    /// Names whose lock is in use (held or waited for).
    #[must_use]
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// True when no name's lock is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A held name lock of a [`NameLocks`]; unlocks one level when dropped.
///
/// Not `Send`: the lock belongs to the thread that took it.
///
/// # Examples
///
/// ```
/// let locks = carboy::sync::NameLocks::new();
/// {
///     let _guard = locks.lock("a");
///     assert_eq!(locks.len(), 1);
/// }
/// assert_eq!(locks.len(), 0);
/// ```
pub struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: Arc<str>,
    guard: Option<ArcReentrantMutexGuard<RawMutex, RawThreadId, ()>>,
}

impl NameGuard<'_> {
    /// The name locked.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for NameGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameGuard")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            // Unlock first, then give the registry's reference back.
            let lock = Arc::clone(ArcReentrantMutexGuard::remutex(&guard));
            drop(guard);
            self.locks.registry.release(&self.name, lock);
        }
    }
}

/// Reentrant read/write locks looked up by name, for threads of one
/// process.
///
/// Many threads may read a name at once; a writer excludes everyone else. A
/// thread may take a name again in the same mode, and may read a name it
/// writes; asking to write a name it only reads is refused with
/// [`Error::LockUpgrade`] (the write would wait for its own read). A waiting
/// writer holds back threads that do not read yet. Entries last only while
/// used, as in [`NameLocks`].
///
/// # Examples
///
/// ```
/// use carboy::sync::NameRwLocks;
///
/// let locks = NameRwLocks::new();
/// let r1 = locks.read("config");
/// let r2 = std::thread::scope(|s| s.spawn(|| locks.try_read("config").is_some()).join());
/// assert!(r2.unwrap()); // readers share
/// assert!(locks.write("config").is_err()); // this thread reads: no upgrade
/// drop(r1);
/// let w = locks.write("config")?;
/// let _r = locks.read("config"); // reading under one's own write is fine
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Debug)]
pub struct NameRwLocks {
    registry: Registry<ReentrantRwLock>,
}

impl Default for NameRwLocks {
    fn default() -> Self {
        NameRwLocks::new()
    }
}

/// Which side of a read/write lock a guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

impl NameRwLocks {
    /// An empty registry.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(carboy::sync::NameRwLocks::new().is_empty());
    /// ```
    #[must_use]
    pub fn new() -> NameRwLocks {
        NameRwLocks {
            registry: Registry::new(),
        }
    }

    /// Read-locks `name`, waiting while a writer holds it (or waits for it,
    /// unless this thread already reads it).
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameRwLocks::new();
    /// let a = locks.read("n");
    /// let b = locks.read("n");
    /// assert_eq!(locks.len(), 1);
    /// ```
    pub fn read(&self, name: &str) -> NameRwGuard<'_> {
        let me = std::thread::current().id();
        let (key, lock) = self.registry.acquire(name);
        lock.read(me);
        self.guard(key, lock, me, Side::Read)
    }

    /// Read-locks `name` if that needs no wait; `None` otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameRwLocks::new();
    /// let _w = locks.write("n")?;
    /// let other = std::thread::scope(|s| s.spawn(|| locks.try_read("n").is_none()).join());
    /// assert!(other.unwrap());
    /// # Ok::<(), carboy::Error>(())
    /// ```
    pub fn try_read(&self, name: &str) -> Option<NameRwGuard<'_>> {
        let me = std::thread::current().id();
        let (key, lock) = self.registry.acquire(name);
        if lock.try_read(me) {
            Some(self.guard(key, lock, me, Side::Read))
        } else {
            self.registry.release(name, lock);
            None
        }
    }

    /// Write-locks `name`, waiting while anyone else holds it. Returns at
    /// once if this thread already writes it.
    ///
    /// # Errors
    ///
    /// [`Error::LockUpgrade`] if this thread reads `name` without writing it.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameRwLocks::new();
    /// let w = locks.write("n")?;
    /// let again = locks.write("n")?;
    /// # Ok::<(), carboy::Error>(())
    /// ```
    pub fn write(&self, name: &str) -> Result<NameRwGuard<'_>> {
        let me = std::thread::current().id();
        let (key, lock) = self.registry.acquire(name);
        match lock.write(me) {
            Ok(()) => Ok(self.guard(key, lock, me, Side::Write)),
            Err(Upgrade) => {
                self.registry.release(name, lock);
                Err(upgrade_error(name))
            }
        }
    }

    /// Write-locks `name` if that needs no wait; `Ok(None)` otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::LockUpgrade`] if this thread reads `name` without writing it.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameRwLocks::new();
    /// let _r = locks.read("n");
    /// let busy = std::thread::scope(|s| s.spawn(|| locks.try_write("n").map(|g| g.is_none())).join());
    /// assert!(busy.unwrap()?);
    /// # Ok::<(), carboy::Error>(())
    /// ```
    pub fn try_write(&self, name: &str) -> Result<Option<NameRwGuard<'_>>> {
        let me = std::thread::current().id();
        let (key, lock) = self.registry.acquire(name);
        match lock.try_write(me) {
            Ok(true) => Ok(Some(self.guard(key, lock, me, Side::Write))),
            Ok(false) => {
                self.registry.release(name, lock);
                Ok(None)
            }
            Err(Upgrade) => {
                self.registry.release(name, lock);
                Err(upgrade_error(name))
            }
        }
    }

    fn guard(
        &self,
        name: Arc<str>,
        lock: Arc<ReentrantRwLock>,
        thread: ThreadId,
        side: Side,
    ) -> NameRwGuard<'_> {
        NameRwGuard {
            locks: self,
            name,
            lock: Some(lock),
            thread,
            side,
            not_send: PhantomData,
        }
    }

    /// Names whose lock is in use (held or waited for).
    #[must_use]
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// True when no name's lock is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn upgrade_error(name: &str) -> Error {
    Error::LockUpgrade {
        lock: format!("name lock {name:?}"),
    }
}

/// A held read or write lock of a [`NameRwLocks`]; releases it when dropped.
///
/// Not `Send`: the lock belongs to the thread that took it.
///
/// # Examples
///
/// ```
/// let locks = carboy::sync::NameRwLocks::new();
/// let guard = locks.read("a");
/// assert!(!guard.is_write());
/// assert_eq!(guard.name(), "a");
/// ```
pub struct NameRwGuard<'a> {
    locks: &'a NameRwLocks,
    name: Arc<str>,
    lock: Option<Arc<ReentrantRwLock>>,
    thread: ThreadId,
    side: Side,
    not_send: PhantomData<*const ()>,
}

impl NameRwGuard<'_> {
    /// The name locked.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a write lock, false for a read lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let locks = carboy::sync::NameRwLocks::new();
    /// assert!(locks.write("a")?.is_write());
    /// # Ok::<(), carboy::Error>(())
    /// ```
    #[must_use]
    pub fn is_write(&self) -> bool {
        self.side == Side::Write
    }
}

impl std::fmt::Debug for NameRwGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameRwGuard")
            .field("name", &self.name)
            .field("side", &self.side)
            .finish()
    }
}

impl Drop for NameRwGuard<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            match self.side {
                Side::Read => lock.release_read(self.thread),
                Side::Write => lock.release_write(self.thread),
            }
            self.locks.registry.release(&self.name, lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use crate::sync::test_support::hammer;

    #[test]
    fn name_locks_exclude_threads_of_one_name() {
        let locks = NameLocks::new();
        let total = hammer(4, 300, |_, critical| {
            let _guard = locks.lock("counter");
            critical();
        });
        assert_eq!(total, 1200);
        assert!(locks.is_empty(), "{} entries left", locks.len());
    }

    #[test]
    fn name_locks_are_reentrant_and_release_in_any_order() {
        let locks = NameLocks::new();
        let a = locks.lock("k");
        let b = locks.try_lock("k").expect("the holder may take it again");
        let c = locks.lock("k");
        let busy = |locks: &NameLocks| {
            thread::scope(|s| s.spawn(|| locks.try_lock("k").is_none()).join().unwrap())
        };
        drop(a);
        assert!(busy(&locks), "released after one of three guards");
        drop(c);
        assert!(busy(&locks), "released after two of three guards");
        drop(b);
        assert!(!busy(&locks), "still held after every guard was dropped");
        assert!(locks.is_empty());
    }

    #[test]
    fn different_names_do_not_conflict_and_entries_go_when_unused() {
        let locks = NameLocks::new();
        let guards: Vec<_> = (0..100).map(|i| locks.lock(&format!("key:{i}"))).collect();
        assert_eq!(locks.len(), 100);
        let free = thread::scope(|s| {
            s.spawn(|| locks.try_lock("key:100").is_some())
                .join()
                .unwrap()
        });
        assert!(free);
        drop(guards);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn a_waiting_thread_keeps_the_entry_and_gets_the_same_lock() {
        let locks = NameLocks::new();
        let held = locks.lock("k");
        let (tx, rx) = mpsc::channel();
        thread::scope(|s| {
            s.spawn(|| {
                let _g = locks.lock("k");
                tx.send(()).unwrap();
            });
            // The waiter holds a reference, so the entry survives our drop
            // and the waiter wakes on the lock we release.
            assert!(rx.try_recv().is_err());
            drop(held);
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the waiter never got the lock");
        });
        assert!(locks.is_empty());
    }

    #[test]
    fn rw_readers_share_and_writers_exclude() {
        let locks = NameRwLocks::new();
        let r = locks.read("n");
        thread::scope(|s| {
            s.spawn(|| {
                let shared = locks.try_read("n");
                assert!(shared.is_some(), "a second reader was refused");
                drop(shared);
                assert!(
                    locks.try_write("n").unwrap().is_none(),
                    "a writer got in beside readers"
                );
            })
            .join()
            .unwrap();
        });
        drop(r);
        let total = hammer(4, 200, |_, critical| {
            let _w = locks.write("n").unwrap();
            critical();
        });
        assert_eq!(total, 800);
        assert!(locks.is_empty());
    }

    #[test]
    fn rw_upgrade_is_refused_with_a_typed_error() {
        let locks = NameRwLocks::new();
        let _r = locks.read("n");
        let err = locks.write("n").unwrap_err();
        assert!(matches!(err, Error::LockUpgrade { .. }), "{err:?}");
        assert!(err.to_string().contains("\"n\""), "{err}");
        let err = locks.try_write("n").unwrap_err();
        assert!(matches!(err, Error::LockUpgrade { .. }), "{err:?}");
        assert_eq!(locks.len(), 1, "a refused write left an entry behind");
    }

    #[test]
    fn rw_write_nests_and_reads_inside_it() {
        let locks = NameRwLocks::new();
        let w1 = locks.write("n").unwrap();
        let w2 = locks.try_write("n").unwrap().expect("nested write refused");
        let r = locks.try_read("n").expect("read inside own write refused");
        assert!(w1.is_write() && w2.is_write() && !r.is_write());
        drop(w1);
        drop(w2);
        // Still reading: others may read, not write.
        thread::scope(|s| {
            s.spawn(|| {
                assert!(locks.try_read("n").is_some());
                assert!(locks.try_write("n").unwrap().is_none());
            })
            .join()
            .unwrap();
        });
        drop(r);
        assert!(locks.is_empty());
    }
}
