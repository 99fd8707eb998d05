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
use std::time::{Duration, Instant};

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

/// The pauses between tries of a lock someone else holds, for a backend
/// whose lock is a try (a network server's `SET NX`, memcached's `add`):
/// `first`, then doubled after each try, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Backoff {
    /// The pause after `pause`.
    #[must_use]
    pub fn next(&self, pause: Duration) -> Duration {
        (pause * 2).min(self.max)
    }
}

impl LockWait {
    /// Takes a lock with `try_lock` (one try: the guard, or `None` while
    /// someone else holds it), trying again after each pause of `backoff`
    /// for as long as this wait allows: [`Locked::Busy`] at once for
    /// [`LockWait::No`], [`Locked::TimedOut`] past [`LockWait::UpTo`]'s
    /// time. carboy has no timer: the backend gives its runtime's `sleep`
    /// and `now` (tokio's, so that a paused test clock is obeyed).
    pub async fn poll<'a, T, TF, S, SF>(
        self,
        backoff: Backoff,
        mut try_lock: T,
        mut sleep: S,
        now: impl Fn() -> Instant,
    ) -> Result<Locked<'a>>
    where
        T: FnMut() -> TF,
        TF: Future<Output = Result<Option<AsyncCreationGuard<'a>>>>,
        S: FnMut(Duration) -> SF,
        SF: Future<Output = ()>,
    {
        let deadline = self.deadline(now());
        let mut pause = backoff.first;
        loop {
            if let Some(guard) = try_lock().await? {
                return Ok(Locked::Held(guard));
            }
            match self.nap(deadline, pause, now()) {
                Ok(nap) => sleep(nap).await,
                Err(answer) => return Ok(answer),
            }
            pause = backoff.next(pause);
        }
    }

    /// As [`poll`](Self::poll), sleeping on the calling thread: for a
    /// backend's async methods called outside its runtime.
    pub fn poll_blocking<'a>(
        self,
        backoff: Backoff,
        mut try_lock: impl FnMut() -> Result<Option<AsyncCreationGuard<'a>>>,
    ) -> Result<Locked<'a>> {
        let deadline = self.deadline(Instant::now());
        let mut pause = backoff.first;
        loop {
            if let Some(guard) = try_lock()? {
                return Ok(Locked::Held(guard));
            }
            match self.nap(deadline, pause, Instant::now()) {
                Ok(nap) => std::thread::sleep(nap),
                Err(answer) => return Ok(answer),
            }
            pause = backoff.next(pause);
        }
    }

    fn deadline(self, now: Instant) -> Option<Instant> {
        match self {
            LockWait::UpTo(d) => Some(now + d),
            _ => None,
        }
    }

    /// After a try that found the lock held: the pause before the next
    /// try, or the answer to give instead.
    fn nap<'a>(
        self,
        deadline: Option<Instant>,
        pause: Duration,
        now: Instant,
    ) -> std::result::Result<Duration, Locked<'a>> {
        match (self, deadline) {
            (LockWait::No, _) => Err(Locked::Busy),
            (_, Some(deadline)) => {
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    Err(Locked::TimedOut)
                } else {
                    Ok(pause.min(left))
                }
            }
            _ => Ok(pause),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(2),
    };

    /// A lock that is free from the `free_at`-th try on.
    fn tries(free_at: usize) -> impl FnMut() -> Result<Option<AsyncCreationGuard<'static>>> {
        let mut n = 0;
        move || {
            n += 1;
            Ok((n >= free_at).then(|| AsyncCreationGuard::holding(())))
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let b = Backoff {
            first: Duration::from_millis(2),
            max: Duration::from_millis(5),
        };
        assert_eq!(b.next(b.first), Duration::from_millis(4));
        assert_eq!(b.next(Duration::from_millis(4)), Duration::from_millis(5));
    }

    #[test]
    fn poll_blocking_answers_as_the_wait_says() {
        assert!(matches!(
            LockWait::No.poll_blocking(QUICK, tries(2)),
            Ok(Locked::Busy)
        ));
        assert!(matches!(
            LockWait::No.poll_blocking(QUICK, tries(1)),
            Ok(Locked::Held(g)) if g.is_held()
        ));
        assert!(matches!(
            LockWait::Forever.poll_blocking(QUICK, tries(5)),
            Ok(Locked::Held(_))
        ));
        assert!(matches!(
            LockWait::UpTo(Duration::from_millis(20)).poll_blocking(QUICK, tries(usize::MAX)),
            Ok(Locked::TimedOut)
        ));
    }

    #[test]
    fn poll_sleeps_with_the_given_timer_and_reads_the_given_clock() {
        use std::cell::Cell;
        use std::task::{Context, Poll, Waker};
        // A clock that moves only when the lock's waiter sleeps.
        let start = Instant::now();
        let slept = Cell::new(Duration::ZERO);
        let naps = std::cell::RefCell::new(Vec::new());
        let mut try_lock = tries(usize::MAX);
        let fut = LockWait::UpTo(Duration::from_millis(10)).poll(
            QUICK,
            || std::future::ready(try_lock()),
            |d| {
                naps.borrow_mut().push(d);
                slept.set(slept.get() + d);
                std::future::ready(())
            },
            || start + slept.get(),
        );
        let got = {
            let mut fut = std::pin::pin!(fut);
            match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(got) => got,
                Poll::Pending => panic!("nothing here waits"),
            }
        };
        assert!(matches!(got, Ok(Locked::TimedOut)));
        // 1, 2, 2, 2, 2, then the 1 ms left: exactly the 10 ms allowed.
        let naps = naps.into_inner();
        assert_eq!(
            naps.iter().sum::<Duration>(),
            Duration::from_millis(10),
            "{naps:?}"
        );
        assert_eq!(naps[0], Duration::from_millis(1));
        assert!(naps.iter().all(|&d| d <= QUICK.max), "{naps:?}");
    }
}
