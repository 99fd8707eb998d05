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

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use memcache::exp::{Meta, MutationStatus, Ttl};

use crate::namespace::{MemcachedNamespace, Servers};

/// How long a waiting caller sleeps between two tries, at first and at
/// most.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

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
        let mut pause = FIRST_PAUSE;
        loop {
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
            pause = (pause * 2).min(LONGEST_PAUSE);
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
