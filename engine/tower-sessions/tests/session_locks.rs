//! `SessionLocks` + `SessionLockLayer`: a load under the layer holds the
//! session's cross-process lock until `save` (or `delete`, or the end of
//! the request); a load outside the layer takes none; a lock held
//! elsewhere past the timeout makes `load` a typed error. The lock is
//! observed from another thread through carboy's `StripeLocks` on the same
//! file, as another process would see it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carboy::cache::{CacheManager, lock_hash};
use carboy::sync::StripeLocks;
use carboy_tower_sessions::{CarboyStore, SessionLockLayer, SessionLocks};
use time::OffsetDateTime;
use tower_layer::Layer;
use tower_service::Service;
use tower_sessions_core::SessionStore;
use tower_sessions_core::session::{Id, Record};

/// A service whose request is the future to run: so a test runs code
/// inside `SessionLockLayer`'s request scope.
struct Run;

impl<F: Future<Output = Result<(), Infallible>>> Service<F> for Run {
    type Response = ();
    type Error = Infallible;
    type Future = F;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: F) -> F {
        request
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    lock_path: PathBuf,
    store: CarboyStore,
}

fn fixture(timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let manager = CacheManager::builder()
        .backend("file")
        .data_dir(dir.path())
        .stale_for(Duration::ZERO)
        .build()
        .expect("a cache manager");
    let lock_path = dir.path().join("sessions.request-lock");
    let locks = SessionLocks::open(&lock_path)
        .expect("the lock file")
        .timeout(timeout);
    let store = CarboyStore::new(&manager, "sessions")
        .expect("the namespace")
        .with_session_locks(locks);
    Fixture {
        _dir: dir,
        lock_path,
        store,
    }
}

fn record() -> Record {
    Record {
        id: Id::default(),
        data: HashMap::from([("count".to_string(), serde_json::json!(1))]),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::hours(1),
    }
}

/// Whether another thread (a stand-in for another process) finds the lock
/// of `id` held right now.
fn held_elsewhere(lock_path: &Path, id: &Id) -> bool {
    let path = lock_path.to_path_buf();
    let hash = lock_hash(id.to_string().as_bytes());
    std::thread::spawn(move || {
        let locks = StripeLocks::open(path, StripeLocks::DEFAULT_STRIPES).expect("open the locks");
        locks.try_lock(hash).expect("try the lock").is_none()
    })
    .join()
    .expect("the probing thread")
}

/// Waits (at most 10 s) until the lock of `id` is free: the lock thread
/// releases it just after its holder is dropped.
fn wait_until_free(lock_path: &Path, id: &Id) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while held_elsewhere(lock_path, id) {
        assert!(
            Instant::now() < deadline,
            "the lock of {id} was never released"
        );
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn a_load_under_the_layer_holds_the_lock_until_the_request_ends() {
    let f = fixture(Duration::from_secs(10));
    let r = record();
    f.store.save(&r).await.expect("save");
    let mut service = SessionLockLayer::new().layer(Run);
    let (store, path, id) = (&f.store, &f.lock_path, r.id);
    service
        .call(async move {
            assert!(!held_elsewhere(path, &id), "not before the load");
            assert_eq!(store.load(&id).await.expect("load"), Some(r.clone()));
            assert!(held_elsewhere(path, &id), "held after the load");
            // A second load in the same request does not wait for itself.
            assert!(store.load(&id).await.expect("load again").is_some());
            Ok(())
        })
        .await
        .expect("the request");
    wait_until_free(&f.lock_path, &id);
}

#[tokio::test]
async fn save_and_delete_release_the_lock_before_the_request_ends() {
    let f = fixture(Duration::from_secs(10));
    let r = record();
    f.store.save(&r).await.expect("save");
    let mut service = SessionLockLayer::new().layer(Run);
    let (store, path, id) = (&f.store, &f.lock_path, r.id);
    service
        .call(async move {
            let mut loaded = store.load(&id).await.expect("load").expect("a record");
            assert!(held_elsewhere(path, &id));
            loaded.data.insert("count".into(), serde_json::json!(2));
            store.save(&loaded).await.expect("save");
            wait_until_free(path, &id);

            store.load(&id).await.expect("load");
            assert!(held_elsewhere(path, &id));
            store.delete(&id).await.expect("delete");
            wait_until_free(path, &id);
            Ok(())
        })
        .await
        .expect("the request");
}

#[tokio::test]
async fn a_load_outside_the_layer_takes_no_lock() {
    let f = fixture(Duration::from_secs(10));
    let r = record();
    f.store.save(&r).await.expect("save");
    assert!(f.store.load(&r.id).await.expect("load").is_some());
    assert!(!held_elsewhere(&f.lock_path, &r.id));
}

#[tokio::test]
async fn a_lock_held_past_the_timeout_fails_the_load() {
    let f = fixture(Duration::from_millis(200));
    let r = record();
    f.store.save(&r).await.expect("save");
    // Another "process" holds the session's stripe until told to stop.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (path, hash) = (f.lock_path.clone(), lock_hash(r.id.to_string().as_bytes()));
    let holder = std::thread::spawn(move || {
        let locks = StripeLocks::open(path, StripeLocks::DEFAULT_STRIPES).expect("open the locks");
        let _guard = locks.lock(hash).expect("lock");
        ready_tx.send(()).expect("say ready");
        let _ = hold_rx.recv();
    });
    ready_rx.recv().expect("the holder is ready");
    let mut service = SessionLockLayer::new().layer(Run);
    let (store, id) = (&f.store, r.id);
    service
        .call(async move {
            let err = store
                .load(&id)
                .await
                .expect_err("the lock is held elsewhere");
            let message = err.to_string();
            assert!(
                message.contains("lock session") && message.contains("still held"),
                "{message}"
            );
            Ok(())
        })
        .await
        .expect("the request");
    drop(hold_tx);
    holder.join().expect("the holder thread");
}
