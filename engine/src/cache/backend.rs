//! The contract between the cache and its storage: the [`Backend`] trait
//! (Beaker's `NamespaceManager`), the [`BackendFactory`] that opens one
//! namespace of it, and the types they exchange. The process-wide registry
//! of backend type names is in `registry.rs`.
//!
//! A backend stores opaque bytes under opaque keys. Everything a cache adds
//! (the value envelope with its times, the codec, invalidation markers, the
//! dogpile algorithm) lives above it, in [`Cache`](super::Cache), so a new
//! backend only has to move bytes and, if it can, lock across processes.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::async_backend::AsyncBackend;
use crate::clock::Clock;
use crate::error::{Error, Result};

/// Bytes fetched from a backend, borrowed where the backend can lend them.
///
/// The file backend lends the value straight from the mapped file; the
/// memory backend shares its `Arc`; other backends hand over a `Vec`.
pub enum Fetched<'a> {
    /// Borrowed from a carboy namespace file.
    Mapped(crate::ValueRef<'a>),
    /// Shared with the backend.
    Shared(Arc<[u8]>),
    /// Owned by the caller.
    Owned(Vec<u8>),
}

impl Deref for Fetched<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Fetched::Mapped(v) => v,
            Fetched::Shared(v) => v,
            Fetched::Owned(v) => v,
        }
    }
}

impl fmt::Debug for Fetched<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched").field("len", &self.len()).finish()
    }
}

/// A held creation lock: dropping it releases the lock.
///
/// Backends that lock across processes return a guard that owns their lock
/// (the file backend's is a byte-range lock on one lock file per
/// namespace); [`CreationGuard::in_process`] is the guard of backends whose
/// data lives in one process, where the cache's own per-key single flight
/// is all the locking there is.
pub struct CreationGuard<'a>(#[allow(dead_code)] Option<Box<dyn Held + 'a>>);

/// Anything a guard can hold until it is dropped.
trait Held {}
impl<T> Held for T {}

impl<'a> CreationGuard<'a> {
    /// A guard that holds nothing: the backend needs no lock beyond the
    /// cache's in-process single flight.
    pub fn in_process() -> CreationGuard<'a> {
        CreationGuard(None)
    }

    /// True when the guard holds a lock (not [`in_process`](Self::in_process)).
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// A guard that releases `lock` when dropped.
    pub fn holding<T: 'a>(lock: T) -> CreationGuard<'a> {
        CreationGuard(Some(Box::new(lock)))
    }
}

impl fmt::Debug for CreationGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "CreationGuard(held)"
        } else {
            "CreationGuard(in-process)"
        })
    }
}

/// A creation lock held by whoever owns this guard, on any thread
/// ([`Backend::try_lock_creation_owned`]): `Send` and `'static`, unlike a
/// [`CreationGuard`]. Dropping it releases the lock.
pub struct OwnedCreationGuard(#[allow(dead_code)] Box<dyn Send>);

impl OwnedCreationGuard {
    /// A guard that releases `lock` when dropped (on whichever thread
    /// drops it).
    pub fn holding<T: Send + 'static>(lock: T) -> OwnedCreationGuard {
        OwnedCreationGuard(Box::new(lock))
    }
}

impl fmt::Debug for OwnedCreationGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnedCreationGuard")
    }
}

/// What [`Backend::try_lock_creation_owned`] answers.
#[derive(Debug)]
pub enum OwnedCreation {
    /// The lock is held until the guard is dropped.
    Held(OwnedCreationGuard),
    /// Someone else holds it (a thread or task of this process, another
    /// process); the caller may wait for it the ordinary way.
    Busy,
    /// Another process holds it without using it (the `file` backend's
    /// idle stripes); [`Backend::lock_creation`] on a thread, waiting or
    /// not, gets it shortly. A caller that would take "busy" as "someone
    /// is creating" asks that way instead.
    Leased,
    /// The backend offers no owned creation lock (the default): use
    /// [`Backend::lock_creation`].
    NotOffered,
}

/// The function [`Backend::update`] applies: the current value (if any)
/// to the next one (`None` removes the key).
pub type UpdateFn<'f> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'f;

/// What one opened backend namespace can do beyond the four required
/// operations (`get`, `set`, `remove`, `lock_creation`), as
/// [`Backend::capabilities`] declares it.
///
/// A capability is declared, never faked: a backend that lacks one answers
/// its method with [`Error::Unsupported`], and the cache works around it
/// as each field says. The conformance suite
/// (`carboy::cache::testing`, feature `testing`) runs a capability's cases
/// only when it is declared, and then requires them to pass; it also checks
/// that an undeclared one answers `Unsupported`.
///
/// ```
/// use carboy::cache::Capabilities;
///
/// // memcached: no key listing, no eviction promise; `cas` makes update atomic.
/// let memcached = Capabilities::NONE.atomic_update(true);
/// assert!(!memcached.list_keys && memcached.atomic_update);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`keys`](Backend::keys) lists the namespace (and so
    /// [`clear`](Backend::clear) can empty it). Without it,
    /// [`Cache::keys`](super::Cache::keys) answers `Unsupported` and
    /// [`Cache::clear`](super::Cache::clear) becomes a hard invalidation of
    /// the namespace through its marker (the values stay until the
    /// backend drops them, but read as misses).
    pub list_keys: bool,
    /// [`update`](Backend::update) is an atomic read-modify-write across
    /// every process that shares the backend. Without it, a soft
    /// invalidation of one key removes the key (a miss instead of a stale
    /// value), and invalidating a namespace or region writes its marker
    /// with a get and a set, always hard: two invalidations at once may
    /// merge into one, and either way the values read as misses.
    pub atomic_update: bool,
    /// [`change_stamp`](Backend::change_stamp) says cheaply whether
    /// anything changed. Without it, the cache reads the markers on every
    /// access instead of keeping them in memory.
    pub change_stamp: bool,
    /// [`lock_creation`](Backend::lock_creation) excludes across
    /// processes (and between two callers in one process). Without it,
    /// the cache's in-process single flight is the only lock: each process
    /// may create a value once.
    pub creation_locks: bool,
    /// Entries leave this namespace only by `remove`, `update`, `clear` or
    /// their TTL: never by eviction (an LRU, a memory limit). Asked for by
    /// [`OpenOptions::pinned`]; see there for what the cache does without
    /// it.
    pub never_evicts: bool,
    /// A TTL given to [`set`](Backend::set) runs on
    /// [`BackendConfig::clock`] (so tests can move it). A backend whose
    /// server keeps time leaves this off; the cache never relies on it
    /// (expiry is also stored in each value's envelope).
    pub expires_by_clock: bool,
}

impl Capabilities {
    /// Nothing beyond the required operations.
    pub const NONE: Capabilities = Capabilities {
        list_keys: false,
        atomic_update: false,
        change_stamp: false,
        creation_locks: false,
        never_evicts: false,
        expires_by_clock: false,
    };

    /// With [`list_keys`](Capabilities::list_keys) set to `yes`.
    pub const fn list_keys(mut self, yes: bool) -> Capabilities {
        self.list_keys = yes;
        self
    }

    /// With [`atomic_update`](Capabilities::atomic_update) set to `yes`.
    pub const fn atomic_update(mut self, yes: bool) -> Capabilities {
        self.atomic_update = yes;
        self
    }

    /// With [`change_stamp`](Capabilities::change_stamp) set to `yes`.
    pub const fn change_stamp(mut self, yes: bool) -> Capabilities {
        self.change_stamp = yes;
        self
    }

    /// With [`creation_locks`](Capabilities::creation_locks) set to `yes`.
    pub const fn creation_locks(mut self, yes: bool) -> Capabilities {
        self.creation_locks = yes;
        self
    }

    /// With [`never_evicts`](Capabilities::never_evicts) set to `yes`.
    pub const fn never_evicts(mut self, yes: bool) -> Capabilities {
        self.never_evicts = yes;
        self
    }

    /// With [`expires_by_clock`](Capabilities::expires_by_clock) set to `yes`.
    pub const fn expires_by_clock(mut self, yes: bool) -> Capabilities {
        self.expires_by_clock = yes;
        self
    }
}

/// The error of an optional [`Backend`] method that the backend does not
/// offer (see [`Capabilities`]): `operation` names the method, the
/// backend is named by its Rust type.
pub fn unsupported<B: ?Sized>(operation: &'static str) -> Error {
    Error::Unsupported {
        backend: std::any::type_name::<B>().to_string(),
        operation,
    }
}

/// One namespace of a cache backend: a map from byte keys to byte values.
///
/// This is Beaker's `NamespaceManager`. Implementations must be safe to
/// call from many threads at once. Every method is a single operation on
/// the backend; the cache never needs a backend-wide lock around several.
///
/// Four operations are required: [`get`](Self::get), [`set`](Self::set),
/// [`remove`](Self::remove) and [`capabilities`](Self::capabilities) (plus
/// [`lock_creation`](Self::lock_creation) for backends shared between
/// processes). The others are optional, declared in [`Capabilities`]; by
/// default they answer [`Error::Unsupported`].
///
/// Three optional methods are fast paths for async callers, which must
/// never block the thread they run on: [`try_lock_creation_owned`](Self::try_lock_creation_owned),
/// [`try_set_now`](Self::try_set_now) and
/// [`try_remove_now`](Self::try_remove_now). Each either does its work
/// without waiting for anyone or says it would wait (by default they
/// always say so, or "not offered"); the async front then does the same
/// work the ordinary way on a helper thread. A backend offers them when
/// it can tell, without blocking, that the operation will not wait.
///
/// The conformance suite is published: `carboy::cache::testing` (cargo
/// feature `testing`) runs it against any [`BackendFactory`]; the built-in
/// backends run it from `tests/tests/backend_suite.rs`. Run it against
/// yours too.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The value stored under `key`, in one fetch, or `None`.
    fn get(&self, key: &[u8]) -> Result<Option<Fetched<'_>>>;

    /// Stores `value` under `key`. With `ttl`, the backend may drop the
    /// entry once `ttl` has passed (the cache asks for this only when it
    /// no longer needs the value, even as a stale one).
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Removes `key`; returns whether it was present.
    fn remove(&self, key: &[u8]) -> Result<bool>;

    /// What this namespace offers beyond the required operations. Read
    /// once, when the cache opens the namespace: it must not change.
    fn capabilities(&self) -> Capabilities;

    /// True when `key` has a value.
    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Every key, in no particular order ([`Capabilities::list_keys`]).
    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        Err(unsupported::<Self>("list keys"))
    }

    /// Removes every key of this namespace ([`Capabilities::list_keys`]).
    /// The default removes each key [`keys`](Self::keys) lists.
    fn clear(&self) -> Result<()> {
        for key in self.keys()? {
            self.remove(&key)?;
        }
        Ok(())
    }

    /// Replaces the value of `key` by `f(current)` (removes it when `f`
    /// returns `None`) atomically with respect to every other user of this
    /// namespace, in every process that shares it
    /// ([`Capabilities::atomic_update`]). The entry keeps the expiry its
    /// [`set`](Self::set) gave it.
    ///
    /// The cache keeps its invalidation markers with this.
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<()> {
        let _ = (key, f);
        Err(unsupported::<Self>("update atomically"))
    }

    /// Takes the creation lock of `key` (`hash` is a stable 64-bit hash of
    /// it, for backends that stripe their locks). With `wait` false,
    /// returns `Ok(None)` at once when someone else holds it.
    ///
    /// With [`Capabilities::creation_locks`]: only one holder per key at a
    /// time, across every process that shares the backend (and between two
    /// callers in one process); the lock must die with its process. The
    /// default is [`CreationGuard::in_process`], right for backends whose
    /// data lives in this process only.
    fn lock_creation(
        &self,
        key: &[u8],
        hash: u64,
        wait: bool,
    ) -> Result<Option<CreationGuard<'_>>> {
        let _ = (key, hash, wait);
        Ok(Some(CreationGuard::in_process()))
    }

    /// Takes the creation lock of `key` (as
    /// [`lock_creation`](Self::lock_creation) with `wait` false) only if
    /// that needs no wait at all, for a holder that may release it from
    /// another thread: [`OwnedCreation::Held`] with a `Send + 'static`
    /// guard, [`OwnedCreation::Busy`] when someone else holds it, or (the
    /// default) [`OwnedCreation::NotOffered`].
    ///
    /// The lock is the same as `lock_creation`'s: an owned holder and a
    /// `lock_creation` holder exclude each other, in one process and
    /// across processes, and so do two owned holders. An owned lock
    /// belongs to no thread, so a thread that holds it and then calls
    /// `lock_creation` for the same key waits for it. Offer it only with
    /// [`Capabilities::creation_locks`]; the `file` backend does (an open
    /// file description of its own per guard).
    fn try_lock_creation_owned(&self, key: &[u8], hash: u64) -> Result<OwnedCreation> {
        let _ = (key, hash);
        Ok(OwnedCreation::NotOffered)
    }

    /// [`set`](Self::set), if it can be done without waiting for another
    /// process, another thread's lock or the device: `Ok(true)` when
    /// done, `Ok(false)` (the default) when it would wait and nothing was
    /// written, so that the caller does the `set` where waiting is fine.
    /// The `file` backend writes when the store's writer lock is free in
    /// this process and needs no wait from another one (see
    /// `Store::try_transaction`), never under `durability = sync`; the
    /// `memory` backend always writes.
    fn try_set_now(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let _ = (key, value, ttl);
        Ok(false)
    }

    /// [`remove`](Self::remove), under the rule of
    /// [`try_set_now`](Self::try_set_now): `Ok(Some(was_present))` when
    /// done, `Ok(None)` (the default) when it would wait.
    fn try_remove_now(&self, key: &[u8]) -> Result<Option<bool>> {
        let _ = key;
        Ok(None)
    }

    /// A number that changes whenever the namespace's content may have
    /// changed, evictions included, cheap to read (no system call)
    /// ([`Capabilities::change_stamp`]).
    ///
    /// It must change only *after* the change is visible to `get`. The
    /// cache keeps its invalidation markers in memory while the markers
    /// namespace's stamp holds still: a stamp that misses a change would
    /// let a process miss an invalidation.
    fn change_stamp(&self) -> Result<u128> {
        Err(unsupported::<Self>("read a change stamp"))
    }

    /// The values of `keys`, in their order (`None` for a missing one),
    /// in as few round trips as the backend can make: a network backend
    /// answers with one `MGET` or one pipelined multi-get per server. The
    /// default fetches one key after another, right for backends whose
    /// `get` costs no round trip. [`Cache::get_many`](super::Cache::get_many)
    /// calls it.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Fetched<'_>>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// This backend as [`Any`](std::any::Any), so that one namespace of a
    /// backend can recognise another of its own kind in
    /// [`get_with`](Self::get_with). The default, `None`, says nothing.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Fetches `key` from this namespace together with `other_keys` from
    /// `other` (another namespace, usually opened by the same factory: the
    /// cache's invalidation markers) in one round trip, when the backend
    /// can: `Ok(Some((value, others)))`, `others` in the order of
    /// `other_keys`. `Ok(None)`, the default, means "not for this pair":
    /// the cache then reads them one after the other.
    ///
    /// The cache asks this on a read only when the markers namespace has
    /// no [`change_stamp`](Self::change_stamp) (it would otherwise keep
    /// the markers in memory), so that a hit on a network backend without
    /// one costs one round trip instead of two. The order in which the
    /// server reads the keys does not matter: a value read before a
    /// concurrent invalidation's marker is judged by the newer marker (a
    /// miss), and one created after it by the older (fresh, as it is).
    #[allow(clippy::type_complexity)]
    fn get_with<'s>(
        &'s self,
        key: &[u8],
        other: &'s dyn Backend,
        other_keys: &[&[u8]],
    ) -> Result<Option<(Option<Fetched<'s>>, Vec<Option<Fetched<'s>>>)>> {
        let _ = (key, other, other_keys);
        Ok(None)
    }

    /// This backend's native async operations, if it has any (a network
    /// backend with an async client): `Some(self)` for a backend that
    /// implements [`AsyncBackend`]. The async front
    /// (`AsyncCache`, feature `async`) then awaits them for reads, writes
    /// and the creation lock instead of calling the blocking methods
    /// directly or on helper threads. The default, `None`, keeps those
    /// paths. It must answer the same on every call.
    fn as_async(&self) -> Option<&dyn AsyncBackend> {
        None
    }
}

/// How the cache asks a factory to open one namespace.
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | [`pinned`](OpenOptions::pinned) | `false` |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Never evict an entry of this namespace. The cache asks this of its
    /// invalidation markers' namespace (`carboy:markers`): an evicted
    /// marker would forget an invalidation.
    ///
    /// A backend that can keep the promise (an unbounded memory map, a
    /// file, a redis without an evicting `maxmemory-policy`, or with a
    /// `volatile-*` one, since markers have no TTL) opens the namespace so
    /// and declares [`Capabilities::never_evicts`]. One that cannot (a
    /// memcached LRU) opens it anyway and leaves `never_evicts` false; the
    /// cache then treats a missing marker as lost, not as "never
    /// invalidated": it writes a new one whose epochs are the current time
    /// (markers count in milliseconds), so every value created before is a
    /// miss. See engine/DESIGN.md, "Invalidation markers on a backend that
    /// evicts", for what this promises and what it does not.
    pub pinned: bool,
}

impl OpenOptions {
    /// The defaults: an ordinary namespace.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// With [`pinned`](OpenOptions::pinned) set to `yes`.
    pub fn pinned(mut self, yes: bool) -> OpenOptions {
        self.pinned = yes;
        self
    }
}

/// Where and how a backend opens its namespaces: the settings of one cache
/// (or region) that concern storage.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// The backend's type name (`memory`, `file`, …).
    pub kind: String,
    /// `cache.data_dir`: where file-based backends keep their files.
    pub data_dir: Option<PathBuf>,
    /// `cache.lock_dir`: where lock files go (default: beside the data).
    pub lock_dir: Option<PathBuf>,
    /// Further `cache.*` settings that the backend declared in
    /// [`BackendFactory::options`], by their short name (`url`, …).
    pub options: BTreeMap<String, String>,
    /// The clock that stamps and checks expiry.
    pub clock: Arc<dyn Clock>,
}

impl BackendConfig {
    /// A configuration for backend `kind` with nothing else set.
    pub fn new(kind: impl Into<String>) -> BackendConfig {
        BackendConfig {
            kind: kind.into(),
            data_dir: None,
            lock_dir: None,
            options: BTreeMap::new(),
            clock: Arc::new(crate::SystemClock),
        }
    }

    /// The setting `name` as the user wrote it (for error messages).
    pub fn setting_name(name: &str) -> String {
        format!("cache.{name}")
    }
}

/// Opens the namespaces of one backend type. Register one under a type
/// name with [`register_backend`](super::register_backend) so that
/// `cache.type = <name>` finds it, or hand it to one manager with
/// [`CacheManagerBuilder::backend_factory`](super::CacheManagerBuilder::backend_factory).
pub trait BackendFactory: Send + Sync + fmt::Debug {
    /// Opens (or creates) `namespace`, as `options` ask ([`OpenOptions`]:
    /// the cache opens its markers' namespace
    /// [`pinned`](OpenOptions::pinned)).
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> Result<Arc<dyn Backend>>;

    /// The extra settings this backend accepts beyond the common ones
    /// (`cache.url`, …); any other unknown setting is an error.
    fn options(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks a configuration before any namespace is opened (for example
    /// that a required directory is set), so that a bad setting fails when
    /// the manager is built rather than on first use.
    fn check(&self, config: &BackendConfig) -> Result<()> {
        let _ = config;
        Ok(())
    }
}
