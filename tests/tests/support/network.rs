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
