//! The creation lock: a lock key `add`ed with a lease, renewed while its
//! holder runs, released only by its holder.
//!
//! * **Take**: `ms <lock key> <token> MA T<lease>` (add mode): only one
//!   caller, in any process on any machine, can add the key; the value is
//!   a random 128-bit token of this holder. A caller told to wait polls
//!   (memcached has no blocking wait), 2 ms at first, doubling up to
//!   100 ms.
//! * **Renew**: a thread (one per held lock) wakes every third of the
//!   lease and, if the key still holds this token, rewrites it with a
//!   fresh lease under the CAS it just read (`mg` then `ms C<cas>`): a
//!   lock that changed hands in between is left alone. A holder that dies
//!   (SIGKILL, a lost machine) stops renewing: the key expires within one
//!   lease and the next caller's `add` succeeds.
//! * **Release** (the guard dropped): the renewing thread is stopped and
//!   joined, then `mg` reads token and CAS and, if the token is ours,
//!   `md C<cas>` deletes the key only if it is still that same item. The
//!   CAS makes the check and the delete one step: a lock that expired and
//!   was taken by another holder between the two has another CAS, and is
//!   not deleted. The token guards against a restarted server, whose CAS
//!   counter starts again and could hand out our old CAS to a new holder.
//!
//! On the async path (`AsyncLease`, carboy's `AsyncCache` on a tokio
//! runtime) the same commands, with a task in place of the thread: it
//! renews the lease, and the guard's drop (which must not block) hands it
//! the release, sent once any renewal in flight is answered; until it is
//! answered, a later lock try of this process on that key (blocking or
//! async) waits for it (`Releasing`), so "released, then taken again
//! here" stays ordered as on the blocking path.
//!
//! Failures: a take whose answer is lost (the server stopped or died
//! after the request was sent) is an error, and the lock it may have
//! taken is nobody's until its lease runs out. Releasing never fails: if
//! the server does not answer, the lease ends the lock; it costs at most
//! the renewal in flight plus one `mg`, each bounded by `cache.timeout`.
//! An evicted lock key (memcached's LRU can evict it like any item) lets
//! a second creator in early: the same outcome as a lost lease, below.
//!
//! What the lease cannot do: a holder stopped longer than the lease
//! (SIGSTOP, a long GC-like pause, a network partition) loses the lock
//! without knowing, and a second creator may run meanwhile; its
//! renewing thread then finds another token and stops. The cache stays
//! correct (both store a value; the later write wins), only the "one
//! creator" promise is broken. Choose `cache.lock_lease` well above the
//! longest pause you expect.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use carboy::cache::Backoff;
use memcache::exp::{Meta, MutationStatus, Ttl};

use crate::aio::in_tokio;
use crate::namespace::{MemcachedNamespace, Servers};

/// How long a waiting caller sleeps between two tries, at first and at
/// most.
pub(crate) const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(2),
    max: Duration::from_millis(100),
};

/// A held creation lock; dropping it releases the lock.
pub(crate) struct Lease {
    servers: Arc<Servers>,
    key: Vec<u8>,
    token: Vec<u8>,
    keeper: Option<(Arc<Stop>, JoinHandle<()>)>,
}

#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// A random token, as 32 hex digits.
fn new_token() -> Vec<u8> {
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        // No system randomness: the process id and the time still tell
        // this holder from the others.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        raw[..4].copy_from_slice(&std::process::id().to_le_bytes());
        raw[4..].copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    raw.iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}

fn lease_ttl(servers: &Servers) -> Ttl {
    Ttl::secs(u32::try_from(servers.settings.lock_lease.as_secs()).unwrap_or(u32::MAX))
}

impl Lease {
    /// Takes the lock at `key` of namespace `ns`; `Ok(None)` when another
    /// holder has it and `wait` is false.
    pub(crate) fn acquire(
        ns: &MemcachedNamespace,
        key: Vec<u8>,
        wait: bool,
    ) -> carboy::Result<Option<Lease>> {
        let servers = &ns.servers;
        let token = new_token();
        let mut pause = BACKOFF.first;
        loop {
            Releasing::wait(servers, &key);
            let added = servers
                .client
                .set(&key, &token)
                .add()
                .ttl(lease_ttl(servers))
                .send()
                .map_err(|e| ns.error("lock", &key, e))?;
            if added.status == MutationStatus::Applied {
                return Ok(Some(Lease::held(Arc::clone(servers), key, token)));
            }
            if !wait {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = BACKOFF.next(pause);
        }
    }

    fn held(servers: Arc<Servers>, key: Vec<u8>, token: Vec<u8>) -> Lease {
        let stop = Arc::new(Stop::default());
        let keeper = {
            let (servers, key, token, stop) = (
                Arc::clone(&servers),
                key.clone(),
                token.clone(),
                Arc::clone(&stop),
            );
            std::thread::Builder::new()
                .name("carboy-memcached-lease".into())
                .spawn(move || keep(&servers, &key, &token, &stop))
        };
        Lease {
            servers,
            key,
            token,
            // Without a thread the lock still holds for one lease.
            keeper: keeper.ok().map(|handle| (stop, handle)),
        }
    }
}

/// The renewing thread: every third of the lease, renews the lock while
/// it is still ours, until stopped.
fn keep(servers: &Servers, key: &[u8], token: &[u8], stop: &Stop) {
    let every = servers.settings.lock_lease / 3;
    let mut stopped = stop.stopped.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        stopped = match stop.wake.wait_timeout_while(stopped, every, |s| !*s) {
            Ok((guard, _)) => guard,
            Err(p) => p.into_inner().0,
        };
        if *stopped {
            return;
        }
        drop(stopped);
        if renew(servers, key, token) == Some(false) {
            // Lost (expired and taken by another holder): nothing to keep.
            return;
        }
        stopped = stop.stopped.lock().unwrap_or_else(|p| p.into_inner());
    }
}

/// Some(true): renewed; Some(false): the lock is no longer ours; None: the
/// server did not answer (tried again at the next round).
fn renew(servers: &Servers, key: &[u8], token: &[u8]) -> Option<bool> {
    let got = servers.client.get(key).meta(Meta::NONE.cas()).send().ok()?;
    let cas = match (got.hit(), got.item.cas) {
        (true, Some(cas)) if got.value.as_deref() == Some(token) => cas,
        _ => return Some(false),
    };
    let set = servers
        .client
        .set(key, token)
        .compare_cas(cas)
        .ttl(lease_ttl(servers))
        .send()
        .ok()?;
    Some(set.status == MutationStatus::Applied)
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.keeper.take() {
            *stop.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
            stop.wake.notify_all();
            let _ = handle.join();
        }
        // Best effort: if the server does not answer, the lease ends the
        // lock.
        let client = &self.servers.client;
        if let Ok(got) = client.get(&self.key).meta(Meta::NONE.cas()).send()
            && got.hit()
            && got.value.as_deref() == Some(&self.token[..])
            && let Some(cas) = got.item.cas
        {
            let _ = client.delete(&self.key).compare_cas(cas).send();
        }
    }
}

/// The creation locks whose async release is on its way (handed to the
/// renewing task by a dropped [`AsyncLease`], not answered yet), by lock
/// key, with how many releases of each are in flight. A later lock try in
/// this process, blocking or async, waits for them first (up to
/// [`Releasing::bound`]): "dropped, then taken again here" is then
/// ordered, as on the blocking path, whose release is answered before its
/// guard's drop returns. Other processes see the release when it lands, a
/// round trip later.
#[derive(Default)]
pub(crate) struct Releasing {
    keys: Mutex<HashMap<Vec<u8>, usize>>,
    /// Wakes blocking waiters.
    done: Condvar,
    /// Wakes async waiters.
    done_async: tokio::sync::Notify,
}

/// One release in flight: ends it when dropped (answered, failed, or its
/// task dropped unrun by a runtime that shut down).
pub(crate) struct InFlight {
    servers: Arc<Servers>,
    key: Vec<u8>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let r = &self.servers.releasing;
        let mut keys = r.keys.lock().unwrap_or_else(|p| p.into_inner());
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
    fn begin(servers: &Arc<Servers>, key: &[u8]) -> InFlight {
        let mut keys = servers
            .releasing
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *keys.entry(key.to_vec()).or_insert(0) += 1;
        InFlight {
            servers: Arc::clone(servers),
            key: key.to_vec(),
        }
    }

    /// The longest a lock try waits for this process's releases of its
    /// key: what a release may take (a renewal in flight, a connection,
    /// the `mg` and the `md`, each bounded by `cache.timeout`).
    fn bound(servers: &Servers) -> Duration {
        servers.settings.timeout * 4
    }

    /// Blocks until no release of `key` is in flight (or the bound).
    fn wait(servers: &Servers, key: &[u8]) {
        let r = &servers.releasing;
        let mut keys = r.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !keys.contains_key(key) {
            return;
        }
        let deadline = std::time::Instant::now() + Self::bound(servers);
        while keys.contains_key(key) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            keys = match r.done.wait_timeout(keys, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits, on the async path, until no release of `key` is in flight
    /// (or the bound).
    async fn wait_async(servers: &Servers, key: &[u8]) {
        let r = &servers.releasing;
        let pending = || {
            r.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(key)
        };
        if !pending() {
            return;
        }
        let all = async {
            loop {
                // Created before the check: a release that ends between
                // the check and the await still wakes it.
                let notified = r.done_async.notified();
                if !pending() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(Self::bound(servers), all).await;
    }
}

/// Releases the lock at `key` if it still holds `token`, on the async
/// path (inside a tokio runtime). Best effort: if the server does not
/// answer, the lease ends the lock.
async fn release_async(servers: &Servers, namespace: &str, key: &[u8], token: &[u8]) {
    let Ok(client) = servers.async_client(namespace, "unlock", key).await else {
        return;
    };
    if let Ok(got) = client.get(key).meta(Meta::NONE.cas()).send().await
        && got.hit()
        && got.value.as_deref() == Some(token)
        && let Some(cas) = got.item.cas
    {
        let _ = client.delete(key).compare_cas(cas).send().await;
    }
}

/// As [`renew`], on the async path.
async fn renew_async(servers: &Servers, namespace: &str, key: &[u8], token: &[u8]) -> Option<bool> {
    let client = servers.async_client(namespace, "renew", key).await.ok()?;
    let got = client.get(key).meta(Meta::NONE.cas()).send().await.ok()?;
    let cas = match (got.hit(), got.item.cas) {
        (true, Some(cas)) if got.value.as_deref() == Some(token) => cas,
        _ => return Some(false),
    };
    let set = client
        .set(key, token)
        .compare_cas(cas)
        .ttl(lease_ttl(servers))
        .send()
        .await
        .ok()?;
    Some(set.status == MutationStatus::Applied)
}

/// A creation lock held on the async path: renewed every third of the
/// lease by a task on the runtime it was taken on (not a thread); dropping
/// it hands the release to that task, which sends it once any renewal in
/// flight is answered (as the blocking lease joins its thread first). The
/// drop does not wait.
pub(crate) struct AsyncLease {
    servers: Arc<Servers>,
    key: Vec<u8>,
    /// To the renewing task: release now (and end this release when done).
    release: Option<tokio::sync::oneshot::Sender<InFlight>>,
}

/// An `ms MA` whose answer is not known yet: abandoned (its future
/// dropped, or the exchange failed), the lock may have been taken with
/// our token, so a release is spawned rather than leaving it to its lease.
struct Unsure<'a> {
    ns: &'a MemcachedNamespace,
    key: &'a [u8],
    token: Option<Vec<u8>>,
}

impl Drop for Unsure<'_> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let servers = Arc::clone(&self.ns.servers);
        let in_flight = Releasing::begin(&servers, self.key);
        let (namespace, key) = (self.ns.namespace.clone(), self.key.to_vec());
        drop(handle.spawn(async move {
            release_async(&servers, &namespace, &key, &token).await;
            drop(in_flight);
        }));
    }
}

impl AsyncLease {
    /// Tries once to take the lock at `key` of `ns`, on the async path
    /// (inside a tokio runtime): `Ok(None)` when another holder has it.
    pub(crate) async fn try_acquire(
        ns: &MemcachedNamespace,
        key: &[u8],
    ) -> carboy::Result<Option<AsyncLease>> {
        debug_assert!(in_tokio());
        let servers = &ns.servers;
        Releasing::wait_async(servers, key).await;
        let client = ns.client("lock", key).await?;
        let token = new_token();
        let mut unsure = Unsure {
            ns,
            key,
            token: Some(token.clone()),
        };
        let added = client
            .set(key, &token)
            .add()
            .ttl(lease_ttl(servers))
            .send()
            .await
            .map_err(|e| ns.error("lock", key, e))?;
        unsure.token = None;
        if added.status != MutationStatus::Applied {
            return Ok(None);
        }
        Ok(Some(AsyncLease::held(ns, key.to_vec(), token)))
    }

    fn held(ns: &MemcachedNamespace, key: Vec<u8>, token: Vec<u8>) -> AsyncLease {
        let (release, mut asked) = tokio::sync::oneshot::channel::<InFlight>();
        let servers = Arc::clone(&ns.servers);
        let (s, namespace, k) = (Arc::clone(&servers), ns.namespace.clone(), key.clone());
        drop(tokio::spawn(async move {
            let every = s.settings.lock_lease / 3;
            let in_flight = loop {
                match tokio::time::timeout(every, &mut asked).await {
                    Ok(Ok(in_flight)) => break Some(in_flight),
                    // The guard went without asking (cannot happen: its
                    // drop asks); release all the same.
                    Ok(Err(_)) => break None,
                    Err(_) => {
                        if renew_async(&s, &namespace, &k, &token).await == Some(false) {
                            // Lost (expired and taken by another holder):
                            // nothing to keep or release.
                            return;
                        }
                    }
                }
            };
            release_async(&s, &namespace, &k, &token).await;
            drop(in_flight);
        }));
        AsyncLease {
            servers,
            key,
            release: Some(release),
        }
    }
}

impl Drop for AsyncLease {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let in_flight = Releasing::begin(&self.servers, &self.key);
            // The task gone (its runtime shut down, or the lock lost):
            // `in_flight` comes back and ends here; the lease ends the lock.
            let _ = release.send(in_flight);
        }
    }
}
