//! [`FileLock`]: a read/write lock shared by processes, `flock` on a lock
//! file (Beaker's `FileSynchronizer`).

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::thread::ThreadId;

use parking_lot::Mutex;

use super::lock_files::{lock_current, open_lock_file, registry_key};
use super::sync_dict::WeakSyncDict;
use super::synchronizer::Synchronizer;
use crate::error::{Error, Result};

/// The extension added to a name's file name to make its lock file's.
const LOCK_EXTENSION: &str = "sync-lock";

/// One shared state per lock file in this process.
static OPEN: LazyLock<WeakSyncDict<PathBuf, Shared>> = LazyLock::new(WeakSyncDict::new);

/// What a thread holds of a lock file.
#[derive(Debug)]
struct Held {
    /// This thread's own open file description, which holds the `flock`.
    /// The `flock` is exclusive if the outermost acquisition was a write;
    /// it stays so until every guard of the thread is gone (never
    /// downgraded: `flock` does not downgrade atomically).
    file: File,
    reads: u32,
    writes: u32,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    held: Mutex<HashMap<ThreadId, Held>>,
}

/// A read/write lock shared by the threads and processes of one machine:
/// `flock` on a lock file in a lock directory (Beaker's `FileSynchronizer`).
///
/// [`open`](Self::open) maps any name to a safe file name in the directory
/// with [`carboy::name::file_name`](crate::name::file_name):
/// `<lock_dir>/<file name>.sync-lock` (for `"users"`,
/// `users.carboy.sync-lock`). Use it through [`Synchronizer`].
///
/// **Threads and processes.** `flock` locks belong to an *open file
/// description*, and two descriptions conflict even in one process. Each
/// thread's outermost acquisition opens its own description, locks it, and
/// closes it when the thread's last guard goes; so threads exclude each
/// other through the kernel exactly as processes do, and a lock dies with
/// its process (no stale lock to clean by hand). A thread's nested
/// acquisitions are counted, not locked again (see [`Synchronizer`] for the
/// rules); once a thread writes, its `flock` stays exclusive until all of
/// its guards are dropped (`flock` cannot downgrade atomically).
///
/// **Lock files.** The file is created on demand, with its directory if a
/// temp cleaner removed it, and never deleted (deleting a lock file other
/// processes may hold is racy). After locking, the acquisition checks that
/// its description is still the file at the path and starts over if not,
/// so every process moves to a replaced file; a process that held the old
/// file at that moment is not excluded from the new one.
///
/// All handles to one path (as spelled, made absolute) in a process share
/// their per-thread counts, so a thread can nest acquisitions through
/// different handles.
///
/// # Examples
///
/// ```
/// use carboy::sync::{FileLock, Synchronizer};
///
/// let dir = tempfile::tempdir()?;
/// let lock = FileLock::open(dir.path(), "nightly report")?;
/// {
///     let _w = lock.write()?;
///     // Another process (or thread) asking now would get None.
///     let other = lock.clone();
///     let busy = std::thread::scope(|s| s.spawn(|| other.try_read().map(|g| g.is_none())).join());
///     assert!(busy.unwrap()?);
/// }
/// assert!(lock.try_write()?.is_some());
/// assert!(lock.path().ends_with("nightly_20report.carboy.sync-lock"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileLock {
    shared: Arc<Shared>,
}

impl FileLock {
    /// The lock for `name` in `lock_dir`, creating the directory and the
    /// lock file if needed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name [`file_name`](crate::name::file_name)
    /// refuses (empty, or longer than 1024 bytes); [`Error::Io`] if the
    /// directory or file cannot be made or opened.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let lock = carboy::sync::FileLock::open(dir.path(), "../../etc/passwd")?;
    /// assert_eq!(lock.path().parent(), Some(dir.path())); // names cannot escape
    /// assert!(carboy::sync::FileLock::open(dir.path(), "").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(lock_dir: impl AsRef<Path>, name: &str) -> Result<FileLock> {
        let file = crate::name::file_name(name).map_err(|source| Error::InvalidName {
            name: name.to_string(),
            source,
        })?;
        FileLock::open_path(lock_dir.as_ref().join(format!("{file}.{LOCK_EXTENSION}")))
    }

    /// The lock on the file at `path`, creating it (and its directory) if
    /// needed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory or file cannot be made or opened.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let lock = carboy::sync::FileLock::open_path(dir.path().join("sub/access.lock"))?;
    /// assert!(lock.path().exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_path(path: impl AsRef<Path>) -> Result<FileLock> {
        let path = registry_key(path.as_ref())?;
        let shared = OPEN.get_or_create(path.clone(), || {
            drop(open_lock_file(&path)?);
            Ok::<_, Error>(Shared {
                path: path.clone(),
                held: Mutex::new(HashMap::new()),
            })
        })?;
        Ok(FileLock { shared })
    }

    /// The lock file's path (absolute).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn acquire(&self, exclusive: bool, wait: bool) -> Result<Option<FileLockGuard<'_>>> {
        let me = std::thread::current().id();
        {
            let mut held = self.shared.held.lock();
            if let Some(h) = held.get_mut(&me) {
                if !exclusive {
                    h.reads += 1;
                } else if h.writes > 0 {
                    h.writes += 1;
                } else {
                    return Err(Error::LockUpgrade {
                        lock: self.shared.path.display().to_string(),
                    });
                }
                return Ok(Some(self.guard(me, exclusive)));
            }
        }
        let Some(file) = self.lock_file(exclusive, wait)? else {
            return Ok(None);
        };
        let (reads, writes) = if exclusive { (0, 1) } else { (1, 0) };
        self.shared.held.lock().insert(
            me,
            Held {
                file,
                reads,
                writes,
            },
        );
        Ok(Some(self.guard(me, exclusive)))
    }

    /// Opens a new description of the lock file and `flock`s it, starting
    /// over if the file at the path was replaced meanwhile.
    fn lock_file(&self, exclusive: bool, wait: bool) -> Result<Option<File>> {
        let path = &self.shared.path;
        lock_current(
            path,
            |file| flock(file, path, exclusive, wait),
            |cause| Error::io("flock", path, cause),
        )
    }

    fn guard(&self, thread: ThreadId, write: bool) -> FileLockGuard<'_> {
        FileLockGuard {
            lock: self,
            thread,
            write,
            not_send: PhantomData,
        }
    }

    fn release(&self, thread: ThreadId, write: bool) {
        let mut held = self.shared.held.lock();
        let Some(h) = held.get_mut(&thread) else {
            return;
        };
        if write {
            h.writes = h.writes.saturating_sub(1);
        } else {
            h.reads = h.reads.saturating_sub(1);
        }
        if h.reads == 0 && h.writes == 0 {
            let gone = held.remove(&thread);
            drop(held);
            if let Some(gone) = gone {
                // Unlock explicitly: a child forked without exec may share
                // the description, and closing ours alone would not release.
                let _ = gone.file.unlock();
            }
        }
    }
}

/// `flock`s `file`; returns false if `wait` is off and another description
/// holds a conflicting lock. Interrupted waits are retried.
fn flock(file: &File, path: &Path, exclusive: bool, wait: bool) -> Result<bool> {
    loop {
        let result = match (exclusive, wait) {
            (true, true) => file.lock().map_err(TryLockError::Error),
            (false, true) => file.lock_shared().map_err(TryLockError::Error),
            (true, false) => file.try_lock(),
            (false, false) => file.try_lock_shared(),
        };
        match result {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(TryLockError::Error(e)) if is_unsupported(&e) => {
                return Err(Error::LockUnsupported {
                    path: path.to_path_buf(),
                    what: "flock",
                    source: e,
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("flock", path, e)),
        }
    }
}

/// `flock` is missing here (some network filesystems).
fn is_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(libc::ENOLCK) | Some(libc::ENOSYS))
}

impl Synchronizer for FileLock {
    type ReadGuard<'a> = FileLockGuard<'a>;
    type WriteGuard<'a> = FileLockGuard<'a>;

    fn read(&self) -> Result<FileLockGuard<'_>> {
        self.acquire(false, true)?.ok_or_else(|| blocked(self))
    }

    fn try_read(&self) -> Result<Option<FileLockGuard<'_>>> {
        self.acquire(false, false)
    }

    fn write(&self) -> Result<FileLockGuard<'_>> {
        self.acquire(true, true)?.ok_or_else(|| blocked(self))
    }

    fn try_write(&self) -> Result<Option<FileLockGuard<'_>>> {
        self.acquire(true, false)
    }
}

/// A blocking `flock` reported a conflict, which it never does.
fn blocked(lock: &FileLock) -> Error {
    Error::io(
        "flock",
        lock.path(),
        io::Error::from(io::ErrorKind::WouldBlock),
    )
}

/// A held [`FileLock`], read or write; releases it when dropped (and the
/// kernel releases it if the process dies first).
///
/// Not `Send`: the lock belongs to the thread that took it.
///
/// # Examples
///
/// ```
/// use carboy::sync::{FileLock, Synchronizer};
/// let dir = tempfile::tempdir()?;
/// let lock = FileLock::open(dir.path(), "a")?;
/// let guard = lock.write()?;
/// assert!(guard.is_write());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileLockGuard<'a> {
    lock: &'a FileLock,
    thread: ThreadId,
    write: bool,
    not_send: PhantomData<*const ()>,
}

impl FileLockGuard<'_> {
    /// True for the write side.
    ///
    /// # Examples
    ///
    /// ```
    /// use carboy::sync::{FileLock, Synchronizer};
    /// let dir = tempfile::tempdir()?;
    /// assert!(!FileLock::open(dir.path(), "a")?.read()?.is_write());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_write(&self) -> bool {
        self.write
    }
}

impl Drop for FileLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(self.thread, self.write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::thread;

    use crate::file::test_signals::{handled, interrupt, serial, this_thread};
    use crate::sync::test_support::{elsewhere, hammer, until, wait_until_blocked_on};
    use std::sync::mpsc;

    #[test]
    fn threads_exclude_each_other_through_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::open(dir.path(), "counter").unwrap();
        let total = hammer(4, 100, |_, critical| {
            let _w = lock.write().unwrap();
            critical();
        });
        assert_eq!(total, 400);
        assert!(lock.shared.held.lock().is_empty());
    }

    #[test]
    fn readers_share_and_writers_are_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::open(dir.path(), "rw").unwrap();
        let r = lock.read().unwrap();
        elsewhere(|| {
            assert!(lock.try_read().unwrap().is_some(), "second reader refused");
            assert!(
                lock.try_write().unwrap().is_none(),
                "writer beside a reader"
            );
        });
        drop(r);
        let w = lock.write().unwrap();
        elsewhere(|| {
            assert!(lock.try_read().unwrap().is_none(), "reader beside a writer");
            assert!(lock.try_write().unwrap().is_none(), "two writers");
        });
        drop(w);
        elsewhere(|| assert!(lock.try_write().unwrap().is_some()));
    }

    #[test]
    fn a_thread_nests_and_cannot_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::open(dir.path(), "nest").unwrap();
        let w1 = lock.write().unwrap();
        let w2 = lock.try_write().unwrap().expect("nested write refused");
        let r = lock.read().unwrap();
        drop(w1);
        drop(w2);
        // Still reading, and the flock stays exclusive until r goes.
        elsewhere(|| assert!(lock.try_read().unwrap().is_none()));
        let err = lock.write().unwrap_err();
        assert!(matches!(err, Error::LockUpgrade { .. }), "{err:?}");
        assert!(err.to_string().contains("nest.carboy.sync-lock"), "{err}");
        drop(r);
        assert!(lock.shared.held.lock().is_empty());
        elsewhere(|| assert!(lock.try_write().unwrap().is_some()));
    }

    #[test]
    fn handles_of_one_path_share_a_threads_counts() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileLock::open(dir.path(), "same").unwrap();
        let b = FileLock::open_path(dir.path().join("same.carboy.sync-lock")).unwrap();
        let _wa = a.write().unwrap();
        // Through the other handle, this thread nests instead of waiting
        // for itself.
        let wb = b.try_write().unwrap();
        assert!(wb.is_some());
        elsewhere(|| assert!(b.try_read().unwrap().is_none()));
    }

    #[test]
    fn names_map_to_safe_files_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../escape", "a/b", ".", "..", "UPPER", "é"] {
            let lock = FileLock::open(dir.path(), name).unwrap();
            assert_eq!(lock.path().parent(), Some(dir.path()), "{name:?}");
            let _g = lock.write().unwrap();
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files.len(), 6, "{files:?}");
        assert!(
            files.iter().all(|f| f.ends_with(".carboy.sync-lock")),
            "{files:?}"
        );
        let err = FileLock::open(dir.path(), "").unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
    }

    #[test]
    fn a_removed_lock_directory_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = dir.path().join("locks");
        let lock = FileLock::open(&lock_dir, "k").unwrap();
        std::fs::remove_dir_all(&lock_dir).unwrap();
        let w = lock.write().unwrap();
        assert!(lock.path().exists());
        // And the lock works on the new file.
        elsewhere(|| assert!(lock.try_write().unwrap().is_none()));
        drop(w);
    }

    #[test]
    fn an_acquisition_moves_to_a_replaced_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::open(dir.path(), "k").unwrap();
        // Another process holds the lock on the current file...
        let stale = File::open(lock.path()).unwrap();
        stale.lock().unwrap();
        // ...which a cleaner then replaces: the next acquisition must take
        // the new file, not wait for (or succeed on) the old one.
        std::fs::remove_file(lock.path()).unwrap();
        let w = lock.try_write().unwrap();
        assert!(w.is_some(), "the old file's holder blocked the new file");
        let replacement = File::open(lock.path()).unwrap();
        assert!(
            matches!(replacement.try_lock(), Err(TryLockError::WouldBlock)),
            "the guard does not hold the file now at the path"
        );
    }

    #[test]
    fn a_waiter_moves_to_a_lock_file_replaced_while_it_waited() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::open(dir.path(), "k").unwrap();
        let old_inode = std::fs::metadata(lock.path()).unwrap().ino();
        let holder = File::open(lock.path()).unwrap();
        holder.lock().unwrap();
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _w = lock.write().unwrap();
                let now = File::open(lock.path()).unwrap();
                matches!(now.try_lock(), Err(TryLockError::WouldBlock))
            });
            wait_until_blocked_on(old_inode);
            std::fs::remove_file(lock.path()).unwrap();
            drop(holder);
            assert!(
                waiter.join().unwrap(),
                "the waiter kept the removed file's lock instead of the new file's"
            );
        });
    }

    #[test]
    fn a_lock_file_that_is_not_writable_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let err = FileLock::open(blocker.join("sub"), "k").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn a_blocking_lock_interrupted_by_a_signal_waits_on() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::open(dir.path(), "k").unwrap();
        let holder = File::open(lock.path()).unwrap();
        holder.lock().unwrap();
        let inode = std::fs::metadata(lock.path()).unwrap().ino();
        let lock = &lock;
        thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let waiter = s.spawn(move || {
                tx.send(this_thread()).unwrap();
                lock.write().map(|g| g.is_write())
            });
            let target = rx.recv().unwrap();
            wait_until_blocked_on(inode);
            let before = handled();
            // The handler has no SA_RESTART: flock returns EINTR, which
            // the lock must retry rather than report.
            interrupt(target);
            until("the waiter handled the signal", || handled() > before);
            holder.unlock().unwrap();
            assert!(waiter.join().unwrap().unwrap());
        });
    }
}
