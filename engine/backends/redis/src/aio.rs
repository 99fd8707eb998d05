//! The native async path: redis's own async connections on the caller's
//! tokio runtime, for [`AsyncBackend`](carboy::cache::AsyncBackend).
//!
//! One connection per runtime and deployment, shared by every task: a
//! `MultiplexedConnection` (standalone) or the async cluster client's
//! connection, both pipelining the commands of concurrent tasks over one
//! socket per node, so a thousand tasks cost no thread and no socket
//! each. It is opened lazily, by the first async call made inside a tokio
//! runtime, and kept per runtime (a connection's I/O is driven by the
//! runtime that opened it: another runtime, idle or shut down, would never
//! answer). Every command is bounded by `cache.command_timeout_ms` and
//! every connection by `cache.connect_timeout_ms` on tokio's timer.
//! A connection that fails to reach its server is dropped; if a call ran
//! on a kept connection that turns out closed (a restarted server, a
//! runtime shut down), it runs once more on a new one, as the blocking
//! pool does. A timeout is not retried.
//!
//! Outside a tokio runtime the async methods run the blocking ones on the
//! calling thread instead (see the crate's "Async" section).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::runtime::{Handle, Id};

use crate::server::{Server, failure};

/// How many runtimes' connections are kept at most (the oldest goes).
const RUNTIMES: usize = 8;

/// An async connection: to a standalone server, or to a cluster. Cloning
/// it is cheap (a handle to the same socket(s)).
#[derive(Clone)]
pub(crate) enum AConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AConn::Single(c) => c.req_packed_command(cmd),
            AConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AConn::Single(c) => c.get_db(),
            AConn::Cluster(c) => c.get_db(),
        }
    }
}

/// One runtime's connection.
struct Kept {
    runtime: Id,
    /// Which connection this is, so that a failure drops only the one
    /// that failed (not a newer one another task opened meanwhile).
    serial: u64,
    conn: AConn,
}

/// The async connections of one deployment.
#[derive(Default)]
pub(crate) struct AsyncConns {
    kept: Mutex<Vec<Kept>>,
    /// Held while a connection is opened, so that the tasks that all find
    /// none open one between them, not one each.
    opening: tokio::sync::Mutex<()>,
    serial: AtomicU64,
}

impl std::fmt::Debug for AsyncConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConns")
            .field("runtimes", &self.kept.lock().len())
            .finish()
    }
}

/// True when the calling code runs inside a tokio runtime (the async
/// path's condition).
pub(crate) fn in_tokio() -> bool {
    Handle::try_current().is_ok()
}

/// The error of a timed-out wait.
pub(crate) fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {what}"),
    ))
}

/// True when `e` says the connection is unusable.
fn broken(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error())
}

impl AsyncConns {
    fn find(&self, runtime: Id) -> Option<(u64, AConn)> {
        self.kept
            .lock()
            .iter()
            .find(|k| k.runtime == runtime)
            .map(|k| (k.serial, k.conn.clone()))
    }

    fn forget(&self, serial: u64) {
        self.kept.lock().retain(|k| k.serial != serial);
    }
}

impl Server {
    /// Opens an async connection on the current runtime.
    async fn open_async(&self) -> RedisResult<AConn> {
        let s = &self.settings;
        match self.clients() {
            crate::server::Clients::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(s.connect_timeout))
                    .set_response_timeout(Some(s.command_timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(AConn::Single)
            }
            crate::server::Clients::Cluster(client) => {
                client.get_async_connection().await.map(AConn::Cluster)
            }
        }
    }

    /// This runtime's connection (opened if there is none) and whether it
    /// was kept from before. Opening, waiting for another task's opening
    /// included, is bounded by `cache.connect_timeout_ms` (plus a command
    /// timeout on a cluster, whose client also asks for the slots): tasks
    /// queued behind an opening that hangs (a stopped server) wait one
    /// timeout in all, not one each.
    async fn async_conn(&self, runtime: Id) -> RedisResult<(u64, AConn, bool)> {
        if let Some((serial, conn)) = self.aio.find(runtime) {
            return Ok((serial, conn, true));
        }
        let s = &self.settings;
        let limit = if s.cluster {
            s.connect_timeout + s.command_timeout
        } else {
            s.connect_timeout
        };
        let opening = async {
            let _opening = self.aio.opening.lock().await;
            if let Some((serial, conn)) = self.aio.find(runtime) {
                return Ok((serial, conn, false));
            }
            let conn = self.open_async().await?;
            let serial = self.aio.serial.fetch_add(1, Ordering::Relaxed);
            let mut kept = self.aio.kept.lock();
            kept.retain(|k| k.runtime != runtime);
            if kept.len() >= RUNTIMES {
                kept.remove(0);
            }
            kept.push(Kept {
                runtime,
                serial,
                conn: conn.clone(),
            });
            Ok((serial, conn, false))
        };
        match tokio::time::timeout(limit, opening).await {
            Ok(r) => r,
            Err(_) => Err(timed_out("cache.connect_timeout_ms")),
        }
    }

    /// Runs `f` on this runtime's connection, bounded by
    /// `cache.command_timeout_ms`; errors as carboy reports them (a
    /// [`RedisFailure`](crate::RedisFailure) naming the server and
    /// `operation`). Must be called inside a tokio runtime.
    pub(crate) async fn with_async<T, F, Fut>(
        &self,
        namespace: &str,
        operation: &'static str,
        mut f: F,
    ) -> carboy::Result<T>
    where
        F: FnMut(AConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let fail = |e| failure(&self.settings.display, namespace, operation, e);
        let runtime = Handle::try_current()
            .map_err(|e| fail(RedisError::from(std::io::Error::other(e.to_string()))))?
            .id();
        let limit = self.settings.command_timeout;
        let run = |conn: AConn, f: &mut F| {
            let call = f(conn);
            async move {
                match tokio::time::timeout(limit, call).await {
                    Ok(r) => r,
                    Err(_) => Err(timed_out("cache.command_timeout_ms")),
                }
            }
        };
        let (mut serial, conn, reused) = self.async_conn(runtime).await.map_err(fail)?;
        let mut result = run(conn, &mut f).await;
        if let Err(e) = &result
            && reused
            && broken(e)
        {
            // A kept connection to a server that restarted (or a runtime
            // that ended): once more, on a new one.
            self.aio.forget(serial);
            let (s, conn, _) = self.async_conn(runtime).await.map_err(fail)?;
            serial = s;
            result = run(conn, &mut f).await;
        }
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                // A timeout keeps the connection (multiplexed: a late
                // answer is matched to its dropped request and ignored);
                // a broken one goes.
                if broken(&e) {
                    self.aio.forget(serial);
                }
                Err(fail(e))
            }
        }
    }

    /// Runs one command on the async path.
    pub(crate) async fn query_async<T: redis::FromRedisValue>(
        &self,
        namespace: &str,
        operation: &'static str,
        cmd: &Cmd,
    ) -> carboy::Result<T> {
        self.with_async(namespace, operation, |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }
}

/// The creation locks whose async release is on its way (spawned by a
/// dropped guard, not answered yet), by redis key, with how many releases
/// of each are in flight. A later lock try in this process, blocking or
/// async, waits for them first: "dropped, then taken again here" is then
/// ordered, as it is on the blocking path (whose release is answered
/// before its guard's drop returns). Other processes see the release when
/// it lands, a round trip later.
#[derive(Debug, Default)]
pub(crate) struct Releasing {
    keys: Mutex<std::collections::HashMap<Vec<u8>, usize>>,
    /// Wakes blocking waiters.
    done: parking_lot::Condvar,
    /// Wakes async waiters.
    done_async: tokio::sync::Notify,
}

/// One release in flight: ends it when dropped (answered, failed, or its
/// task dropped unrun by a runtime that shut down).
pub(crate) struct InFlight {
    server: std::sync::Arc<Server>,
    key: Vec<u8>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let r = &self.server.releasing;
        let mut keys = r.keys.lock();
        if let Some(n) = keys.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&self.key);
            }
        }
        drop(keys);
        r.done.notify_all();
        r.done_async.notify_waiters();
    }
}

impl Releasing {
    /// Records a release of `key` about to be sent.
    pub(crate) fn begin(server: &std::sync::Arc<Server>, key: &[u8]) -> InFlight {
        *server
            .releasing
            .keys
            .lock()
            .entry(key.to_vec())
            .or_insert(0) += 1;
        InFlight {
            server: std::sync::Arc::clone(server),
            key: key.to_vec(),
        }
    }

    /// The longest a lock try waits for this process's releases of its
    /// key: what a release may take (a reconnection, a command, a retry).
    fn bound(server: &Server) -> Duration {
        let s = &server.settings;
        s.connect_timeout + s.command_timeout * 2
    }

    /// Blocks until no release of `key` is in flight (or the bound).
    pub(crate) fn wait(server: &Server, key: &[u8]) {
        let r = &server.releasing;
        let mut keys = r.keys.lock();
        if !keys.contains_key(key) {
            return;
        }
        let deadline = std::time::Instant::now() + Self::bound(server);
        while keys.contains_key(key) {
            if r.done.wait_until(&mut keys, deadline).timed_out() {
                return;
            }
        }
    }

    /// Waits, on the async path, until no release of `key` is in flight
    /// (or the bound).
    pub(crate) async fn wait_async(server: &Server, key: &[u8]) {
        let r = &server.releasing;
        if !r.keys.lock().contains_key(key) {
            return;
        }
        let all = async {
            loop {
                // Created before the check: a release that ends between
                // the check and the await still wakes it.
                let notified = r.done_async.notified();
                if !r.keys.lock().contains_key(key) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(Self::bound(server), all).await;
    }
}
