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

/// Every thread asks for key "k" at once; the creator, making `value`,
/// holds the creation until every other thread has joined it. Returns how
/// many creators ran and what each thread got.
fn everyone_joins_one_creation(cache: &Cache, value: &str) -> (usize, Vec<String>) {
    let runs = AtomicUsize::new(0);
    let results: Vec<String> = race(|| {
        cache
            .get_or_create("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                wait_until("followers", || {
                    cache.joined_creation("k").unwrap() == THREADS - 1
                });
                Ok::<_, String>(value.to_string())
            })
            .unwrap()
    });
    (runs.into_inner(), results)
}

fn missing_key_runs_one_creator_and_everyone_waits(backend: &str) {
    let (_dir, _clock, cache) = cache(backend, true);
    let (runs, results) = everyone_joins_one_creation(&cache, "created");
    assert_eq!(runs, 1, "{backend}: creators");
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
    let (runs, results) = everyone_joins_one_creation(&cache, "new");
    assert_eq!(runs, 1, "{backend}");
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

/// A key's creation-lock stripe on the file backend (1024 stripes).
fn stripe(key: &str) -> u64 {
    carboy::cache::lock_hash(key.as_bytes()) % 1024
}

/// A creator that needs another key whose creation lock shares its stripe,
/// while another thread already leads that other key's creation and waits
/// for the stripe: the nested call must not wait for that thread (it would
/// wait forever), and each key is still created once.
#[test]
fn nested_creation_on_a_shared_stripe_does_not_deadlock() {
    let (_dir, _clock, cache) = cache("file", true);
    let a = "outer".to_string();
    let b = (0..)
        .map(|i| format!("inner-{i}"))
        .find(|k| stripe(k) == stripe(&a))
        .unwrap();
    let runs_b = AtomicUsize::new(0);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let cache2 = cache.clone();
    let (a2, b2) = (a.clone(), b.clone());
    std::thread::spawn(move || {
        let runs_b = &runs_b;
        let create_b = || {
            runs_b.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>("b".to_string())
        };
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            // The other thread: leads B once the outer creator holds the
            // shared stripe, and blocks on it.
            let (cache3, b3) = (&cache2, &b2);
            let other = s.spawn(move || {
                go_rx.recv().unwrap();
                cache3.get_or_create(b3, create_b).unwrap()
            });
            let outer: String = cache2
                .get_or_create(&a2, || {
                    go_tx.send(()).unwrap();
                    wait_until("the other thread leads B", || {
                        cache2.is_creating(&b2).unwrap()
                    });
                    let inner: String = cache2.get_or_create(&b2, create_b).unwrap();
                    Ok::<_, String>(format!("a+{inner}"))
                })
                .unwrap();
            let other: String = other.join().unwrap();
            done_tx
                .send((outer, other, runs_b.load(Ordering::SeqCst)))
                .unwrap();
        });
    });
    let (v, other, runs) = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("nested creation deadlocked");
    assert_eq!(v, "a+b");
    assert_eq!(other, "b");
    assert_eq!(runs, 1, "B was created once");
}
