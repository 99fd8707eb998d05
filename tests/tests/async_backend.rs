//! The native async backend seam (`AsyncBackend`, through
//! `Backend::as_async`): on a backend that offers it, `AsyncCache` awaits
//! its get, set, remove, update and creation lock (no blocking call, no
//! helper thread), while the blocking front keeps using the blocking
//! methods of the same backend; a creation-lock wait resolves when another
//! holder releases, and a bounded wait ends at `cache.lock_timeout`
//! measured by the backend's own timer (tokio's, paused here).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use carboy::ErrorKind;
use carboy::cache::{
    AsyncBackend, AsyncCreationGuard, AsyncUpdateFn, Backend, BackendConfig, BackendFactory,
    BackendFuture, CacheManager, Capabilities, CreateError, CreationGuard, Fetched, Invalidation,
    LockWait, Locked, OnLockTimeout, OpenOptions, UpdateFn,
};

/// Which path each call took.
#[derive(Debug, Default)]
struct Counts {
    get: AtomicUsize,
    set: AtomicUsize,
    remove: AtomicUsize,
    update: AtomicUsize,
    lock: AtomicUsize,
    async_get: AtomicUsize,
    async_set: AtomicUsize,
    async_remove: AtomicUsize,
    async_update: AtomicUsize,
    async_lock: AtomicUsize,
    /// Async lock calls that found the lock held and are waiting.
    async_lock_waiting: AtomicUsize,
}

fn n(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

fn bump(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::SeqCst);
}

#[derive(Debug, Default)]
struct Locks {
    held: HashSet<Vec<u8>>,
    /// Async waiters, woken at every release.
    wakers: Vec<Waker>,
}

/// A map in this process whose creation locks are per key, shared by the
/// blocking and the async methods.
#[derive(Debug, Default)]
struct MapBackend {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    locks: Mutex<Locks>,
    /// Blocking waiters.
    released: Condvar,
    counts: Counts,
}

/// Releases one key's lock when dropped (both guards hold one).
struct Release<'a> {
    backend: &'a MapBackend,
    key: Vec<u8>,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let wakers = {
            let mut locks = self.backend.locks();
            locks.held.remove(&self.key);
            std::mem::take(&mut locks.wakers)
        };
        self.backend.released.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl MapBackend {
    fn map(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap()
    }

    fn locks(&self) -> MutexGuard<'_, Locks> {
        self.locks.lock().unwrap()
    }

    fn release(&self, key: &[u8]) -> Release<'_> {
        Release {
            backend: self,
            key: key.to_vec(),
        }
    }

    fn apply(&self, key: &[u8], f: &mut UpdateFn<'_>) {
        let mut map = self.map();
        match f(map.get(key).map(Vec::as_slice)) {
            Some(v) => map.insert(key.to_vec(), v),
            None => map.remove(key),
        };
    }
}

impl Backend for MapBackend {
    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        bump(&self.counts.get);
        Ok(self.map().get(key).cloned().map(Fetched::Owned))
    }

    fn set(&self, key: &[u8], value: &[u8], _ttl: Option<Duration>) -> carboy::Result<()> {
        bump(&self.counts.set);
        self.map().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        bump(&self.counts.remove);
        Ok(self.map().remove(key).is_some())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .creation_locks(true)
            .atomic_update(true)
            .never_evicts(true)
    }

    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        bump(&self.counts.update);
        self.apply(key, f);
        Ok(())
    }

    fn lock_creation(
        &self,
        key: &[u8],
        _hash: u64,
        wait: bool,
    ) -> carboy::Result<Option<CreationGuard<'_>>> {
        bump(&self.counts.lock);
        let mut locks = self.locks();
        while locks.held.contains(key) {
            if !wait {
                return Ok(None);
            }
            locks = self.released.wait(locks).unwrap();
        }
        locks.held.insert(key.to_vec());
        Ok(Some(CreationGuard::holding(self.release(key))))
    }

    fn as_async(&self) -> Option<&dyn AsyncBackend> {
        Some(self)
    }
}

impl AsyncBackend for MapBackend {
    fn get<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, Option<Fetched<'a>>> {
        bump(&self.counts.async_get);
        Box::pin(async move { Ok(self.map().get(key).cloned().map(Fetched::Owned)) })
    }

    fn set<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        _ttl: Option<Duration>,
    ) -> BackendFuture<'a, ()> {
        bump(&self.counts.async_set);
        Box::pin(async move {
            self.map().insert(key.to_vec(), value.to_vec());
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a [u8]) -> BackendFuture<'a, bool> {
        bump(&self.counts.async_remove);
        Box::pin(async move { Ok(self.map().remove(key).is_some()) })
    }

    fn update<'a>(&'a self, key: &'a [u8], f: &'a mut AsyncUpdateFn<'_>) -> BackendFuture<'a, ()> {
        bump(&self.counts.async_update);
        Box::pin(async move {
            self.apply(key, f);
            Ok(())
        })
    }

    fn lock_creation<'a>(
        &'a self,
        key: &'a [u8],
        _hash: u64,
        wait: LockWait,
    ) -> BackendFuture<'a, Locked<'a>> {
        bump(&self.counts.async_lock);
        Box::pin(async move {
            let mut counted = false;
            // Takes the lock when free; otherwise waits for a release.
            // Dropped while pending, it holds nothing.
            let acquire = std::future::poll_fn(|cx| {
                let mut locks = self.locks();
                if locks.held.insert(key.to_vec()) {
                    return Poll::Ready(());
                }
                locks.wakers.push(cx.waker().clone());
                if !counted {
                    counted = true;
                    bump(&self.counts.async_lock_waiting);
                }
                Poll::Pending
            });
            let held = || Locked::Held(AsyncCreationGuard::holding(self.release(key)));
            Ok(match wait {
                LockWait::No => {
                    if self.locks().held.insert(key.to_vec()) {
                        held()
                    } else {
                        Locked::Busy
                    }
                }
                LockWait::Forever => {
                    acquire.await;
                    held()
                }
                // The bounded wait, on the backend's own runtime's timer.
                LockWait::UpTo(t) => match tokio::time::timeout(t, acquire).await {
                    Ok(()) => held(),
                    Err(_) => Locked::TimedOut,
                },
            })
        })
    }
}

/// Opens one `MapBackend` per namespace and keeps them, so that the test
/// can read their counts.
#[derive(Debug, Default)]
struct MapFactory {
    opened: Mutex<HashMap<String, Arc<MapBackend>>>,
}

impl MapFactory {
    fn backend(&self, namespace: &str) -> Arc<MapBackend> {
        Arc::clone(&self.opened.lock().unwrap()[namespace])
    }
}

impl BackendFactory for MapFactory {
    fn open(
        &self,
        namespace: &str,
        _config: &BackendConfig,
        _options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        let backend = Arc::clone(
            self.opened
                .lock()
                .unwrap()
                .entry(namespace.to_string())
                .or_default(),
        );
        Ok(backend)
    }
}

fn manager(factory: &Arc<MapFactory>, lock_timeout: Option<Duration>) -> CacheManager {
    let mut b = CacheManager::builder()
        .backend_factory("map", Arc::clone(factory) as Arc<dyn BackendFactory>)
        .expire(Duration::from_secs(60));
    if let Some(t) = lock_timeout {
        b = b.lock_timeout(t).on_lock_timeout(OnLockTimeout::Error);
    }
    b.build().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_async_front_awaits_the_native_path_and_the_blocking_front_keeps_its_own() {
    let factory = Arc::new(MapFactory::default());
    let manager = manager(&factory, None);
    let cache = manager.get_cache("users").unwrap();
    let front = cache.to_async();
    let b = factory.backend("users");
    let c = &b.counts;
    runtime().block_on(async {
        // A creation: lookups, the lock and the write, all native.
        let created = Arc::new(AtomicUsize::new(0));
        let made = Arc::clone(&created);
        let v: String = front
            .get_or_create("user:1", || async move {
                bump(&made);
                Ok::<_, std::io::Error>("alice".to_string())
            })
            .await
            .unwrap();
        assert_eq!((v.as_str(), n(&created)), ("alice", 1));
        // Looked up before the lock and again under it.
        assert_eq!(n(&c.async_get), 2);
        assert_eq!((n(&c.async_lock), n(&c.async_set)), (1, 1));
        // The lock was released: the next taker gets it at once.
        assert!(
            Backend::lock_creation(&*b, b"probe", 0, false)
                .unwrap()
                .is_some()
        );
        // A hit is one native get; no creator runs.
        let again: String = front
            .get_or_create("user:1", || async { unreachable!("a hit") })
            .await
            .map_err(|e: CreateError<std::io::Error>| e)
            .unwrap();
        assert_eq!(again, "alice");
        assert_eq!(n(&c.async_get), 3);
        assert_eq!(
            front.get::<String>("user:1").await.unwrap().as_deref(),
            Some("alice")
        );
        assert!(front.contains("user:1").await.unwrap());
        let entry = front.get_entry::<String>("user:1").await.unwrap().unwrap();
        assert!(!entry.stale);
        assert_eq!(n(&c.async_get), 6);
        front.set("user:2", &"bob".to_string()).await.unwrap();
        assert_eq!(n(&c.async_set), 2);
        // Soft invalidation is a native update: the value reads stale.
        front
            .invalidate("user:2", Invalidation::Soft)
            .await
            .unwrap();
        assert_eq!(n(&c.async_update), 1);
        let entry = front.get_entry::<String>("user:2").await.unwrap().unwrap();
        assert!(entry.stale && entry.value == "bob");
        assert!(front.remove("user:2").await.unwrap());
        front
            .invalidate("user:1", Invalidation::Hard)
            .await
            .unwrap();
        assert_eq!(n(&c.async_remove), 2);
        assert_eq!(front.get::<String>("user:1").await.unwrap(), None);
    });
    // Nothing went through the blocking methods of the data namespace
    // (the markers namespace is another backend, read blocking).
    let blocking = [&c.get, &c.set, &c.remove, &c.update, &c.lock];
    assert_eq!(blocking.map(n), [0, 0, 0, 0, 1]); // the probe above
    // The blocking front on the same backend: the blocking methods.
    let v: String = cache
        .get_or_create("user:3", || Ok::<_, std::io::Error>("carol".to_string()))
        .unwrap();
    assert_eq!(v, "carol");
    assert_eq!(
        cache.get::<String>("user:3").unwrap().as_deref(),
        Some("carol")
    );
    assert!(n(&c.get) >= 2 && n(&c.set) == 1 && n(&c.lock) == 2);
    // And each front reads what the other wrote.
    let read = runtime().block_on(front.get::<String>("user:3")).unwrap();
    assert_eq!(read.as_deref(), Some("carol"));
    assert_eq!(cache.get::<String>("user:1").unwrap(), None);
}

#[test]
fn a_native_lock_wait_resolves_when_the_holder_releases() {
    let factory = Arc::new(MapFactory::default());
    let manager = manager(&factory, None);
    let front = manager.get_cache("pages").unwrap().to_async();
    let b = factory.backend("pages");
    // Another holder (here through the blocking method) has the lock of
    // the key (stored as its bytes: it is short).
    let holder = Backend::lock_creation(&*b, b"page:1", 0, true)
        .unwrap()
        .unwrap();
    let created = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let made = Arc::clone(&created);
        let task = tokio::spawn(async move {
            front
                .get_or_create("page:1", || async move {
                    bump(&made);
                    Ok::<_, std::io::Error>(42u32)
                })
                .await
        });
        // The task runs (on this thread, at the first yield) until it
        // waits for the lock, natively.
        for _ in 0..1000 {
            if n(&b.counts.async_lock_waiting) > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(n(&b.counts.async_lock_waiting), 1, "waiting natively");
        assert_eq!(n(&created), 0, "no creator while the lock is held");
        drop(holder);
        assert_eq!(task.await.unwrap().unwrap(), 42);
    });
    assert_eq!(n(&created), 1);
    assert_eq!(n(&b.counts.async_lock), 1);
    // No helper thread waited for it through the blocking method.
    assert_eq!(n(&b.counts.lock), 1);
}

#[test]
fn a_bounded_native_lock_wait_ends_at_the_lock_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let factory = Arc::new(MapFactory::default());
    let manager = manager(&factory, Some(TIMEOUT));
    let front = manager.get_cache("slow").unwrap().to_async();
    let b = factory.backend("slow");
    let holder = Backend::lock_creation(&*b, b"report", 0, true)
        .unwrap()
        .unwrap();
    // Paused time: the backend's timer fires once nothing else can run,
    // without waiting 30 real seconds.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let created = AtomicUsize::new(0);
    let result = rt.block_on(async {
        front
            .get_or_create("report", || async {
                bump(&created);
                Ok::<_, std::io::Error>(0u32)
            })
            .await
    });
    match result {
        Err(CreateError::Cache(e)) => {
            assert_eq!(e.kind(), ErrorKind::LockTimeout);
            assert!(
                matches!(e, carboy::Error::LockTimeout { waited, .. } if waited == TIMEOUT),
                "{e}"
            );
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    assert_eq!(n(&created), 0, "on_lock_timeout = error runs no creator");
    assert_eq!(n(&b.counts.async_lock_waiting), 1);
    // The holder still has it; once released, the key can be created.
    assert!(
        Backend::lock_creation(&*b, b"report", 0, false)
            .unwrap()
            .is_none()
    );
    drop(holder);
    let v = rt
        .block_on(front.get_or_create("report", || async { Ok::<_, std::io::Error>(7u32) }))
        .unwrap();
    assert_eq!(v, 7);
}

/// The published conformance suite passes on this backend, its `async_*`
/// cases included (run on a tokio runtime: the lock's bounded wait uses
/// tokio's timer), and they went through the native path.
#[test]
fn the_conformance_suite_runs_its_async_cases_through_the_native_path() {
    use carboy::cache::testing::{Outcome, Suite};
    let factory = Arc::new(MapFactory::default());
    let rt = Arc::new(runtime());
    let report = Suite::new("map", Arc::clone(&factory) as Arc<dyn BackendFactory>)
        .block_on_with(move |future| rt.block_on(future))
        .run();
    report.assert_passed();
    let ran: Vec<&str> = report
        .cases
        .iter()
        .filter(|(name, o)| name.starts_with("async_") && *o == Outcome::Passed)
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        ran,
        [
            "async_raw_operations",
            "async_creation_locks",
            "async_front_get_or_create"
        ]
    );
    let opened = factory.opened.lock().unwrap();
    let counts = |ns: &str| &opened[ns].counts;
    assert!(n(&counts("async-raw").async_set) >= 2);
    assert!(n(&counts("async-locks").async_lock) >= 5);
    assert_eq!(n(&counts("async-front").async_lock), 1);
}
