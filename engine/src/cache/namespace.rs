//! One cache namespace: [`Cache`], and its creation algorithm (in its docs).

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::Backend;
use super::codec::{Codec, Postcard};
use super::envelope::{self, Marker, Meta};
use super::flight::{Flights, Join, Outcome};
use super::key::{self, CacheKey};
use crate::clock::Clock;
use crate::error::{Error, Result};

/// How hard an invalidation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Values become misses: the next caller regenerates, and everyone
    /// else waits for it.
    Hard,
    /// Values become stale: one caller regenerates while the others keep
    /// getting the old value (unless the cache never serves stale values).
    Soft,
}

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

/// A cached value with its metadata, as [`Cache::get_entry`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedValue<V> {
    /// The value.
    pub value: V,
    /// When it was created (Unix ms, by the cache's clock).
    pub created_unix_ms: u64,
    /// When it stops being fresh (Unix ms), `None` for never.
    pub expires_unix_ms: Option<u64>,
    /// True when it is expired or was invalidated softly: `get` would not
    /// return it, `get_or_create` would regenerate it.
    pub stale: bool,
}

/// Per-cache settings that shape how values are read and written.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub expire: Option<Duration>,
    pub serve_stale: bool,
    pub stale_for: Option<Duration>,
    pub key_length: usize,
    pub enabled: bool,
}

/// One invalidation marker: a key in the backend's markers namespace
/// (`carboy:markers`, beside the data namespaces, so that marker keys never
/// share a key space with user keys), kept in memory while that
/// namespace's change stamp holds still.
pub(crate) struct MarkerSlot {
    backend: Arc<dyn Backend>,
    key: Vec<u8>,
    cached: ArcSwapOption<(u128, Marker)>,
}

impl MarkerSlot {
    /// The marker stored under `key` in the markers namespace `backend`.
    pub(crate) fn new(backend: Arc<dyn Backend>, key: Vec<u8>) -> MarkerSlot {
        MarkerSlot {
            backend,
            key,
            cached: ArcSwapOption::empty(),
        }
    }

    /// The current marker, from memory when nothing changed.
    pub(crate) fn current(&self) -> Result<Marker> {
        self.current_at(self.backend.change_stamp()?)
    }

    /// The current marker, given the markers namespace's change stamp read
    /// just before.
    fn current_at(&self, stamp: Option<u128>) -> Result<Marker> {
        // The stamp is read before the marker: if it still matches later,
        // the marker read after it is still current. Data writes do not
        // move it: markers have a namespace of their own.
        if let Some(stamp) = stamp
            && let Some(c) = &*self.cached.load()
            && c.0 == stamp
        {
            return Ok(c.1);
        }
        let marker = match self.backend.get(&self.key) {
            Ok(v) => Marker::decode(v.as_deref()),
            Err(e) if e.is_corruption() => Marker::default(),
            Err(e) => return Err(e),
        };
        if let Some(stamp) = stamp {
            self.cached.store(Some(Arc::new((stamp, marker))));
        }
        Ok(marker)
    }

    /// Records one more invalidation, for every process.
    pub(crate) fn invalidate(&self, how: Invalidation) -> Result<()> {
        self.backend.update(&self.key, &mut |current| {
            Some(
                Marker::decode(current)
                    .bumped(how == Invalidation::Hard)
                    .encode(),
            )
        })?;
        self.cached.store(None);
        Ok(())
    }
}

/// One opened backend namespace, shared by every view of it in a
/// manager (through a region or not): its in-process flights and its
/// marker live here, so that they are one per stored namespace.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub flights: Flights,
    pub marker: MarkerSlot,
    /// Values created but not kept (see [`Cache::store_failures`]).
    pub store_failures: AtomicU64,
}

impl Shared {
    pub(crate) fn new(backend: Arc<dyn Backend>, marker: MarkerSlot) -> Shared {
        Shared {
            backend,
            flights: Flights::default(),
            marker,
            store_failures: AtomicU64::new(0),
        }
    }
}

/// A namespace as seen through a region (or none): every `Cache` handle
/// on it shares this.
pub(crate) struct Namespace {
    pub name: String,
    pub shared: Arc<Shared>,
    /// The region's marker, if the namespace was opened through a region.
    pub region: Option<Arc<MarkerSlot>>,
    pub clock: Arc<dyn Clock>,
}

impl Namespace {
    fn markers(&self) -> Result<(Marker, Marker)> {
        let ns = &self.shared.marker;
        let stamp = ns.backend.change_stamp()?;
        let region = match &self.region {
            // Usually both markers live in one markers namespace: one
            // stamp read serves both.
            Some(r) if Arc::ptr_eq(&r.backend, &ns.backend) => r.current_at(stamp)?,
            Some(r) => r.current()?,
            None => Marker::default(),
        };
        Ok((ns.current_at(stamp)?, region))
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

/// What one fetch found.
enum Found<V> {
    Fresh(V),
    Stale(V),
    Missing,
}

/// One cache namespace: Beaker's `Cache`, dogpile's region-bound cache.
///
/// Values are any serde type, encoded by the codec `C` ([`Postcard`] by
/// default); keys are strings, bytes, integers or [`Serialized`] values
/// (see [`CacheKey`]). A value that no longer decodes as the type asked
/// for counts as a miss, never an error.
///
/// `Cache` is cheap to clone and `Send + Sync`. Get one from a
/// [`CacheManager`](super::CacheManager) or a [`Region`](super::Region).
///
/// ```
/// use carboy::cache::CacheManager;
/// use std::time::Duration;
///
/// let manager = CacheManager::builder().expire(Duration::from_secs(60)).build()?;
/// let users = manager.get_cache("users")?;
/// let name: String = users
///     .get_or_create("user:1", || Ok::<_, std::io::Error>("alice".to_string()))
///     .unwrap();
/// assert_eq!(users.get::<String>("user:1")?.as_deref(), Some("alice"));
/// # Ok::<(), carboy::Error>(())
/// ```
///
/// # The creation algorithm
///
/// Beaker's `Value.get_value` and dogpile's `Lock`, with both halves of the
/// lock spelled out:
///
/// 1. Fetch the entry once (value and metadata together). Fresh: return
///    it, no lock taken.
/// 2. Join the in-process flight for the key (`cache/flight.rs`).
///    A follower with a stale value returns the stale value at once; one
///    without waits for the leader's outcome (its value, its error, or
///    "start over").
/// 3. The leader takes the backend's cross-process creation lock: without
///    waiting when it has a stale value to serve (busy: another process is
///    creating, serve the stale value), waiting when it has none.
/// 4. Holding the lock, fetch again: another process may have created the
///    value meanwhile (then no creation happens).
/// 5. Run the creator, store the value, release the lock, hand the outcome
///    to the followers. A creator error reaches every follower (as the same
///    `Arc<E>`) and stores nothing; a panic releases everything and the
///    followers start over.
///
/// "Never serve stale" ([`Cache::serving_stale`]`(false)`) makes stale
/// values count as missing: everyone waits for the one creator.
///
/// # Invalidation
///
/// Each namespace (and each region) has a marker: an epoch counter and the
/// epochs below which values are misses (hard) or stale (soft). A creation
/// records the epochs it began under in the value's envelope. Markers live
/// in the backend, so an invalidation in one process is seen by every
/// other; a reader keeps the marker in memory while the backend's change
/// stamp says nothing changed, so a hit costs no extra fetch.
///
/// [`Serialized`]: super::Serialized
pub struct Cache<C: Codec = Postcard> {
    ns: Arc<Namespace>,
    policy: Policy,
    codec: C,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache {
            ns: Arc::clone(&self.ns),
            policy: self.policy.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<C: Codec> fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.ns.name)
            .field("backend", &self.ns.shared.backend)
            .field("expire", &self.policy.expire)
            .field("serve_stale", &self.policy.serve_stale)
            .field("enabled", &self.policy.enabled)
            .finish_non_exhaustive()
    }
}

impl Cache<Postcard> {
    pub(crate) fn new(ns: Arc<Namespace>, policy: Policy) -> Cache<Postcard> {
        Cache {
            ns,
            policy,
            codec: Postcard,
        }
    }
}

impl<C: Codec> Cache<C> {
    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    /// How long new values stay fresh (`None`: until invalidated).
    pub fn expire(&self) -> Option<Duration> {
        self.policy.expire
    }

    /// The backend this namespace lives in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.ns.shared.backend
    }

    /// This cache with another expiry for the values it creates and sets
    /// from now on (values already stored keep theirs).
    pub fn with_expire(mut self, expire: Option<Duration>) -> Cache<C> {
        self.policy.expire = expire;
        self
    }

    /// This cache serving stale values while one caller regenerates
    /// (`true`, the default) or making everyone wait for the new value
    /// (`false`, "never serve stale").
    pub fn serving_stale(mut self, serve: bool) -> Cache<C> {
        self.policy.serve_stale = serve;
        self
    }

    /// This cache with another codec for values (same namespace, same
    /// keys; values stored by the other codec read as misses unless both
    /// agree on the bytes).
    pub fn with_codec<D: Codec>(&self, codec: D) -> Cache<D> {
        Cache {
            ns: Arc::clone(&self.ns),
            policy: self.policy.clone(),
            codec,
        }
    }

    fn stored_key<'k>(&self, key: &'k (impl CacheKey + ?Sized)) -> Result<Cow<'k, [u8]>> {
        Ok(key::stored_key(key.key_bytes(), self.policy.key_length))
    }

    fn lookup<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Found<CachedValue<V>>> {
        self.lookup_under(key, self.ns.markers()?)
    }

    /// [`lookup`](Self::lookup) with the markers already read.
    fn lookup_under<V: DeserializeOwned>(
        &self,
        key: &[u8],
        markers: (Marker, Marker),
    ) -> Result<Found<CachedValue<V>>> {
        let found = self.peek(key, markers, |meta, stale, payload| {
            let value = self.codec.decode::<V>(payload).ok()?;
            let entry = CachedValue {
                value,
                created_unix_ms: meta.created_ms,
                expires_unix_ms: meta.expires_ms(),
                stale,
            };
            Some(if stale {
                Found::Stale(entry)
            } else {
                Found::Fresh(entry)
            })
        })?;
        Ok(found.unwrap_or(Found::Missing))
    }

    /// Fetches `key` and reads its envelope: `None` when it is missing,
    /// damaged or hard-invalidated; otherwise what `f` makes of its
    /// metadata, whether it is stale, and its encoded value (which `f`
    /// decodes, or not).
    fn peek<R>(
        &self,
        key: &[u8],
        (ns, region): (Marker, Marker),
        f: impl FnOnce(&Meta, bool, &[u8]) -> Option<R>,
    ) -> Result<Option<R>> {
        let fetched = match self.ns.shared.backend.get(key) {
            Ok(f) => f,
            // A damaged entry is a miss: the next creation overwrites it.
            Err(e) if e.is_corruption() => None,
            Err(e) => return Err(e),
        };
        let Some(bytes) = fetched else {
            return Ok(None);
        };
        let Some((meta, payload)) = Meta::decode(&bytes) else {
            return Ok(None);
        };
        if meta.ns_epoch < ns.hard || meta.region_epoch < region.hard {
            return Ok(None);
        }
        let stale = meta.stale
            || meta.ns_epoch < ns.soft
            || meta.region_epoch < region.soft
            || (meta.ttl_ms.is_some() && meta.is_expired_at(self.ns.clock.now_unix_ms()));
        Ok(f(&meta, stale, payload))
    }

    /// The fresh value of `key`, or `None` when it is missing, expired,
    /// invalidated, or stored as another type.
    pub fn get<V: DeserializeOwned>(&self, key: &(impl CacheKey + ?Sized)) -> Result<Option<V>> {
        if !self.policy.enabled {
            return Ok(None);
        }
        let key = self.stored_key(key)?;
        // A stale value is not decoded: it would be thrown away.
        self.peek(&key, self.ns.markers()?, |_, stale, payload| {
            (!stale).then(|| self.codec.decode(payload).ok()).flatten()
        })
    }

    /// The value of `key` with its metadata, stale or not; `None` when it
    /// is missing, hard-invalidated, or stored as another type.
    pub fn get_entry<V: DeserializeOwned>(
        &self,
        key: &(impl CacheKey + ?Sized),
    ) -> Result<Option<CachedValue<V>>> {
        if !self.policy.enabled {
            return Ok(None);
        }
        let key = self.stored_key(key)?;
        Ok(match self.lookup(&key)? {
            Found::Fresh(e) | Found::Stale(e) => Some(e),
            Found::Missing => None,
        })
    }

    /// True when `key` has a fresh value (of any type: the value is not
    /// decoded).
    pub fn contains(&self, key: &(impl CacheKey + ?Sized)) -> Result<bool> {
        if !self.policy.enabled {
            return Ok(false);
        }
        let key = self.stored_key(key)?;
        let fresh = self.peek(&key, self.ns.markers()?, |_, stale, _| Some(!stale))?;
        Ok(fresh == Some(true))
    }

    /// Stores `value` under `key`, fresh for the cache's expiry.
    pub fn set<V: Serialize + ?Sized, K: CacheKey + ?Sized>(
        &self,
        key: &K,
        value: &V,
    ) -> Result<()> {
        self.set_for(key, value, self.policy.expire)
    }

    /// Stores `value` under `key`, fresh for `expire` (`None`: until
    /// invalidated).
    pub fn set_for<V: Serialize + ?Sized>(
        &self,
        key: &(impl CacheKey + ?Sized),
        value: &V,
        expire: Option<Duration>,
    ) -> Result<()> {
        if !self.policy.enabled {
            return Ok(());
        }
        let key = self.stored_key(key)?;
        let (ns, region) = self.ns.markers()?;
        let entry = self
            .entry(value, expire, ns.epoch, region.epoch)
            .map_err(|reason| self.encode_error(reason))?;
        self.store(&key, &entry, expire)
    }

    fn encode_error(&self, reason: String) -> Error {
        Error::Encode {
            namespace: self.ns.name.clone(),
            reason,
        }
    }

    /// The stored form of `value`, fresh for `expire` from now: the
    /// envelope, with the codec's encoding appended to it in place.
    fn entry<V: Serialize + ?Sized>(
        &self,
        value: &V,
        expire: Option<Duration>,
        ns_epoch: u64,
        region_epoch: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        let meta = Meta {
            created_ms: self.ns.clock.now_unix_ms(),
            ttl_ms: expire.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
            stale: false,
            ns_epoch,
            region_epoch,
        };
        let mut bytes = Vec::with_capacity(envelope::HEADER_LEN + 64);
        meta.encode_into(&mut bytes);
        self.codec.encode(value, &mut bytes)?;
        Ok(bytes)
    }

    /// Stores `entry` (made by [`entry`](Self::entry) with `expire`).
    fn store(&self, key: &[u8], entry: &[u8], expire: Option<Duration>) -> Result<()> {
        // The backend may drop the entry once it is no longer of use even
        // as a stale value.
        let physical = match (expire, self.policy.stale_for) {
            (Some(e), Some(s)) => Some(e.saturating_add(s)),
            _ => None,
        };
        self.ns.shared.backend.set(key, entry, physical)
    }

    /// Removes `key`; returns whether it had a value.
    pub fn remove(&self, key: &(impl CacheKey + ?Sized)) -> Result<bool> {
        let key = self.stored_key(key)?;
        self.ns.shared.backend.remove(&key)
    }

    /// Invalidates one key: [`Hard`](Invalidation::Hard) removes it,
    /// [`Soft`](Invalidation::Soft) marks its value stale (served while one
    /// caller regenerates it).
    pub fn invalidate(&self, key: &(impl CacheKey + ?Sized), how: Invalidation) -> Result<()> {
        let key = self.stored_key(key)?;
        match how {
            Invalidation::Hard => self.ns.shared.backend.remove(&key).map(|_| ()),
            Invalidation::Soft => self.ns.shared.backend.update(&key, &mut |current| {
                let bytes = current?;
                let (mut meta, payload) = Meta::decode(bytes)?;
                meta.stale = true;
                let mut out = Vec::with_capacity(bytes.len());
                meta.encode_into(&mut out);
                out.extend_from_slice(payload);
                Some(out)
            }),
        }
    }

    /// Invalidates every value of this namespace, in every process that
    /// shares its backend.
    pub fn invalidate_all(&self, how: Invalidation) -> Result<()> {
        self.ns.shared.marker.invalidate(how)
    }

    /// Every key with a value (fresh or stale), as stored (long keys
    /// hashed).
    pub fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.ns.shared.backend.keys()
    }

    /// Removes every value of this namespace (Beaker's `Cache.clear`).
    pub fn clear(&self) -> Result<()> {
        self.ns.shared.backend.clear()
    }

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
    /// [`CreateError::Cache`] always means the creator did not run. A panicking creator releases the key: the next caller
    /// creates.
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
        loop {
            let stale = match self.lookup::<V>(&key)? {
                Found::Fresh(e) => return Ok(e.value),
                Found::Stale(e) if self.policy.serve_stale => Some(e.value),
                _ => None,
            };
            // `leader` is `None` only for a nested creator that went past
            // another thread's flight (see below).
            let (leader, guard) = match self.ns.shared.flights.join(&key) {
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
                        let hash = key::lock_hash(&key);
                        self.ns.shared.backend.lock_creation(&key, hash, true)?
                    } else {
                        None
                    };
                    match nested {
                        Some(g) if g.is_held() => (None, g),
                        _ => match follower.wait() {
                            Outcome::Created(payload) => {
                                match self.codec.decode::<V>(&payload) {
                                    Ok(v) => return Ok(v),
                                    // Another call site made another type:
                                    // read the backend again.
                                    Err(_) => continue,
                                }
                            }
                            Outcome::Failed(err) => match err.downcast::<E>() {
                                Ok(e) => return Err(CreateError::Creator(e)),
                                Err(_) => continue,
                            },
                            Outcome::Retry => continue,
                        },
                    }
                }
                Join::Lead(leader) => {
                    // Hashed only here: a hit never needs the lock.
                    let hash = key::lock_hash(&key);
                    let lock = self
                        .ns
                        .shared
                        .backend
                        .lock_creation(&key, hash, stale.is_none());
                    match lock {
                        Ok(Some(g)) => (Some(leader), g),
                        // Another process is creating: serve the stale value.
                        Ok(None) => match stale {
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
            if let Found::Fresh(e) = self.lookup_under::<V>(&key, markers)? {
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
                        .filter(|e| self.store(&key, e, expire).is_ok());
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
