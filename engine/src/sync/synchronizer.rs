//! The interface every lock of this module offers, so that a cache can be
//! configured with any of them (Beaker's mutex, file and null
//! synchronizers), and [`MutexLock`], the in-process one.

use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::ThreadId;

use super::reentrant_rw::{ReentrantRwLock, Upgrade};
use crate::error::{Error, Result};

/// A read/write lock, in-process ([`MutexLock`]), cross-process
/// ([`FileLock`](super::FileLock)) or none at all ([`NullLock`](super::NullLock)).
///
/// [`MutexLock`] and [`FileLock`](super::FileLock) follow the same rules,
/// per thread: a thread may take the lock again in the mode it holds, and
/// may read while it writes; asking to write while it only reads fails with
/// [`Error::LockUpgrade`] (it would wait for itself). [`NullLock`](super::NullLock)
/// grants everything at once. `lock`/`try_lock` are the write side, as in
/// Beaker (`acquire` = `acquire_write_lock`). The `try_` forms return
/// `Ok(None)` when someone else holds the lock. Guards release on drop.
///
/// # Examples
///
/// ```
/// use carboy::sync::{FileLock, MutexLock, NullLock, Synchronizer};
///
/// /// Regenerates something under whichever lock the caller configured.
/// fn regenerate(lock: &impl Synchronizer) -> carboy::Result<u32> {
///     let _guard = lock.lock()?;
///     Ok(42)
/// }
///
/// let dir = tempfile::tempdir()?;
/// assert_eq!(regenerate(&NullLock)?, 42);
/// assert_eq!(regenerate(&MutexLock::new())?, 42);
/// assert_eq!(regenerate(&FileLock::open(dir.path(), "report")?)?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Synchronizer {
    /// What a read lock returns; dropping it releases the lock.
    type ReadGuard<'a>
    where
        Self: 'a;
    /// What a write lock returns; dropping it releases the lock.
    type WriteGuard<'a>
    where
        Self: 'a;

    /// Takes a shared (read) lock, waiting for writers.
    ///
    /// # Errors
    ///
    /// I/O errors of a file lock.
    fn read(&self) -> Result<Self::ReadGuard<'_>>;

    /// Takes a shared lock if no writer holds it; `Ok(None)` otherwise.
    ///
    /// # Errors
    ///
    /// I/O errors of a file lock.
    fn try_read(&self) -> Result<Option<Self::ReadGuard<'_>>>;

    /// Takes the exclusive (write) lock, waiting for everyone else.
    ///
    /// # Errors
    ///
    /// [`Error::LockUpgrade`] if this thread reads without writing; I/O
    /// errors of a file lock.
    fn write(&self) -> Result<Self::WriteGuard<'_>>;

    /// Takes the exclusive lock if nobody else holds it; `Ok(None)` otherwise.
    ///
    /// # Errors
    ///
    /// As for [`write`](Self::write).
    fn try_write(&self) -> Result<Option<Self::WriteGuard<'_>>>;

    /// The exclusive lock: [`write`](Self::write).
    ///
    /// # Errors
    ///
    /// As for [`write`](Self::write).
    fn lock(&self) -> Result<Self::WriteGuard<'_>> {
        self.write()
    }

    /// [`try_write`](Self::try_write).
    ///
    /// # Errors
    ///
    /// As for [`write`](Self::write).
    fn try_lock(&self) -> Result<Option<Self::WriteGuard<'_>>> {
        self.try_write()
    }
}

/// An in-process read/write lock (Beaker's `mutex_synchronizer`): threads
/// of this process exclude each other; other processes are not involved.
/// Clones share the lock. Writers are preferred over new readers.
///
/// For a lock per name, use [`NameRwLocks`](super::NameRwLocks).
///
/// # Examples
///
/// ```
/// use carboy::sync::{MutexLock, Synchronizer};
///
/// let lock = MutexLock::new();
/// let w = lock.write()?;
/// let other = lock.clone();
/// let busy = std::thread::scope(|s| s.spawn(|| other.try_read().map(|g| g.is_none())).join());
/// assert!(busy.unwrap()?);
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MutexLock {
    lock: Arc<ReentrantRwLock>,
}

impl MutexLock {
    /// A new, unheld lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use carboy::sync::{MutexLock, Synchronizer};
    /// assert!(MutexLock::new().try_lock()?.is_some());
    /// # Ok::<(), carboy::Error>(())
    /// ```
    #[must_use]
    pub fn new() -> MutexLock {
        MutexLock::default()
    }

    fn guard(&self, thread: ThreadId, write: bool) -> MutexGuard<'_> {
        MutexGuard {
            lock: &self.lock,
            thread,
            write,
            not_send: PhantomData,
        }
    }
}

fn upgrade() -> Error {
    Error::LockUpgrade {
        lock: "in-process MutexLock".to_string(),
    }
}

impl Synchronizer for MutexLock {
    type ReadGuard<'a> = MutexGuard<'a>;
    type WriteGuard<'a> = MutexGuard<'a>;

    fn read(&self) -> Result<MutexGuard<'_>> {
        let me = std::thread::current().id();
        self.lock.read(me);
        Ok(self.guard(me, false))
    }

    fn try_read(&self) -> Result<Option<MutexGuard<'_>>> {
        let me = std::thread::current().id();
        Ok(self.lock.try_read(me).then(|| self.guard(me, false)))
    }

    fn write(&self) -> Result<MutexGuard<'_>> {
        let me = std::thread::current().id();
        self.lock.write(me).map_err(|Upgrade| upgrade())?;
        Ok(self.guard(me, true))
    }

    fn try_write(&self) -> Result<Option<MutexGuard<'_>>> {
        let me = std::thread::current().id();
        let got = self.lock.try_write(me).map_err(|Upgrade| upgrade())?;
        Ok(got.then(|| self.guard(me, true)))
    }
}

/// A held [`MutexLock`], read or write; releases it when dropped.
///
/// Not `Send`: the lock belongs to the thread that took it.
///
/// # Examples
///
/// ```
/// use carboy::sync::{MutexLock, Synchronizer};
/// let lock = MutexLock::new();
/// assert!(lock.write()?.is_write());
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Debug)]
pub struct MutexGuard<'a> {
    lock: &'a ReentrantRwLock,
    thread: ThreadId,
    write: bool,
    not_send: PhantomData<*const ()>,
}

impl MutexGuard<'_> {
    /// True for the write side.
    ///
    /// # Examples
    ///
    /// ```
    /// use carboy::sync::{MutexLock, Synchronizer};
    /// assert!(!MutexLock::new().read()?.is_write());
    /// # Ok::<(), carboy::Error>(())
    /// ```
    #[must_use]
    pub fn is_write(&self) -> bool {
        self.write
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        if self.write {
            self.lock.release_write(self.thread);
        } else {
            self.lock.release_read(self.thread);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    use crate::sync::{AnyLock, FileLock, NullLock};

    use crate::sync::test_support::elsewhere;

    #[test]
    fn mutex_lock_follows_the_shared_rules() {
        let lock = MutexLock::new();
        let r = lock.read().unwrap();
        assert!(matches!(lock.write(), Err(Error::LockUpgrade { .. })));
        let other = lock.clone();
        thread::scope(|s| {
            s.spawn(|| {
                assert!(other.try_read().unwrap().is_some());
                assert!(other.try_lock().unwrap().is_none());
            })
            .join()
            .unwrap();
        });
        drop(r);
        let w = lock.lock().unwrap();
        let nested = lock.try_lock().unwrap();
        assert!(nested.is_some(), "nested write refused");
        thread::scope(|s| {
            s.spawn(|| assert!(other.try_read().unwrap().is_none()))
                .join()
                .unwrap();
        });
        drop((w, nested));
        thread::scope(|s| {
            s.spawn(|| assert!(other.try_lock().unwrap().is_some()))
                .join()
                .unwrap();
        });
    }

    #[test]
    fn any_lock_behaves_as_the_lock_it_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let locks: [(AnyLock, bool); 3] = [
            (NullLock.into(), false),
            (MutexLock::new().into(), true),
            (FileLock::open(dir.path(), "any").unwrap().into(), true),
        ];
        for (lock, excludes) in &locks {
            let w = lock.lock().unwrap();
            let other_got_it = elsewhere(|| lock.try_read().unwrap().is_some());
            assert_eq!(other_got_it, !excludes, "{lock:?}");
            drop(w);
            let r = lock.read().unwrap();
            let other_read = elsewhere(|| lock.try_read().unwrap().is_some());
            assert!(other_read, "readers do not share: {lock:?}");
            let upgrade = lock.try_write();
            assert_eq!(
                matches!(upgrade, Err(Error::LockUpgrade { .. })),
                *excludes,
                "{lock:?}"
            );
            drop(upgrade);
            drop(r);
            assert!(
                elsewhere(|| lock.try_write().unwrap().is_some()),
                "{lock:?}"
            );
        }
    }
}
