//! Taking a key's creation lock within `cache.lock_timeout`.
//!
//! [`Backend::lock_creation`] either tries or waits for as long as it
//! takes; a bounded wait is built from both, for every backend: try; when
//! busy, a helper thread (`helper_threads.rs`) waits for the lock, lets it
//! go at once and says so, while the caller waits for that word until its
//! deadline; then it tries again. The lock the caller ends up with is its
//! own, taken on its own thread (the file backend's stripes belong to the
//! thread that locks them, so that a nested creator can re-enter its own).
//! A helper still waiting when the caller gave up lets the lock go the
//! moment it gets it.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::backend::{Backend, CreationGuard};
use super::helper_threads;
use crate::error::{Error, Result};

/// How long to wait for a creation lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all: busy is an answer.
    No,
    /// Until it is granted.
    Forever,
    /// Up to this long.
    For(Duration),
}

impl Wait {
    /// Waiting (`Forever` or up to `timeout`), or not.
    pub(crate) fn new(wait: bool, timeout: Option<Duration>) -> Wait {
        match (wait, timeout) {
            (false, _) => Wait::No,
            (true, None) => Wait::Forever,
            (true, Some(t)) => Wait::For(t),
        }
    }
}

/// What asking for a creation lock gave.
pub(crate) enum Lock<'b> {
    Held(CreationGuard<'b>),
    /// Someone else holds it (only with [`Wait::No`]).
    Busy,
    /// Not granted within the timeout, which was this long.
    TimedOut(Duration),
}

/// Takes the creation lock of `key` in `backend`, waiting as `wait` says.
pub(crate) fn lock<'b>(
    backend: &'b Arc<dyn Backend>,
    key: &[u8],
    hash: u64,
    wait: Wait,
) -> Result<Lock<'b>> {
    let timeout = match wait {
        Wait::No => {
            return Ok(match backend.lock_creation(key, hash, false)? {
                Some(g) => Lock::Held(g),
                None => Lock::Busy,
            });
        }
        Wait::Forever => {
            return match backend.lock_creation(key, hash, true)? {
                Some(g) => Ok(Lock::Held(g)),
                // A backend that answers "busy" to a waiting call: as an
                // error, not a loop.
                None => Err(Error::InvalidOption {
                    name: "lock_creation",
                    reason: "the backend returned no guard to a waiting call".into(),
                }),
            };
        }
        Wait::For(t) => t,
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(g) = backend.lock_creation(key, hash, false)? {
            return Ok(Lock::Held(g));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Lock::TimedOut(timeout));
        }
        let (tx, rx) = mpsc::channel();
        let (helper_backend, helper_key) = (Arc::clone(backend), key.to_vec());
        helper_threads::run(move || {
            let freed = helper_backend
                .lock_creation(&helper_key, hash, true)
                .map(drop);
            let _ = tx.send(freed);
        });
        match rx.recv_timeout(left) {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => return Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Lock::TimedOut(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::InvalidOption {
                    name: "lock_timeout",
                    reason: "no helper thread could be started to wait for a creation lock".into(),
                });
            }
        }
    }
}
