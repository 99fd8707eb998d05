//! `#[cache_region]` and `#[cached]` on `async fn`s (cargo feature
//! `async`), through an installed manager: hits and misses by argument,
//! `Result`s (only `Ok` is cached), the awaited `_invalidate`, one run for
//! many concurrent tasks, a future that can be spawned, the function
//! running uncached with no manager installed, and a value memoized by one
//! process read by another (file backend).
//!
//! Futures are driven by tokio (already a dev-dependency, for the async
//! example); carboy itself stays runtime-agnostic. The installed manager is
//! process-wide: each test holds `LOCK` and installs a manager of its own,
//! and each decorated function is called by one test only. The tests that
//! need a process of their own (no manager ever installed; the other side
//! of the cross-process test) re-execute this binary, running only `child`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use carboy::cache::{self, CacheManager, RegionSettings};
use serde::{Deserialize, Serialize};

static LOCK: Mutex<()> = Mutex::new(());

/// What a re-executed child does (unset: `child` does nothing).
const CHILD_ENV: &str = "CARBOY_MEMOIZE_ASYNC_CHILD";

/// Installs a memory-backed manager with region `short_term`; the guard
/// keeps other tests from installing theirs meanwhile.
fn install() -> (CacheManager, MutexGuard<'static, ()>) {
    let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let manager = CacheManager::builder()
        .region(
            "short_term",
            RegionSettings::new().expire(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    cache::install(manager.clone());
    (manager, lock)
}

/// A manager on the file backend in `dir`, as every process sharing the
/// cache would build it.
fn on_disk(dir: &Path) -> CacheManager {
    CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn runs(counter: &AtomicUsize) -> usize {
    counter.load(SeqCst)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u32,
    lang: String,
}

static LOAD_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Loads a user, after a pause (an await point inside the body).
#[carboy::cache_region("short_term")]
pub async fn load(user: u32, lang: &str) -> User {
    LOAD_RUNS.fetch_add(1, SeqCst);
    tokio::task::yield_now().await;
    User {
        id: user,
        lang: lang.to_string(),
    }
}

fn user(id: u32, lang: &str) -> User {
    User {
        id,
        lang: lang.to_string(),
    }
}

#[test]
fn same_arguments_hit_other_arguments_miss_and_invalidate_runs_again() {
    let (manager, _lock) = install();
    runtime().block_on(async {
        assert_eq!(load(1, "en").await, user(1, "en"));
        assert_eq!(load(1, "en").await, user(1, "en"));
        assert_eq!(runs(&LOAD_RUNS), 1, "the second call is a hit");
        assert_eq!(load(2, "en").await, user(2, "en"));
        assert_eq!(load(1, "fr").await, user(1, "fr"));
        assert_eq!(runs(&LOAD_RUNS), 3, "each new argument set runs once");
        assert_eq!(load(2, "en").await, user(2, "en"));
        assert_eq!(load(1, "fr").await, user(1, "fr"));
        assert_eq!(runs(&LOAD_RUNS), 3);

        load_invalidate(1, "en").await.unwrap();
        assert_eq!(load(1, "en").await, user(1, "en"));
        assert_eq!(runs(&LOAD_RUNS), 4, "the invalidated call runs again");
        assert_eq!(load(2, "en").await, user(2, "en"));
        assert_eq!(runs(&LOAD_RUNS), 4, "other argument sets stay cached");
    });
    // Same namespace and keys as the sync form: the function's path, and
    // the postcard encoding of the arguments as a tuple.
    let ns = manager
        .region("short_term")
        .unwrap()
        .cache(concat!(module_path!(), "::load"))
        .unwrap();
    assert_eq!(ns.keys().unwrap().len(), 3);
    assert_eq!(
        ns.get::<User>(&postcard::to_allocvec(&(2u32, "en")).unwrap()[..])
            .unwrap(),
        Some(user(2, "en"))
    );
}

static FIND_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached(namespace = "users", expire = 60)]
async fn find(id: u32) -> Result<String, String> {
    FIND_RUNS.fetch_add(1, SeqCst);
    match id {
        1 => Ok("alice".into()),
        _ => Err(format!("no user {id}")),
    }
}

#[test]
fn results_cache_ok_values_and_return_errors_unchanged() {
    let (manager, _lock) = install();
    runtime().block_on(async {
        assert_eq!(find(1).await, Ok("alice".into()));
        assert_eq!(find(1).await, Ok("alice".into()));
        assert_eq!(runs(&FIND_RUNS), 1);
        assert_eq!(find(2).await, Err("no user 2".into()));
        assert_eq!(find(2).await, Err("no user 2".into()));
        assert_eq!(runs(&FIND_RUNS), 3, "errors are not cached");
    });
    assert_eq!(manager.get_cache("users").unwrap().keys().unwrap().len(), 1);
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached]
async fn slow(x: u64) -> u64 {
    SLOW_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    x * x
}

#[test]
fn concurrent_tasks_run_the_function_once_and_futures_are_send() {
    let (_manager, _lock) = install();
    runtime().block_on(async {
        // `tokio::spawn` needs a `Send + 'static` future.
        let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(slow(7))).collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 49);
        }
    });
    assert_eq!(
        runs(&SLOW_RUNS),
        1,
        "one task created, the others awaited it"
    );
}

/// This binary re-executed, running only `child`, told what to do.
fn run_child(what: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, what)
        .status()
        .unwrap();
    assert!(status.success(), "the child ({what}) failed: {status}");
}

static DOUBLE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
async fn double(x: u32) -> u32 {
    DOUBLE_RUNS.fetch_add(1, SeqCst);
    x * 2
}

#[carboy::cached(namespace = "numbers")]
async fn half(x: u32) -> Result<u32, String> {
    if x.is_multiple_of(2) {
        Ok(x / 2)
    } else {
        Err(format!("{x} is odd"))
    }
}

/// Which process computed `n`'s value: the pid of the first caller.
#[carboy::cached(namespace = "shared", expire = 3600)]
async fn computed_by(n: u32) -> (u32, u32) {
    (n, std::process::id())
}

/// The other process's side of the tests below; nothing when run as a test
/// of its own.
#[test]
fn child() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = runtime();
    if what == "uninstalled" {
        assert!(cache::installed().is_none());
        rt.block_on(async {
            for _ in 0..3 {
                assert_eq!(double(21).await, 42);
            }
            assert_eq!(half(4).await, Ok(2));
            assert_eq!(half(3).await, Err("3 is odd".into()));
            let error = double_invalidate(21).await.unwrap_err();
            assert!(
                error.to_string().contains("no cache manager is installed"),
                "{error}"
            );
            assert!(half_invalidate(4).await.is_err());
        });
        assert_eq!(runs(&DOUBLE_RUNS), 3, "every call ran");
    } else if let Some(dir) = what.strip_prefix("store:") {
        cache::install(on_disk(Path::new(dir)));
        rt.block_on(async {
            assert_eq!(computed_by(5).await, (5, std::process::id()));
        });
    } else {
        panic!("unknown child task {what:?}");
    }
}

#[test]
fn without_a_manager_functions_run_uncached() {
    run_child("uninstalled");
}

#[test]
fn a_value_memoized_in_one_process_is_read_in_another() {
    let _lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    run_child(&format!("store:{}", dir.path().display()));
    cache::install(on_disk(dir.path()));
    let rt = runtime();
    let (n, pid) = rt.block_on(computed_by(5));
    assert_eq!(n, 5);
    assert_ne!(pid, std::process::id(), "read, not computed here");
    // Invalidated here, computed again here.
    rt.block_on(computed_by_invalidate(5)).unwrap();
    assert_eq!(rt.block_on(computed_by(5)), (5, std::process::id()));
}
