//! One redis deployment (a server or a cluster) as the backend reaches it:
//! a client and a small pool of blocking connections, each with the
//! configured connect and command timeouts. A connection that fails is
//! dropped, never put back, so the next call connects afresh: a restarted
//! server is used again without restarting the application.

use std::fmt;
use std::sync::OnceLock;

use parking_lot::Mutex;
use redis::cluster::ClusterClient;
use redis::cluster::ClusterConnection;
use redis::{Client, Cmd, ConnectionLike, RedisResult, Value};

use crate::settings::Settings;

/// A failed redis operation: which server, which operation, and redis's
/// error. carboy reports it as [`carboy::Error::Backend`] with this as its
/// source (find it with `std::error::Error::source` and downcast).
#[derive(Debug)]
#[non_exhaustive]
pub struct RedisFailure {
    /// The server (`host:port`), or the cluster's seed nodes separated by
    /// commas.
    pub server: String,
    /// What the backend was doing (`GET`, `SET`, `connect`, …).
    pub operation: &'static str,
    /// True when the server did not answer within the configured timeout.
    pub timed_out: bool,
    /// redis's error.
    pub source: redis::RedisError,
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis {}: {} failed", self.server, self.operation)?;
        if self.timed_out {
            f.write_str(" (timed out: see cache.connect_timeout_ms and cache.command_timeout_ms)")?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for RedisFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One connection: to a standalone server, or to a cluster.
pub(crate) enum Conn {
    Single(redis::Connection),
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    pub(crate) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => c.as_mut(),
        }
    }
}

/// The clients of a deployment.
pub(crate) enum Clients {
    Single(Client),
    Cluster(Box<ClusterClient>),
}

/// What a server's `maxmemory-policy` lets it evict, from the safest to
/// the least known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Eviction {
    /// `noeviction`: nothing.
    Never,
    /// `volatile-*`: only keys with a TTL.
    OnlyWithTtl,
    /// `allkeys-*`: anything.
    Any,
    /// The policy could not be read.
    Unknown,
}

/// True when `e` is a redis failure to reach the server (not a refusal).
fn unreachable(e: &carboy::Error) -> bool {
    let carboy::Error::Backend { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<RedisFailure>()
        .is_some_and(|f| f.timed_out || f.source.is_io_error() || f.source.is_connection_dropped())
}

/// A redis deployment and its idle connections.
pub(crate) struct Server {
    pub settings: Settings,
    clients: Clients,
    idle: Mutex<Vec<Conn>>,
    eviction: OnceLock<Eviction>,
    /// The async path's connections (one per tokio runtime).
    pub(crate) aio: crate::aio::AsyncConns,
    /// The async creation locks being released.
    pub(crate) releasing: crate::aio::Releasing,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("servers", &self.settings.display)
            .field("cluster", &self.settings.cluster)
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

/// An error of `operation` on `server`, as carboy reports it.
pub(crate) fn failure(
    server: &str,
    namespace: &str,
    operation: &'static str,
    source: redis::RedisError,
) -> carboy::Error {
    carboy::Error::Backend {
        backend: "redis".to_string(),
        namespace: namespace.to_string(),
        source: Box::new(RedisFailure {
            server: server.to_string(),
            operation,
            timed_out: source.is_timeout(),
            source,
        }),
    }
}

impl Server {
    /// The client for `settings`; nothing is connected yet.
    pub(crate) fn new(settings: Settings) -> carboy::Result<Server> {
        let clients = if settings.cluster {
            let client = ClusterClient::builder(settings.nodes.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.command_timeout)
                // A refused connection is retried once (a moved slot, a
                // failover), not for a minute.
                .retries(1)
                .build()
                .map_err(|e| failure(&settings.display, "", "configure the cluster client", e))?;
            Clients::Cluster(Box::new(client))
        } else {
            let client = Client::open(settings.nodes[0].clone())
                .map_err(|e| failure(&settings.display, "", "configure the client", e))?;
            Clients::Single(client)
        };
        Ok(Server {
            settings,
            clients,
            idle: Mutex::new(Vec::new()),
            eviction: OnceLock::new(),
            aio: Default::default(),
            releasing: Default::default(),
        })
    }

    /// The deployment's clients.
    pub(crate) fn clients(&self) -> &Clients {
        &self.clients
    }

    fn connect(&self) -> RedisResult<Conn> {
        let s = &self.settings;
        match &self.clients {
            Clients::Single(client) => {
                let c = client.get_connection_with_timeout(s.connect_timeout)?;
                c.set_read_timeout(Some(s.command_timeout))?;
                c.set_write_timeout(Some(s.command_timeout))?;
                Ok(Conn::Single(c))
            }
            Clients::Cluster(client) => Ok(Conn::Cluster(Box::new(client.get_connection()?))),
        }
    }

    /// Runs `f` on a pooled connection (a new one when none is idle). On
    /// success the connection goes back to the pool (if it has room). On
    /// a failure to reach the server, the connection and every idle one
    /// are dropped (they lead to the same server); and if `f` ran on an
    /// idle connection that turns out to be closed (the server restarted
    /// since), `f` runs once more on a new connection, so that the first
    /// call after a restart succeeds. A timeout is not retried: a stopped
    /// server costs one timeout per call, not two.
    pub(crate) fn with<T>(
        &self,
        namespace: &str,
        operation: &'static str,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> carboy::Result<T> {
        self.with_conn(namespace, operation, |c| f(c.as_dyn()))
    }

    /// [`with`](Self::with), given the connection itself.
    fn with_conn<T>(
        &self,
        namespace: &str,
        operation: &'static str,
        mut f: impl FnMut(&mut Conn) -> RedisResult<T>,
    ) -> carboy::Result<T> {
        let fail = |e| failure(&self.settings.display, namespace, operation, e);
        let idle = self.idle.lock().pop();
        let reused = idle.is_some();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect().map_err(fail)?,
        };
        let result = match f(&mut conn) {
            Err(e) if reused && e.is_connection_dropped() && !e.is_timeout() => {
                self.idle.lock().clear();
                conn = self.connect().map_err(fail)?;
                f(&mut conn)
            }
            other => other,
        };
        match result {
            Ok(v) => {
                let mut idle = self.idle.lock();
                if idle.len() < self.settings.pool_size {
                    idle.push(conn);
                }
                Ok(v)
            }
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.idle.lock().clear();
                }
                Err(fail(e))
            }
        }
    }

    /// Runs one command.
    pub(crate) fn query<T: redis::FromRedisValue>(
        &self,
        namespace: &str,
        operation: &'static str,
        cmd: &Cmd,
    ) -> carboy::Result<T> {
        self.with(namespace, operation, |c| cmd.query(c))
    }

    /// What the servers may evict, from their `maxmemory-policy` (every
    /// master's, in a cluster): read once, then kept. An outage answers
    /// [`Eviction::Unknown`] without keeping it, so the next open asks
    /// again.
    pub(crate) fn eviction_policy(&self) -> Eviction {
        if let Some(e) = self.eviction.get() {
            return *e;
        }
        let e = match self.eviction_policies() {
            Ok(policies) if policies.is_empty() => Eviction::Unknown,
            Ok(policies) => policies
                .iter()
                .map(|p| match p.as_str() {
                    "noeviction" => Eviction::Never,
                    p if p.starts_with("volatile-") => Eviction::OnlyWithTtl,
                    _ => Eviction::Any,
                })
                .max()
                .unwrap_or(Eviction::Unknown),
            Err(e) if unreachable(&e) => return Eviction::Unknown,
            // CONFIG refused (disabled, renamed, not allowed): no promise.
            Err(_) => Eviction::Unknown,
        };
        let _ = self.eviction.set(e);
        e
    }

    /// The `maxmemory-policy` of each server (each master of a cluster).
    pub(crate) fn eviction_policies(&self) -> carboy::Result<Vec<String>> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        match &self.clients {
            Clients::Single(_) => {
                let v: Value = self.query("", "CONFIG GET maxmemory-policy", &cmd)?;
                Ok(policy_of(&v).into_iter().collect())
            }
            Clients::Cluster(_) => {
                let v: Value = self.with_conn("", "CONFIG GET maxmemory-policy", |c| {
                    let Conn::Cluster(cluster) = c else {
                        return cmd.query(c.as_dyn());
                    };
                    cluster.route_command(
                        &cmd,
                        redis::cluster_routing::RoutingInfo::MultiNode((
                            redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                            None,
                        )),
                    )
                })?;
                let mut out = Vec::new();
                if let Value::Map(per_node) = v {
                    for (_, reply) in per_node {
                        match policy_of(&reply) {
                            Some(p) => out.push(p),
                            None => return Ok(Vec::new()),
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The policy named in a `CONFIG GET maxmemory-policy` reply (an array
/// `[name, value]` in RESP2, a map in RESP3).
fn policy_of(v: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Array(items) if items.len() == 2 => text(&items[1]),
        Value::Map(pairs) if pairs.len() == 1 => text(&pairs[0].1),
        _ => None,
    }
}
