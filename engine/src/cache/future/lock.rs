//! The creation lock for the async front: taken on the task when the
//! backend can hand over a lock that is free at once and owned by no
//! thread ([`Backend::try_lock_creation_owned`]: the `file` backend's
//! owned stripes); otherwise taken and held by a helper thread
//! (`helper_threads.rs`), never by a runtime worker. Also the async
//! front's writes: on the task when the backend can write without
//! waiting ([`Backend::try_set_now`]), otherwise on a helper thread
//! ([`off_thread`]).
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
use crate::cache::backend::{Backend, OwnedCreation, OwnedCreationGuard};
use crate::cache::codec::Codec;
use crate::cache::helper_threads;
use crate::cache::lock_wait::{self, Lock, Wait};
use crate::cache::namespace::Cache;
use crate::error::{Error, Result};

/// A creation lock held for a task; dropping it releases the lock.
pub(crate) struct HeldLock {
    /// The holder thread waits until this closes; `None` when no helper
    /// thread holds it (a backend without cross-process creation locks,
    /// or an owned lock).
    _release: Option<mpsc::Sender<()>>,
    /// The lock, when the task itself holds it (taken on the task).
    _owned: Option<OwnedCreationGuard>,
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
            Lock::Held(_) => AsyncLock::Held(HeldLock {
                _release: None,
                _owned: None,
            }),
            Lock::Busy => AsyncLock::Busy,
            Lock::TimedOut(d) => AsyncLock::TimedOut(d),
        });
    }
    // Free now: held by the task, no thread hop. Busy and not to be
    // waited for: the answer a helper thread would give.
    match backend.try_lock_creation_owned(key, hash)? {
        OwnedCreation::Held(guard) => {
            return Ok(AsyncLock::Held(HeldLock {
                _release: None,
                _owned: Some(guard),
            }));
        }
        OwnedCreation::Busy if matches!(wait, Wait::No) => return Ok(AsyncLock::Busy),
        // Held by a process that does not use it: a helper thread's try
        // (which may wait a moment for it to let go) decides, even for a
        // caller that does not wait, for whom busy means "being created".
        OwnedCreation::Busy | OwnedCreation::Leased | OwnedCreation::NotOffered => {}
    }
    let (tx, rx) = oneshot::channel::<Result<AsyncLock>>();
    let (backend, key) = (Arc::clone(backend), key.to_vec());
    helper_threads::run(move || {
        let answer = match lock_wait::lock(&backend, &key, hash, wait) {
            Ok(Lock::Held(guard)) => {
                let (release, released) = mpsc::channel::<()>();
                let held = HeldLock {
                    _release: Some(release),
                    _owned: None,
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

/// Stores `entry` under the stored key `key` on the calling task if the
/// backend can without waiting ([`Backend::try_set_now`]): true when
/// stored, false when the caller must store it with [`off_thread`].
pub(crate) fn store_now<C: Codec>(
    cache: &Cache<C>,
    key: &[u8],
    entry: &[u8],
    expire: Option<Duration>,
) -> Result<bool> {
    let ttl = cache.policy.backend_ttl(expire);
    let backend = &cache.ns.shared.backend;
    // The writer lock is most often busy because another thread of this
    // process is committing, which takes a microsecond or two: try again
    // a few times after a short spin (about 1 µs in all) before handing
    // the write to a helper thread, whose wake-up on a loaded machine can
    // cost a scheduler slice. Never a wait on another process: each try
    // is a non-blocking one.
    for spins in [64, 128, 256] {
        if backend.try_set_now(key, entry, ttl)? {
            return Ok(true);
        }
        for _ in 0..spins {
            std::hint::spin_loop();
        }
    }
    backend.try_set_now(key, entry, ttl)
}

/// Stores a created value's `entry` under the stored key `key`, then
/// releases its creation lock `held`: on the task when the backend can
/// write without waiting, otherwise on a helper thread with the lock
/// moved into the job, so that it is released once the value is stored
/// even if the awaiting future is dropped meanwhile. The entry when
/// stored; `None` when the write failed.
pub(crate) async fn store_created<C: Codec>(
    cache: &Cache<C>,
    key: &[u8],
    entry: Vec<u8>,
    expire: Option<Duration>,
    held: HeldLock,
) -> Option<Vec<u8>> {
    match store_now(cache, key, &entry, expire) {
        Ok(true) => return Some(entry),
        Ok(false) => {}
        Err(_) => return None,
    }
    let (store, key) = (cache.clone(), key.to_vec());
    off_thread(move || {
        let kept = store.store(&key, &entry, expire).map(|()| entry);
        drop(held);
        kept
    })
    .await
    .ok()
}
