//! The async front (`AsyncCache`) on the redis backend's native async
//! path, on a real server: 200 tasks on one missing key run one creator
//! (on a multi-thread and on a current-thread tokio runtime, through two
//! managers whose leaders meet at the redis lock); a thousand async calls
//! start no thread and open no connection per call (the process's carboy
//! helper and lease-keeper threads, and the server's `connected_clients`,
//! stay flat); a killed server gives typed errors naming it within the
//! timeouts, and a restarted one is used again; a stopped one (SIGSTOP)
//! costs at most the timeouts, as a typed timeout, and is used again once
//! continued; a dropped `get_or_create`
//! future releases its redis lock at once (another manager then creates,
//! long before the lease would have freed it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use carboy::cache::{AsyncCache, CacheManager, CreateError};
use carboy_redis::{RedisFactory, RedisFailure};
use carboy_tests::redis_server::RedisServer;

const TASKS: usize = 200;
const TIMEOUT_MS: u64 = 300;

/// A manager of its own (its own factory, so its own flights and
/// connections: as another process would have).
fn cache(url: &str, ns: &str) -> AsyncCache {
    CacheManager::builder()
        .backend_factory("redis", Arc::new(RedisFactory::new()))
        .option("url", url)
        .option("connect_timeout_ms", TIMEOUT_MS.to_string())
        .option("command_timeout_ms", TIMEOUT_MS.to_string())
        .expire(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get_cache(ns)
        .unwrap()
        .to_async()
}

#[path = "support/runtimes.rs"]
mod runtimes;
use runtimes::{current_thread, multi_thread};
#[path = "support/network.rs"]
mod network;

/// 200 tasks, half through each of two managers, on one missing key:
/// one creator, one value.
fn one_creator(runtime: tokio::runtime::Runtime, test: &str) {
    let Some(server) = RedisServer::start(test) else {
        return;
    };
    let caches = [cache(&server.url(), "once"), cache(&server.url(), "once")];
    let (runs, values) = runtime.block_on(async {
        let herd = network::one_key_herd(&caches, TASKS).await;
        no_lock_left(&server, "once").await;
        herd
    });
    assert_eq!(runs, 1, "{test}: creators");
    assert!(
        values.iter().all(|v| *v == values[0]),
        "{test}: the tasks got different values"
    );
}

/// Waits (on the runtime, so that its spawned release runs) until no
/// creation lock of `ns` is left on the server; fails after 5 s, far
/// beyond a release's round trip and far below the lock's 30 s lease.
async fn no_lock_left(server: &RedisServer, ns: &str) {
    let pattern = format!("carboy:{{{ns}}}#lock*");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = server.cli(&["--scan", "--pattern", &pattern]);
        if left.trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "a lock is left: {left}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn one_creator_multi_thread() {
    one_creator(multi_thread(), "one_creator_multi_thread");
}

#[test]
fn one_creator_current_thread() {
    one_creator(current_thread(), "one_creator_current_thread");
}

/// The threads of this process whose name starts with `prefix` (Linux
/// keeps 15 bytes of a thread's name).
fn threads_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

fn all_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |t| t.count())
}

fn connected_clients(server: &RedisServer) -> u64 {
    let info = server.cli(&["info", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info}"))
}

/// Helper threads carboy starts for the blocking paths (the async front's
/// helper threads and the redis lock's lease keepers).
fn carboy_call_threads() -> usize {
    threads_named("carboy-cache-he") + threads_named("carboy-redis-le")
}

#[test]
fn no_thread_or_connection_per_call() {
    if !std::path::Path::new("/proc/self/task").exists() {
        println!("skipped: no /proc/self/task to count threads in");
        return;
    }
    let Some(server) = RedisServer::start("no_thread_or_connection_per_call") else {
        return;
    };
    let runtime = multi_thread();
    let c = cache(&server.url(), "flat");
    runtime.block_on(async {
        // Warm up: the first calls open the connections (the async one,
        // the markers' blocking one and the tracking listener's).
        c.set("hit", "value").await.unwrap();
        assert_eq!(
            c.get::<String>("hit").await.unwrap().as_deref(),
            Some("value")
        );
    });
    let (threads, helpers, clients) = (
        all_threads(),
        carboy_call_threads(),
        connected_clients(&server),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..1_000 {
            let c = c.clone();
            let runs = Arc::clone(&runs);
            tasks.push(tokio::spawn(async move {
                let hit: Option<String> = c.get("hit").await.unwrap();
                assert_eq!(hit.as_deref(), Some("value"));
                // A get-or-create per task on its own key: a miss, a lock,
                // a creator, a write; then a hit.
                let key = format!("k{i}");
                for _ in 0..2 {
                    let v: String = c
                        .get_or_create(&key, || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, String>(format!("v{i}"))
                        })
                        .await
                        .unwrap();
                    assert_eq!(v, format!("v{i}"));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1_000);
    let (threads_after, helpers_after, clients_after) = (
        all_threads(),
        carboy_call_threads(),
        connected_clients(&server),
    );
    println!(
        "threads {threads} -> {threads_after}; carboy helper/lease threads {helpers} -> \
         {helpers_after}; connected_clients {clients} -> {clients_after}"
    );
    assert_eq!(
        helpers_after, helpers,
        "carboy started helper or lease-keeper threads for async calls"
    );
    // The calls ran on the multiplexed connection; the release tasks may
    // still be finishing, on it too.
    assert!(
        clients_after <= clients + 1,
        "connections grew from {clients} to {clients_after} over 1,000 async calls"
    );
}

#[test]
fn killed_server_gives_typed_errors() {
    let Some(mut server) = RedisServer::start("killed_server_gives_typed_errors") else {
        return;
    };
    let addr = server.addr();
    let runtime = multi_thread();
    let c = cache(&server.url(), "faults");
    runtime.block_on(async {
        let v: String = c
            .get_or_create("k", || async { Ok::<_, String>("before".to_string()) })
            .await
            .unwrap();
        assert_eq!(v, "before");
    });
    server.kill();
    let bound = Duration::from_millis(2 * TIMEOUT_MS) + Duration::from_secs(2);
    runtime.block_on(async {
        for key in ["k", "other"] {
            let started = Instant::now();
            let r: Result<String, _> = c
                .get_or_create(key, || async { Ok::<_, String>("during".to_string()) })
                .await;
            let took = started.elapsed();
            let Err(CreateError::Cache(err)) = &r else {
                panic!("{key}: expected a cache error, got {r:?}");
            };
            let carboy::Error::Backend { source, .. } = err else {
                panic!("{key}: expected Error::Backend, got {err:?}");
            };
            let failure = source
                .downcast_ref::<RedisFailure>()
                .unwrap_or_else(|| panic!("{key}: the source is not a RedisFailure: {source}"));
            assert_eq!(failure.server, addr, "{key}: {failure}");
            assert!(took <= bound, "{key}: took {took:?}");
        }
    });
    server.restart();
    runtime.block_on(async {
        let v: String = c
            .get_or_create("k", || async { Ok::<_, String>("after".to_string()) })
            .await
            .unwrap();
        assert_eq!(v, "after", "the restarted server is empty: created again");
    });
}

#[test]
fn stopped_server_costs_the_timeout() {
    let Some(server) = RedisServer::start("stopped_server_costs_the_timeout") else {
        return;
    };
    let runtime = multi_thread();
    let c = cache(&server.url(), "stopped");
    runtime.block_on(async {
        c.set("k", "v").await.unwrap();
    });
    server.signal("STOP");
    let bound = Duration::from_millis(2 * TIMEOUT_MS) + Duration::from_secs(2);
    let outcome = runtime.block_on(async {
        let started = Instant::now();
        let r = c.get::<String>("k").await;
        (r, started.elapsed())
    });
    server.signal("CONT");
    let (r, took) = outcome;
    let Err(carboy::Error::Backend { source, .. }) = &r else {
        panic!("expected Error::Backend from a stopped server, got {r:?}");
    };
    let failure = source
        .downcast_ref::<RedisFailure>()
        .unwrap_or_else(|| panic!("the source is not a RedisFailure: {source}"));
    assert!(failure.timed_out, "{failure}");
    assert_eq!(failure.server, server.addr(), "{failure}");
    assert!(took <= bound, "took {took:?}");
    runtime.block_on(async {
        assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    });
}

#[test]
fn dropped_creator_releases_the_lock() {
    let Some(server) = RedisServer::start("dropped_creator_releases_the_lock") else {
        return;
    };
    let runtime = multi_thread();
    let (first, second) = (
        cache(&server.url(), "cancel"),
        cache(&server.url(), "cancel"),
    );
    runtime.block_on(async {
        network::cancelled_creator_frees_the_lock(first, second, || {
            let held = server.cli(&["--scan", "--pattern", "carboy:{cancel}#lock*"]);
            !held.trim().is_empty()
        })
        .await;
        no_lock_left(&server, "cancel").await;
    });
}
