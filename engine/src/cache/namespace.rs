//! One cache namespace: the [`Cache`] API (get, set, invalidate, …). The
//! get-or-create algorithm is in `create.rs`, the invalidation markers in
//! `markers.rs`, the region policy in `policy.rs`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::{Backend, Capabilities};
use super::codec::{Codec, Postcard};
use super::envelope::{self, Meta};
use super::flight::Flights;
use super::key::{self, CacheKey};
use super::markers::{Invalidation, Marker, MarkerSlot};
use super::policy::{self, Policy, Standing};
use crate::clock::Clock;
use crate::error::{Error, Result};

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

/// One opened backend namespace, shared by every view of it in a
/// manager (through a region or not): its in-process flights and its
/// marker live here, so that they are one per stored namespace.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    /// The backend's capabilities, read once when it was opened.
    pub caps: Capabilities,
    pub flights: Flights,
    pub marker: MarkerSlot,
    /// Values created but not kept (see [`Cache::store_failures`]).
    pub store_failures: AtomicU64,
}

impl Shared {
    pub(crate) fn new(backend: Arc<dyn Backend>, marker: MarkerSlot) -> Shared {
        Shared {
            caps: backend.capabilities(),
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
    /// The namespace's marker and its region's (the initial marker
    /// outside a region).
    pub(super) fn markers(&self) -> Result<(Marker, Marker)> {
        super::markers::current_pair(&self.shared.marker, self.region.as_deref())
    }
}

/// What one fetch found.
/// What one fetch found.
pub(super) enum Found<V> {
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
    pub(super) ns: Arc<Namespace>,
    pub(super) policy: Policy,
    pub(super) codec: C,
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

    pub(super) fn stored_key<'k>(
        &self,
        key: &'k (impl CacheKey + ?Sized),
    ) -> Result<Cow<'k, [u8]>> {
        Ok(key::stored_key(key.key_bytes(), self.policy.key_length))
    }

    pub(super) fn lookup<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Found<CachedValue<V>>> {
        self.lookup_under(key, self.ns.markers()?)
    }

    /// [`lookup`](Self::lookup) with the markers already read.
    pub(super) fn lookup_under<V: DeserializeOwned>(
        &self,
        key: &[u8],
        markers: (Marker, Marker),
    ) -> Result<Found<CachedValue<V>>> {
        self.found(self.ns.shared.backend.get(key), markers)
    }

    /// What [`lookup_under`](Self::lookup_under) makes of a fetch.
    pub(super) fn found<V: DeserializeOwned>(
        &self,
        fetched: Result<Option<super::Fetched<'_>>>,
        markers: (Marker, Marker),
    ) -> Result<Found<CachedValue<V>>> {
        let found = self.judge(fetched, markers, |meta, stale, payload| {
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
        self.judge(self.ns.shared.backend.get(key), (ns, region), f)
    }

    /// [`peek`](Self::peek) of what a fetch gave (the blocking backend's
    /// or an [`AsyncBackend`](super::AsyncBackend)'s).
    pub(super) fn judge<R>(
        &self,
        fetched: Result<Option<super::Fetched<'_>>>,
        (ns, region): (Marker, Marker),
        f: impl FnOnce(&Meta, bool, &[u8]) -> Option<R>,
    ) -> Result<Option<R>> {
        let fetched = match fetched {
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
        let now = || self.ns.clock.now_unix_ms();
        Ok(match policy::standing(&meta, (ns, region), now) {
            Standing::Miss => None,
            Standing::Fresh => f(&meta, false, payload),
            Standing::Stale => f(&meta, true, payload),
        })
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
    pub(super) fn entry<V: Serialize + ?Sized>(
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
    pub(super) fn store(&self, key: &[u8], entry: &[u8], expire: Option<Duration>) -> Result<()> {
        let physical = self.policy.backend_ttl(expire);
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
    ///
    /// Marking a value stale is a read-modify-write: on a backend without
    /// [`atomic_update`](Capabilities::atomic_update) a soft invalidation
    /// removes the key instead (a miss rather than a stale value; never a
    /// stale value left looking fresh by a lost write).
    pub fn invalidate(&self, key: &(impl CacheKey + ?Sized), how: Invalidation) -> Result<()> {
        let key = self.stored_key(key)?;
        match self.invalidation(how) {
            Invalidation::Hard => self.ns.shared.backend.remove(&key).map(|_| ()),
            Invalidation::Soft => self.ns.shared.backend.update(&key, &mut marked_stale),
        }
    }

    /// How `invalidate` goes on this backend: as asked, or hard when the
    /// backend cannot mark a value stale atomically.
    pub(super) fn invalidation(&self, how: Invalidation) -> Invalidation {
        if self.ns.shared.caps.atomic_update {
            how
        } else {
            Invalidation::Hard
        }
    }

    /// Invalidates every value of this namespace, in every process that
    /// shares its backend.
    pub fn invalidate_all(&self, how: Invalidation) -> Result<()> {
        self.ns.shared.marker.invalidate(how)
    }

    /// Every key with a value (fresh or stale), as stored (long keys
    /// hashed). [`Error::Unsupported`] on a backend that cannot list keys
    /// ([`Capabilities::list_keys`]).
    pub fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.ns.shared.backend.keys()
    }

    /// Removes every value of this namespace (Beaker's `Cache.clear`).
    ///
    /// On a backend that cannot list keys ([`Capabilities::list_keys`])
    /// the values cannot be found to be removed: the namespace is
    /// invalidated hard instead, through its marker, so that every value
    /// reads as a miss in every process (the backend drops the bytes when
    /// it evicts them or they are overwritten).
    pub fn clear(&self) -> Result<()> {
        if self.ns.shared.caps.list_keys {
            self.ns.shared.backend.clear()
        } else {
            self.invalidate_all(Invalidation::Hard)
        }
    }
}

/// A soft invalidation of one stored entry: the same entry marked stale
/// (`None`, nothing to store, when there is none or it is unreadable).
pub(super) fn marked_stale(current: Option<&[u8]>) -> Option<Vec<u8>> {
    let bytes = current?;
    let (mut meta, payload) = Meta::decode(bytes)?;
    meta.stale = true;
    let mut out = Vec::with_capacity(bytes.len());
    meta.encode_into(&mut out);
    out.extend_from_slice(payload);
    Some(out)
}
