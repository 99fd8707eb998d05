//! The async front ([`AsyncCache`]) on tokio, across tasks and real
//! processes, on the `file` backend: a cancelled creator frees its key and
//! stores nothing; a ticker task keeps ticking while another process holds
//! the key's creation lock (2 workers, and current-thread); 3 processes ×
//! 200 tasks on one expired key run one creator and serve the others
//! stale, and on a missing key all get the one value; two processes whose
//! nested creators take two keys in opposite orders end at
//! `cache.lock_timeout` as `cache.on_lock_timeout` says.
//!
//! The worker processes are this test binary, re-executed with
//! `CARBOY_ASYNC_CHILD` set (tokio is a dev-dependency, which a `[[bin]]`
//! cannot use): hence `harness = false` and the small runner in `main`.

use std::future::Future;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use carboy::ErrorKind;
use carboy::cache::{AsyncCache, CacheManager, CreateError, OnLockTimeout};
use carboy_tests::child_process::ChildProcess;

const CACHE_CHILD: &str = env!("CARGO_BIN_EXE_carboy-cache-child");
/// Set in a re-executed copy of this binary: the worker's arguments.
const CHILD_ENV: &str = "CARBOY_ASYNC_CHILD";
const PROCESSES: usize = 3;
const TASKS: usize = 200;
/// Any bounded real-time wait: only a stuck run reaches it.
const STUCK: Duration = Duration::from_secs(60);

/// The manager every process builds: the one `carboy-cache-child` builds
/// (`file` in `data`, expiry 60 s), with a lock timeout when given.
fn manager(data: &Path, lock_timeout: Option<(Duration, OnLockTimeout)>) -> CacheManager {
    let mut b = CacheManager::builder()
        .backend("file")
        .data_dir(data)
        .expire(Duration::from_secs(60));
    if let Some((t, action)) = lock_timeout {
        b = b.lock_timeout(t).on_lock_timeout(action);
    }
    b.build().unwrap()
}

fn async_cache(data: &Path, ns: &str) -> AsyncCache {
    manager(data, None).get_cache(ns).unwrap().to_async()
}

#[path = "support/runtimes.rs"]
mod runtimes;
use runtimes::{current_thread, multi_thread};

/// This binary re-executed as a worker process with `args`.
fn worker(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD_ENV, args.join("\u{1f}"));
    command
}

// ---------------------------------------------------------------- tests

/// A creator whose future is dropped (its task aborted) while a second
/// task awaits it: the second creates, the lock was freed (the second's
/// creation needs it), and the cancelled creator's value is never stored.
fn cancelled_creator_frees_the_key_and_stores_nothing() {
    for rt in [multi_thread(), current_thread()] {
        let dir = tempfile::tempdir().unwrap();
        let cache = async_cache(dir.path(), "cancel");
        let created = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        rt.block_on(async {
            let first = {
                let (cache, created) = (cache.clone(), Arc::clone(&created));
                let started = Arc::clone(&started);
                tokio::spawn(async move {
                    cache
                        .get_or_create("k", || async move {
                            started.store(true, Ordering::SeqCst);
                            // Never resolves: only cancellation ends it.
                            std::future::pending::<()>().await;
                            created.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, std::io::Error>("cancelled".to_string())
                        })
                        .await
                })
            };
            wait_until(|| started.load(Ordering::SeqCst)).await;
            assert!(cache.is_creating("k").unwrap());
            let second = {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_create("k", || async {
                            Ok::<_, std::io::Error>("second".to_string())
                        })
                        .await
                })
            };
            wait_until(|| cache.blocking().joined_creation("k").unwrap() == 1).await;
            assert!(!second.is_finished(), "the follower did not wait");
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            let got = tokio::time::timeout(STUCK, second)
                .await
                .expect("the follower never took over")
                .unwrap()
                .unwrap();
            assert_eq!(got, "second");
            assert_eq!(
                cache.get::<String>("k").await.unwrap().as_deref(),
                Some("second")
            );
            // The next caller is a hit.
            let again: String = cache
                .get_or_create("k", || async { Ok::<_, std::io::Error>("third".into()) })
                .await
                .unwrap();
            assert_eq!(again, "second");
        });
        assert_eq!(created.load(Ordering::SeqCst), 0);
        assert!(!cache.is_creating("k").unwrap());
        // The cross-process lock is free: another process creates at once.
        let out = Command::new(CACHE_CHILD)
            .args(["get", dir.path().to_str().unwrap(), "cancel", "k"])
            .output()
            .unwrap();
        assert_eq!(carboy_tests::stdout_of_success(out, "get").trim(), "second");
    }
}

/// While a `carboy-cache-child` holds the creation lock of `k` (its
/// creator waits for a line), four tasks ask for `k` through two managers
/// (two flights: in each, a leader waits for the lock and a follower for
/// the leader) and a ticker ticks every 2 ms: the ticker's 50 ticks all
/// arrive before the child is let go. A front that blocked a worker while
/// it waited would stall the current-thread runtime, and both workers of
/// the other (two leaders), and the ticks would never come.
fn ticker_keeps_ticking_while_another_process_holds_the_creation_lock() {
    for (name, rt) in [
        ("2 workers", multi_thread()),
        ("current thread", current_thread()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child =
            ChildProcess::run(CACHE_CHILD, &["dogpile", data.to_str().unwrap(), "1", "0"]);
        child.expect_line("calling");
        child.expect_line("creating");
        let caches = [async_cache(&data, "dogpile"), async_cache(&data, "dogpile")];
        let (ticked_tx, ticked_rx) = mpsc::channel();
        let (results_tx, results_rx) = mpsc::channel();
        let driver = std::thread::spawn(move || {
            rt.block_on(async {
                let waiters: Vec<_> = caches
                    .iter()
                    .chain(&caches)
                    .map(|cache| {
                        let cache = cache.clone();
                        tokio::spawn(async move {
                            cache
                                .get_or_create("k", || async {
                                    Ok::<_, std::io::Error>("local".to_string())
                                })
                                .await
                                .unwrap()
                        })
                    })
                    .collect();
                for cache in &caches {
                    wait_until(|| cache.blocking().joined_creation("k").unwrap() == 1).await;
                }
                let ticker = tokio::spawn(async {
                    let mut every = tokio::time::interval(Duration::from_millis(2));
                    for _ in 0..50 {
                        every.tick().await;
                    }
                });
                ticker.await.unwrap();
                let pending = waiters.iter().filter(|w| !w.is_finished()).count();
                ticked_tx.send(pending).unwrap();
                for w in waiters {
                    results_tx.send(w.await.unwrap()).unwrap();
                }
            });
        });
        let pending = ticked_rx
            .recv_timeout(STUCK)
            .unwrap_or_else(|_| panic!("{name}: the ticker stalled while the lock was held"));
        assert_eq!(
            pending, 4,
            "{name}: the waiters did not wait for the other process"
        );
        child.say("go");
        for _ in 0..4 {
            assert_eq!(results_rx.recv_timeout(STUCK).unwrap(), "new", "{name}");
        }
        child.finish();
        driver.join().unwrap();
    }
}

/// 3 processes × 200 tasks on one expired key: one creator in all, every
/// other task gets the stale value (the creator is let go only once they
/// all have it).
fn three_processes_expired_key_one_creator_others_served_stale() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = manager(&data, None).get_cache("dogpile").unwrap();
    cache.set_for("k", "old", Some(Duration::ZERO)).unwrap();
    let total = PROCESSES * TASKS;
    let lines = dogpile(&data, |l| count(l, "got old") == total - 1);
    assert_eq!(count(&lines, "creating"), 1, "{:?}", summary(&lines));
    assert_eq!(count(&lines, "got old"), total - 1, "{:?}", summary(&lines));
    assert_eq!(count(&lines, "got new"), 1, "{:?}", summary(&lines));
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

/// The same on a missing key: everyone awaits the one creator's value.
fn three_processes_missing_key_everyone_gets_the_one_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = manager(&data, None).get_cache("dogpile").unwrap();
    let total = PROCESSES * TASKS;
    let lines = dogpile(&data, |l| count(l, "calling") == total);
    assert_eq!(count(&lines, "creating"), 1, "{:?}", summary(&lines));
    assert_eq!(count(&lines, "got new"), total, "{:?}", summary(&lines));
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

/// Two processes: one creates `a`, whose creator asks for `b`; the other
/// creates `b`, whose creator asks for `a`. Each holds its outer key's
/// lock while it waits for the other's: without a timeout that never ends.
///
/// With `cache.on_lock_timeout = error` a caller that waited
/// `cache.lock_timeout` gets `Error::LockTimeout` (here the inner call, so
/// its outer creator fails too and stores nothing). With `create` it runs
/// its creator uncached, and both outer values are created and stored.
fn nested_creators_in_opposite_order_end_at_the_lock_timeout() {
    for action in ["error", "create"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let d = data.to_str().unwrap();
        let mut one = ChildProcess::start(worker(&["nested", d, "a", "b", action]), "nested a b");
        let mut two = ChildProcess::start(worker(&["nested", d, "b", "a", action]), "nested b a");
        // Both hold their outer key's lock before either asks for the other.
        one.expect_line("holding a");
        two.expect_line("holding b");
        let started = Instant::now();
        one.say("go");
        two.say("go");
        let (one, two) = (one.finish(), two.finish());
        let waited = started.elapsed();
        assert!(waited < STUCK, "{action}: took {waited:?}");
        let cache = manager(&data, None).get_cache("nested").unwrap();
        let stored = |k: &str| cache.get::<String>(k).unwrap();
        match action {
            "error" => {
                // At least one inner call timed out; a timed-out outer
                // creation stored nothing.
                let timed_out: Vec<&String> = one
                    .iter()
                    .chain(&two)
                    .filter(|l| l.starts_with("timeout"))
                    .collect();
                assert!(!timed_out.is_empty(), "{one:?} {two:?}");
                for (lines, outer) in [(&one, "a"), (&two, "b")] {
                    if lines.iter().any(|l| l.starts_with("timeout")) {
                        // The other process may have created it as its
                        // inner key; never from this failed creation.
                        let kept = stored(outer).unwrap_or_default();
                        assert!(!kept.starts_with(&format!("{outer} over")), "{kept}");
                    } else {
                        assert_eq!(lines.last().map(String::as_str), Some("ok"), "{lines:?}");
                    }
                }
            }
            _ => {
                assert_eq!(one.last().map(String::as_str), Some("ok"), "{one:?}");
                assert_eq!(two.last().map(String::as_str), Some("ok"), "{two:?}");
                for outer in ["a", "b"] {
                    let kept = stored(outer).unwrap_or_default();
                    assert!(kept.starts_with(&format!("{outer} ")), "{outer}: {kept:?}");
                }
            }
        }
    }
}

/// The async front's futures are `Send` (spawnable on a multi-thread
/// runtime) when the creator's is; checked by the compiler, and run once.
fn get_or_create_futures_are_send() {
    fn spawnable<F: Future + Send + 'static>(f: F) -> F {
        f
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = async_cache(dir.path(), "send");
    let got = multi_thread().block_on(async move {
        let task = spawnable(async move {
            let v: u32 = cache.get_or_insert_with("n", || async { 7 }).await.unwrap();
            cache.set("m", &8u32).await.unwrap();
            let m = cache.get::<u32>("m").await.unwrap();
            assert!(cache.remove("m").await.unwrap());
            (v, m)
        });
        tokio::spawn(task).await.unwrap()
    });
    assert_eq!(got, (7, Some(8)));
}

// ---------------------------------------------------------------- helpers

/// Polls `done` between yields until it holds (bounded by [`STUCK`]).
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + STUCK;
    while !done() {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::task::yield_now().await;
    }
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

/// Each distinct line with how often it came.
fn summary(lines: &[String]) -> Vec<(String, usize)> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for l in lines {
        match seen.iter_mut().find(|(s, _)| s == l) {
            Some((_, n)) => *n += 1,
            None => seen.push((l.clone(), 1)),
        }
    }
    seen
}

/// Starts the async dogpile workers; lets the creator finish (a line on
/// its stdin) once `ready(lines so far)`; returns every line.
fn dogpile(data: &Path, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    let d = data.to_str().unwrap();
    let tasks = TASKS.to_string();
    let mut children: Vec<ChildProcess> = (0..PROCESSES)
        .map(|i| {
            ChildProcess::start_sharing(
                worker(&["dogpile", d, &tasks]),
                &format!("async dogpile {i}"),
                i,
                &tx,
            )
        })
        .collect();
    let total = PROCESSES * TASKS;
    let (mut lines, mut creator, mut released) = (Vec::new(), None, false);
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("got "))
        .count()
        < total
    {
        let (i, line) = rx
            .recv_timeout(STUCK)
            .unwrap_or_else(|_| panic!("workers stalled: {:?}", summary(&lines)));
        assert_ne!(line, "DOUBLE", "two creators ran at once");
        if line == "creating" {
            assert!(creator.is_none(), "a second creator: {:?}", summary(&lines));
            creator = Some(i);
        }
        lines.push(line);
        if let Some(c) = creator
            && !released
            && ready(&lines)
        {
            children[c].say("go");
            released = true;
        }
    }
    for c in children {
        c.finish();
    }
    lines
}

// ---------------------------------------------------------------- workers

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn read_line() -> String {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap_or(0);
    line
}

/// `dogpile <data> <tasks>`: every task calls `get_or_create("k")` at
/// once on a 2-worker runtime and prints `got <value>`; the creator
/// prints `creating`, waits for a line on stdin (on a helper thread: the
/// runtime goes on), and returns `new`. A second creator anywhere would
/// find the assertion flock held and print `DOUBLE`.
///
/// `nested <data> <outer> <inner> error|create`: lock timeout 300 ms;
/// creates `<outer>`, whose creator prints `holding <outer>`, waits for a
/// line, then creates `<inner>`. Prints `timeout` if a call failed with
/// `LockTimeout`, else `ok`.
fn child(args: &[String]) {
    let data = Path::new(&args[1]);
    let rt = multi_thread();
    match args[0].as_str() {
        "dogpile" => {
            let tasks: usize = args[2].parse().unwrap();
            let cache = async_cache(data, "dogpile");
            let assert_path = data.parent().unwrap().join("assert.lock");
            rt.block_on(async {
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let (cache, assert_path) = (cache.clone(), assert_path.clone());
                        tokio::spawn(async move {
                            say("calling");
                            let got = cache
                                .get_or_create("k", || async move {
                                    let assert = std::fs::OpenOptions::new()
                                        .create(true)
                                        .truncate(false)
                                        .write(true)
                                        .open(&assert_path)
                                        .unwrap();
                                    if assert.try_lock().is_err() {
                                        say("DOUBLE");
                                        std::process::exit(3);
                                    }
                                    say("creating");
                                    tokio::task::spawn_blocking(read_line).await.unwrap();
                                    drop(assert);
                                    Ok::<_, std::io::Error>("new".to_string())
                                })
                                .await
                                .unwrap();
                            say(&format!("got {got}"));
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
            });
        }
        "nested" => {
            let (outer, inner) = (args[2].clone(), args[3].clone());
            let action = match args[4].as_str() {
                "error" => OnLockTimeout::Error,
                _ => OnLockTimeout::Create,
            };
            let cache = manager(data, Some((Duration::from_millis(300), action)))
                .get_cache("nested")
                .unwrap()
                .to_async();
            let got = rt.block_on(async {
                cache
                    .get_or_create(&outer, || async {
                        say(&format!("holding {outer}"));
                        tokio::task::spawn_blocking(read_line).await.unwrap();
                        let inner_value: Result<String, CreateError<std::io::Error>> = cache
                            .get_or_create(&inner, || async { Ok(format!("{inner} value")) })
                            .await;
                        inner_value.map(|v| format!("{outer} over {v}"))
                    })
                    .await
            });
            match got {
                Ok(_) => say("ok"),
                Err(CreateError::Creator(e)) => match &*e {
                    CreateError::Cache(e) if e.kind() == ErrorKind::LockTimeout => {
                        say("timeout (inner)")
                    }
                    other => panic!("inner failed otherwise: {other}"),
                },
                Err(CreateError::Cache(e)) if e.kind() == ErrorKind::LockTimeout => {
                    say("timeout (outer)")
                }
                Err(e) => panic!("{e}"),
            }
        }
        other => panic!("unknown worker {other:?}"),
    }
}

// ---------------------------------------------------------------- runner

fn main() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let args: Vec<String> = args.split('\u{1f}').map(String::from).collect();
        child(&args);
        return;
    }
    let tests: [(&str, fn()); 6] = [
        (
            "cancelled_creator_frees_the_key_and_stores_nothing",
            cancelled_creator_frees_the_key_and_stores_nothing,
        ),
        (
            "ticker_keeps_ticking_while_another_process_holds_the_creation_lock",
            ticker_keeps_ticking_while_another_process_holds_the_creation_lock,
        ),
        (
            "three_processes_expired_key_one_creator_others_served_stale",
            three_processes_expired_key_one_creator_others_served_stale,
        ),
        (
            "three_processes_missing_key_everyone_gets_the_one_value",
            three_processes_missing_key_everyone_gets_the_one_value,
        ),
        (
            "nested_creators_in_opposite_order_end_at_the_lock_timeout",
            nested_creators_in_opposite_order_end_at_the_lock_timeout,
        ),
        (
            "get_or_create_futures_are_send",
            get_or_create_futures_are_send,
        ),
    ];
    // Like libtest: plain arguments filter by name, flags are ignored.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures: {failed:?}");
        std::process::exit(101);
    }
    println!("\ntest result: ok");
}
