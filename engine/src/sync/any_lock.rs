//! A lock chosen at run time: [`AnyLock`] wraps any of the
//! [`Synchronizer`]s behind one type.

use super::file_lock::{FileLock, FileLockGuard};
use super::null_lock::{NullGuard, NullLock};
use super::synchronizer::{MutexGuard, MutexLock, Synchronizer};
use crate::error::Result;

/// Any of the [`Synchronizer`]s, chosen at run time (from a setting, say:
/// Beaker's `type = "file"`), behind one type. `Synchronizer` itself has
/// generic guard types and so cannot be a trait object; this enum can be
/// stored where the choice is not known at compile time.
///
/// # Examples
///
/// ```
/// use carboy::sync::{AnyLock, FileLock, MutexLock, NullLock, Synchronizer};
///
/// let dir = tempfile::tempdir()?;
/// let setting = "file";
/// let lock: AnyLock = match setting {
///     "file" => FileLock::open(dir.path(), "sessions")?.into(),
///     "memory" => MutexLock::new().into(),
///     _ => NullLock.into(),
/// };
/// let guard = lock.write()?;
/// assert!(matches!(lock, AnyLock::File(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub enum AnyLock {
    /// No locking.
    Null(NullLock),
    /// Threads of this process.
    Mutex(MutexLock),
    /// Threads and processes.
    File(FileLock),
}

impl From<NullLock> for AnyLock {
    fn from(lock: NullLock) -> AnyLock {
        AnyLock::Null(lock)
    }
}

impl From<MutexLock> for AnyLock {
    fn from(lock: MutexLock) -> AnyLock {
        AnyLock::Mutex(lock)
    }
}

impl From<FileLock> for AnyLock {
    fn from(lock: FileLock) -> AnyLock {
        AnyLock::File(lock)
    }
}

/// A held [`AnyLock`]; releases it when dropped.
///
/// # Examples
///
/// ```
/// use carboy::sync::{AnyGuard, AnyLock, MutexLock, Synchronizer};
/// let lock = AnyLock::from(MutexLock::new());
/// let guard = lock.read()?;
/// assert!(matches!(guard, AnyGuard::Mutex(_)));
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Debug)]
pub enum AnyGuard<'a> {
    /// Holds nothing.
    Null(NullGuard),
    /// Holds a [`MutexLock`].
    Mutex(MutexGuard<'a>),
    /// Holds a [`FileLock`].
    File(FileLockGuard<'a>),
}

impl Synchronizer for AnyLock {
    type ReadGuard<'a> = AnyGuard<'a>;
    type WriteGuard<'a> = AnyGuard<'a>;

    fn read(&self) -> Result<AnyGuard<'_>> {
        Ok(match self {
            AnyLock::Null(l) => AnyGuard::Null(l.read()?),
            AnyLock::Mutex(l) => AnyGuard::Mutex(l.read()?),
            AnyLock::File(l) => AnyGuard::File(l.read()?),
        })
    }

    fn try_read(&self) -> Result<Option<AnyGuard<'_>>> {
        Ok(match self {
            AnyLock::Null(l) => l.try_read()?.map(AnyGuard::Null),
            AnyLock::Mutex(l) => l.try_read()?.map(AnyGuard::Mutex),
            AnyLock::File(l) => l.try_read()?.map(AnyGuard::File),
        })
    }

    fn write(&self) -> Result<AnyGuard<'_>> {
        Ok(match self {
            AnyLock::Null(l) => AnyGuard::Null(l.write()?),
            AnyLock::Mutex(l) => AnyGuard::Mutex(l.write()?),
            AnyLock::File(l) => AnyGuard::File(l.write()?),
        })
    }

    fn try_write(&self) -> Result<Option<AnyGuard<'_>>> {
        Ok(match self {
            AnyLock::Null(l) => l.try_write()?.map(AnyGuard::Null),
            AnyLock::Mutex(l) => l.try_write()?.map(AnyGuard::Mutex),
            AnyLock::File(l) => l.try_write()?.map(AnyGuard::File),
        })
    }
}
