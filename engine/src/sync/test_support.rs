//! Helpers for the sync layer's unit tests: waiting for a condition without
//! sleeping for time, and seeing that a thread is blocked on a file lock.

use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen at once.
const DEADLINE: Duration = Duration::from_secs(10);

/// Spins (yielding) until `done` holds; panics after 10 s.
pub(crate) fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

/// Runs `f` on another thread and returns what it returns.
pub(crate) fn elsewhere<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| s.spawn(f).join().expect("the other thread panicked"))
}

/// Waits until `/proc/locks` shows a blocked waiter (a `->` line) for a
/// lock on the file with inode number `inode`.
pub(crate) fn wait_until_blocked_on(inode: u64) {
    let suffix = format!(":{inode}");
    until("a thread is blocked on the lock file", || {
        std::fs::read_to_string("/proc/locks")
            .expect("read /proc/locks")
            .lines()
            .any(|line| {
                line.contains("->")
                    && line
                        .split_whitespace()
                        .any(|field| field.matches(':').count() == 2 && field.ends_with(&suffix))
            })
    });
}

/// Runs `threads` threads that each do `rounds` read-modify-writes of a
/// counter inside `locked(n, critical)` (`n` numbers the round, unique over
/// all threads), asserting that no two threads are ever inside at once;
/// returns the final count, `threads * rounds` if the lock excludes.
pub(crate) fn hammer(threads: u64, rounds: u64, locked: impl Fn(u64, &dyn Fn()) + Sync) -> u64 {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let counter = AtomicU64::new(0);
    let inside = AtomicBool::new(false);
    let start = Barrier::new(threads as usize);
    thread::scope(|s| {
        for t in 0..threads {
            let (counter, inside, start, locked) = (&counter, &inside, &start, &locked);
            s.spawn(move || {
                start.wait();
                for i in 0..rounds {
                    locked(t * rounds + i, &|| {
                        assert!(
                            !inside.swap(true, Ordering::SeqCst),
                            "two threads inside the lock at once"
                        );
                        let n = counter.load(Ordering::Relaxed);
                        thread::yield_now();
                        counter.store(n + 1, Ordering::Relaxed);
                        inside.store(false, Ordering::SeqCst);
                    });
                }
            });
        }
    });
    counter.into_inner()
}
