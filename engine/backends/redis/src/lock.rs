//! The creation lock: `SET <lock key> <token> NX PX <lease>` with a random
//! token, released by its owner only (compare and delete in one Lua
//! script), and extended every third of the lease while it is held (compare
//! and `PEXPIRE`, by a keeper thread that the guard stops when dropped). A
//! holder that dies stops extending: its lock frees itself when the lease
//! runs out.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use carboy::cache::Backoff;
use redis::Script;

use crate::server::Server;

/// Deletes the lock only if it still holds our token.
fn unlock_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('DEL', KEYS[1]) \
             else return 0 end",
        )
    })
}

/// Extends the lock's lease only if it still holds our token.
fn extend_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
             else return 0 end",
        )
    })
}

/// A random token: 16 bytes from the operating system, as hex.
fn token() -> carboy::Result<Vec<u8>> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| carboy::Error::Backend {
        backend: "redis".to_string(),
        namespace: String::new(),
        source: format!("no random bytes for a creation lock's token: {e}").into(),
    })?;
    Ok(crate::keys::hex(&raw).into_bytes())
}

/// Tries once to take the lock stored at `key`.
pub(crate) fn try_lock(
    server: &Arc<Server>,
    namespace: &str,
    key: Vec<u8>,
) -> carboy::Result<Option<HeldLock>> {
    crate::aio::Releasing::wait(server, &key);
    let token = token()?;
    let lease = server.settings.lock_lease;
    let mut cmd = redis::cmd("SET");
    cmd.arg(&key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(lease.as_millis() as u64);
    let got: Option<String> = server.query(namespace, "SET NX PX (creation lock)", &cmd)?;
    if got.is_none() {
        return Ok(None);
    }
    HeldLock::keep(Arc::clone(server), namespace.to_string(), key, token).map(Some)
}

/// The pauses between tries of a lock someone else holds, blocking or
/// async: from 1 ms, doubling up to 25 ms.
pub(crate) const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(1),
    max: Duration::from_millis(25),
};

/// Takes the lock, polling until it is free (redis has no blocking lock:
/// dogpile's and redis-py's locks poll too). Each try is one round trip;
/// the pause between tries grows from 1 ms to 25 ms.
pub(crate) fn lock(
    server: &Arc<Server>,
    namespace: &str,
    key: Vec<u8>,
) -> carboy::Result<HeldLock> {
    let mut pause = BACKOFF.first;
    loop {
        if let Some(held) = try_lock(server, namespace, key.clone())? {
            return Ok(held);
        }
        std::thread::sleep(pause);
        pause = BACKOFF.next(pause);
    }
}

/// A held creation lock: extended while it lives, released when dropped.
pub(crate) struct HeldLock {
    server: Arc<Server>,
    namespace: String,
    key: Vec<u8>,
    token: Vec<u8>,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl HeldLock {
    /// Starts the keeper thread of a lock just taken; if it cannot start,
    /// releases the lock and fails.
    fn keep(
        server: Arc<Server>,
        namespace: String,
        key: Vec<u8>,
        token: Vec<u8>,
    ) -> carboy::Result<HeldLock> {
        let (stop, stopped) = mpsc::channel::<()>();
        let lease = server.settings.lock_lease;
        let (s, ns, k, t) = (
            Arc::clone(&server),
            namespace.clone(),
            key.clone(),
            token.clone(),
        );
        let keeper = std::thread::Builder::new()
            .name("carboy-redis-lease".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(lease / 3) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let extended = s.with(&ns, "extend a creation lock's lease", |c| {
                        extend_script()
                            .key(&k)
                            .arg(&t)
                            .arg(lease.as_millis() as u64)
                            .invoke::<i64>(c)
                    });
                    // 0: someone else holds it now (our lease ran out while
                    // the server or this process was stopped), nothing left
                    // to extend. Extended, or the server did not answer:
                    // the next period tries again.
                    if let Ok(0) = extended {
                        return;
                    }
                }
            });
        let mut held = HeldLock {
            server,
            namespace,
            key,
            token,
            stop: Some(stop),
            keeper: None,
        };
        match keeper {
            Ok(keeper) => {
                held.keeper = Some(keeper);
                Ok(held)
            }
            Err(e) => {
                let namespace = held.namespace.clone();
                drop(held);
                Err(carboy::Error::Backend {
                    backend: "redis".to_string(),
                    namespace,
                    source: format!("cannot start a creation lock's lease keeper thread: {e}")
                        .into(),
                })
            }
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        // A failed release leaves the lock to its lease.
        let _ = self
            .server
            .with(&self.namespace, "release a creation lock", |c| {
                unlock_script()
                    .key(&self.key)
                    .arg(&self.token)
                    .invoke::<i64>(c)
            });
    }
}

/// Releases the lock `key` if it still holds `token`, on the async path.
async fn unlock_async(server: &Server, namespace: &str, key: &[u8], token: &[u8]) {
    // A failed release leaves the lock to its lease.
    let _ = server
        .with_async(namespace, "release a creation lock", |mut c| async move {
            unlock_script()
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await;
}

/// Spawns [`unlock_async`] on the current runtime (or on `fallback`, the
/// runtime the lock was taken on): a drop must not wait. With neither,
/// the lock is left to its lease.
fn spawn_unlock(
    fallback: Option<&tokio::runtime::Handle>,
    server: Arc<Server>,
    namespace: String,
    key: Vec<u8>,
    token: Vec<u8>,
) {
    let Some(handle) = tokio::runtime::Handle::try_current()
        .ok()
        .or_else(|| fallback.cloned())
    else {
        return;
    };
    let in_flight = crate::aio::Releasing::begin(&server, &key);
    // On a runtime that has shut down the task is dropped unrun (ending
    // `in_flight`): the lock then frees itself when its lease runs out.
    drop(handle.spawn(async move {
        unlock_async(&server, &namespace, &key, &token).await;
        drop(in_flight);
    }));
}

/// A `SET NX` whose answer is not known yet: if it is abandoned (its
/// future dropped, or the answer timed out), the lock may have been taken
/// with our token, so a compare-and-delete is sent.
struct Unsure<'a> {
    server: &'a Arc<Server>,
    namespace: &'a str,
    key: &'a [u8],
    token: Option<Vec<u8>>,
}

impl Drop for Unsure<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            spawn_unlock(
                None,
                Arc::clone(self.server),
                self.namespace.to_string(),
                self.key.to_vec(),
                token,
            );
        }
    }
}

/// Tries once to take the lock stored at `key`, on the async path (inside
/// a tokio runtime).
pub(crate) async fn try_lock_async(
    server: &Arc<Server>,
    namespace: &str,
    key: &[u8],
) -> carboy::Result<Option<AsyncHeld>> {
    crate::aio::Releasing::wait_async(server, key).await;
    let token = token()?;
    let lease = server.settings.lock_lease;
    let mut cmd = redis::cmd("SET");
    cmd.arg(key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(lease.as_millis() as u64);
    let mut unsure = Unsure {
        server,
        namespace,
        key,
        token: Some(token.clone()),
    };
    let got: Option<String> = server
        .query_async(namespace, "SET NX PX (creation lock)", &cmd)
        .await?;
    unsure.token = None;
    if got.is_none() {
        return Ok(None);
    }
    Ok(Some(AsyncHeld::keep(
        Arc::clone(server),
        namespace.to_string(),
        key.to_vec(),
        token,
    )))
}

/// A creation lock held on the async path: extended every third of the
/// lease by a task on the runtime it was taken on (not a thread), released
/// when dropped by a compare-and-delete spawned on the runtime (the drop
/// does not wait for it).
pub(crate) struct AsyncHeld {
    server: Arc<Server>,
    namespace: String,
    key: Vec<u8>,
    token: Vec<u8>,
    keeper: tokio::task::JoinHandle<()>,
    handle: tokio::runtime::Handle,
}

impl AsyncHeld {
    fn keep(server: Arc<Server>, namespace: String, key: Vec<u8>, token: Vec<u8>) -> AsyncHeld {
        let handle = tokio::runtime::Handle::current();
        let lease = server.settings.lock_lease;
        let (s, ns, k, t) = (
            Arc::clone(&server),
            namespace.clone(),
            key.clone(),
            token.clone(),
        );
        let keeper = handle.spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let extended = s
                    .with_async(&ns, "extend a creation lock's lease", |mut c| {
                        let (k, t) = (&k, &t);
                        async move {
                            extend_script()
                                .key(k)
                                .arg(t)
                                .arg(lease.as_millis() as u64)
                                .invoke_async::<i64>(&mut c)
                                .await
                        }
                    })
                    .await;
                // As the keeper thread: 0 means someone else holds it now.
                if let Ok(0) = extended {
                    return;
                }
            }
        });
        AsyncHeld {
            server,
            namespace,
            key,
            token,
            keeper,
            handle,
        }
    }
}

impl Drop for AsyncHeld {
    fn drop(&mut self) {
        self.keeper.abort();
        spawn_unlock(
            Some(&self.handle),
            Arc::clone(&self.server),
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
    }
}
