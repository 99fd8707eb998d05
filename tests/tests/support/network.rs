//! What the redis and memcached tests share (included by path, beside
//! `runtimes.rs`): the conformance suite run with its async cases on
//! tokio, and 200 tasks on one missing key.

// Each test binary that includes this uses only some of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use carboy::cache::AsyncCache;
use carboy::cache::testing::{Outcome, Suite};

/// `suite` with its async cases run on a multi-thread tokio runtime (the
/// network clients' async connections need one), as an application's.
pub fn on_tokio(suite: Suite) -> Suite {
    let runtime = Arc::new(super::runtimes::multi_thread());
    suite.block_on_with(move |future| runtime.block_on(future))
}

/// Runs `suite`: every case passes but the `skipped` ones (each with the
/// capability it lacks), and the two async cases did run.
pub fn conforms(suite: Suite, skipped: &[(&str, &str)]) {
    let report = suite.run();
    report.assert_passed();
    let skipped_now: Vec<(&str, &str)> = report
        .cases
        .iter()
        .filter_map(|(name, o)| match o {
            Outcome::Skipped(cap) => Some((*name, *cap)),
            _ => None,
        })
        .collect();
    assert_eq!(skipped_now, skipped, "{report}");
    for case in ["async_raw_operations", "async_creation_locks"] {
        assert!(
            report
                .cases
                .iter()
                .any(|(name, o)| *name == case && *o == Outcome::Passed),
            "{case} did not run: {report}"
        );
    }
}

/// `tasks` tasks, alternating between the two `caches` (two managers: as
/// two processes), ask for the missing key `k` at once, each with a
/// creator that lets the others pile up before it returns. How many
/// creators ran, and the values the tasks got.
pub async fn one_key_herd(caches: &[AsyncCache; 2], tasks: usize) -> (usize, Vec<String>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut spawned = Vec::new();
    for i in 0..tasks {
        let c = caches[i % 2].clone();
        let runs = Arc::clone(&runs);
        spawned.push(tokio::spawn(async move {
            c.get_or_create("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Let the other tasks pile up behind the flight and the
                // lock.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                Ok::<_, String>(format!("created by task {i}"))
            })
            .await
        }));
    }
    let mut values = Vec::new();
    for t in spawned {
        values.push(t.await.unwrap().unwrap());
    }
    (runs.load(Ordering::SeqCst), values)
}

/// A creator of `k` in `first` is cancelled while it holds the server's
/// lock (`lock_held` says the server has it, before the cancel), and
/// `second`, another manager, then creates `k` at once rather than after
/// the lock's 30 s lease. Run on a multi-thread runtime.
pub async fn cancelled_creator_frees_the_lock(
    first: AsyncCache,
    second: AsyncCache,
    lock_held: impl FnOnce() -> bool,
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let creating = tokio::spawn(async move {
        first
            .get_or_create("k", || async move {
                let _ = started_tx.send(());
                std::future::pending::<Result<String, String>>().await
            })
            .await
    });
    started_rx.await.unwrap();
    // The creator runs, so its lock is held on the server.
    assert!(lock_held(), "no server lock while creating");
    creating.abort();
    assert!(creating.await.unwrap_err().is_cancelled());
    // The other manager creates, without waiting out the lease (30 s).
    let started = std::time::Instant::now();
    let v: String = second
        .get_or_create("k", || async { Ok::<_, String>("second".to_string()) })
        .await
        .unwrap();
    assert_eq!(v, "second");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the second creator waited {:?}",
        started.elapsed()
    );
}
