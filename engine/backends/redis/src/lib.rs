//! A redis backend for carboy's cache layer: one server or a cluster.
//!
//! ```no_run
//! // Once, at start-up: `cache.type = redis` (or Beaker's `ext:redis`)
//! // now finds this backend.
//! carboy_redis::register()?;
//! let manager = carboy::cache::CacheManager::from_settings([
//!     ("cache.type", "ext:redis"),
//!     ("cache.url", "redis://127.0.0.1:6379/0"),
//!     ("cache.expire", "300"),
//! ])?;
//! let users = manager.get_cache("users")?;
//! users.set("u1", "alice")?;
//! # Ok::<(), carboy::Error>(())
//! ```
//!
//! ## Settings
//!
//! Beside carboy's common `cache.*` settings (`type`, `expire`,
//! `lock_timeout`, …):
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `cache.url` | `redis://127.0.0.1:6379/0` | the server, `redis://[user:password@]host:port/db`; for a cluster, its seed nodes separated by commas (`redis://h1:p1,redis://h2:p2`) |
//! | `cache.cluster` | true when `url` lists several nodes | talk to a redis cluster (then `url` may list one seed node); database 0 only |
//! | `cache.connect_timeout_ms` | 2000 | the longest wait for a connection to open |
//! | `cache.command_timeout_ms` | 2000 | the longest wait for one command's reply: a stopped server costs at most this per call (twice this on a cluster, which retries once, for a moved slot or a failover) |
//! | `cache.pool_size` | 8 | idle connections kept per configuration; more are opened under load and closed when not needed |
//! | `cache.prefix` | `carboy:` | the start of every redis key (no `{` or `}`) |
//! | `cache.lock_lease_ms` | 30000 | a creation lock's lease: extended every third of it while its creator runs; the longest a dead creator delays the others |
//! | `cache.max_key_length` | 1024 | a redis key longer than this (in bytes, prefix included) is stored under the SHA-256 of the cache key |
//!
//! A bad value is an [`Error::InvalidOption`](carboy::Error::InvalidOption)
//! naming the setting, when the manager is built.
//!
//! ## What is stored where
//!
//! A value is stored under `<prefix>{<namespace>}:<key>` as the bytes the
//! cache hands over (its envelope and the encoded value), with `PX` when
//! the cache gives a TTL. The namespace is the key's hash tag: in a
//! cluster, a namespace's keys share one slot. A creation lock is
//! `<prefix>{<namespace>}#lock:<key>`, taken with `SET NX PX <lease>` and a
//! random token, released only by its owner (compare and delete in a Lua
//! script), extended while held.
//!
//! A lease trades strict exclusion for liveness, as every lease does: a
//! creator whose process is stopped (or cut off from the server) for
//! longer than the lease loses its lock, and the next creator may run
//! while it is still running; both store a value, the later write
//! winning.
//!
//! ## Capabilities
//!
//! * `creation_locks`: yes, across every process and machine.
//! * `atomic_update`: yes (compare-and-set script, retried).
//! * `never_evicts`: when every server's `maxmemory-policy` is
//!   `noeviction`, or `volatile-*` for the pinned markers namespace (its
//!   keys have no TTL); read with `CONFIG GET` when the first namespace of
//!   a configuration opens. If CONFIG is disabled, no. The cache then
//!   treats a missing invalidation marker as lost (a miss), never as
//!   "never invalidated".
//! * `list_keys`, `change_stamp`, `expires_by_clock`: no. Without key
//!   listing, `Cache::keys` answers `Unsupported` and `Cache::clear` is a
//!   hard invalidation of the namespace through its marker.
//!
//! ## Costs
//!
//! Without a change stamp the cache reads the invalidation markers on
//! every access: a hit is two `GET`s (the namespace's marker, the value),
//! three in a region (its marker too), each one round trip
//! (`benches/redis.rs` measures it). In a cluster, one namespace's keys
//! live on one master (the price of the hash tag), so a very large or
//! very hot namespace does not spread over the cluster.
//!
//! ## Errors
//!
//! A failed command is [`carboy::Error::Backend`] whose source is a
//! [`RedisFailure`] naming the server and the operation. A connection
//! that fails is dropped; the next call connects again, so a restarted
//! server is used again without restarting the application.

mod backend;
mod keys;
mod lock;
mod server;
mod settings;

use std::collections::HashMap;
use std::sync::Arc;

use carboy::cache::{Backend, BackendConfig, BackendFactory, Capabilities, OpenOptions};
use parking_lot::Mutex;

pub use backend::RedisBackend;
pub use server::RedisFailure;
pub use settings::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_LEASE, DEFAULT_MAX_KEY_LENGTH,
    DEFAULT_POOL_SIZE, DEFAULT_PREFIX, DEFAULT_URL,
};

use keys::Layout;
use server::Server;

/// Opens cache namespaces on redis. One factory keeps one connection pool
/// per distinct configuration (`url` and the other settings).
#[derive(Debug, Default)]
pub struct RedisFactory {
    servers: Mutex<HashMap<String, Arc<Server>>>,
}

impl RedisFactory {
    /// A factory with no connection yet.
    pub fn new() -> RedisFactory {
        RedisFactory::default()
    }

    fn server(&self, config: &BackendConfig) -> carboy::Result<Arc<Server>> {
        let settings = settings::parse(config)?;
        let id = settings.identity();
        let mut servers = self.servers.lock();
        if let Some(s) = servers.get(&id) {
            return Ok(Arc::clone(s));
        }
        let server = Arc::new(Server::new(settings)?);
        servers.insert(id, Arc::clone(&server));
        Ok(server)
    }
}

impl BackendFactory for RedisFactory {
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        let server = self.server(config)?;
        let never_evicts = match server.eviction_policy() {
            server::Eviction::Never => true,
            server::Eviction::OnlyWithTtl => options.pinned,
            server::Eviction::Any | server::Eviction::Unknown => false,
        };
        let caps = Capabilities::NONE
            .creation_locks(true)
            .atomic_update(true)
            .never_evicts(never_evicts);
        let layout = Layout::new(
            &server.settings.prefix,
            namespace,
            server.settings.max_key_length,
        );
        Ok(Arc::new(RedisBackend {
            server,
            namespace: namespace.to_string(),
            layout,
            caps,
        }))
    }

    fn options(&self) -> &'static [&'static str] {
        settings::OPTIONS
    }

    fn check(&self, config: &BackendConfig) -> carboy::Result<()> {
        settings::parse(config).map(|_| ())
    }
}

/// Registers the redis backend under the type names `redis` and Beaker's
/// `ext:redis` (one factory, so one set of connection pools, for both).
pub fn register() -> carboy::Result<()> {
    let factory: Arc<dyn BackendFactory> = Arc::new(RedisFactory::new());
    carboy::cache::register_backend("redis", Arc::clone(&factory))?;
    carboy::cache::register_backend("ext:redis", factory)
}
