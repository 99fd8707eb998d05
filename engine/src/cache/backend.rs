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

use crate::clock::Clock;
use crate::error::Result;

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

/// The function [`Backend::update`] applies: the current value (if any)
/// to the next one (`None` removes the key).
pub type UpdateFn<'f> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'f;

/// One namespace of a cache backend: a map from byte keys to byte values.
///
/// This is Beaker's `NamespaceManager`. Implementations must be safe to
/// call from many threads at once. Every method is a single operation on
/// the backend; the cache never needs a backend-wide lock around several.
///
/// The conformance suite in `tests/tests/backend_suite.rs` is written once
/// and runs against every built-in backend; run it against yours too.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The value stored under `key`, in one fetch, or `None`.
    fn get(&self, key: &[u8]) -> Result<Option<Fetched<'_>>>;

    /// Stores `value` under `key`. With `ttl`, the backend may drop the
    /// entry once `ttl` has passed (the cache asks for this only when it
    /// no longer needs the value, even as a stale one).
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Removes `key`; returns whether it was present.
    fn remove(&self, key: &[u8]) -> Result<bool>;

    /// True when `key` has a value.
    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Every key, in no particular order.
    fn keys(&self) -> Result<Vec<Vec<u8>>>;

    /// Removes every key of this namespace.
    fn clear(&self) -> Result<()>;

    /// Replaces the value of `key` by `f(current)` (removes it when `f`
    /// returns `None`) atomically with respect to every other user of this
    /// namespace, in every process that shares it. The entry keeps the
    /// expiry its [`set`](Self::set) gave it.
    ///
    /// The cache keeps its invalidation markers with this.
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<()>;

    /// Takes the creation lock of `key` (`hash` is a stable 64-bit hash of
    /// it, for backends that stripe their locks). With `wait` false,
    /// returns `Ok(None)` at once when someone else holds it.
    ///
    /// Only one holder per key at a time, across every process that shares
    /// the backend; the lock must die with its process. The default is
    /// [`CreationGuard::in_process`], right for backends whose data lives
    /// in this process only.
    fn lock_creation(
        &self,
        key: &[u8],
        hash: u64,
        wait: bool,
    ) -> Result<Option<CreationGuard<'_>>> {
        let _ = (key, hash, wait);
        Ok(Some(CreationGuard::in_process()))
    }

    /// A number that changes whenever the namespace's content may have
    /// changed, cheap to read (no system call), or `None` if the backend
    /// cannot tell (the cache then reads its markers on every access).
    ///
    /// It must change only *after* the change is visible to `get`.
    fn change_stamp(&self) -> Result<Option<u128>> {
        Ok(None)
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
    /// Opens (or creates) `namespace`.
    fn open(&self, namespace: &str, config: &BackendConfig) -> Result<Arc<dyn Backend>>;

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
