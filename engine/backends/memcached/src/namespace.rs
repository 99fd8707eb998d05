//! One namespace on the servers: the [`Backend`] operations mapped onto
//! memcached's meta commands (`mg`, `ms`, `md`), and the connection to
//! the servers that every namespace of one configuration shares.

use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use carboy::Error;
use carboy::cache::{AsyncBackend, Backend, Capabilities, CreationGuard, Fetched, UpdateFn};
use memcache::exp::{
    GetResult, Meta, MetaClient, MutationResult, MutationStatus, Rendezvous, Router, Ttl,
};

use crate::aio::AsyncClients;
use crate::error::{FailureKind, ServerError};
use crate::keys;
use crate::lock::{Lease, Releasing};
use crate::settings::Settings;

/// What memcached stores beside a value in one item, in bytes: the item
/// header (48), the CAS (8), the key's terminator and the value's `\r\n`,
/// and client flags. A value of `item_size_max - key - ITEM_OVERHEAD`
/// bytes fits.
pub const ITEM_OVERHEAD: usize = 64;

/// Relative TTLs above this are read by memcached as Unix timestamps.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 3600;

/// How many compare-and-swap rounds `update` tries before it gives up.
pub(crate) const MAX_CAS_ROUNDS: usize = 10_000;

/// The key hash that spreads keys over servers (rendezvous hashing):
/// SipHash-1-3 with fixed keys, the same in every process and build.
fn stable_hash(key: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write(key);
    h.finish()
}

/// The servers of one configuration: one client (one connection pool per
/// server), shared by every namespace opened with these settings.
pub(crate) struct Servers {
    pub(crate) client: MetaClient,
    pub(crate) settings: Settings,
    pub(crate) router: Rendezvous,
    /// The async clients, one per tokio runtime (`aio.rs`).
    pub(crate) aio: AsyncClients,
    /// The creation locks whose release is on its way (`lock.rs`).
    pub(crate) releasing: Releasing,
}

impl fmt::Debug for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Servers")
            .field("servers", &self.settings.servers)
            .finish_non_exhaustive()
    }
}

impl Servers {
    pub(crate) fn connect(settings: Settings) -> carboy::Result<Servers> {
        let router = Rendezvous::with_hash_function(stable_hash);
        let client = MetaClient::builder()
            .router(router)
            .connect_timeout(Some(settings.timeout))
            .io_timeout(Some(settings.timeout))
            .max_idle(settings.pool_size)
            .max_connections(settings.max_connections)
            .connect_multiple(settings.servers.iter().map(String::as_str))
            .map_err(|e| Error::InvalidOption {
                name: "cache.url",
                reason: format!("{:?}: {e}", settings.servers.join(";")),
            })?;
        Ok(Servers {
            client,
            settings,
            router,
            aio: AsyncClients::default(),
            releasing: Releasing::default(),
        })
    }

    /// The server that holds `wire_key`.
    pub(crate) fn server_of(&self, wire_key: &[u8]) -> &str {
        let i = self.router.route(wire_key, &self.settings.servers);
        self.settings.servers.get(i).map_or("?", String::as_str)
    }

    /// A client error as a carboy error naming the server and operation.
    pub(crate) fn error(
        &self,
        namespace: &str,
        operation: &'static str,
        wire_key: &[u8],
        e: memcache::exp::Error,
    ) -> Error {
        use memcache::exp::Error as E;
        let kind = match &e {
            E::Io(io) if is_timeout(io) => FailureKind::Timeout,
            E::Io(_) => FailureKind::Connection,
            E::Timeout { .. } => FailureKind::Timeout,
            E::Ambiguous { source, .. } => match **source {
                E::Timeout { .. } => FailureKind::Timeout,
                E::Io(ref io) if is_timeout(io) => FailureKind::Timeout,
                _ => FailureKind::Ambiguous,
            },
            E::Server(_) => FailureKind::Server,
            E::Conflict => FailureKind::Contention,
            _ => FailureKind::Protocol,
        };
        self.failure(namespace, operation, wire_key, kind, e.to_string())
    }

    pub(crate) fn failure(
        &self,
        namespace: &str,
        operation: &'static str,
        wire_key: &[u8],
        kind: FailureKind,
        detail: String,
    ) -> Error {
        Error::Backend {
            backend: "memcached".into(),
            namespace: namespace.to_string(),
            source: Box::new(ServerError {
                server: self.server_of(wire_key).to_string(),
                operation,
                kind,
                detail,
                timeout: self.settings.timeout,
            }),
        }
    }
}

/// memcached's `SERVER_ERROR object too large for cache` (which the client
/// reports as the outcome of a request it sent).
fn too_large(e: &memcache::exp::Error) -> bool {
    use memcache::exp::Error as E;
    match e {
        E::Server(m) => m.contains("too large"),
        E::Ambiguous { source, .. } => too_large(source),
        _ => false,
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// A TTL as memcached reads it: whole seconds, rounded up (an entry never
/// goes before it was allowed to); above 30 days an absolute Unix time
/// (memcached reads a relative TTL that large as a timestamp); past what
/// memcached's 32-bit timestamps reach, no expiry (a TTL permits dropping,
/// it does not require it).
pub(crate) fn server_ttl(ttl: Option<Duration>) -> Ttl {
    let Some(ttl) = ttl else {
        return Ttl::NEVER;
    };
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let secs = secs.max(1);
    if secs <= MAX_RELATIVE_TTL {
        // In range: at most 30 days fits a u32.
        return Ttl::secs(u32::try_from(secs).unwrap_or(u32::MAX));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.checked_add(secs) {
        Some(at) if at <= u64::from(u32::MAX) => Ttl::at(UNIX_EPOCH + Duration::from_secs(at)),
        _ => Ttl::NEVER,
    }
}

/// The remaining TTL memcached reported (`-1`: none), to write back with
/// an updated value.
pub(crate) fn remaining_ttl(ttl: Option<i64>) -> Ttl {
    match ttl {
        None | Some(-1) => Ttl::NEVER,
        Some(n) => server_ttl(Some(Duration::from_secs(u64::try_from(n).unwrap_or(1)))),
    }
}

/// One round of `update`'s compare-and-swap, decided from the item read
/// (`mg` with its CAS and remaining TTL) and what the update function made
/// of its value; the blocking and the async `update` send it alike.
pub(crate) enum CasRound {
    /// No item and nothing to store: done.
    Done,
    /// No item: store this in add mode (refused if another writer added
    /// one meanwhile).
    Add(Vec<u8>),
    /// Replace the item under its CAS, keeping its remaining TTL.
    Replace { cas: u64, ttl: Ttl, value: Vec<u8> },
    /// Delete the item under its CAS.
    Delete { cas: u64 },
}

/// One namespace of a memcached backend.
///
/// Declares [`Capabilities`] `atomic_update` (memcached's `cas`) and
/// `creation_locks` (`add` of a lock key with a lease); not `list_keys`
/// (memcached cannot list a namespace), `change_stamp`, `never_evicts`
/// (memcached's LRU evicts anything, markers included: the cache then
/// treats a missing marker as lost) nor `expires_by_clock` (the server
/// keeps time).
pub struct MemcachedNamespace {
    pub(crate) servers: Arc<Servers>,
    pub(crate) namespace: String,
    base: Vec<u8>,
}

impl fmt::Debug for MemcachedNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedNamespace")
            .field("namespace", &self.namespace)
            .field("servers", &self.servers.settings.servers)
            .finish()
    }
}

/// What a memcached namespace declares.
pub const CAPABILITIES: Capabilities = Capabilities::NONE.atomic_update(true).creation_locks(true);

impl MemcachedNamespace {
    pub(crate) fn new(servers: Arc<Servers>, namespace: &str) -> MemcachedNamespace {
        let base = keys::namespace_base(&servers.settings.key_prefix, namespace);
        MemcachedNamespace {
            servers,
            namespace: namespace.to_string(),
            base,
        }
    }

    /// The memcached key that holds `key`'s value (for tests and tools
    /// that look at the server directly).
    pub fn wire_key(&self, key: &[u8]) -> Vec<u8> {
        keys::value_key(&self.base, key)
    }

    /// The memcached key of `key`'s creation lock.
    pub fn lock_wire_key(&self, key: &[u8]) -> Vec<u8> {
        keys::lock_key(&self.base, key)
    }

    /// The server that holds `key`, as `cache.url` names it.
    pub fn server_of(&self, key: &[u8]) -> &str {
        self.servers.server_of(&self.wire_key(key))
    }

    /// The values of several keys with one round trip per server
    /// (memcached's multi-get, pipelined `mg` commands), in the order of
    /// `keys`.
    pub fn get_many(&self, keys: &[&[u8]]) -> carboy::Result<Vec<Option<Vec<u8>>>> {
        let wires: Vec<Vec<u8>> = keys.iter().map(|k| self.wire_key(k)).collect();
        self.get_wires(&wires)
    }

    /// The values of several memcached keys (wire keys, of any namespace
    /// on these servers), one round trip per server, in their order.
    pub(crate) fn get_wires(&self, wires: &[Vec<u8>]) -> carboy::Result<Vec<Option<Vec<u8>>>> {
        let Some(first) = wires.first() else {
            return Ok(Vec::new());
        };
        let ops = wires.iter().map(memcache::exp::Get::new);
        let results = self
            .servers
            .client
            .run_many(ops)
            .map_err(|e| self.error("get many", first, e))?;
        self.fetched_many(wires, results)
    }

    pub(crate) fn error(
        &self,
        operation: &'static str,
        wire: &[u8],
        e: memcache::exp::Error,
    ) -> Error {
        self.servers.error(&self.namespace, operation, wire, e)
    }

    /// The largest value `wire` can hold.
    pub(crate) fn max_value(&self, wire: &[u8]) -> usize {
        self.servers
            .settings
            .item_size_max
            .saturating_sub(wire.len() + ITEM_OVERHEAD)
    }

    /// `value` too long for `wire`, as the typed error.
    /// The next round of `update` on `wire`, from the item `got` read and
    /// the update function `f`; a new value too large for the servers is
    /// [`Error::ValueTooLong`].
    pub(crate) fn cas_round(
        &self,
        wire: &[u8],
        got: GetResult,
        f: &mut UpdateFn<'_>,
    ) -> carboy::Result<CasRound> {
        let (current, cas) = match (got.hit(), got.item.cas) {
            (true, Some(cas)) => (Some(got.value.unwrap_or_default()), Some(cas)),
            _ => (None, None),
        };
        let next = f(current.as_deref());
        if let Some(v) = &next {
            self.check_len(wire, v)?;
        }
        Ok(match (cas, next) {
            (None, None) => CasRound::Done,
            (None, Some(value)) => CasRound::Add(value),
            (Some(cas), Some(value)) => CasRound::Replace {
                cas,
                ttl: remaining_ttl(got.item.ttl),
                value,
            },
            (Some(cas), None) => CasRound::Delete { cas },
        })
    }

    /// `update`'s error after [`MAX_CAS_ROUNDS`] rounds lost to other
    /// writers.
    pub(crate) fn cas_rounds_lost(&self, wire: &[u8]) -> Error {
        self.servers.failure(
            &self.namespace,
            "update",
            wire,
            FailureKind::Contention,
            format!("lost {MAX_CAS_ROUNDS} compare-and-swap rounds in a row"),
        )
    }

    pub(crate) fn check_len(&self, wire: &[u8], value: &[u8]) -> carboy::Result<()> {
        let max = self.max_value(wire);
        if value.len() > max {
            return Err(Error::ValueTooLong {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }

    /// The other namespace of a `get_with`, if it is one of ours on the
    /// same servers (the markers namespace of the same configuration).
    pub(crate) fn same_servers<'o>(
        &self,
        other: &'o dyn Backend,
    ) -> Option<&'o MemcachedNamespace> {
        let other = other
            .as_any()
            .and_then(|o| o.downcast_ref::<MemcachedNamespace>())?;
        Arc::ptr_eq(&self.servers, &other.servers).then_some(other)
    }

    fn store(&self, wire: &[u8], value: &[u8], ttl: Ttl) -> carboy::Result<()> {
        self.check_len(wire, value)?;
        let sent = self.servers.client.set(wire, value).ttl(ttl).send();
        self.stored(wire, value.len(), sent)
    }

    /// The outcome of an `ms` of a `len`-byte value to `wire`, blocking or
    /// async: a value the server refuses as too large is
    /// [`Error::ValueTooLong`] (its `-I` is below `cache.item_size_max`),
    /// one it does not store is a server failure.
    pub(crate) fn stored(
        &self,
        wire: &[u8],
        len: usize,
        sent: memcache::exp::Result<MutationResult>,
    ) -> carboy::Result<()> {
        let result = sent.map_err(|e| {
            if too_large(&e) {
                Error::ValueTooLong {
                    len,
                    max: self.max_value(wire),
                }
            } else {
                self.error("set", wire, e)
            }
        })?;
        match result.status {
            MutationStatus::Applied => Ok(()),
            other => Err(self.servers.failure(
                &self.namespace,
                "set",
                wire,
                FailureKind::Server,
                format!("not stored: {other:?}"),
            )),
        }
    }

    /// The values of a multi-get of `wires` (in their order), from its
    /// answers `results`, blocking or async.
    pub(crate) fn fetched_many(
        &self,
        wires: &[Vec<u8>],
        results: Vec<memcache::exp::Result<GetResult>>,
    ) -> carboy::Result<Vec<Option<Vec<u8>>>> {
        results
            .into_iter()
            .zip(wires)
            .map(|(r, wire)| match r {
                Ok(got) if got.hit() => Ok(Some(got.value.unwrap_or_default())),
                Ok(_) => Ok(None),
                Err(e) => Err(self.error("get many", wire, e)),
            })
            .collect()
    }
}

impl Backend for MemcachedNamespace {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    /// The value and the invalidation markers in one pipelined multi-get
    /// (one round trip per server), when `other` is a namespace on the
    /// same servers (the markers namespace of the same configuration).
    fn get_with<'s>(
        &'s self,
        key: &[u8],
        other: &'s dyn Backend,
        other_keys: &[&[u8]],
    ) -> carboy::Result<Option<(Option<Fetched<'s>>, Vec<Option<Fetched<'s>>>)>> {
        let Some(other) = self.same_servers(other) else {
            return Ok(None);
        };
        let mut wires = Vec::with_capacity(1 + other_keys.len());
        wires.push(self.wire_key(key));
        wires.extend(other_keys.iter().map(|k| other.wire_key(k)));
        let mut values = self.get_wires(&wires)?.into_iter();
        let value = values.next().flatten().map(Fetched::Owned);
        Ok(Some((
            value,
            values.map(|v| v.map(Fetched::Owned)).collect(),
        )))
    }

    /// One pipelined multi-get per server ([`MemcachedNamespace::get_many`]).
    fn get_many(&self, keys: &[&[u8]]) -> carboy::Result<Vec<Option<Fetched<'_>>>> {
        let values = MemcachedNamespace::get_many(self, keys)?;
        Ok(values.into_iter().map(|v| v.map(Fetched::Owned)).collect())
    }

    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        let wire = self.wire_key(key);
        let got = self
            .servers
            .client
            .get(&wire)
            .send()
            .map_err(|e| self.error("get", &wire, e))?;
        Ok(got
            .hit()
            .then(|| Fetched::Owned(got.value.unwrap_or_default())))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> carboy::Result<()> {
        self.store(&self.wire_key(key), value, server_ttl(ttl))
    }

    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        let wire = self.wire_key(key);
        let result = self
            .servers
            .client
            .delete(&wire)
            .send()
            .map_err(|e| self.error("remove", &wire, e))?;
        Ok(result.status == MutationStatus::Applied)
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn contains(&self, key: &[u8]) -> carboy::Result<bool> {
        let wire = self.wire_key(key);
        let got = self
            .servers
            .client
            .get(&wire)
            .without_value()
            .send()
            .map_err(|e| self.error("contains", &wire, e))?;
        Ok(got.hit())
    }

    /// `mg` with the item's CAS and remaining TTL, then `ms` (or `md`)
    /// under that CAS (`add` when there was no item), retried while
    /// another writer got in between. The remaining TTL is written back
    /// (to the second: memcached's clock has no finer grain).
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        let wire = self.wire_key(key);
        let client = &self.servers.client;
        let err = |e| self.error("update", &wire, e);
        for _ in 0..MAX_CAS_ROUNDS {
            let got = client
                .get(&wire)
                .meta(Meta::NONE.cas().ttl())
                .send()
                .map_err(err)?;
            let status = match self.cas_round(&wire, got, f)? {
                CasRound::Done => return Ok(()),
                CasRound::Add(v) => client.set(&wire, &v).add().send().map_err(err)?.status,
                CasRound::Replace { cas, ttl, value } => {
                    client
                        .set(&wire, &value)
                        .compare_cas(cas)
                        .ttl(ttl)
                        .send()
                        .map_err(err)?
                        .status
                }
                CasRound::Delete { cas } => {
                    client
                        .delete(&wire)
                        .compare_cas(cas)
                        .send()
                        .map_err(err)?
                        .status
                }
            };
            if status == MutationStatus::Applied {
                return Ok(());
            }
            // Another writer got in between (CasMismatch, AlreadyExists,
            // NotFound): read again.
        }
        Err(self.cas_rounds_lost(&wire))
    }

    fn lock_creation(
        &self,
        key: &[u8],
        _hash: u64,
        wait: bool,
    ) -> carboy::Result<Option<CreationGuard<'_>>> {
        let lease = Lease::acquire(self, self.lock_wire_key(key), wait)?;
        Ok(lease.map(CreationGuard::holding))
    }

    /// Memcached's async meta client on the caller's tokio runtime (see
    /// `aio.rs`; outside one, the blocking methods on the calling thread).
    fn as_async(&self) -> Option<&dyn AsyncBackend> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_as_memcached_reads_them() {
        assert_eq!(server_ttl(None), Ttl::NEVER);
        // Rounded up, never to 0 (which memcached reads as "no expiry").
        assert_eq!(server_ttl(Some(Duration::ZERO)), Ttl::secs(1));
        assert_eq!(server_ttl(Some(Duration::from_millis(1500))), Ttl::secs(2));
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        assert_eq!(server_ttl(days(30)), Ttl::secs(30 * 86_400));
        // Past 30 days: a Unix time, which memcached reads as one.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = server_ttl(days(31));
        let within = (0..5).any(|slack| {
            at == Ttl::at(UNIX_EPOCH + Duration::from_secs(now + 31 * 86_400 + slack))
        });
        assert!(within, "{at:?}");
        // Past 2106 (32-bit Unix time): kept without expiry.
        assert_eq!(server_ttl(days(200 * 365)), Ttl::NEVER);
        assert_eq!(remaining_ttl(Some(-1)), Ttl::NEVER);
        assert_eq!(remaining_ttl(Some(7)), Ttl::secs(7));
    }
}
