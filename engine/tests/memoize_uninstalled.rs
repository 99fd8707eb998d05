//! A memoized function in a process where no cache manager was ever
//! installed: it runs on every call, and its `_invalidate` says why it
//! cannot invalidate. (Its own test binary: `install` is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn double(x: u32) -> u32 {
    RUNS.fetch_add(1, SeqCst);
    x * 2
}

static TRIED: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached(namespace = "numbers")]
fn half(x: u32) -> Result<u32, String> {
    TRIED.fetch_add(1, SeqCst);
    if x.is_multiple_of(2) {
        Ok(x / 2)
    } else {
        Err(format!("{x} is odd"))
    }
}

#[test]
fn without_a_manager_functions_run_uncached() {
    assert!(carboy::cache::installed().is_none());
    for _ in 0..3 {
        assert_eq!(double(21), 42);
        assert_eq!(half(8), Ok(4));
        assert_eq!(half(7), Err("7 is odd".to_string()));
    }
    assert_eq!(RUNS.load(SeqCst), 3);
    assert_eq!(TRIED.load(SeqCst), 6);

    let err = double_invalidate(21).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("memoize_uninstalled::double")
            && message.contains("no cache manager is installed"),
        "{message}"
    );
    assert!(half_invalidate(8).is_err());
}
