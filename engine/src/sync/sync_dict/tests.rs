//! Tests of [`SyncDict`](super::SyncDict) and [`WeakSyncDict`](super::WeakSyncDict).

use super::core::MIN_SWEEP;
use super::*;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;

use crate::sync::test_support::until;

#[test]
fn many_threads_one_creation_and_the_others_wait_for_it() {
    const THREADS: usize = 8;
    let dict: SyncDict<&str, Arc<String>> = SyncDict::new();
    let calls = AtomicU32::new(0);
    let start = Barrier::new(THREADS);
    let values: Vec<Arc<String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    dict.get_or_insert_with("k", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Hold the creation open until every other
                        // thread is waiting on it.
                        until("the others wait", || dict.core.waiters("k") == THREADS - 1);
                        Arc::new("made once".to_string())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    assert_eq!(dict.len(), 1);
}

#[test]
fn exactly_once_per_key_under_contention_over_many_keys() {
    const THREADS: usize = 4;
    const KEYS: u32 = 300;
    let dict: SyncDict<u32, u32> = SyncDict::new();
    let calls: Vec<AtomicU32> = (0..KEYS).map(|_| AtomicU32::new(0)).collect();
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (dict, calls, start) = (&dict, &calls, &start);
            s.spawn(move || {
                start.wait();
                for i in 0..KEYS {
                    // Threads walk the keys in different orders.
                    let key = if t % 2 == 0 { i } else { KEYS - 1 - i };
                    let got = dict.get_or_insert_with(key, || {
                        calls[key as usize].fetch_add(1, Ordering::SeqCst);
                        thread::yield_now();
                        key * 10
                    });
                    assert_eq!(got, key * 10);
                }
            });
        }
    });
    for (key, n) in calls.iter().enumerate() {
        assert_eq!(
            n.load(Ordering::SeqCst),
            1,
            "key {key} created more than once"
        );
    }
    assert_eq!(dict.len(), KEYS as usize);
}

#[test]
fn a_panicking_creator_does_not_wedge_the_key() {
    let dict: SyncDict<&str, u32> = SyncDict::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let calls = AtomicU32::new(0);
    thread::scope(|s| {
        let dict_ref = &dict;
        let panicker = s.spawn(move || {
            dict_ref.get_or_insert_with("k", || {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                panic!("creator failed on purpose");
            })
        });
        started_rx.recv().unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    dict.get_or_insert_with("k", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        7
                    })
                })
            })
            .collect();
        until("three waiters", || dict.core.waiters("k") == 3);
        go_tx.send(()).unwrap();
        assert!(panicker.join().is_err(), "the creator was meant to panic");
        for w in waiters {
            assert_eq!(w.join().unwrap(), 7);
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one waiter takes over");
    assert_eq!(dict.get("k"), Some(7));
}

#[test]
fn a_failing_creator_stores_nothing_and_the_next_caller_creates() {
    let dict: SyncDict<&str, u32> = SyncDict::new();
    assert_eq!(dict.get_or_create("k", || Err("nope")), Err("nope"));
    assert_eq!(dict.get("k"), None);
    assert_eq!(dict.core.slot_count(), 0, "the failed flight stayed");
    assert_eq!(dict.get_or_create("k", || Ok::<_, &str>(3)), Ok(3));
    assert_eq!(dict.get_or_create("k", || Err("unused")), Ok(3));
}

#[test]
fn a_creator_error_goes_to_its_caller_and_a_waiter_creates_instead() {
    let dict: SyncDict<&str, u32> = SyncDict::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let calls = AtomicU32::new(0);
    thread::scope(|s| {
        let dict_ref = &dict;
        let failing = s.spawn(move || {
            dict_ref.get_or_create("k", || {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                Err("backend down")
            })
        });
        started_rx.recv().unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    dict.get_or_create("k", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, &str>(7)
                    })
                })
            })
            .collect();
        until("three waiters", || dict.core.waiters("k") == 3);
        go_tx.send(()).unwrap();
        assert_eq!(failing.join().unwrap(), Err("backend down"));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(7));
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one waiter takes over");
    assert_eq!(dict.get("k"), Some(7));
}

#[test]
fn weak_a_failing_creator_stores_nothing() {
    let dict: WeakSyncDict<&str, u32> = WeakSyncDict::new();
    assert_eq!(dict.get_or_create("k", || Err("nope")), Err("nope"));
    assert_eq!(dict.core.slot_count(), 0, "the failed flight stayed");
    let v = dict.get_or_create("k", || Ok::<_, &str>(3)).unwrap();
    assert_eq!(*v, 3);
    assert!(Arc::ptr_eq(
        &v,
        &dict.get_or_create("k", || Err("unused")).unwrap()
    ));
}

#[test]
fn a_panic_caught_on_the_same_thread_leaves_the_key_free() {
    let dict: SyncDict<u8, u8> = SyncDict::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        dict.get_or_insert_with(1, || panic!("boom"));
    }));
    assert!(result.is_err());
    assert_eq!(dict.get_or_insert_with(1, || 9), 9);
}

#[test]
fn invalid_values_are_replaced_once() {
    let dict: SyncDict<&str, u32> = SyncDict::new();
    dict.insert("k", 1);
    let calls = AtomicU32::new(0);
    let start = Barrier::new(4);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                start.wait();
                let v = dict.get_valid_or_insert_with(
                    "k",
                    |v| *v >= 2,
                    || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        thread::yield_now();
                        2
                    },
                );
                assert_eq!(v, 2);
            });
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A valid value is returned without calling the creator.
    assert_eq!(dict.get_valid_or_insert_with("k", |v| *v >= 2, || 99), 2);
}

#[test]
#[should_panic(expected = "asked for the same key again")]
fn recursive_creation_of_the_same_key_panics_instead_of_hanging() {
    let dict: SyncDict<u8, u8> = SyncDict::new();
    dict.get_or_insert_with(1, || dict.get_or_insert_with(1, || 2));
}

#[test]
fn a_creator_may_create_other_keys() {
    let dict: SyncDict<u8, u8> = SyncDict::new();
    let v = dict.get_or_insert_with(1, || dict.get_or_insert_with(2, || 20) + 1);
    assert_eq!((v, dict.get(&2)), (21, Some(20)));
}

#[test]
fn remove_during_creation_abandons_it_and_waiters_create_anew() {
    let dict: SyncDict<&str, u32> = SyncDict::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let dict_ref = &dict;
        let first = s.spawn(move || {
            dict_ref.get_or_insert_with("k", || {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                1
            })
        });
        started_rx.recv().unwrap();
        assert_eq!(dict.remove("k"), None);
        // The abandoned creator still answers its own caller...
        go_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 1);
    });
    // ...but stored nothing.
    assert_eq!(dict.get("k"), None);
    assert_eq!(dict.get_or_insert_with("k", || 2), 2);
}

#[test]
fn insert_remove_clear_len() {
    let dict: SyncDict<String, u32> = SyncDict::new();
    assert_eq!(dict.insert("a".into(), 1), None);
    assert_eq!(dict.insert("a".into(), 2), Some(1));
    dict.insert("b".into(), 3);
    assert_eq!(dict.len(), 2);
    assert!(dict.contains_key("a"));
    assert_eq!(dict.remove("a"), Some(2));
    assert!(!dict.contains_key("a"));
    dict.clear();
    assert!(dict.is_empty());
}

#[test]
fn weak_values_live_while_held_and_are_recreated_after() {
    let dict: WeakSyncDict<&str, String> = WeakSyncDict::new();
    let calls = AtomicU32::new(0);
    let make = || {
        calls.fetch_add(1, Ordering::SeqCst);
        "v".to_string()
    };
    let a = dict.get_or_insert_with("k", make);
    let b = dict.get_or_insert_with("k", make);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(a);
    assert!(dict.get("k").is_some(), "b still holds it");
    drop(b);
    assert_eq!(dict.get("k"), None);
    assert_eq!(dict.len(), 0);
    let _c = dict.get_or_insert_with("k", make);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn weak_map_sweeps_dead_slots() {
    let dict: WeakSyncDict<u32, u32> = WeakSyncDict::new();
    for i in 0..10_000 {
        drop(dict.get_or_insert_with(i, || i));
    }
    let kept: Vec<_> = (0..10)
        .map(|i| dict.get_or_insert_with(1_000_000 + i, || i))
        .collect();
    assert!(
        dict.core.slot_count() <= 2 * MIN_SWEEP + kept.len() * 2,
        "{} slots for {} live values",
        dict.core.slot_count(),
        kept.len()
    );
    assert_eq!(dict.len(), kept.len());
}

#[test]
fn weak_exactly_once_under_contention() {
    const THREADS: usize = 6;
    let dict: WeakSyncDict<&str, u32> = WeakSyncDict::new();
    let calls = AtomicU32::new(0);
    let start = Barrier::new(THREADS);
    let values: Vec<Arc<u32>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    dict.get_or_insert_with("k", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        until("the others wait", || dict.core.waiters("k") == THREADS - 1);
                        5
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
}
