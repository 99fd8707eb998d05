//! The creation lock for the async front: taken and held by a helper
//! thread (`helper_threads.rs`), never by a runtime worker.
//!
//! A creation lock may be waited for as long as another process creates,
//! and the file backend's stripes belong to the thread that locks them
//! (so that a blocking creator can re-enter its own stripe). A task moves
//! between worker threads and shares them with other tasks, so it can
//! neither wait on a worker nor own a stripe there: a helper thread takes
//! the lock (waiting, trying, or waiting up to `cache.lock_timeout`, as the
//! blocking front would), hands the task a [`HeldLock`], and holds the
//! lock until that is dropped. Dropping it (the creation ended, or its
//! future was cancelled) releases the lock; a task that gave up before the
//! lock came leaves the helper to release it the moment it gets it.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::oneshot;
use crate::cache::backend::Backend;
use crate::cache::helper_threads;
use crate::cache::lock_wait::{self, Lock, Wait};
use crate::error::{Error, Result};

/// A creation lock held for a task; dropping it releases the lock.
pub(crate) struct HeldLock {
    /// The holder thread waits until this closes; `None` when nothing is
    /// held (a backend without cross-process creation locks).
    _release: Option<mpsc::Sender<()>>,
}

/// What asking for a creation lock gave.
pub(crate) enum AsyncLock {
    Held(HeldLock),
    Busy,
    TimedOut(Duration),
}

/// Takes the creation lock of `key` as `wait` says, without blocking the
/// calling thread.
pub(crate) async fn take(
    backend: &Arc<dyn Backend>,
    cross_process: bool,
    key: &[u8],
    hash: u64,
    wait: Wait,
) -> Result<AsyncLock> {
    if !cross_process {
        // The cache's single flight is the whole lock: the backend's
        // answer is immediate and its guard holds nothing.
        let wait = match wait {
            Wait::No => Wait::No,
            Wait::Forever | Wait::For(_) => Wait::Forever,
        };
        return Ok(match lock_wait::lock(backend, key, hash, wait)? {
            Lock::Held(_) => AsyncLock::Held(HeldLock { _release: None }),
            Lock::Busy => AsyncLock::Busy,
            Lock::TimedOut(d) => AsyncLock::TimedOut(d),
        });
    }
    let (tx, rx) = oneshot::channel::<Result<AsyncLock>>();
    let (backend, key) = (Arc::clone(backend), key.to_vec());
    helper_threads::run(move || {
        let answer = match lock_wait::lock(&backend, &key, hash, wait) {
            Ok(Lock::Held(guard)) => {
                let (release, released) = mpsc::channel::<()>();
                let held = HeldLock {
                    _release: Some(release),
                };
                if tx.send(Ok(AsyncLock::Held(held))).is_ok() {
                    // Until the task drops its HeldLock (or the value
                    // sent is dropped untaken).
                    let _ = released.recv();
                }
                drop(guard);
                return;
            }
            Ok(Lock::Busy) => Ok(AsyncLock::Busy),
            Ok(Lock::TimedOut(d)) => Ok(AsyncLock::TimedOut(d)),
            Err(e) => Err(e),
        };
        let _ = tx.send(answer);
    });
    rx.await.unwrap_or_else(|| {
        Err(Error::InvalidOption {
            name: "lock_creation",
            reason: "no helper thread could be started to take a creation lock".into(),
        })
    })
}

/// Runs `job` (which may wait on another process: a writer lock, an
/// fsync) on a helper thread; its result, awaited without blocking.
pub(crate) async fn off_thread<T: Send + 'static>(
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    helper_threads::run(move || {
        let _ = tx.send(job());
    });
    rx.await.unwrap_or_else(|| {
        Err(Error::InvalidOption {
            name: "async",
            reason: "no helper thread could be started for a cache write".into(),
        })
    })
}
