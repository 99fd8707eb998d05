//! `cache.lock_timeout` on the blocking front: two threads whose nested
//! creators take two keys in opposite orders (each holds its outer key's
//! creation lock and waits for the other's) hang forever without it; with
//! it, a caller that waited that long fails with `Error::LockTimeout`
//! (`cache.on_lock_timeout = error`) or runs its creator uncached
//! (`create`). The two-process case, on the async front, is in
//! `async_cache.rs`.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use carboy::ErrorKind;
use carboy::cache::{Cache, CacheManager, CreateError, OnLockTimeout};

fn cache(dir: &std::path::Path, action: OnLockTimeout) -> Cache {
    CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .lock_timeout(Duration::from_millis(300))
        .on_lock_timeout(action)
        .build()
        .unwrap()
        .get_cache("nested")
        .unwrap()
}

/// Creates `outer`, whose creator waits at `both` and then creates `inner`.
fn nested(
    cache: &Cache,
    both: &Barrier,
    outer: &str,
    inner: &str,
) -> Result<String, CreateError<CreateError<std::io::Error>>> {
    cache.get_or_create(outer, || {
        both.wait();
        let v: String = cache.get_or_create(inner, || Ok(format!("{inner} value")))?;
        Ok(format!("{outer} over {v}"))
    })
}

fn timed_out<E>(r: &Result<String, CreateError<CreateError<E>>>) -> bool {
    match r {
        Err(CreateError::Creator(inner)) => {
            matches!(&**inner, CreateError::Cache(e) if e.kind() == ErrorKind::LockTimeout)
        }
        Err(CreateError::Cache(e)) => e.kind() == ErrorKind::LockTimeout,
        Ok(_) => false,
    }
}

fn run_both(cache: &Cache) -> [Result<String, CreateError<CreateError<std::io::Error>>>; 2] {
    let both = Barrier::new(2);
    let started = Instant::now();
    let results = std::thread::scope(|s| {
        let one = s.spawn(|| nested(cache, &both, "a", "b"));
        let two = s.spawn(|| nested(cache, &both, "b", "a"));
        [one.join().unwrap(), two.join().unwrap()]
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    results
}

#[test]
fn opposite_nested_creators_fail_with_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), OnLockTimeout::Error);
    let results = run_both(&cache);
    assert!(results.iter().any(timed_out), "{results:?}");
    for (r, outer) in results.iter().zip(["a", "b"]) {
        match r {
            Ok(v) => assert!(
                v.starts_with(&format!("{outer} over {}", other(outer))),
                "{v}"
            ),
            Err(_) => {
                assert!(timed_out(r), "{r:?}");
                // Nothing from the failed creation (the other thread may
                // have created the key as its inner one).
                let kept = cache.get::<String>(outer).unwrap().unwrap_or_default();
                assert!(!kept.starts_with(&format!("{outer} over")), "{kept}");
            }
        }
    }
}

#[test]
fn opposite_nested_creators_create_uncached_past_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), OnLockTimeout::Create);
    let results = run_both(&cache);
    for (r, outer) in results.iter().zip(["a", "b"]) {
        // Its inner value was created uncached, or (once the other thread
        // finished) read: either way the outer one is created and kept.
        let v = r.as_ref().unwrap();
        assert!(
            v.starts_with(&format!("{outer} over {}", other(outer))),
            "{v}"
        );
        assert_eq!(cache.get::<String>(outer).unwrap().as_ref(), Some(v));
    }
}

fn other(key: &str) -> &'static str {
    if key == "a" { "b" } else { "a" }
}
