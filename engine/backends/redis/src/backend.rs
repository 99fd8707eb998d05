//! One namespace on redis: the [`Backend`] operations as redis commands.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use carboy::cache::{
    AsyncBackend, AsyncCreationGuard, AsyncUpdateFn, Backend, BackendFuture, Capabilities,
    CreationGuard, Fetched, LockWait, Locked, UpdateFn,
};
use redis::Script;

use crate::aio::in_tokio;
use crate::keys::Layout;
use crate::lock;
use crate::server::Server;
use crate::tracking::Tracker;

/// One cache namespace stored in redis (a server or a cluster). Opened by
/// [`RedisFactory`](crate::RedisFactory).
pub struct RedisBackend {
    pub(crate) server: Arc<Server>,
    pub(crate) namespace: String,
    pub(crate) layout: Layout,
    pub(crate) caps: Capabilities,
    /// The change stamp (the pinned markers namespace only).
    pub(crate) tracker: Option<Arc<Tracker>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("servers", &self.server.settings.display)
            .field("namespace", &self.namespace)
            .field("capabilities", &self.caps)
            .field("tracked", &self.tracker.is_some())
            .finish()
    }
}

/// Compare and set, for [`Backend::update`]: writes `ARGV[4]` (keeping
/// the key's TTL) or deletes the key (`ARGV[3] == "del"`) only if the key
/// still holds `ARGV[2]` (`ARGV[1] == "1"`) or is still missing
/// (`ARGV[1] == "0"`). Returns 1 when it wrote.
fn compare_and_set() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            "local cur = redis.call('GET', KEYS[1]) \
             if ARGV[1] == '1' then \
               if cur ~= ARGV[2] then return 0 end \
             elseif cur then return 0 end \
             if ARGV[3] == 'del' then redis.call('DEL', KEYS[1]) \
             elseif ARGV[1] == '1' then redis.call('SET', KEYS[1], ARGV[4], 'KEEPTTL') \
             else redis.call('SET', KEYS[1], ARGV[4]) end \
             return 1",
        )
    })
}

impl RedisBackend {
    /// The server (`host:port`) or the cluster's seed nodes, as errors
    /// name them.
    pub fn servers(&self) -> &str {
        &self.server.settings.display
    }

    /// A write through this backend was answered: it is visible to every
    /// `get`, so the change stamp may move (at once, for every manager of
    /// this process, without waiting for the server's message).
    fn wrote(&self) {
        if let Some(t) = &self.tracker {
            t.bump();
        }
    }

    /// True while this namespace's change stamp is fed by redis's
    /// invalidation messages (the pinned markers namespace, its listener
    /// connected and subscribed). False for other namespaces, or while the
    /// listener is down (the stamp then moves on every read).
    pub fn is_tracking(&self) -> bool {
        self.tracker.as_ref().is_some_and(|t| t.is_up())
    }
}

impl Backend for RedisBackend {
    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.layout.value(key));
        let v: Option<Vec<u8>> = self.server.query(&self.namespace, "GET", &cmd)?;
        Ok(v.map(Fetched::Owned))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> carboy::Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.layout.value(key)).arg(value);
        if let Some(ttl) = ttl {
            // PX 0 is refused: a TTL under a millisecond is one.
            cmd.arg("PX").arg((ttl.as_millis() as u64).max(1));
        }
        self.server.query::<()>(&self.namespace, "SET", &cmd)?;
        self.wrote();
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.layout.value(key));
        let n: i64 = self.server.query(&self.namespace, "DEL", &cmd)?;
        self.wrote();
        Ok(n > 0)
    }

    /// One `MGET`: a namespace's keys share its hash tag, so they are in
    /// one slot of a cluster too.
    fn get_many(&self, keys: &[&[u8]]) -> carboy::Result<Vec<Option<Fetched<'_>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.layout.value(key));
        }
        let values: Vec<Option<Vec<u8>>> = self.server.query(&self.namespace, "MGET", &cmd)?;
        Ok(values.into_iter().map(|v| v.map(Fetched::Owned)).collect())
    }

    fn contains(&self, key: &[u8]) -> carboy::Result<bool> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.layout.value(key));
        let n: i64 = self.server.query(&self.namespace, "EXISTS", &cmd)?;
        Ok(n > 0)
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// Optimistic: read the value, compute the next one, and write it with
    /// a compare-and-set script that fails if the key changed meanwhile;
    /// then start over. One key, so one slot in a cluster.
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        let rkey = self.layout.value(key);
        loop {
            let mut get = redis::cmd("GET");
            get.arg(&rkey);
            let cur: Option<Vec<u8>> = self.server.query(&self.namespace, "GET", &get)?;
            let next = f(cur.as_deref());
            if cur.is_none() && next.is_none() {
                return Ok(());
            }
            let wrote: i64 = self
                .server
                .with(&self.namespace, "compare-and-set script", |c| {
                    compare_and_set()
                        .key(&rkey)
                        .arg(if cur.is_some() { "1" } else { "0" })
                        .arg(cur.as_deref().unwrap_or_default())
                        .arg(if next.is_some() { "set" } else { "del" })
                        .arg(next.as_deref().unwrap_or_default())
                        .invoke(c)
                })?;
            if wrote == 1 {
                self.wrote();
                return Ok(());
            }
        }
    }

    /// With the pinned markers namespace only: a counter moved by redis's
    /// invalidation messages for the namespace's keys (changes, evictions,
    /// expiries, flushes) and by this process's own writes, steady while
    /// nothing changed; a new value on every call while the listener is
    /// not connected (see the crate's "Change stamp" section).
    fn change_stamp(&self) -> carboy::Result<u128> {
        match &self.tracker {
            Some(t) => Ok(t.stamp()),
            None => Err(carboy::cache::unsupported::<Self>("read a change stamp")),
        }
    }

    fn lock_creation(
        &self,
        key: &[u8],
        _hash: u64,
        wait: bool,
    ) -> carboy::Result<Option<CreationGuard<'_>>> {
        let rkey = self.layout.lock(key);
        let held = if wait {
            Some(lock::lock(&self.server, &self.namespace, rkey)?)
        } else {
            lock::try_lock(&self.server, &self.namespace, rkey)?
        };
        Ok(held.map(CreationGuard::holding))
    }

    fn as_async(&self) -> Option<&dyn AsyncBackend> {
        Some(self)
    }
}

/// The native async path (see the crate's "Async" section): redis's async
/// connections on the caller's tokio runtime; outside one, the blocking
/// methods on the calling thread.
impl AsyncBackend for RedisBackend {
    fn get<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Fetched<'a>>> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::get(self, key);
            }
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.layout.value(key));
            let v: Option<Vec<u8>> = self
                .server
                .query_async(&self.namespace, "GET", &cmd)
                .await?;
            Ok(v.map(Fetched::Owned))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::set(self, key, value, ttl);
            }
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.layout.value(key)).arg(value);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg((ttl.as_millis() as u64).max(1));
            }
            self.server
                .query_async::<()>(&self.namespace, "SET", &cmd)
                .await?;
            self.wrote();
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::remove(self, key);
            }
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.layout.value(key));
            let n: i64 = self
                .server
                .query_async(&self.namespace, "DEL", &cmd)
                .await?;
            self.wrote();
            Ok(n > 0)
        })
    }

    /// As the blocking `update`: read, compute, compare-and-set script,
    /// start over if the key changed meanwhile.
    fn update<'a>(&'a self, key: &'a [u8], f: &'a mut AsyncUpdateFn<'_>) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::update(self, key, f);
            }
            let rkey = self.layout.value(key);
            loop {
                let mut get = redis::cmd("GET");
                get.arg(&rkey);
                let cur: Option<Vec<u8>> = self
                    .server
                    .query_async(&self.namespace, "GET", &get)
                    .await?;
                let next = f(cur.as_deref());
                if cur.is_none() && next.is_none() {
                    return Ok(());
                }
                let (rkey, cur, next) = (&rkey, &cur, &next);
                let wrote: i64 = self
                    .server
                    .with_async(
                        &self.namespace,
                        "compare-and-set script",
                        |mut c| async move {
                            compare_and_set()
                                .key(rkey)
                                .arg(if cur.is_some() { "1" } else { "0" })
                                .arg(cur.as_deref().unwrap_or_default())
                                .arg(if next.is_some() { "set" } else { "del" })
                                .arg(next.as_deref().unwrap_or_default())
                                .invoke_async(&mut c)
                                .await
                        },
                    )
                    .await?;
                if wrote == 1 {
                    self.wrote();
                    return Ok(());
                }
            }
        })
    }

    /// `SET NX PX` with a random token, retried after a pause (1 ms,
    /// doubling up to 25 ms, on tokio's timer) while someone else holds
    /// it, for as long as `wait` allows. The guard is extended by a task
    /// while held and released by a spawned compare-and-delete when
    /// dropped.
    fn lock_creation<'a>(
        &'a self,
        key: &'a [u8],
        hash: u64,
        wait: LockWait,
    ) -> BackendFuture<'a, Locked<'a>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.lock_blocking(key, hash, wait);
            }
            let rkey = self.layout.lock(key);
            wait.poll(
                lock::BACKOFF,
                || async {
                    let held = lock::try_lock_async(&self.server, &self.namespace, &rkey).await?;
                    Ok(held.map(AsyncCreationGuard::holding))
                },
                tokio::time::sleep,
                || tokio::time::Instant::now().into_std(),
            )
            .await
        })
    }
}

impl RedisBackend {
    /// The async `lock_creation` outside a tokio runtime: the blocking
    /// lock on the calling thread (its guard's drop waits for the
    /// release's round trip).
    fn lock_blocking(&self, key: &[u8], _hash: u64, wait: LockWait) -> carboy::Result<Locked<'_>> {
        let rkey = self.layout.lock(key);
        wait.poll_blocking(lock::BACKOFF, || {
            let held = lock::try_lock(&self.server, &self.namespace, rkey.clone())?;
            Ok(held.map(AsyncCreationGuard::holding))
        })
    }
}
