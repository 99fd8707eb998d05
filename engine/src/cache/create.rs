//! Get it, or create it once: [`Cache::get_or_create`] (a creator that can
//! fail) and [`Cache::get_or_insert_with`] (one that cannot), the dogpile
//! lock algorithm described on [`Cache`], "The creation algorithm".

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::Codec;
use super::envelope;
use super::flight::Leader;
use super::flight::{Join, Outcome};
use super::key::{self, CacheKey};
use super::lock_wait::{self, Lock, Wait};
use super::namespace::{Cache, Found};
use super::policy::{self, OnBackendError, OnLockTimeout};
use crate::error::{Error, Result};

/// The error of [`Cache::get_or_create`]: the cache failed, or the creator
/// did. Every thread waiting on the same creation gets the same creator
/// error, shared.
#[derive(Debug)]
pub enum CreateError<E> {
    /// The backend failed (I/O, a lock, a key carboy reserves, …).
    Cache(Error),
    /// The creator returned this error.
    Creator(Arc<E>),
}

impl<E: fmt::Display> fmt::Display for CreateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Cache(e) => write!(f, "cache: {e}"),
            CreateError::Creator(e) => write!(f, "creating the value: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CreateError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::Cache(e) => Some(e),
            CreateError::Creator(e) => Some(&**e),
        }
    }
}

impl<E> From<Error> for CreateError<E> {
    fn from(e: Error) -> Self {
        CreateError::Cache(e)
    }
}

thread_local! {
    /// How many creators this thread is running (nested `get_or_create`).
    static CREATING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn creating_depth() -> u32 {
    CREATING.with(|c| c.get())
}

/// Counts this thread as inside a creator until dropped (panics included).
struct CreatingDepth;

impl CreatingDepth {
    fn enter() -> CreatingDepth {
        CREATING.with(|c| c.set(c.get() + 1));
        CreatingDepth
    }
}

impl Drop for CreatingDepth {
    fn drop(&mut self) {
        CREATING.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

impl<C: Codec> Cache<C> {
    /// The value of `key`; when it is missing, expired or invalidated,
    /// exactly one caller (across threads and processes) runs `create` and
    /// stores its value, while the others get the stale value at once (if
    /// there is one and the cache serves stale values) or wait for the new
    /// one. See [`Cache`], "The creation algorithm".
    ///
    /// A creator error is returned to the caller that ran it and to every
    /// caller of this process that was waiting for it, and nothing is
    /// stored. Once the creator has returned a value, the caller gets it
    /// even if the cache fails to keep a copy (a full disk, a value the
    /// codec cannot encode); such failures are counted by
    /// [`store_failures`](Cache::store_failures). So a
    /// [`CreateError::Cache`] always means the creator did not run. A
    /// panicking creator releases the key: the next caller creates.
    ///
    /// A caller waits for the creation lock at most `cache.lock_timeout`
    /// ([`DEFAULT_LOCK_TIMEOUT`](super::DEFAULT_LOCK_TIMEOUT)); then
    /// [`OnLockTimeout`] says whether it fails with
    /// [`Error::LockTimeout`] or runs `create` without storing the value.
    /// A creator that fails in another process stores nothing and releases
    /// the lock: a waiter here then takes the lock and runs its own
    /// creator (errors do not cross processes).
    ///
    /// ```
    /// use carboy::cache::CacheManager;
    ///
    /// let manager = CacheManager::builder().backend("memory").build()?;
    /// let users = manager.get_cache("users")?;
    /// let mut calls = 0;
    /// for _ in 0..3 {
    ///     let name: String = users.get_or_create("user:1", || {
    ///         calls += 1;
    ///         Ok::<_, std::io::Error>("alice".to_string())
    ///     })?;
    ///     assert_eq!(name, "alice");
    /// }
    /// assert_eq!(calls, 1); // created once, then hits
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_create<V, E, F>(
        &self,
        key: &(impl CacheKey + ?Sized),
        create: F,
    ) -> Result<V, CreateError<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E>,
    {
        if !self.policy.enabled {
            return create().map_err(|e| CreateError::Creator(Arc::new(e)));
        }
        let key = self.stored_key(key)?;
        let mut create = Some(create);
        match self.get_or_create_stored(&key, &mut create) {
            Err(CreateError::Cache(e)) => self.after_backend_error(e, create),
            done => done,
        }
    }

    /// What a `get_or_create` whose backend failed does, as
    /// `cache.on_backend_error` says: return the error, or run the creator
    /// (if it has not run) without the cache.
    pub(super) fn after_backend_error<V, E, F>(
        &self,
        e: Error,
        create: Option<F>,
    ) -> Result<V, CreateError<E>>
    where
        F: FnOnce() -> Result<V, E>,
    {
        match (self.policy.on_backend_error, create) {
            (OnBackendError::Create, Some(create)) if policy::is_backend_failure(&e) => {
                create().map_err(|e| CreateError::Creator(Arc::new(e)))
            }
            _ => Err(CreateError::Cache(e)),
        }
    }

    /// [`get_or_create`](Self::get_or_create) of the stored form of a
    /// key; `create` is taken when the creator runs.
    fn get_or_create_stored<V, E, F>(
        &self,
        key: &[u8],
        create: &mut Option<F>,
    ) -> Result<V, CreateError<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E>,
    {
        loop {
            let stale = match self.lookup::<V>(key)? {
                Found::Fresh(e) => return Ok(e.value),
                Found::Stale(e) if self.policy.serve_stale => Some(e.value),
                _ => None,
            };
            // `leader` is `None` only for a nested creator that went past
            // another thread's flight (see below).
            let (leader, guard) = match self.ns.shared.flights.join(key) {
                Join::Follow(follower) => {
                    if let Some(v) = stale {
                        return Ok(v);
                    }
                    // A thread inside a creator may hold creation locks
                    // that this flight's leader waits for (two keys on one
                    // stripe): waiting for the leader could then never end.
                    // It takes the creation lock itself instead; the
                    // leader re-checks under that lock, so the value is
                    // still created once.
                    let nested = if creating_depth() > 0 {
                        let hash = key::lock_hash(key);
                        Some(self.take_creation_lock(key, hash, true)?)
                    } else {
                        None
                    };
                    match nested {
                        Some(Lock::Held(g)) if g.is_held() => (None, g),
                        Some(Lock::TimedOut(waited)) => {
                            let create = create.take();
                            return self.after_timeout(None, waited, create);
                        }
                        _ => match self.followed(follower.wait()) {
                            Some(result) => return result,
                            None => continue,
                        },
                    }
                }
                Join::Lead(leader) => {
                    // Hashed only here: a hit never needs the lock.
                    let hash = key::lock_hash(key);
                    match self.take_creation_lock(key, hash, stale.is_none()) {
                        Ok(Lock::Held(g)) => (Some(leader), g),
                        Ok(Lock::TimedOut(waited)) => {
                            let create = create.take();
                            return self.after_timeout(Some(leader), waited, create);
                        }
                        // Another process is creating: serve the stale value.
                        Ok(Lock::Busy) => match stale {
                            Some(v) => {
                                leader.finish(Outcome::Retry);
                                return Ok(v);
                            }
                            None => continue,
                        },
                        Err(e) => return Err(CreateError::Cache(e)),
                    }
                }
            };
            let finish = |outcome: Outcome| {
                if let Some(l) = leader {
                    l.finish(outcome);
                }
            };
            // Holding the lock: someone may have finished meanwhile.
            let markers = self.ns.markers()?;
            let (ns, region) = markers;
            if let Found::Fresh(e) = self.lookup_under::<V>(key, markers)? {
                drop(guard);
                finish(Outcome::Retry);
                return Ok(e.value);
            }
            let Some(create) = create.take() else {
                // Unreachable: every path that loops returns before
                // running the creator. Kept as an error, not a panic.
                return Err(CreateError::Cache(Error::InvalidOption {
                    name: "get_or_create",
                    reason: "creator already used".into(),
                }));
            };
            let created = {
                let _depth = CreatingDepth::enter();
                create()
            };
            match created {
                Ok(value) => {
                    // From here on the caller gets its value whatever
                    // happens to the copy the cache keeps: a value that
                    // cannot be encoded or stored is counted, not lost.
                    let expire = self.policy.expire;
                    let entry = self.entry(&value, expire, ns.epoch, region.epoch).ok();
                    let kept = entry
                        .as_ref()
                        .filter(|e| self.store(key, e, expire).is_ok());
                    drop(guard);
                    if let Some(entry) = kept {
                        // Followers decode the encoding after the envelope.
                        finish(Outcome::Created(Arc::from(&entry[envelope::HEADER_LEN..])));
                    } else {
                        self.ns
                            .shared
                            .store_failures
                            .fetch_add(1, Ordering::Relaxed);
                        finish(Outcome::Retry);
                    }
                    return Ok(value);
                }
                Err(e) => {
                    drop(guard);
                    let e = Arc::new(e);
                    let shared: Arc<dyn Any + Send + Sync> = e.clone();
                    finish(Outcome::Failed(shared));
                    return Err(CreateError::Creator(e));
                }
            }
        }
    }

    /// Takes the creation lock of `key`: waiting (up to
    /// `cache.lock_timeout`) or only trying.
    pub(super) fn take_creation_lock(&self, key: &[u8], hash: u64, wait: bool) -> Result<Lock<'_>> {
        let wait = Wait::new(wait, self.policy.lock_timeout);
        lock_wait::lock(&self.ns.shared.backend, key, hash, wait)
    }

    /// What a follower makes of its leader's outcome: `Some` to return,
    /// `None` to start over (the leader failed to give it a value, or made
    /// a value or an error of another type at another call site: read the
    /// backend again). Shared by the blocking and the async fronts.
    pub(super) fn followed<V, E>(&self, outcome: Outcome) -> Option<Result<V, CreateError<E>>>
    where
        V: serde::de::DeserializeOwned,
        E: Send + Sync + 'static,
    {
        match outcome {
            Outcome::Created(payload) => self.codec.decode::<V>(&payload).ok().map(Ok),
            Outcome::Failed(err) => err
                .downcast::<E>()
                .ok()
                .map(|e| Err(CreateError::Creator(e))),
            Outcome::TimedOut(waited) => Some(Err(CreateError::Cache(self.timeout_error(waited)))),
            Outcome::Retry => None,
        }
    }

    /// The error of a caller that waited `waited` for a creation lock.
    pub(super) fn timeout_error(&self, waited: std::time::Duration) -> Error {
        Error::LockTimeout {
            namespace: self.ns.name.clone(),
            waited,
        }
    }

    /// What a caller does once its wait for the creation lock timed out,
    /// as `cache.on_lock_timeout` says: fail, or run the creator without
    /// the lock and keep nothing. The flight's followers get the same.
    fn after_timeout<V, E, F>(
        &self,
        leader: Option<Leader<'_>>,
        waited: std::time::Duration,
        create: Option<F>,
    ) -> Result<V, CreateError<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E>,
    {
        let finish = |outcome: Outcome| {
            if let Some(l) = leader {
                l.finish(outcome);
            }
        };
        let create = match (self.policy.on_lock_timeout, create) {
            (OnLockTimeout::Create, Some(create)) => create,
            _ => {
                finish(Outcome::TimedOut(waited));
                return Err(CreateError::Cache(self.timeout_error(waited)));
            }
        };
        let created = {
            let _depth = CreatingDepth::enter();
            create()
        };
        match created {
            Ok(value) => {
                finish(self.uncached_outcome(&value));
                Ok(value)
            }
            Err(e) => {
                let e = Arc::new(e);
                let shared: Arc<dyn Any + Send + Sync> = e.clone();
                finish(Outcome::Failed(shared));
                Err(CreateError::Creator(e))
            }
        }
    }

    /// The flight outcome of a value created without the lock (kept
    /// nowhere): its encoding, for the followers to decode.
    pub(super) fn uncached_outcome<V: Serialize>(&self, value: &V) -> Outcome {
        let mut payload = Vec::new();
        match self.codec.encode(value, &mut payload) {
            Ok(()) => Outcome::Created(Arc::from(payload)),
            Err(_) => Outcome::Retry,
        }
    }

    /// True while a thread of this process runs the creator of `key`
    /// (dogpile's `key_is_locked`, for this process).
    pub fn is_creating(&self, key: &(impl CacheKey + ?Sized)) -> Result<bool> {
        Ok(self.ns.shared.flights.in_flight(&self.stored_key(key)?))
    }

    /// How many threads of this process joined the creation of `key` in
    /// progress, instead of creating it themselves: they either got the
    /// stale value or are waiting for the new one. Zero when no creation
    /// is in progress.
    pub fn joined_creation(&self, key: &(impl CacheKey + ?Sized)) -> Result<usize> {
        Ok(self.ns.shared.flights.followers(&self.stored_key(key)?))
    }

    /// How many values `get_or_create` created but could not keep (encode
    /// or backend failures), in this process, since the namespace was
    /// opened.
    pub fn store_failures(&self) -> u64 {
        self.ns.shared.store_failures.load(Ordering::Relaxed)
    }

    /// [`get_or_create`](Cache::get_or_create) with a creator that cannot
    /// fail.
    pub fn get_or_insert_with<V, F>(&self, key: &(impl CacheKey + ?Sized), create: F) -> Result<V>
    where
        V: Serialize + DeserializeOwned,
        F: FnOnce() -> V,
    {
        self.get_or_create(key, || Ok::<V, std::convert::Infallible>(create()))
            .map_err(|e| match e {
                CreateError::Cache(e) => e,
                CreateError::Creator(never) => match *never {},
            })
    }
}
