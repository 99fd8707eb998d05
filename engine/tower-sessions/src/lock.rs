//! One request of a session at a time, across threads and processes:
//! [`SessionLocks`] (a cross-process lock per session id, taken when the
//! store loads the session) and [`SessionLockLayer`] (which holds the locks
//! a request took until its response is done, and so past tower-sessions'
//! save).
//!
//! tower-sessions' `SessionStore` trait has no "the request ended" call, so
//! the lock's lifetime comes from a tower layer around the whole request:
//! the layer opens a task-local list of held locks, the store's `load` adds
//! the session's lock to it (waiting for it first), `save` and `delete`
//! release it once written, and whatever is still held is released when the
//! layer's future ends (a request that only read the session, a failed
//! handler, a dropped connection).

use std::cell::RefCell;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, PoisonError, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use carboy::cache::{DEFAULT_LOCK_TIMEOUT, lock_hash};
use carboy::sync::{OwnedStripe, OwnedTry, StripeLocks};
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions_core::session::Id;
use tower_sessions_core::session_store;

tokio::task_local! {
    /// The session locks the current request holds, under a
    /// [`SessionLockLayer`].
    static HELD: RefCell<Vec<(Id, HeldSessionLock)>>;
}

/// Cross-process locks on session ids: byte-range stripes of one lock file
/// (carboy's [`StripeLocks`], 1024 stripes), released by the kernel when
/// their process dies. Hand them to
/// [`CarboyStore::with_session_locks`](crate::CarboyStore::with_session_locks)
/// and put a [`SessionLockLayer`] outside tower-sessions' layer.
///
/// Every process that shares the sessions must open the same lock file.
///
/// ## Defaults
///
/// | setting | default |
/// |---|---|
/// | [`timeout`](SessionLocks::timeout) | [`DEFAULT_LOCK_TIMEOUT`] (60 s), carboy's `cache.lock_timeout` |
#[derive(Clone)]
pub struct SessionLocks {
    stripes: StripeLocks,
    timeout: Duration,
}

impl fmt::Debug for SessionLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLocks")
            .field("path", &self.stripes.path())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SessionLocks {
    /// Opens (creating it and its directory if needed) the lock file at
    /// `path`, for example `<data_dir>/sessions.request-lock`.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let locks = carboy_tower_sessions::SessionLocks::open(dir.path().join("sessions.request-lock"))?;
    /// # let _ = locks;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<SessionLocks, carboy::Error> {
        Ok(SessionLocks {
            stripes: StripeLocks::open(path, StripeLocks::DEFAULT_STRIPES)?,
            timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// These locks, waiting at most `timeout` for a session's lock; past
    /// it, the store's `load` fails (tower-sessions then answers 500).
    pub fn timeout(mut self, timeout: Duration) -> SessionLocks {
        self.timeout = timeout;
        self
    }

    /// Takes the lock of `id` for the current request, if the request runs
    /// under a [`SessionLockLayer`] and does not hold it yet; otherwise
    /// does nothing.
    pub(crate) async fn lock_for_request(&self, id: &Id, key: &str) -> session_store::Result<()> {
        match HELD.try_with(|held| held.borrow().iter().any(|(h, _)| h == id)) {
            // Not under the layer: nothing would release a lock.
            Err(_) => return Ok(()),
            Ok(true) => return Ok(()),
            Ok(false) => {}
        }
        let holder = self.acquire(lock_hash(key.as_bytes())).await.map_err(|e| {
            session_store::Error::Backend(format!("carboy store, lock session {id}: {e}"))
        })?;
        // Still under the layer: this runs in the same task, polled by it.
        let _ = HELD.try_with(|held| held.borrow_mut().push((*id, holder)));
        Ok(())
    }

    /// Lets the current request's lock of `id` go, if it holds it.
    pub(crate) fn release_for_request(id: &Id) {
        let released = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            held.iter()
                .position(|(h, _)| h == id)
                .map(|i| held.swap_remove(i))
        });
        drop(released);
    }

    /// Locks the stripe of `hash`: on the task when it is free (an owned
    /// stripe, which may travel between threads with the task; no wait),
    /// otherwise on a lock thread, which waits for it and holds it until
    /// the returned [`HeldSessionLock`] is dropped.
    async fn acquire(&self, hash: u64) -> Result<HeldSessionLock, String> {
        match self.stripes.try_lock_owned_now(hash) {
            Ok(OwnedTry::Held(owned)) => {
                return Ok(HeldSessionLock {
                    _release: None,
                    _owned: Some(owned),
                });
            }
            Ok(OwnedTry::Busy | OwnedTry::Leased) => {}
            Err(e) => return Err(e.to_string()),
        }
        let (acquired_tx, acquired_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        dispatch(Job {
            stripes: self.stripes.clone(),
            hash,
            timeout: self.timeout,
            acquired: acquired_tx,
            release: release_rx,
        })?;
        match acquired_rx.await {
            Ok(Ok(())) => Ok(HeldSessionLock {
                _release: Some(release_tx),
                _owned: None,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the lock thread ended without an answer".into()),
        }
    }
}

/// One lock to take and hold, for a lock thread.
struct Job {
    stripes: StripeLocks,
    hash: u64,
    timeout: Duration,
    /// Told once the lock is held (or could not be).
    acquired: tokio::sync::oneshot::Sender<Result<(), String>>,
    /// Hung up when the lock is to be released.
    release: mpsc::Receiver<()>,
}

impl Job {
    /// Takes the lock, says so, holds it until told to let go. The wait
    /// polls the lock (backing off from 50 µs to 2 ms) so that it is
    /// bounded by the timeout without a runtime timer.
    fn run(self) {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_micros(50);
        let guard = loop {
            match self.stripes.try_lock(self.hash) {
                Ok(Some(guard)) => break guard,
                // The request gave up while we waited: stop waiting.
                Ok(None) if self.acquired.is_closed() => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
                Ok(None) => {
                    let _ = self.acquired.send(Err(format!(
                        "still held by another request after {:?}",
                        self.timeout
                    )));
                    return;
                }
                Err(e) => {
                    let _ = self.acquired.send(Err(e.to_string()));
                    return;
                }
            }
        };
        // The request gave up (its future was dropped): let go now.
        if self.acquired.send(Ok(())).is_err() {
            return;
        }
        // Until the HeldSessionLock (the sender) is dropped.
        let _ = self.release.recv();
        drop(guard);
    }
}

/// Lock threads waiting for a job. A job goes only to a thread that waits
/// for one, never queued behind another (a job holds its lock for a whole
/// request).
static IDLE: Mutex<Vec<mpsc::Sender<Job>>> = Mutex::new(Vec::new());

/// At most this many lock threads wait for work; more end after their job.
const IDLE_MAX: usize = 64;

/// Hands `job` to a waiting lock thread, or to a new one.
fn dispatch(mut job: Job) -> Result<(), String> {
    loop {
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(thread) => match thread.send(job) {
                Ok(()) => return Ok(()),
                // That thread has ended: try the next one.
                Err(mpsc::SendError(back)) => job = back,
            },
            None => break,
        }
    }
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("carboy-session-lock".into())
        .spawn(move || {
            job.run();
            lock_thread(jobs_tx, jobs_rx);
        })
        .map(|_| ())
        .map_err(|e| format!("start a lock thread: {e}"))
}

/// A lock thread after its first job: waits for the next one while fewer
/// than [`IDLE_MAX`] wait.
fn lock_thread(me: mpsc::Sender<Job>, jobs: mpsc::Receiver<Job>) {
    loop {
        {
            let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= IDLE_MAX {
                return;
            }
            idle.push(me.clone());
        }
        match jobs.recv() {
            Ok(job) => job.run(),
            Err(_) => return,
        }
    }
}

/// A session lock held for a request (inside [`SessionLockService`]'s
/// future): dropping it releases it, or tells the thread that holds it to.
#[derive(Debug)]
pub struct HeldSessionLock {
    /// Hung up to tell the lock thread to release it.
    _release: Option<mpsc::Sender<()>>,
    /// The lock, when the task holds it itself.
    _owned: Option<OwnedStripe>,
}

/// A tower layer that makes each request hold the session locks its store
/// took ([`SessionLocks`]) until the request's response is done. Put it
/// *outside* tower-sessions' `SessionManagerLayer` (in axum, a later
/// `.layer(..)` call), so that it also covers the save:
///
/// ```
/// use axum::{Router, routing::get};
/// use carboy::cache::CacheManager;
/// use carboy_tower_sessions::{CarboyStore, SessionLockLayer, SessionLocks};
/// use std::time::Duration;
/// use tower_sessions::SessionManagerLayer;
///
/// let dir = tempfile::tempdir()?;
/// let manager = CacheManager::builder()
///     .backend("file")
///     .data_dir(dir.path())
///     .stale_for(Duration::ZERO)
///     .build()?;
/// let store = CarboyStore::new(&manager, "sessions")?
///     .with_session_locks(SessionLocks::open(dir.path().join("sessions.request-lock"))?);
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(SessionManagerLayer::new(store))
///     .layer(SessionLockLayer::new());
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionLockLayer {
    _private: (),
}

impl SessionLockLayer {
    /// The layer.
    pub fn new() -> SessionLockLayer {
        SessionLockLayer::default()
    }
}

impl<S> Layer<S> for SessionLockLayer {
    type Service = SessionLockService<S>;

    fn layer(&self, inner: S) -> SessionLockService<S> {
        SessionLockService { inner }
    }
}

/// The service of a [`SessionLockLayer`].
#[derive(Clone, Debug)]
pub struct SessionLockService<S> {
    inner: S,
}

impl<S, R> Service<R> for SessionLockService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<RefCell<Vec<(Id, HeldSessionLock)>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        HELD.scope(RefCell::new(Vec::new()), self.inner.call(request))
    }
}
