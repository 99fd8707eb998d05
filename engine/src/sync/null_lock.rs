//! [`NullLock`]: Beaker's `null_synchronizer`, a lock that never waits.

use super::synchronizer::Synchronizer;
use crate::error::Result;

/// A [`Synchronizer`] that locks nothing: every call succeeds at once, in
/// any mode, from any number of threads and processes. For caches whose
/// backend needs no lock (or whose users accept duplicate creations).
///
/// # Examples
///
/// ```
/// use carboy::sync::{NullLock, Synchronizer};
///
/// let lock = NullLock;
/// let a = lock.write()?;
/// let b = lock.try_write()?; // nobody is excluded, not even a second writer
/// assert!(b.is_some());
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NullLock;

/// What [`NullLock`] hands out: holds nothing.
///
/// # Examples
///
/// ```
/// use carboy::sync::{NullGuard, NullLock, Synchronizer};
/// let guard: NullGuard = NullLock.read()?;
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NullGuard;

impl Synchronizer for NullLock {
    type ReadGuard<'a> = NullGuard;
    type WriteGuard<'a> = NullGuard;

    fn read(&self) -> Result<NullGuard> {
        Ok(NullGuard)
    }

    fn try_read(&self) -> Result<Option<NullGuard>> {
        Ok(Some(NullGuard))
    }

    fn write(&self) -> Result<NullGuard> {
        Ok(NullGuard)
    }

    fn try_write(&self) -> Result<Option<NullGuard>> {
        Ok(Some(NullGuard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_lock_grants_every_mode_at_once_even_an_upgrade() {
        let lock = NullLock;
        let r = lock.read().unwrap();
        let w = lock.write().unwrap();
        let from_other_thread = std::thread::spawn(|| {
            (
                NullLock.try_write().unwrap().is_some(),
                NullLock.try_read().unwrap().is_some(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(from_other_thread, (true, true));
        assert_eq!((r, w), (NullGuard, NullGuard));
        assert!(lock.try_lock().unwrap().is_some());
        assert_eq!(lock.lock().unwrap(), NullGuard);
    }
}
