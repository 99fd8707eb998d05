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
//! * `change_stamp`: for the pinned markers namespace (below).
//! * `list_keys`, `expires_by_clock`: no. Without key listing,
//!   `Cache::keys` answers `Unsupported` and `Cache::clear` is a hard
//!   invalidation of the namespace through its marker.
//!
//! ## Change stamp (redis's client-side caching)
//!
//! The cache keeps its invalidation markers in memory while the markers
//! namespace's change stamp holds still. Here the stamp is a counter fed
//! by redis's server-assisted client-side caching (redis 6 or later): a
//! listener thread per configuration keeps one connection that runs
//! `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX
//! <prefix>{carboy:markers}` and `SUBSCRIBE __redis__:invalidate`, and
//! moves the stamp on every message: a marker written by any process,
//! evicted under `maxmemory`, expired, or a flushed database.
//!
//! * redis publishes a message after the command that changed the key has
//!   run, and no later than its reply to that command: the stamp moves
//!   only after the change is visible to `GET`.
//! * Another process's invalidation is seen once this process's listener
//!   has read redis's message (its delivery: a network hop and a thread
//!   wake-up). [`RedisFactory::sync_invalidations`] waits for it when a
//!   caller needs "invalidated before I asked" across processes. Writes
//!   through this process (any manager with the same settings) move the
//!   stamp as soon as redis has answered them.
//! * While the listener is not subscribed (not yet connected, its
//!   connection closed, killed, or silent past `cache.command_timeout_ms`
//!   with a ping unanswered) the stamp has a new value on every read, so
//!   every access reads the markers, as without a stamp; it moves once
//!   more when tracking is on again. The listener reconnects by itself
//!   (pausing at most a second between attempts).
//! * In a cluster the listener tracks the master that holds the markers'
//!   slot (following `MOVED`) and checks every `cache.command_timeout_ms`
//!   that it still does; a failover or a moved slot is noticed within
//!   that check (or at once when the master's connection closes), and
//!   writes that reach the new master before it are the cluster's window.
//!
//! ## Costs
//!
//! A hit is one `GET` (the value) while the markers' stamp holds still;
//! while the tracking listener is down, the cache reads the markers on
//! every access: a hit is two `GET`s (the namespace's marker, the value),
//! three in a region (its marker too), each one round trip
//! (`benches/redis.rs` measures it). Each configuration keeps one more
//! connection and one thread for the listener. In a cluster, one namespace's keys
//! live on one master (the price of the hash tag), so a very large or
//! very hot namespace does not spread over the cluster.
//!
//! ## Async
//!
//! The backend offers carboy's native async seam
//! ([`AsyncBackend`](carboy::cache::AsyncBackend), through
//! `Backend::as_async`): `AsyncCache` (carboy's feature `async`) then
//! awaits redis's own async client for its lookups, writes, updates and
//! creation locks, with no helper thread and no thread per call.
//!
//! * **It needs a tokio runtime.** redis's async client runs on tokio:
//!   the connections are opened lazily by the first async call made
//!   inside a runtime, one per runtime (a `MultiplexedConnection`, or
//!   the async cluster client's connection to each node), shared by every
//!   task of that runtime: concurrent tasks pipeline their commands on
//!   it. Called outside a tokio runtime (another executor), each async
//!   method runs its blocking counterpart on the calling thread instead:
//!   correct, but that executor's thread blocks for the round trip (and
//!   a lock wait polls with thread sleeps).
//! * Same keys, scripts, timeouts and errors as the blocking path: each
//!   command is bounded by `cache.command_timeout_ms` and each connection
//!   by `cache.connect_timeout_ms` (tokio's timer); a failure is a
//!   [`RedisFailure`] naming the server and the operation. A connection
//!   found closed (a restarted server) is replaced and the call run once
//!   more, as on the blocking path; a timeout is not retried.
//! * The creation lock is the same `SET NX PX` with a token, so async
//!   and blocking holders, in any process, exclude each other. A wait
//!   (`LockWait::Forever`, or up to `cache.lock_timeout`) retries after a
//!   pause of 1 ms doubling to 25 ms on tokio's timer, and ends with
//!   `TimedOut` at its deadline (one try in flight may finish up to
//!   `cache.command_timeout_ms` later). While held, a task extends the
//!   lease every third of it; the guard's drop stops that task and spawns
//!   the compare-and-delete on the runtime without waiting for it (on a
//!   runtime already shut down, the lease frees the lock). A lock try
//!   abandoned before its answer came (its future dropped, or timed out)
//!   also spawns a compare-and-delete of its token, so a cancelled
//!   waiter leaves nothing locked.
//! * A release on its way is recorded in the process: a later lock try
//!   on the same key from this process (async or blocking, same factory)
//!   waits for it first (at most a connect and two command timeouts), so
//!   "dropped, then taken again here" is ordered as on the blocking path.
//!   Other processes see the lock free once the release lands. (A
//!   blocking lock call made on a current-thread runtime's own thread
//!   right after an async guard's drop waits out that bound: the release
//!   needs the runtime that thread is blocking.)
//! * The change stamp and its listener thread are shared with the
//!   blocking path; the async front reads the markers with the blocking
//!   `get` (in memory while the stamp holds still).
//!
//! ## Errors
//!
//! A failed command is [`carboy::Error::Backend`] whose source is a
//! [`RedisFailure`] naming the server and the operation. A connection
//! that fails is dropped; the next call connects again, so a restarted
//! server is used again without restarting the application.

mod aio;
mod backend;
mod keys;
mod lock;
mod server;
mod settings;
mod tracking;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

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
use tracking::Tracker;

/// Opens cache namespaces on redis. One factory keeps one connection pool
/// per distinct configuration (`url` and the other settings).
#[derive(Debug, Default)]
pub struct RedisFactory {
    servers: Mutex<HashMap<String, Arc<Server>>>,
    /// The tracked (pinned) namespaces this factory opened, for
    /// [`sync_invalidations`](RedisFactory::sync_invalidations).
    tracked: Mutex<Vec<Tracked>>,
}

/// A tracked namespace: its server, its name, its tracker while open.
type Tracked = (Arc<Server>, String, Weak<Tracker>);

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

impl RedisFactory {
    /// Returns once every invalidation that redis had recorded before this
    /// call (by any process, on any machine) moves the change stamp of the
    /// markers namespaces this factory opened: it writes a key under each
    /// tracked prefix and waits for redis's message about it (messages
    /// come in order).
    ///
    /// Without it, an invalidation made by another process is seen once
    /// this process's listener has read redis's message about it, which
    /// redis sends no later than its reply to the invalidation: the window
    /// is that message's delivery. Call this where a happened-before
    /// across processes matters ("process A invalidated, told B, and B
    /// must not serve the old value").
    ///
    /// Costs one write and one message per tracked namespace; an error
    /// (naming the server) when the write fails or no message comes within
    /// three `cache.command_timeout_ms` plus one `cache.connect_timeout_ms`. A listener that is down makes this
    /// return at once: the stamp then moves on every read.
    pub fn sync_invalidations(&self) -> carboy::Result<()> {
        let tracked: Vec<_> = self
            .tracked
            .lock()
            .iter()
            .filter_map(|(s, ns, t)| Some((Arc::clone(s), ns.clone(), t.upgrade()?)))
            .collect();
        for (server, ns, tracker) in tracked {
            tracker.sync(&server, &ns)?;
        }
        Ok(())
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
        let layout = Layout::new(
            &server.settings.prefix,
            namespace,
            server.settings.max_key_length,
        );
        // The markers namespace gets a change stamp from redis's
        // invalidation messages (see "Change stamp" above).
        let tracker = options.pinned.then(|| {
            let t = Tracker::open(&server.settings, layout.tagged().to_vec());
            let mut tracked = self.tracked.lock();
            tracked.retain(|(_, _, t)| t.strong_count() > 0);
            tracked.push((
                Arc::clone(&server),
                namespace.to_string(),
                Arc::downgrade(&t),
            ));
            t
        });
        let caps = Capabilities::NONE
            .creation_locks(true)
            .atomic_update(true)
            .change_stamp(tracker.is_some())
            .never_evicts(never_evicts);
        Ok(Arc::new(RedisBackend {
            server,
            namespace: namespace.to_string(),
            layout,
            caps,
            tracker,
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
