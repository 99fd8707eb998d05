//! The region policy: the per-cache settings that decide how values are
//! written (expiry, key length) and read (stale serving, on/off), and the
//! rule that judges a stored value fresh, stale or a miss.

use std::time::Duration;

use super::envelope::Meta;
use super::markers::Marker;

/// Per-cache settings that shape how values are read and written.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub expire: Option<Duration>,
    pub serve_stale: bool,
    pub stale_for: Option<Duration>,
    pub key_length: usize,
    pub enabled: bool,
    /// How long a caller waits for a key's creation lock (`None`: forever).
    pub lock_timeout: Option<Duration>,
    pub on_lock_timeout: OnLockTimeout,
    /// What `get_or_create` does when the backend fails (an outage).
    pub on_backend_error: OnBackendError,
}

/// `cache.lock_timeout` when nothing sets it: long enough for any creator
/// that should be cached, short enough that a lock cycle (two processes'
/// nested creators taking keys in opposite orders) ends on its own.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a caller of `get_or_create` does when it waited
/// `cache.lock_timeout` for a key's creation lock without getting it
/// (setting `cache.on_lock_timeout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnLockTimeout {
    /// Fail with [`Error::LockTimeout`](crate::Error::LockTimeout) (as
    /// [`CreateError::Cache`](super::CreateError::Cache)): the creator does
    /// not run. The default, and `cache.on_lock_timeout = error`.
    #[default]
    Error,
    /// Run the creator without the lock and return its value without
    /// storing it (the lock's holder stores its own). `create`.
    Create,
}

/// What a caller of `get_or_create` does when the backend fails under it
/// (setting `cache.on_backend_error`): a network backend whose server is
/// down or stopped, a file backend whose disk fails.
///
/// "Fails" means an error of kind [`ErrorKind::Backend`](crate::ErrorKind::Backend)
/// (what a backend in another crate reports: `carboy-redis` and
/// `carboy-memcached` name the server and the operation) or
/// [`ErrorKind::Io`](crate::ErrorKind::Io), from reading the value or the
/// invalidation markers, or from taking the creation lock. A value that
/// cannot be *stored* after its creation never fails the call (it is
/// counted in [`Cache::store_failures`](super::Cache::store_failures)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnBackendError {
    /// Return the error (as [`CreateError::Cache`](super::CreateError::Cache));
    /// the creator does not run. The default, and
    /// `cache.on_backend_error = error`.
    #[default]
    Error,
    /// Run the creator without the cache and return its value (nothing is
    /// stored, no lock is held): a cache outage leaves the application
    /// serving, at the price of every caller creating its own value until
    /// the backend is back. `create`.
    Create,
}

/// True when `e` is the backend failing (see [`OnBackendError`]).
pub(crate) fn is_backend_failure(e: &crate::Error) -> bool {
    matches!(e.kind(), crate::ErrorKind::Backend | crate::ErrorKind::Io)
}

impl Policy {
    /// How long the backend may keep an entry fresh for `expire`: until it
    /// is of no use even as a stale value (`None`: keep it until removed).
    pub(crate) fn backend_ttl(&self, expire: Option<Duration>) -> Option<Duration> {
        match (expire, self.stale_for) {
            (Some(e), Some(s)) => Some(e.saturating_add(s)),
            _ => None,
        }
    }
}

/// Where a stored value stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Served as it is.
    Fresh,
    /// Served while one caller regenerates it (if the cache serves stale
    /// values); never by `get`.
    Stale,
    /// As if it were not there.
    Miss,
}

/// The standing of a value with envelope `meta` under the namespace's and
/// the region's markers: created before a hard invalidation, a miss;
/// before a soft one, soft-invalidated itself, or past its expiry, stale.
/// `now` (Unix ms) is read only for values that have an expiry.
pub(crate) fn standing(
    meta: &Meta,
    (ns, region): (Marker, Marker),
    now: impl FnOnce() -> u64,
) -> Standing {
    if meta.ns_epoch < ns.hard || meta.region_epoch < region.hard {
        return Standing::Miss;
    }
    let stale = meta.stale
        || meta.ns_epoch < ns.soft
        || meta.region_epoch < region.soft
        || (meta.ttl_ms.is_some() && meta.is_expired_at(now()));
    if stale {
        Standing::Stale
    } else {
        Standing::Fresh
    }
}
