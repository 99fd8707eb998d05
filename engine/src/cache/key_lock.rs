//! A key's lock, held by the caller for as long as it likes:
//! [`Cache::lock_key`] (blocking) and `AsyncCache::lock_key` (feature
//! `async`), for read-modify-write cycles that must not interleave, such
//! as a web session loaded at the start of a request and saved at its end
//! (the `carboy-session` crate).
//!
//! **It is the key's creation lock.** A key lock is two locks, taken in
//! this order and released together:
//!
//! 1. an in-process lock on (backend namespace, stored key), a set of held
//!    keys under a mutex and a condition variable. It makes two holders in
//!    one process exclude each other whatever the backend, and it is not
//!    tied to a thread (an async task may move between workers);
//! 2. the backend's creation lock of the key ([`Backend::lock_creation`]),
//!    when the backend declares [`creation_locks`](super::Capabilities::creation_locks):
//!    the same lock [`Cache::get_or_create`] takes, so a creation of the
//!    key, in any process, waits for a key lock and the other way round.
//!    On the `file` backend it is an open-file-description byte-range lock
//!    on one stripe of the namespace's lock file: the kernel releases it
//!    when its process dies, and two keys share a stripe with probability
//!    1/1024 (one then waits for the other, nothing worse).
//!
//! Both waits together are bounded by `cache.lock_timeout` (none: forever);
//! past it the answer is [`Error::LockTimeout`](crate::Error::LockTimeout). The async front takes the
//! in-process lock on the task when it is free and otherwise waits on a
//! helper thread; it takes the creation lock on the task when it is free
//! and the backend offers an owned lock
//! ([`Backend::try_lock_creation_owned`]: the file backend's owned
//! stripes), and otherwise has a helper thread take and hold it
//! (`future/lock.rs`): no runtime worker ever blocks.
//!
//! What it does not do: on a backend without creation locks (`memory`), a
//! key lock excludes other key locks but not `get_or_create`, whose
//! in-process single flight is a lock of its own. A thread that holds a
//! blocking [`KeyLock`] and asks for the same key again waits for itself
//! until the timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::backend::{Backend, CreationGuard};
use super::codec::Codec;
use super::key::{self, CacheKey};
use super::lock_wait::{self, Lock, Wait};
use super::namespace::Cache;
use crate::error::Result;

/// The keys held in this process, by (backend namespace address, stored
/// key). The address is stable while a holder keeps an `Arc` of the
/// backend, which every [`Local`] does.
struct HeldKeys {
    held: Mutex<BTreeSet<(usize, Vec<u8>)>>,
    freed: Condvar,
}

static HELD: HeldKeys = HeldKeys {
    held: Mutex::new(BTreeSet::new()),
    freed: Condvar::new(),
};

fn identity(backend: &Arc<dyn Backend>) -> usize {
    Arc::as_ptr(backend).cast::<()>() as usize
}

/// The in-process half of a key lock; dropping it frees the key and wakes
/// the waiters.
struct Local {
    backend: Arc<dyn Backend>,
    key: Vec<u8>,
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut held = HELD.held.lock();
        held.remove(&(identity(&self.backend), std::mem::take(&mut self.key)));
        drop(held);
        HELD.freed.notify_all();
    }
}

/// Takes the in-process lock of `key`, waiting until `deadline` (`None`:
/// forever); `None` when the deadline passed first.
fn take_local(backend: &Arc<dyn Backend>, key: &[u8], deadline: Option<Instant>) -> Option<Local> {
    let entry = (identity(backend), key.to_vec());
    let mut held = HELD.held.lock();
    while held.contains(&entry) {
        match deadline {
            None => HELD.freed.wait(&mut held),
            Some(d) => {
                if HELD.freed.wait_until(&mut held, d).timed_out() && held.contains(&entry) {
                    return None;
                }
            }
        }
    }
    held.insert(entry);
    Some(Local {
        backend: Arc::clone(backend),
        key: key.to_vec(),
    })
}

/// How long a waiter has left before `deadline`, as a creation-lock wait.
fn remaining(deadline: Option<Instant>) -> Wait {
    match deadline {
        None => Wait::Forever,
        Some(d) => Wait::For(d.saturating_duration_since(Instant::now())),
    }
}

/// A held key lock ([`Cache::lock_key`]); dropping it releases the key.
///
/// Not `Send`: a backend's creation lock may belong to the thread that
/// took it (the `file` backend's stripes do), so it is released on that
/// thread. For a lock that travels with an async task, use
/// `AsyncCache::lock_key`.
#[must_use = "the key is unlocked as soon as the lock is dropped"]
pub struct KeyLock<'a> {
    // Field order is release order: the backend's lock first, then the
    // in-process one.
    _creation: CreationGuard<'a>,
    _local: Local,
}

impl std::fmt::Debug for KeyLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLock")
            .field("key_len", &self._local.key.len())
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Cache<C> {
    /// Locks `key` until the returned [`KeyLock`] is dropped: no other
    /// `lock_key` of the same key, in any thread or task of this process
    /// or (on a backend with creation locks, such as `file`) of any
    /// process sharing the backend, holds it meanwhile; nor does a
    /// `get_or_create` of the key create its value, since the key lock
    /// shares the key's creation lock (see `engine/DESIGN.md`, "Sessions:
    /// no lost updates").
    ///
    /// Waits up to `cache.lock_timeout`
    /// ([`DEFAULT_LOCK_TIMEOUT`](super::DEFAULT_LOCK_TIMEOUT)), then fails
    /// with [`Error::LockTimeout`](crate::Error::LockTimeout). The lock dies with its process (the
    /// kernel releases the file backend's byte-range locks).
    ///
    /// ```
    /// use carboy::cache::CacheManager;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let manager = CacheManager::builder().backend("file").data_dir(dir.path()).build()?;
    /// let counters = manager.get_cache("counters")?;
    /// {
    ///     let _held = counters.lock_key("visits")?; // read-modify-write, alone
    ///     let n = counters.get::<u64>("visits")?.unwrap_or(0);
    ///     counters.set("visits", &(n + 1))?;
    /// }
    /// assert_eq!(counters.get::<u64>("visits")?, Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_key(&self, key: &(impl CacheKey + ?Sized)) -> Result<KeyLock<'_>> {
        let key = self.stored_key(key)?.into_owned();
        let timeout = self.policy.lock_timeout;
        let deadline = timeout.map(|t| Instant::now() + t);
        let backend = &self.ns.shared.backend;
        let local = take_local(backend, &key, deadline)
            .ok_or_else(|| self.timeout_error(timeout.unwrap_or_default()))?;
        match lock_wait::lock(backend, &key, key::lock_hash(&key), remaining(deadline))? {
            Lock::Held(creation) => Ok(KeyLock {
                _creation: creation,
                _local: local,
            }),
            Lock::TimedOut(_) | Lock::Busy => Err(self.timeout_error(timeout.unwrap_or_default())),
        }
    }
}

#[cfg(feature = "async")]
pub use self::async_front::AsyncKeyLock;

#[cfg(feature = "async")]
mod async_front {
    use std::future::Future;
    use std::time::Instant;

    use super::{Local, remaining, take_local};
    use crate::cache::codec::Codec;
    use crate::cache::future::AsyncCache;
    use crate::cache::future::lock::{self, AsyncLock, HeldLock};
    use crate::cache::key::{self, CacheKey};
    use crate::error::Result;

    /// A held key lock of the async front (`AsyncCache::lock_key`);
    /// dropping it releases the key. `Send` and `'static`: it can live in
    /// a task, a request's extensions, a session handle.
    #[must_use = "the key is unlocked as soon as the lock is dropped"]
    pub struct AsyncKeyLock {
        // Release order: the creation lock (owned by the task or held by
        // a helper thread), then the in-process lock.
        _creation: HeldLock,
        _local: Local,
    }

    impl std::fmt::Debug for AsyncKeyLock {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AsyncKeyLock")
                .field("key_len", &self._local.key.len())
                .finish_non_exhaustive()
        }
    }

    impl<C: Codec> AsyncCache<C> {
        /// As [`Cache::lock_key`](crate::cache::Cache::lock_key), without
        /// blocking the calling thread: the in-process lock is taken on
        /// the task when it is free, otherwise awaited from a helper
        /// thread; the backend's creation lock is taken on the task when
        /// it is free and the backend offers an owned lock (the `file`
        /// backend does), otherwise taken and held by a helper thread,
        /// until the [`AsyncKeyLock`] is dropped. Bounded by
        /// `cache.lock_timeout` ([`Error::LockTimeout`](crate::Error::LockTimeout)
        /// past it). Dropping the future before it is ready releases
        /// whatever it had taken.
        pub fn lock_key(
            &self,
            key: &(impl CacheKey + ?Sized),
        ) -> impl Future<Output = Result<AsyncKeyLock>> + Send + 'static {
            let cache = self.blocking().clone();
            let stored = cache.stored_key(key).map(|k| k.into_owned());
            async move {
                let key = stored?;
                let timeout = cache.policy.lock_timeout;
                let deadline = timeout.map(|t| Instant::now() + t);
                let timed_out = || cache.timeout_error(timeout.unwrap_or_default());
                let backend = std::sync::Arc::clone(&cache.ns.shared.backend);
                // Free: taken at once. Busy: wait on a helper thread.
                let local = match take_local(&backend, &key, Some(Instant::now())) {
                    Some(local) => local,
                    None => {
                        let (b, k) = (std::sync::Arc::clone(&backend), key.clone());
                        lock::off_thread(move || Ok(take_local(&b, &k, deadline)))
                            .await?
                            .ok_or_else(timed_out)?
                    }
                };
                let caps = cache.ns.shared.caps;
                let hash = key::lock_hash(&key);
                match lock::take(
                    &backend,
                    caps.creation_locks,
                    &key,
                    hash,
                    remaining(deadline),
                )
                .await?
                {
                    AsyncLock::Held(creation) => Ok(AsyncKeyLock {
                        _creation: creation,
                        _local: local,
                    }),
                    AsyncLock::Busy | AsyncLock::TimedOut(_) => Err(timed_out()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use crate::ErrorKind;
    use crate::cache::CacheManager;

    fn file_manager(dir: &std::path::Path, timeout: Duration) -> CacheManager {
        CacheManager::builder()
            .backend("file")
            .data_dir(dir)
            .lock_timeout(timeout)
            .build()
            .unwrap()
    }

    /// Two threads increment one counter under the key lock: no update is
    /// lost, on `memory` (in-process lock only) and on `file` (both).
    #[test]
    fn two_threads_never_interleave_a_read_modify_write() {
        let dir = tempfile::tempdir().unwrap();
        for manager in [
            CacheManager::builder().backend("memory").build().unwrap(),
            file_manager(dir.path(), Duration::from_secs(30)),
        ] {
            let cache = manager.get_cache("counters").unwrap();
            thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..200 {
                            let _held = cache.lock_key("n").unwrap();
                            let n = cache.get::<u64>("n").unwrap().unwrap_or(0);
                            thread::yield_now();
                            cache.set("n", &(n + 1)).unwrap();
                        }
                    });
                }
            });
            assert_eq!(cache.get::<u64>("n").unwrap(), Some(400));
        }
    }

    /// A held key lock makes another thread's lock_key time out after
    /// cache.lock_timeout, and it is free again once dropped.
    #[test]
    fn a_held_key_times_out_others_then_frees() {
        let dir = tempfile::tempdir().unwrap();
        let cache = file_manager(dir.path(), Duration::from_millis(100))
            .get_cache("k")
            .unwrap();
        let held = cache.lock_key("a").unwrap();
        thread::scope(|s| {
            let other = s.spawn(|| cache.lock_key("a").map(drop));
            let err = other.join().unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::LockTimeout);
            // Another key is not held.
            let b = s.spawn(|| cache.lock_key("b").map(drop));
            b.join().unwrap().unwrap();
        });
        drop(held);
        thread::scope(|s| {
            s.spawn(|| cache.lock_key("a").map(drop))
                .join()
                .unwrap()
                .unwrap();
        });
    }

    /// The key lock is the key's creation lock: a get_or_create of the key
    /// on another thread does not run its creator while the key is locked.
    #[test]
    fn get_or_create_of_a_locked_key_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = file_manager(dir.path(), Duration::from_millis(100))
            .get_cache("k")
            .unwrap();
        let held = cache.lock_key("a").unwrap();
        thread::scope(|s| {
            let r = s
                .spawn(|| cache.get_or_create("a", || Ok::<u32, std::io::Error>(1)))
                .join()
                .unwrap();
            assert!(
                matches!(&r, Err(crate::cache::CreateError::Cache(e)) if e.kind() == ErrorKind::LockTimeout),
                "{r:?}"
            );
        });
        drop(held);
        thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                tx.send(
                    cache
                        .get_or_create("a", || Ok::<u32, std::io::Error>(2))
                        .map_err(|e| e.to_string()),
                )
                .unwrap()
            });
            assert_eq!(rx.recv().unwrap(), Ok(2));
        });
    }

    #[cfg(feature = "async")]
    #[test]
    fn async_tasks_never_interleave_and_time_out_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let cache = file_manager(dir.path(), Duration::from_millis(100))
            .get_cache("k")
            .unwrap()
            .to_async();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let cache = cache.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..25 {
                        let _held = loop {
                            // The timeout is short for the second half
                            // of this test: retry here.
                            match cache.lock_key("n").await {
                                Ok(h) => break h,
                                Err(e) if e.kind() == ErrorKind::LockTimeout => continue,
                                Err(e) => panic!("{e}"),
                            }
                        };
                        let n = cache.get::<u64>("n").await.unwrap().unwrap_or(0);
                        tokio::task::yield_now().await;
                        cache.set("n", &(n + 1)).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(cache.get::<u64>("n").await.unwrap(), Some(100));
            // Held by a blocking holder on this thread: the task times out.
            let held = cache.blocking().lock_key("m").unwrap();
            let err = cache.lock_key("m").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::LockTimeout);
            drop(held);
            drop(cache.lock_key("m").await.unwrap());
        });
    }
}
