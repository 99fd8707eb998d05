//! A memcached backend for carboy's cache layer: `cache.type = memcached`
//! (or Beaker's `ext:memcached`), so that the processes of several
//! machines share one cache, its dogpile locks and its invalidations.
//!
//! ```no_run
//! use carboy::cache::CacheManager;
//!
//! carboy_memcached::register()?; // once, at start-up
//! let manager = CacheManager::builder()
//!     .backend("ext:memcached")
//!     .option("url", "10.0.0.5:11211;10.0.0.6:11211")
//!     .option("timeout", "0.5")
//!     .expire(std::time::Duration::from_secs(300))
//!     .build()?;
//! let users = manager.get_cache("users")?;
//! let name: String = users.get_or_create("u1", || Ok::<_, std::io::Error>("alice".into()))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How carboy's operations map onto memcached
//!
//! | carboy | memcached (meta protocol, memcached 1.6 or later) |
//! |---|---|
//! | `get` | `mg <key> v` |
//! | `set` with a TTL | `ms <key> T<secs>`: rounded up to whole seconds; above 30 days sent as a Unix time, which memcached reads as one |
//! | `remove` | `md <key>` |
//! | `update` (the invalidation markers, soft invalidation of a key) | `mg <key> v c t`, then `ms C<cas> T<remaining>` (or `md C<cas>`, or `ms` in add mode), retried on a CAS mismatch |
//! | creation lock | `ms <key>/#lock/… MA T<lease>` with a random token, renewed every lease/3, released by `md C<cas>` if still ours ([`lock`] has the details) |
//! | [`MemcachedNamespace::get_many`] | pipelined `mg`, one round trip per server |
//! | a read with the invalidation markers (`Backend::get_with`, `AsyncBackend::get_with`) | the value's and the markers' `mg` pipelined: one round trip per server |
//! | the same, from `AsyncCache` | the same commands on memcache's tokio client ([Async](#async)) |
//!
//! Keys: `<key_prefix><namespace>/<key>`, hashed (SHA-256) where the
//! namespace or key is too long or not printable ASCII, so every carboy
//! key works (see `keys.rs`). Values up to the servers' item size
//! (`cache.item_size_max`, the servers' `-I`); a larger one is
//! [`carboy::Error::ValueTooLong`]. The value envelope is carboy's own,
//! as on every backend. Keys go to servers by rendezvous hashing over a
//! stable hash, so every process routes alike.
//!
//! # What a memcached namespace declares
//!
//! `atomic_update` and `creation_locks` ([`CAPABILITIES`]). Not
//! `never_evicts`: memcached's LRU may evict the cache's invalidation
//! markers, and the cache then treats a missing marker as lost (every
//! value created before reads as a miss; engine/DESIGN.md, "Invalidation
//! markers on a backend that evicts"). Not `change_stamp`: so the cache
//! reads the markers of a namespace (and of its region) on every access,
//! in the same pipelined multi-get as the value (`Backend::get_with`): a
//! hit is one round trip per server involved. Not `list_keys`: `Cache::clear` is a hard
//! invalidation through the marker.
//!
//! # Failures
//!
//! Every failed exchange is [`carboy::Error::Backend`] whose source is a
//! [`ServerError`] naming the server, the operation and the
//! [`FailureKind`]. A connection that failed or timed out is dropped, never
//! reused; the next operation dials again, so a restarted server is used
//! again without restarting the application. Each exchange (and each
//! connection attempt) is bounded by `cache.timeout`.
//!
//! # Async
//!
//! A namespace implements carboy's `AsyncBackend` (`Backend::as_async`
//! answers it), so carboy's `AsyncCache` awaits memcached on the calling
//! task instead of blocking a runtime worker or hopping to a helper
//! thread: `get`, `set`, `remove`, `update` (the `cas` loop), the value
//! with its invalidation markers (one pipelined multi-get: a hit is one
//! awaited round trip) and the creation lock. It runs on memcache's
//! tokio meta client (`memcache::exp::AsyncMetaClient`):
//!
//! * one client per tokio runtime and configuration, made by the first
//!   async call inside that runtime (a connection is driven by the runtime
//!   that opened it), each with up to `cache.pool_size` idle connections
//!   per server (a burst of concurrent calls dials more, up to
//!   `cache.max_connections`, 64 by default, then waits for a returned
//!   one up to `cache.timeout`); keys route to the same servers as the blocking
//!   client's;
//! * every connection attempt and every exchange bounded by
//!   `cache.timeout` on tokio's timer; a connection whose exchange failed,
//!   timed out or was cancelled is dropped, never reused, and a pooled one
//!   found closed before anything was written is replaced and the command
//!   sent once more; errors are the same [`ServerError`]s, naming the
//!   server;
//! * the lock: the same `ms MA` with a token and a lease, tried again
//!   after a pause on tokio's timer (2 ms doubling to 100 ms) as
//!   `LockWait` allows (not at all, forever, or up to
//!   `cache.lock_timeout`); renewed every third of the lease by a task,
//!   not a thread; the guard's drop does not wait: it hands the release
//!   (the compare-and-delete) to that task, and a later lock try of this
//!   process on the key waits for it. A take whose answer is lost (its
//!   future dropped, a timeout) sends the release too, in case it landed.
//!
//! Outside a tokio runtime the async methods run the blocking ones on the
//! calling thread. A runtime must have tokio's time and I/O drivers
//! enabled (`enable_all`).
//!
//! # Settings
//!
//! See [`Settings`] for the table of settings and defaults.

mod aio;
mod error;
mod keys;
pub mod lock;
mod namespace;
mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use carboy::cache::{Backend, BackendConfig, BackendFactory, OpenOptions, register_backend};

pub use error::{FailureKind, ServerError};
pub use namespace::{CAPABILITIES, ITEM_OVERHEAD, MemcachedNamespace};
pub use settings::{DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT, OPTIONS, Settings};

use namespace::Servers;

/// Opens memcached namespaces. Namespaces opened with equal settings share
/// one client (one connection pool per server).
#[derive(Debug, Default)]
pub struct MemcachedFactory {
    servers: Mutex<HashMap<Settings, Arc<Servers>>>,
}

impl MemcachedFactory {
    /// A factory with no connections yet.
    pub fn new() -> MemcachedFactory {
        MemcachedFactory::default()
    }

    /// Opens `namespace` as its concrete type (for
    /// [`get_many`](MemcachedNamespace::get_many) and the wire keys).
    pub fn open_namespace(
        &self,
        namespace: &str,
        config: &BackendConfig,
    ) -> carboy::Result<Arc<MemcachedNamespace>> {
        let settings = Settings::from_config(config)?;
        let servers = {
            let mut all = self.servers.lock().unwrap_or_else(|p| p.into_inner());
            match all.get(&settings) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(Servers::connect(settings.clone())?);
                    all.insert(settings, Arc::clone(&s));
                    s
                }
            }
        };
        Ok(Arc::new(MemcachedNamespace::new(servers, namespace)))
    }
}

impl BackendFactory for MemcachedFactory {
    /// Opens `namespace`. Asked to pin it (the cache's markers), it opens
    /// it anyway and does not declare `never_evicts`: memcached cannot
    /// promise not to evict.
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        _options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        Ok(self.open_namespace(namespace, config)?)
    }

    fn options(&self) -> &'static [&'static str] {
        OPTIONS
    }

    fn check(&self, config: &BackendConfig) -> carboy::Result<()> {
        Settings::from_config(config).map(|_| ())
    }
}

/// Registers this backend under `memcached` and Beaker's `ext:memcached`
/// (one factory, so both names share connections).
pub fn register() -> carboy::Result<()> {
    let factory = Arc::new(MemcachedFactory::new());
    register_backend("memcached", Arc::clone(&factory) as Arc<dyn BackendFactory>)?;
    register_backend("ext:memcached", factory)
}
