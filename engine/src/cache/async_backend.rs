//! The seam for a backend with a native async client (redis, memcached):
//! [`AsyncBackend`], reached through [`Backend::as_async`].
//!
//! The async front (`AsyncCache`, feature `async`)
//! awaits these futures when the backend offers them: hits, writes and
//! the creation lock then run on the calling task, with no helper thread.
//! Without them it keeps its own paths over the blocking [`Backend`]
//! (direct calls for reads, helper threads for writes and locks). The
//! trait needs no runtime and no async crate: its futures are boxed
//! (`Pin<Box<dyn Future + Send>>`), so it is object safe and a backend
//! implements it with plain `async` blocks.
//!
//! [`Backend`]: super::Backend
//! [`Backend::as_async`]: super::Backend::as_async

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::backend::{Backend, Fetched, unsupported};
use crate::error::Result;

/// The future of one [`AsyncBackend`] operation.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The function [`AsyncBackend::update`] applies: as
/// [`UpdateFn`](super::UpdateFn), and `Send`, since the update's future
/// may move between threads while it holds it.
pub type AsyncUpdateFn<'f> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send + 'f;

/// How long [`AsyncBackend::lock_creation`] waits for a lock someone else
/// holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockWait {
    /// Not at all: answer [`Locked::Busy`].
    No,
    /// Until the lock is granted.
    Forever,
    /// Up to this long, then answer [`Locked::TimedOut`]. carboy has no
    /// timer (it is runtime-agnostic): the backend bounds the wait with
    /// its own runtime's (`tokio::time::timeout`, a server-side blocking
    /// call with a timeout, …). This is `cache.lock_timeout`.
    UpTo(Duration),
}

/// What [`AsyncBackend::lock_creation`] gave.
#[derive(Debug)]
pub enum Locked<'a> {
    /// The lock, held until the guard is dropped.
    Held(AsyncCreationGuard<'a>),
    /// Someone else holds it (only with [`LockWait::No`]).
    Busy,
    /// Not granted within [`LockWait::UpTo`]'s time.
    TimedOut,
}

/// A creation lock held through an [`AsyncBackend`]: dropping it
/// releases the lock.
///
/// It is `Send` (it lives in a future that moves between threads), and its
/// drop must not block: a backend whose release is a network round trip
/// sends it without waiting for the answer (on its own runtime, or as a
/// fire-and-forget command), and bounds its locks by an expiry anyway,
/// since a process may die holding one.
pub struct AsyncCreationGuard<'a>(Option<Box<dyn Send + 'a>>);

impl<'a> AsyncCreationGuard<'a> {
    /// A guard that holds nothing: the backend needs no lock beyond the
    /// cache's in-process single flight (as
    /// [`CreationGuard::in_process`](super::CreationGuard::in_process)).
    pub fn in_process() -> AsyncCreationGuard<'a> {
        AsyncCreationGuard(None)
    }

    /// A guard that releases `lock` when dropped.
    pub fn holding<T: Send + 'a>(lock: T) -> AsyncCreationGuard<'a> {
        AsyncCreationGuard(Some(Box::new(lock)))
    }

    /// True when the guard holds a lock (not [`in_process`](Self::in_process)).
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for AsyncCreationGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "AsyncCreationGuard(held)"
        } else {
            "AsyncCreationGuard(in-process)"
        })
    }
}

/// A backend's native async operations, beside its blocking
/// [`Backend`](super::Backend) ones (which it still implements: the
/// blocking front, invalidation markers and `clear` use them).
///
/// Offer it by returning `Some(self)` from
/// [`Backend::as_async`](super::Backend::as_async). The semantics are the
/// blocking methods' of the same name, the [`Capabilities`] included
/// (declared once, for both); only the waiting differs. The conformance
/// suite (`carboy::cache::testing`, features `testing` and `async`) runs
/// its get, set, remove and lock cases through these methods too when a
/// backend offers them.
///
/// The invalidation markers: the markers namespace is another backend
/// namespace, read from memory while its change stamp holds still. When
/// it has no change stamp (memcached), the markers are read on every
/// access, and the async front reads them through these futures: with
/// the value in one call ([`get_with`](Self::get_with)) on a lookup, or
/// through the markers namespace's own `as_async` (a `set`). Only where
/// neither is offered does it read them with the blocking
/// [`Backend::get`](super::Backend::get) on the calling task. A lost
/// marker (an evicting backend) is rewritten with the blocking methods,
/// and `invalidate_all` and `clear` run on a helper thread.
///
/// [`Capabilities`]: super::Capabilities
pub trait AsyncBackend: Send + Sync {
    /// As [`Backend::get`](super::Backend::get).
    fn get<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Fetched<'a>>>;

    /// As [`Backend::set`](super::Backend::set).
    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()>;

    /// As [`Backend::remove`](super::Backend::remove).
    fn remove<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, bool>;

    /// As [`Backend::get_with`](super::Backend::get_with): `key` from this
    /// namespace with `other_keys` from `other` (the cache's markers
    /// namespace) in one round trip, `Ok(Some((value, others)))`, or
    /// `Ok(None)` (the default) for "not for this pair": the async front
    /// then reads them one after the other. It asks only when the markers
    /// namespace has no change stamp, so that a hit on a network backend
    /// without one is one awaited round trip, not a blocking read of the
    /// markers and then an awaited read of the value.
    #[allow(clippy::type_complexity)]
    fn get_with<'a: 'b, 'b>(
        &'a self,
        key: &'b [u8],
        other: &'a dyn Backend,
        other_keys: &'b [&'b [u8]],
    ) -> BackendFuture<'b, Option<(Option<Fetched<'a>>, Vec<Option<Fetched<'a>>>)>> {
        let _ = (key, other, other_keys);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// As [`Backend::update`](super::Backend::update), with
    /// [`Capabilities::atomic_update`](super::Capabilities::atomic_update);
    /// by default [`Error::Unsupported`](crate::Error::Unsupported). The
    /// async front soft-invalidates a key with it.
    fn update<'a>(&'a self, key: &'a [u8], f: &'a mut AsyncUpdateFn<'_>) -> BackendFuture<'a, ()> {
        let _ = (key, f);
        Box::pin(std::future::ready(Err(unsupported::<Self>(
            "update atomically",
        ))))
    }

    /// As [`Backend::lock_creation`](super::Backend::lock_creation), with
    /// the wait policy in full: without waiting, forever, or up to
    /// `cache.lock_timeout`, which the backend measures with its own
    /// runtime's timer (see [`LockWait::UpTo`]). Waiting must not block
    /// the thread: the future is pending until the lock is granted, the
    /// time is up, or it is dropped (then nothing stays locked).
    ///
    /// With [`Capabilities::creation_locks`](super::Capabilities::creation_locks),
    /// one holder per key across every process and every caller (blocking
    /// or async) sharing the backend. The default answers
    /// [`AsyncCreationGuard::in_process`] at once, right for a backend
    /// whose data lives in this process only.
    fn lock_creation<'a>(
        &'a self,
        key: &'a [u8],
        hash: u64,
        wait: LockWait,
    ) -> BackendFuture<'a, Locked<'a>> {
        let _ = (key, hash, wait);
        Box::pin(std::future::ready(Ok(Locked::Held(
            AsyncCreationGuard::in_process(),
        ))))
    }
}
