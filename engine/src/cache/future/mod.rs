//! The async front (cargo feature `async`): [`AsyncCache`], the
//! [`Cache`] API name for name, with creators that are futures.
//!
//! It is runtime-agnostic: nothing here spawns a task or needs a timer.
//! What is immediate stays on the caller's thread; what can wait on another
//! process runs on carboy's helper threads and wakes the task through a
//! one-value channel (`oneshot.rs`):
//!
//! | operation | where it runs |
//! |---|---|
//! | `get`, `get_entry`, `contains`, a hit of `get_or_create` | the calling task: one fetch, lock-free on `file`, no thread hop |
//! | waiting for another task's creation | the task awaits the flight's outcome (woken with blocking followers) |
//! | the creation lock, when free | the calling task, if the backend offers an owned lock (`file`: an owned stripe); one non-blocking `fcntl` |
//! | the creation lock, when busy or not offered (wait, try, or wait up to `cache.lock_timeout`) | a helper thread takes and holds it (`lock.rs`) |
//! | `set`, `remove`, storing a created value, when they need not wait | the calling task (`file`: this process's idle writer lease or a free `flock`, `durability = none`; `memory`: always) |
//! | `set`, `remove`, storing a created value otherwise; `invalidate*`, `clear` | a helper thread (a writer lock held elsewhere, an fsync under `durability = sync`) |
//!
//! On a backend with native async operations
//! ([`Backend::as_async`](super::Backend::as_async), an
//! [`AsyncBackend`]), the lookups, `set`, `remove`, `invalidate` of a key,
//! storing a created value and the creation lock await the backend's own
//! futures on the task instead. The invalidation markers are read from
//! memory while the markers namespace's change stamp holds still; without
//! a change stamp (memcached) they are awaited too, with the value in one
//! call ([`AsyncBackend::get_with`]) on a lookup. `invalidate_all` and
//! `clear` still run on a helper thread.
//!
//! Both fronts share one namespace's flights and locks: an [`AsyncCache`]
//! and a [`Cache`] on the same namespace, in one process or several, still
//! create each value once.

pub(super) mod lock;
mod oneshot;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::lock::{AsyncLock, HeldLock, off_thread};
use super::async_backend::{AsyncBackend, AsyncCreationGuard, LockWait, Locked};
use super::backend::Fetched;
use super::codec::{Codec, Postcard};
use super::create::CreateError;
use super::envelope;
use super::flight::{Join, Leader, Outcome};
use super::key::{self, CacheKey};
use super::lock_wait::Wait;
use super::markers::{Invalidation, Marker, MarkerSlot};
use super::namespace::{Cache, CachedValue, Found, marked_stale};
use super::policy::{self, OnBackendError, OnLockTimeout};
use crate::error::{Error, Result};

/// One cache namespace for async code: [`Cache`]'s API, name for name,
/// whose creators are futures (cargo feature `async`).
///
/// Get one with [`Cache::to_async`]; it is cheap to clone and shares
/// everything with the [`Cache`] it came from (settings, flights, locks).
///
/// * **One creator per key** across the tasks of a process, the threads
///   of the blocking front, and other processes; the other tasks await it
///   (or get the stale value at once), never blocking a worker thread.
/// * **A hit is a direct call**: one fetch on the calling task (awaited,
///   on a backend with native async operations).
/// * **Cancellation**: dropping a `get_or_create` future while its creator
///   runs frees the key (the flight and the cross-process lock); a waiting
///   task takes over; nothing from the cancelled creator is stored. Once
///   the creator has returned, its value is stored even if the future is
///   dropped, and only then is the lock released.
///
/// ```
/// use carboy::cache::CacheManager;
///
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
/// #         std::thread::yield_now();
/// #     }
/// # }
/// let manager = CacheManager::builder().backend("memory").build()?;
/// let users = manager.get_cache("users")?.to_async();
/// block_on(async {
///     let name: String = users
///         .get_or_create("user:1", || async { Ok::<_, std::io::Error>("alice".to_string()) })
///         .await?;
///     assert_eq!(name, "alice");
///     assert_eq!(users.get::<String>("user:1").await?.as_deref(), Some("alice"));
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncCache<C: Codec = Postcard> {
    cache: Cache<C>,
}

impl<C: Codec> Clone for AsyncCache<C> {
    fn clone(&self) -> Self {
        AsyncCache {
            cache: self.cache.clone(),
        }
    }
}

impl<C: Codec> std::fmt::Debug for AsyncCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncCache").field(&self.cache).finish()
    }
}

impl<C: Codec> Cache<C> {
    /// This cache's async front (cargo feature `async`): the same
    /// namespace, settings, flights and locks.
    pub fn to_async(&self) -> AsyncCache<C> {
        AsyncCache {
            cache: self.clone(),
        }
    }
}

impl<C: Codec> AsyncCache<C> {
    /// The blocking front of the same cache.
    pub fn blocking(&self) -> &Cache<C> {
        &self.cache
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        self.cache.namespace()
    }

    /// How long new values stay fresh (`None`: until invalidated).
    pub fn expire(&self) -> Option<Duration> {
        self.cache.expire()
    }

    /// As [`Cache::with_expire`].
    pub fn with_expire(self, expire: Option<Duration>) -> AsyncCache<C> {
        self.cache.with_expire(expire).to_async()
    }

    /// As [`Cache::serving_stale`].
    pub fn serving_stale(self, serve: bool) -> AsyncCache<C> {
        self.cache.serving_stale(serve).to_async()
    }

    /// The backend's native async operations, if it offers them
    /// ([`Backend::as_async`](super::Backend::as_async)).
    fn native(&self) -> Option<&dyn AsyncBackend> {
        self.cache.ns.shared.backend.as_async()
    }

    /// As [`Cache::get`]: a direct call, no thread hop (awaited, on a
    /// backend with native async operations).
    pub async fn get<V: DeserializeOwned>(
        &self,
        key: &(impl CacheKey + ?Sized),
    ) -> Result<Option<V>> {
        let Some(native) = self.native() else {
            return self.cache.get(key);
        };
        if !self.cache.policy.enabled {
            return Ok(None);
        }
        let key = self.cache.stored_key(key)?;
        let (fetched, markers) = self.read(native, &key).await?;
        // A stale value is not decoded: it would be thrown away.
        self.cache.judge(fetched, markers, |_, stale, payload| {
            (!stale)
                .then(|| self.cache.codec.decode(payload).ok())
                .flatten()
        })
    }

    /// As [`Cache::get_entry`]: a direct call (or awaited, as `get`).
    pub async fn get_entry<V: DeserializeOwned>(
        &self,
        key: &(impl CacheKey + ?Sized),
    ) -> Result<Option<CachedValue<V>>> {
        if self.native().is_none() {
            return self.cache.get_entry(key);
        }
        if !self.cache.policy.enabled {
            return Ok(None);
        }
        let key = self.cache.stored_key(key)?;
        Ok(match self.lookup(&key).await? {
            Found::Fresh(e) | Found::Stale(e) => Some(e),
            Found::Missing => None,
        })
    }

    /// As [`Cache::contains`]: a direct call (or awaited, as `get`).
    pub async fn contains(&self, key: &(impl CacheKey + ?Sized)) -> Result<bool> {
        let Some(native) = self.native() else {
            return self.cache.contains(key);
        };
        if !self.cache.policy.enabled {
            return Ok(false);
        }
        let key = self.cache.stored_key(key)?;
        let (fetched, markers) = self.read(native, &key).await?;
        let fresh = self
            .cache
            .judge(fetched, markers, |_, stale, _| Some(!stale))?;
        Ok(fresh == Some(true))
    }

    /// The entry of a stored key: a direct call, or awaited on a backend
    /// with native async operations (see [`read`](Self::read)).
    async fn lookup<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Found<CachedValue<V>>> {
        match self.native() {
            None => self.cache.lookup(key),
            Some(native) => {
                let (fetched, markers) = self.read(native, key).await?;
                self.cache.found(fetched, markers)
            }
        }
    }

    /// `key`'s value and the markers (the namespace's and its region's)
    /// through the backend's native operations, as the blocking front's
    /// `fetch_with_markers` reads them: when the markers namespace has no
    /// change stamp (so they must be read from the backend), both in one
    /// awaited call ([`AsyncBackend::get_with`]: one round trip on
    /// memcached); otherwise the markers (from memory while the stamp
    /// holds still, or as [`markers`](Self::markers) reads them), then the
    /// value.
    #[allow(clippy::type_complexity)]
    async fn read<'a>(
        &'a self,
        native: &'a dyn AsyncBackend,
        key: &'a [u8],
    ) -> Result<(Result<Option<Fetched<'a>>>, (Marker, Marker))> {
        let slot = &self.cache.ns.shared.marker;
        if !slot.has_stamp() {
            let region = self.cache.ns.region.as_deref();
            let mut keys: [&[u8]; 2] = [slot.key(), &[]];
            let (n, together) = match region {
                Some(r) => {
                    keys[1] = r.key();
                    (2, Arc::ptr_eq(r.backend(), slot.backend()))
                }
                None => (1, true),
            };
            if together {
                match native.get_with(key, &**slot.backend(), &keys[..n]).await {
                    Ok(Some((value, marks))) if marks.len() == n => {
                        let ns = slot.read_fetched(marks[0].as_deref())?;
                        let region = match region {
                            Some(r) => r.read_fetched(marks[1].as_deref())?,
                            None => Marker::default(),
                        };
                        return Ok((Ok(value), (ns, region)));
                    }
                    // Not for this pair: one after the other.
                    Ok(_) => {}
                    Err(e) if e.is_corruption() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let markers = self.markers().await?;
        Ok((native.get(key).await, markers))
    }

    /// The markers of the namespace and of its region, as the blocking
    /// front reads them, but awaited through the markers namespace's
    /// native operations when they must be read from the backend (no
    /// change stamp) and it offers them: both in one call where they
    /// share the markers namespace.
    async fn markers(&self) -> Result<(Marker, Marker)> {
        let ns = &self.cache.ns;
        let slot = &ns.shared.marker;
        if slot.has_stamp() {
            return ns.markers();
        }
        let Some(native) = slot.backend().as_async() else {
            return ns.markers();
        };
        let read = |slot: &MarkerSlot, got: Result<Option<Fetched<'_>>>| match got {
            Ok(v) => slot.read_fetched(v.as_deref()),
            // A damaged marker is a lost one.
            Err(e) if e.is_corruption() => slot.read_fetched(None),
            Err(e) => Err(e),
        };
        let Some(region) = ns.region.as_deref() else {
            return Ok((read(slot, native.get(slot.key()).await)?, Marker::default()));
        };
        if !Arc::ptr_eq(region.backend(), slot.backend()) {
            return ns.markers();
        }
        let keys: [&[u8]; 1] = [region.key()];
        match native.get_with(slot.key(), &**slot.backend(), &keys).await {
            Ok(Some((mine, mut theirs))) if theirs.len() == 1 => {
                let theirs = theirs.pop().flatten();
                Ok((read(slot, Ok(mine))?, read(region, Ok(theirs))?))
            }
            Ok(_) => Ok((
                read(slot, native.get(slot.key()).await)?,
                read(region, native.get(region.key()).await)?,
            )),
            Err(e) if e.is_corruption() => {
                Ok((slot.read_fetched(None)?, region.read_fetched(None)?))
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the creation lock of a stored key as `wait` says: through
    /// the backend's native async lock, or on a helper thread
    /// (`lock.rs`).
    async fn lock<'a>(&'a self, key: &'a [u8], wait: Wait) -> Result<Got<'a>> {
        let hash = key::lock_hash(key);
        let shared = &self.cache.ns.shared;
        let Some(native) = self.native() else {
            let caps = shared.caps.creation_locks;
            return Ok(
                match lock::take(&shared.backend, caps, key, hash, wait).await? {
                    AsyncLock::Held(held) => Got::Held(Hold::Thread(held)),
                    AsyncLock::Busy => Got::Busy,
                    AsyncLock::TimedOut(waited) => Got::TimedOut(waited),
                },
            );
        };
        let (how, timeout) = match wait {
            Wait::No => (LockWait::No, Duration::ZERO),
            Wait::Forever => (LockWait::Forever, Duration::ZERO),
            Wait::For(t) => (LockWait::UpTo(t), t),
        };
        Ok(match native.lock_creation(key, hash, how).await? {
            Locked::Held(guard) => Got::Held(Hold::Native(native, guard)),
            Locked::Busy => Got::Busy,
            Locked::TimedOut => Got::TimedOut(timeout),
        })
    }

    /// As [`Cache::set`]; the write runs on the task when the backend can
    /// write without waiting, otherwise on a helper thread.
    pub async fn set<V: Serialize + ?Sized, K: CacheKey + ?Sized>(
        &self,
        key: &K,
        value: &V,
    ) -> Result<()> {
        self.set_for(key, value, self.cache.policy.expire).await
    }

    /// As [`Cache::set_for`]; the write runs on the task when the backend
    /// can write without waiting, otherwise on a helper thread.
    pub async fn set_for<V: Serialize + ?Sized>(
        &self,
        key: &(impl CacheKey + ?Sized),
        value: &V,
        expire: Option<Duration>,
    ) -> Result<()> {
        if !self.cache.policy.enabled {
            return Ok(());
        }
        let stored = self.cache.stored_key(key)?.into_owned();
        let (ns, region) = match self.native() {
            Some(_) => self.markers().await?,
            None => self.cache.ns.markers()?,
        };
        let entry = self
            .cache
            .entry(value, expire, ns.epoch, region.epoch)
            .map_err(|reason| Error::Encode {
                namespace: self.cache.ns.name.clone(),
                reason,
            })?;
        if let Some(native) = self.native() {
            let ttl = self.cache.policy.backend_ttl(expire);
            return native.set(&stored, &entry, ttl).await;
        }
        if lock::store_now(&self.cache, &stored, &entry, expire)? {
            return Ok(());
        }
        let cache = self.cache.clone();
        off_thread(move || cache.store(&stored, &entry, expire)).await
    }

    /// As [`Cache::remove`]; on the task when the backend can remove
    /// without waiting, otherwise on a helper thread (or awaited on a
    /// backend with native async operations).
    pub async fn remove(&self, key: &(impl CacheKey + ?Sized)) -> Result<bool> {
        let stored = self.cache.stored_key(key)?;
        if let Some(native) = self.native() {
            return native.remove(&stored).await;
        }
        if let Some(existed) = self.cache.ns.shared.backend.try_remove_now(&stored)? {
            return Ok(existed);
        }
        let (cache, key) = (self.cache.clone(), key.key_bytes().into_owned());
        off_thread(move || cache.remove(&key)).await
    }

    /// As [`Cache::invalidate`]; runs on a helper thread (or is awaited on
    /// a backend with native async operations: a remove, or an update
    /// that marks the value stale).
    pub async fn invalidate(
        &self,
        key: &(impl CacheKey + ?Sized),
        how: Invalidation,
    ) -> Result<()> {
        if let Some(native) = self.native() {
            let key = self.cache.stored_key(key)?;
            return match self.cache.invalidation(how) {
                Invalidation::Hard => native.remove(&key).await.map(drop),
                Invalidation::Soft => {
                    let mut stale = marked_stale;
                    native.update(&key, &mut stale).await
                }
            };
        }
        let (cache, key) = (self.cache.clone(), key.key_bytes().into_owned());
        off_thread(move || cache.invalidate(&key, how)).await
    }

    /// As [`Cache::invalidate_all`]; runs on a helper thread (the marker
    /// is written with the blocking backend, whatever the backend).
    pub async fn invalidate_all(&self, how: Invalidation) -> Result<()> {
        let cache = self.cache.clone();
        off_thread(move || cache.invalidate_all(how)).await
    }

    /// As [`Cache::clear`]; runs on a helper thread (with the blocking
    /// backend, whatever the backend).
    pub async fn clear(&self) -> Result<()> {
        let cache = self.cache.clone();
        off_thread(move || cache.clear()).await
    }

    /// As [`Cache::is_creating`].
    pub fn is_creating(&self, key: &(impl CacheKey + ?Sized)) -> Result<bool> {
        self.cache.is_creating(key)
    }

    /// As [`Cache::store_failures`].
    pub fn store_failures(&self) -> u64 {
        self.cache.store_failures()
    }

    /// As [`Cache::get_or_create`], with a creator that is a future: the
    /// value of `key`; when it is missing, expired or invalidated, exactly
    /// one caller (across tasks, threads and processes) awaits `create` and
    /// stores its value, while the others get the stale value at once or
    /// await the new one. The algorithm is [`Cache`]'s ("The creation
    /// algorithm"), and so are the errors: a creator error reaches every
    /// task of this process that awaited it, as the same `Arc<E>`.
    ///
    /// Waiting for the creation lock is bounded by `cache.lock_timeout`
    /// (then `cache.on_lock_timeout` decides); awaiting another task's
    /// creation is not (see engine/DESIGN.md, "The async front").
    pub async fn get_or_create<V, E, F, Fut>(
        &self,
        key: &(impl CacheKey + ?Sized),
        create: F,
    ) -> std::result::Result<V, CreateError<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
    {
        let cache = &self.cache;
        if !cache.policy.enabled {
            return create()
                .await
                .map_err(|e| CreateError::Creator(Arc::new(e)));
        }
        // Borrowed (no allocation) unless the key is hashed to fit.
        let key = cache.stored_key(key)?;
        let mut create = Some(create);
        match self.get_or_create_stored(&key, &mut create).await {
            // `cache.on_backend_error = create`: an outage runs the
            // creator (if it has not run) without the cache.
            Err(CreateError::Cache(e))
                if cache.policy.on_backend_error == OnBackendError::Create
                    && policy::is_backend_failure(&e) =>
            {
                match create.take() {
                    Some(create) => create()
                        .await
                        .map_err(|e| CreateError::Creator(Arc::new(e))),
                    None => Err(CreateError::Cache(e)),
                }
            }
            done => done,
        }
    }

    /// [`get_or_create`](Self::get_or_create) of the stored form of a
    /// key; `create` is taken when the creator runs.
    async fn get_or_create_stored<V, E, F, Fut>(
        &self,
        key: &[u8],
        create: &mut Option<F>,
    ) -> std::result::Result<V, CreateError<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
    {
        let cache = &self.cache;
        loop {
            let stale = match self.lookup::<V>(key).await? {
                Found::Fresh(e) => return Ok(e.value),
                Found::Stale(e) if cache.policy.serve_stale => Some(e.value),
                _ => None,
            };
            let leader = match cache.ns.shared.flights.join(key) {
                Join::Follow(follower) => {
                    if let Some(v) = stale {
                        return Ok(v);
                    }
                    match cache.followed(follower.outcome().await) {
                        Some(result) => return result,
                        None => continue,
                    }
                }
                Join::Lead(leader) => leader,
            };
            let wait = Wait::new(stale.is_none(), cache.policy.lock_timeout);
            let shared = &cache.ns.shared;
            let held = match self.lock(key, wait).await? {
                Got::Held(held) => held,
                Got::Busy => match stale {
                    Some(v) => {
                        leader.finish(Outcome::Retry);
                        return Ok(v);
                    }
                    None => continue,
                },
                Got::TimedOut(waited) => {
                    return self.after_timeout(leader, waited, create.take()).await;
                }
            };
            // Holding the lock: someone may have finished meanwhile.
            let (again, (ns, region)) = match &held {
                Hold::Native(native, _) => {
                    let (fetched, markers) = self.read(*native, key).await?;
                    (cache.found::<V>(fetched, markers)?, markers)
                }
                Hold::Thread(_) => {
                    let markers = cache.ns.markers()?;
                    (cache.lookup_under::<V>(key, markers)?, markers)
                }
            };
            if let Found::Fresh(e) = again {
                drop(held);
                leader.finish(Outcome::Retry);
                return Ok(e.value);
            }
            let Some(create) = create.take() else {
                return Err(CreateError::Cache(Error::InvalidOption {
                    name: "get_or_create",
                    reason: "creator already used".into(),
                }));
            };
            // Dropped here (cancelled): `held` and `leader` go with the
            // future, releasing the lock and handing the key on.
            match create().await {
                Ok(value) => {
                    let expire = cache.policy.expire;
                    let entry = cache.entry(&value, expire, ns.epoch, region.epoch).ok();
                    let kept = match (entry, held) {
                        (Some(entry), Hold::Native(native, guard)) => {
                            // Awaited here: dropped (cancelled) during the
                            // write, the backend's set is dropped with the
                            // lock; one set stores a value whole or not.
                            let ttl = cache.policy.backend_ttl(expire);
                            let stored = native.set(key, &entry, ttl).await;
                            drop(guard);
                            stored.ok().map(|()| entry)
                        }
                        (Some(entry), Hold::Thread(held)) => {
                            lock::store_created(cache, key, entry, expire, held).await
                        }
                        (None, held) => {
                            drop(held);
                            None
                        }
                    };
                    match kept {
                        Some(entry) => leader
                            .finish(Outcome::Created(Arc::from(&entry[envelope::HEADER_LEN..]))),
                        None => {
                            shared.store_failures.fetch_add(1, Ordering::Relaxed);
                            leader.finish(Outcome::Retry);
                        }
                    }
                    return Ok(value);
                }
                Err(e) => {
                    drop(held);
                    let e = Arc::new(e);
                    let shared: Arc<dyn Any + Send + Sync> = e.clone();
                    leader.finish(Outcome::Failed(shared));
                    return Err(CreateError::Creator(e));
                }
            }
        }
    }

    /// As the blocking front's: fail, or await the creator without the
    /// lock and keep nothing; the flight's followers get the same.
    async fn after_timeout<V, E, F, Fut>(
        &self,
        leader: Leader<'_>,
        waited: Duration,
        create: Option<F>,
    ) -> std::result::Result<V, CreateError<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
    {
        let create = match (self.cache.policy.on_lock_timeout, create) {
            (OnLockTimeout::Create, Some(create)) => create,
            _ => {
                leader.finish(Outcome::TimedOut(waited));
                return Err(CreateError::Cache(self.cache.timeout_error(waited)));
            }
        };
        match create().await {
            Ok(value) => {
                leader.finish(self.cache.uncached_outcome(&value));
                Ok(value)
            }
            Err(e) => {
                let e = Arc::new(e);
                let shared: Arc<dyn Any + Send + Sync> = e.clone();
                leader.finish(Outcome::Failed(shared));
                Err(CreateError::Creator(e))
            }
        }
    }

    /// As [`Cache::get_or_insert_with`]: [`get_or_create`](Self::get_or_create)
    /// with a creator that cannot fail.
    pub async fn get_or_insert_with<V, F, Fut>(
        &self,
        key: &(impl CacheKey + ?Sized),
        create: F,
    ) -> Result<V>
    where
        V: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        self.get_or_create(key, || async {
            Ok::<V, std::convert::Infallible>(create().await)
        })
        .await
        .map_err(|e| match e {
            CreateError::Cache(e) => e,
            CreateError::Creator(never) => match *never {},
        })
    }
}

/// A creation lock held for a task: by a helper thread, or through the
/// backend's native async lock. Dropping it releases the lock.
enum Hold<'a> {
    Thread(HeldLock),
    Native(&'a dyn AsyncBackend, AsyncCreationGuard<'a>),
}

/// What asking for a creation lock gave.
enum Got<'a> {
    Held(Hold<'a>),
    Busy,
    TimedOut(Duration),
}
