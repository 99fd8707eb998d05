//! The dogpile guarantees of `Cache::get_or_create`, with threads: one
//! creator per key while the others wait (no value) or get the stale value
//! (expired value); a creator's error reaches every waiter; a panicking
//! creator does not wedge the key; "never serve stale" makes everyone wait.
//! Each runs on the `memory` and the `file` backend. The same across real
//! processes is in `dogpile_processes.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{Cache, CacheManager, CreateError};
use tempfile::TempDir;

const THREADS: usize = 8;

fn cache(backend: &str, serve_stale: bool) -> (TempDir, MockClock, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_000_000);
    let manager = CacheManager::builder()
        .backend(backend)
        .data_dir(dir.path())
        .expire(Duration::from_secs(10))
        .serve_stale(serve_stale)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let cache = manager.get_cache("dogpile").unwrap();
    (dir, clock, cache)
}

/// Runs `call` on `THREADS` threads released at once; their results.
fn race<T: Send>(call: impl Fn() -> T + Sync) -> Vec<T> {
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    call()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Spins (yielding, never sleeping) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::yield_now();
    }
}

fn missing_key_runs_one_creator_and_everyone_waits(backend: &str) {
    let (_dir, _clock, cache) = cache(backend, true);
    let runs = AtomicUsize::new(0);
    let results: Vec<String> = race(|| {
        cache
            .get_or_create("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                // Hold the creation until every other thread
                // has joined it.
                wait_until("followers", || {
                    cache.joined_creation("k").unwrap() == THREADS - 1
                });
                Ok::<_, String>("created".to_string())
            })
            .unwrap()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{backend}: creators");
    assert!(
        results.iter().all(|r| r == "created"),
        "{backend}: {results:?}"
    );
    assert!(!cache.is_creating("k").unwrap());
}

fn stale_value_is_served_while_one_regenerates(backend: &str) {
    let (_dir, clock, cache) = cache(backend, true);
    cache.set("k", "old").unwrap();
    clock.advance(Duration::from_secs(10)); // expired: stale
    let runs = AtomicUsize::new(0);
    let returned = AtomicUsize::new(0);
    let results: Vec<String> = race(|| {
        let v: String = cache
            .get_or_create("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                // The creator finishes only after every other
                // caller has returned: they must not wait.
                wait_until("stale returns", || {
                    returned.load(Ordering::SeqCst) == THREADS - 1
                });
                Ok::<_, String>("new".to_string())
            })
            .unwrap();
        if v == "old" {
            returned.fetch_add(1, Ordering::SeqCst);
        }
        v
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{backend}: creators");
    assert_eq!(results.iter().filter(|r| *r == "old").count(), THREADS - 1);
    assert_eq!(results.iter().filter(|r| *r == "new").count(), 1);
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

fn never_serve_stale_makes_everyone_wait(backend: &str) {
    let (_dir, clock, cache) = cache(backend, false);
    cache.set("k", "old").unwrap();
    clock.advance(Duration::from_secs(10));
    let runs = AtomicUsize::new(0);
    let results: Vec<String> = race(|| {
        cache
            .get_or_create("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                wait_until("followers", || {
                    cache.joined_creation("k").unwrap() == THREADS - 1
                });
                Ok::<_, String>("new".to_string())
            })
            .unwrap()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{backend}");
    assert!(results.iter().all(|r| r == "new"), "{backend}: {results:?}");
}

#[derive(Debug, PartialEq)]
struct Down(u32);

fn creator_error_reaches_every_waiter(backend: &str) {
    let (_dir, _clock, cache) = cache(backend, true);
    let runs = AtomicUsize::new(0);
    let errors: Vec<Arc<Down>> = race(|| {
        match cache.get_or_create::<String, _, _>("k", || {
            runs.fetch_add(1, Ordering::SeqCst);
            wait_until("followers", || {
                cache.joined_creation("k").unwrap() == THREADS - 1
            });
            Err(Down(503))
        }) {
            Err(CreateError::Creator(e)) => e,
            other => panic!("{backend}: expected the creator's error, got {other:?}"),
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{backend}: creators");
    assert!(errors.iter().all(|e| **e == Down(503)));
    // One error, shared.
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert_eq!(cache.get::<String>("k").unwrap(), None, "nothing stored");
    // The key is free: the next caller creates.
    let v: String = cache.get_or_insert_with("k", || "ok".to_string()).unwrap();
    assert_eq!(v, "ok");
}

fn panicking_creator_does_not_wedge_the_key(backend: &str) {
    let (_dir, _clock, cache) = cache(backend, true);
    let runs = AtomicUsize::new(0);
    let outcomes: Vec<Option<String>> = race(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache
                .get_or_create("k", || {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    if run == 0 {
                        wait_until("followers", || {
                            cache.joined_creation("k").unwrap() == THREADS - 1
                        });
                        panic!("creator panics on purpose");
                    }
                    Ok::<_, String>("second try".to_string())
                })
                .unwrap()
        }))
        .ok()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.is_none()).count(),
        1,
        "one panic"
    );
    assert!(
        outcomes.iter().flatten().all(|v| v == "second try"),
        "{backend}: {outcomes:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "{backend}: the panic, then one creator"
    );
    assert!(!cache.is_creating("k").unwrap());
}

macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        mod memory { $( #[test] fn $test() { super::$test("memory") } )* }
        mod file { $( #[test] fn $test() { super::$test("file") } )* }
    };
}

both_backends!(
    missing_key_runs_one_creator_and_everyone_waits,
    stale_value_is_served_while_one_regenerates,
    never_serve_stale_makes_everyone_wait,
    creator_error_reaches_every_waiter,
    panicking_creator_does_not_wedge_the_key,
);
