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

/// Takes the lock, polling until it is free (redis has no blocking lock:
/// dogpile's and redis-py's locks poll too). Each try is one round trip;
/// the pause between tries grows from 1 ms to 25 ms.
pub(crate) fn lock(
    server: &Arc<Server>,
    namespace: &str,
    key: Vec<u8>,
) -> carboy::Result<HeldLock> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(held) = try_lock(server, namespace, key.clone())? {
            return Ok(held);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
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
