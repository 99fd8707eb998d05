//! The native async path: memcache's tokio meta client
//! (`memcache::exp::AsyncMetaClient`) on the caller's runtime, for
//! [`AsyncBackend`] (carboy's `AsyncCache` awaits it: no blocking call and
//! no thread per call on a tokio worker).
//!
//! One client per tokio runtime and configuration, shared by every task
//! and every namespace of that configuration: its pool keeps up to
//! `cache.pool_size` idle connections per server, and a burst of more
//! concurrent calls dials more (up to `cache.max_connections`),
//! closed when returned. It is made lazily, by
//! the first async call inside a runtime, and kept per runtime (a
//! connection's I/O is driven by the runtime that opened it: another
//! runtime, idle or shut down, would never answer); at most [`RUNTIMES`]
//! are kept, the oldest goes.
//!
//! Every connection attempt and every exchange is bounded by
//! `cache.timeout` on tokio's timer (the client's own deadlines, the same
//! as the blocking client's). A connection whose exchange failed or timed
//! out is dropped, never reused (so is one whose future was dropped
//! mid-exchange); a pooled connection that turns out closed before
//! anything was written (a restarted server) is replaced by a new one and
//! the command sent once more. Errors are the blocking path's: a
//! [`ServerError`](crate::ServerError) naming the server.
//!
//! Outside a tokio runtime the async methods run the blocking ones on the
//! calling thread instead.

use std::sync::Mutex;
use std::time::Duration;

use carboy::cache::{
    AsyncBackend, AsyncCreationGuard, AsyncUpdateFn, Backend, BackendFuture, Fetched, LockWait,
    Locked,
};
use memcache::exp::{AsyncMetaClient, Meta, MetaClient, MutationStatus};
use tokio::runtime::{Handle, Id};

use crate::error::FailureKind;
use crate::lock::{self, AsyncLease, Lease};
use crate::namespace::{CasRound, MAX_CAS_ROUNDS, MemcachedNamespace, Servers, server_ttl};

/// How many runtimes' clients are kept at most.
pub(crate) const RUNTIMES: usize = 8;

/// The async clients of one configuration, by runtime.
#[derive(Default)]
pub(crate) struct AsyncClients {
    kept: Mutex<Vec<(Id, AsyncMetaClient)>>,
}

impl AsyncClients {
    fn find(&self, runtime: Id) -> Option<AsyncMetaClient> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .find(|(id, _)| *id == runtime)
            .map(|(_, c)| c.clone())
    }
}

/// True when the calling code runs inside a tokio runtime (the async
/// path's condition).
pub(crate) fn in_tokio() -> bool {
    Handle::try_current().is_ok()
}

impl Servers {
    /// This runtime's client (made if there is none: the servers'
    /// addresses are resolved, bounded by `cache.timeout`; connections
    /// are dialed by the calls). `operation` and `wire` name the failure.
    /// Must be called inside a tokio runtime.
    pub(crate) async fn async_client(
        &self,
        namespace: &str,
        operation: &'static str,
        wire: &[u8],
    ) -> carboy::Result<AsyncMetaClient> {
        let fail = |kind, detail: String| self.failure(namespace, operation, wire, kind, detail);
        let runtime = Handle::try_current()
            .map_err(|e| fail(FailureKind::Connection, e.to_string()))?
            .id();
        if let Some(client) = self.aio.find(runtime) {
            return Ok(client);
        }
        let s = &self.settings;
        let connecting = MetaClient::builder()
            .router(self.router)
            .connect_timeout(Some(s.timeout))
            .io_timeout(Some(s.timeout))
            .max_idle(s.pool_size)
            .max_connections(s.max_connections)
            // The same identities as the blocking client's (`cache.url`'s
            // spelling): keys route to the same servers.
            .connect_multiple_async(s.servers.iter().map(String::as_str));
        let client = match tokio::time::timeout(s.timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(self.error(namespace, operation, wire, e)),
            Err(_) => {
                return Err(fail(
                    FailureKind::Timeout,
                    "resolving the servers' addresses".into(),
                ));
            }
        };
        let mut kept = self.aio.kept.lock().unwrap_or_else(|p| p.into_inner());
        // Another task of this runtime may have made one meanwhile.
        if let Some((_, c)) = kept.iter().find(|(id, _)| *id == runtime) {
            return Ok(c.clone());
        }
        if kept.len() >= RUNTIMES {
            kept.remove(0);
        }
        kept.push((runtime, client.clone()));
        Ok(client)
    }
}

impl MemcachedNamespace {
    /// This runtime's client, failures named after `operation` on `wire`.
    pub(crate) async fn client(
        &self,
        operation: &'static str,
        wire: &[u8],
    ) -> carboy::Result<AsyncMetaClient> {
        self.servers
            .async_client(&self.namespace, operation, wire)
            .await
    }

    /// The values of several memcached keys (of any namespace on these
    /// servers) in one pipelined multi-get per server, the servers'
    /// exchanges concurrent: one round trip.
    async fn get_wires_async(&self, wires: &[Vec<u8>]) -> carboy::Result<Vec<Option<Vec<u8>>>> {
        let Some(first) = wires.first() else {
            return Ok(Vec::new());
        };
        let client = self.client("get many", first).await?;
        let results = client
            .run_many(wires.iter().map(memcache::exp::Get::new))
            .await
            .map_err(|e| self.error("get many", first, e))?;
        self.fetched_many(wires, results)
    }

    /// The async `lock_creation` outside a tokio runtime: the blocking
    /// lock on the calling thread (its guard's drop waits for the
    /// release's round trip).
    fn lock_blocking(&self, key: &[u8], wait: LockWait) -> carboy::Result<Locked<'_>> {
        let wire = self.lock_wire_key(key);
        wait.poll_blocking(lock::BACKOFF, || {
            let held = Lease::acquire(self, wire.clone(), false)?;
            Ok(held.map(AsyncCreationGuard::holding))
        })
    }
}

/// The native async path (see the crate's "Async" section): memcache's
/// async meta client on the caller's tokio runtime; outside one, the
/// blocking methods on the calling thread.
impl AsyncBackend for MemcachedNamespace {
    fn get<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Fetched<'a>>> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::get(self, key);
            }
            let wire = self.wire_key(key);
            let client = self.client("get", &wire).await?;
            let got = client
                .get(&wire)
                .send()
                .await
                .map_err(|e| self.error("get", &wire, e))?;
            Ok(got
                .hit()
                .then(|| Fetched::Owned(got.value.unwrap_or_default())))
        })
    }

    /// The value and the invalidation markers in one pipelined multi-get
    /// per server (one round trip), when `other` is a namespace on the
    /// same servers, as the blocking `get_with`.
    fn get_with<'a: 'b, 'b>(
        &'a self,
        key: &'b [u8],
        other: &'a dyn Backend,
        other_keys: &'b [&'b [u8]],
    ) -> BackendFuture<'b, Option<(Option<Fetched<'a>>, Vec<Option<Fetched<'a>>>)>> {
        Box::pin(async move {
            let Some(theirs) = self.same_servers(other) else {
                return Ok(None);
            };
            if !in_tokio() {
                return Backend::get_with(self, key, other, other_keys);
            }
            let mut wires = Vec::with_capacity(1 + other_keys.len());
            wires.push(self.wire_key(key));
            wires.extend(other_keys.iter().map(|k| theirs.wire_key(k)));
            let mut values = self.get_wires_async(&wires).await?.into_iter();
            let value = values.next().flatten().map(Fetched::Owned);
            Ok(Some((
                value,
                values.map(|v| v.map(Fetched::Owned)).collect(),
            )))
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
            let wire = self.wire_key(key);
            self.check_len(&wire, value)?;
            let client = self.client("set", &wire).await?;
            let sent = client.set(&wire, value).ttl(server_ttl(ttl)).send().await;
            self.stored(&wire, value.len(), sent)
        })
    }

    fn remove<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::remove(self, key);
            }
            let wire = self.wire_key(key);
            let client = self.client("remove", &wire).await?;
            let result = client
                .delete(&wire)
                .send()
                .await
                .map_err(|e| self.error("remove", &wire, e))?;
            Ok(result.status == MutationStatus::Applied)
        })
    }

    /// As the blocking `update`: `mg` with CAS and remaining TTL, then
    /// `ms`/`md` under that CAS (add mode when there was no item), read
    /// again while another writer got in between.
    fn update<'a>(&'a self, key: &'a [u8], f: &'a mut AsyncUpdateFn<'_>) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            if !in_tokio() {
                return Backend::update(self, key, f);
            }
            let wire = self.wire_key(key);
            let client = self.client("update", &wire).await?;
            let err = |e| self.error("update", &wire, e);
            for _ in 0..MAX_CAS_ROUNDS {
                let got = client
                    .get(&wire)
                    .meta(Meta::NONE.cas().ttl())
                    .send()
                    .await
                    .map_err(err)?;
                let status = match self.cas_round(&wire, got, f)? {
                    CasRound::Done => return Ok(()),
                    CasRound::Add(v) => {
                        client
                            .set(&wire, &v)
                            .add()
                            .send()
                            .await
                            .map_err(err)?
                            .status
                    }
                    CasRound::Replace { cas, ttl, value } => {
                        client
                            .set(&wire, &value)
                            .compare_cas(cas)
                            .ttl(ttl)
                            .send()
                            .await
                            .map_err(err)?
                            .status
                    }
                    CasRound::Delete { cas } => {
                        client
                            .delete(&wire)
                            .compare_cas(cas)
                            .send()
                            .await
                            .map_err(err)?
                            .status
                    }
                };
                if status == MutationStatus::Applied {
                    return Ok(());
                }
            }
            Err(self.cas_rounds_lost(&wire))
        })
    }

    /// `ms <lock key> <token> MA T<lease>`, tried again after a pause
    /// (2 ms, doubling up to 100 ms, on tokio's timer) while someone else
    /// holds it, for as long as `wait` allows. While held, a task renews
    /// the lease every third of it; the guard's drop hands the release
    /// (`mg`, then `md C<cas>` if the token is still ours) to that task,
    /// without waiting for it ([`lock`] has the details).
    fn lock_creation<'a>(
        &'a self,
        key: &'a [u8],
        _hash: u64,
        wait: LockWait,
    ) -> BackendFuture<'a, Locked<'a>> {
        Box::pin(async move {
            if !in_tokio() {
                return self.lock_blocking(key, wait);
            }
            let wire = self.lock_wire_key(key);
            wait.poll(
                lock::BACKOFF,
                || async {
                    let held = AsyncLease::try_acquire(self, &wire).await?;
                    Ok(held.map(AsyncCreationGuard::holding))
                },
                tokio::time::sleep,
                || tokio::time::Instant::now().into_std(),
            )
            .await
        })
    }
}
