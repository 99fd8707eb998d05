//! The cache from async code (feature `async`, on tokio): 100 tasks ask
//! for one missing value at once and the creator future runs once; a hit
//! is a direct call; an expired value is served stale while one task
//! regenerates it; a lock cycle ends at `cache.lock_timeout`.
//!
//! `cargo run -p carboy --example async_cache --features async`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use carboy::cache::{CacheManager, CreateError, OnLockTimeout};
use carboy::{ErrorKind, MockClock};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock = MockClock::new(1_700_000_000_000);
    let manager = CacheManager::builder()
        .backend("file")
        .data_dir(dir.path())
        .expire(Duration::from_secs(60))
        .lock_timeout(Duration::from_millis(200))
        .on_lock_timeout(OnLockTimeout::Error)
        .clock(Arc::new(clock.clone()))
        .build()?;
    let reports = manager.get_cache("reports")?.to_async();

    // 100 tasks, one missing key: one creation, everyone gets its value.
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (reports, runs) = (reports.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                reports
                    .get_or_create("daily", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await; // a slow query
                        Ok::<_, std::io::Error>("report v1".to_string())
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await??, "report v1");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    println!("100 tasks, 1 creation");

    // A hit: no creator, no thread hop.
    let hit: String = reports
        .get_or_create("daily", || async {
            Ok::<_, std::io::Error>("unused".into())
        })
        .await?;
    assert_eq!(hit, "report v1");

    // Expired: the caller that regenerates gets the new value; one asking
    // meanwhile is served the stale one at once.
    clock.advance(Duration::from_secs(61));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let regenerating = {
        let reports = reports.clone();
        tokio::spawn(async move {
            reports
                .get_or_create("daily", || async move {
                    tokio::task::spawn_blocking(move || released.recv())
                        .await
                        .ok();
                    Ok::<_, std::io::Error>("report v2".to_string())
                })
                .await
        })
    };
    while !reports.is_creating("daily")? {
        tokio::task::yield_now().await;
    }
    let meanwhile: String = reports
        .get_or_create("daily", || async {
            Ok::<_, std::io::Error>("unused".into())
        })
        .await?;
    assert_eq!(meanwhile, "report v1");
    release.send(())?;
    assert_eq!(regenerating.await??, "report v2");
    println!("expired: served stale while one task regenerated");

    // Another manager (as another process would) holds the creation lock
    // of "slow" for longer than cache.lock_timeout: the task stops waiting
    // with a typed error, and its runtime never stalled meanwhile.
    let other = CacheManager::builder()
        .backend("file")
        .data_dir(dir.path())
        .build()?
        .get_cache("reports")?;
    let (holding, held) = std::sync::mpsc::channel::<()>();
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        other.get_or_create("slow", || {
            holding.send(()).ok();
            finished.recv().ok();
            Ok::<_, std::io::Error>("slow report".to_string())
        })
    });
    tokio::task::spawn_blocking(move || held.recv()).await??;
    let timed_out = reports
        .get_or_create("slow", || async {
            Ok::<_, std::io::Error>("unused".to_string())
        })
        .await;
    match timed_out {
        Err(CreateError::Cache(e)) if e.kind() == ErrorKind::LockTimeout => {
            println!("gave up at cache.lock_timeout: {e}")
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    finish.send(())?;
    assert_eq!(holder.join().expect("holder panicked")?, "slow report");
    Ok(())
}
