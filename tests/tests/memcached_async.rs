//! The async front (`AsyncCache`) on the memcached backend's native async
//! path (memcache's tokio meta client), on a real server: get-or-create
//! hits, misses and invalidations seen across an async and a blocking
//! front; 200 tasks on one missing key run one creator; a dropped
//! `get_or_create` future releases its memcached lock at once; a hit is
//! one round trip (value and markers in one pipelined multi-get, counted
//! by a loopback proxy); a stopped server (SIGSTOP) makes calls time out
//! with a typed error naming it while a ticker task on the same
//! current-thread runtime keeps ticking (no read blocks the worker).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use carboy::cache::{
    AsyncCache, Backend, BackendConfig, Cache, CacheManager, CreateError, Invalidation,
    RegionSettings,
};
use carboy_memcached::{FailureKind, MemcachedFactory, MemcachedNamespace, ServerError};
use carboy_tests::memcached_server::MemcachedServer;

const TASKS: usize = 200;
const TIMEOUT: Duration = Duration::from_millis(300);

/// A manager of its own (its own factory, so its own flights, clients and
/// connections: as another process would have), with region `r`.
fn manager(url: &str) -> CacheManager {
    CacheManager::builder()
        .backend_factory("memcached", Arc::new(MemcachedFactory::new()))
        .option("url", url)
        .option("timeout", format!("{}", TIMEOUT.as_secs_f64()))
        .expire(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(10))
        .region("r", RegionSettings::new())
        .build()
        .unwrap()
}

fn cache(url: &str, ns: &str) -> AsyncCache {
    manager(url).get_cache(ns).unwrap().to_async()
}

#[path = "support/runtimes.rs"]
mod runtimes;
use runtimes::{current_thread, multi_thread};
#[path = "support/network.rs"]
mod network;

/// The raw namespace `ns` on `url` (its own factory), to look at the
/// creation lock directly.
fn raw(url: &str, ns: &str) -> Arc<MemcachedNamespace> {
    let mut config = BackendConfig::new("memcached");
    config.options.insert("url".into(), url.into());
    MemcachedFactory::new().open_namespace(ns, &config).unwrap()
}

/// True when someone holds the creation lock of `key` in `ns` (a try
/// that got it releases it at once, synchronously).
fn lock_held(ns: &MemcachedNamespace, key: &[u8]) -> bool {
    ns.lock_creation(key, 0, false).unwrap().is_none()
}

/// Waits (on the runtime, so that a spawned release runs) until nobody
/// holds `key`'s creation lock; fails after 5 s, far beyond a release's
/// round trip and far below the lock's 30 s lease.
async fn lock_freed(ns: &MemcachedNamespace, key: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while lock_held(ns, key) {
        assert!(Instant::now() < deadline, "the lock of {key:?} is left");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `ServerError` inside a failed call.
fn server_error(err: &carboy::Error) -> &ServerError {
    let carboy::Error::Backend { source, .. } = err else {
        panic!("expected Error::Backend, got {err:?}");
    };
    source
        .downcast_ref::<ServerError>()
        .unwrap_or_else(|| panic!("the source is not a ServerError: {source}"))
}

#[test]
fn hit_miss_and_invalidate_across_fronts() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let (am, bm) = (manager(&url), manager(&url));
    let a = am.region("r").unwrap().cache("fronts").unwrap().to_async();
    let b: Cache = bm.region("r").unwrap().cache("fronts").unwrap();
    let runtime = multi_thread();
    let runs = AtomicUsize::new(0);
    let create = |v: &'static str| {
        let runs = &runs;
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(v.to_string())
        }
    };
    runtime.block_on(async {
        // Miss: created through the async front, seen by the blocking one.
        let v: String = a.get_or_create("k", create("one")).await.unwrap();
        assert_eq!(v, "one");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(b.get::<String>("k").unwrap().as_deref(), Some("one"));
        // Hits, on both fronts.
        let v: String = a.get_or_create("k", create("two")).await.unwrap();
        assert_eq!(v, "one");
        let v: String = b
            .get_or_create("k", || Ok::<_, String>("three".into()))
            .unwrap();
        assert_eq!(v, "one");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "a hit ran the creator");
        assert!(a.contains("k").await.unwrap());
        let entry = a.get_entry::<String>("k").await.unwrap().unwrap();
        assert_eq!(entry.value, "one");
        assert!(!entry.stale);
        // The blocking front invalidates the key: the async one creates.
        b.invalidate("k", Invalidation::Hard).unwrap();
        assert_eq!(a.get::<String>("k").await.unwrap(), None);
        let v: String = a.get_or_create("k", create("four")).await.unwrap();
        assert_eq!(v, "four");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A namespace-wide invalidation by the blocking front (its marker,
        // read by the async front with the value): a miss.
        b.invalidate_all(Invalidation::Hard).unwrap();
        assert_eq!(a.get::<String>("k").await.unwrap(), None);
        assert!(!a.contains("k").await.unwrap());
        let v: String = a.get_or_create("k", create("five")).await.unwrap();
        assert_eq!(v, "five");
        // The region's marker, invalidated by the blocking side's manager.
        bm.region("r")
            .unwrap()
            .invalidate(Invalidation::Hard)
            .unwrap();
        assert_eq!(a.get::<String>("k").await.unwrap(), None);
        // A soft invalidation by the async front: stale, served while one
        // caller regenerates; the blocking front sees it stale too.
        a.set("s", "old").await.unwrap();
        assert_eq!(b.get::<String>("s").unwrap().as_deref(), Some("old"));
        a.invalidate_all(Invalidation::Soft).await.unwrap();
        let entry = b.get_entry::<String>("s").unwrap().unwrap();
        assert!(entry.stale, "{entry:?}");
        assert_eq!(a.get::<String>("s").await.unwrap(), None);
        let v: String = a.get_or_create("s", create("new")).await.unwrap();
        assert_eq!(v, "new");
        assert_eq!(b.get::<String>("s").unwrap().as_deref(), Some("new"));
        // Async writes are seen by the blocking front, and the other way.
        b.set("w", &7u32).unwrap();
        assert_eq!(a.get::<u32>("w").await.unwrap(), Some(7));
        assert!(a.remove("w").await.unwrap());
        assert_eq!(b.get::<u32>("w").unwrap(), None);
    });
}

/// 200 tasks, half through each of two managers, on one missing key: one
/// creator, one value, no lock left.
fn one_creator(runtime: tokio::runtime::Runtime, test: &str) {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let caches = [cache(&url, "once"), cache(&url, "once")];
    let raw = raw(&url, "once");
    let (runs, values) = runtime.block_on(async {
        let herd = network::one_key_herd(&caches, TASKS).await;
        lock_freed(&raw, b"k").await;
        herd
    });
    assert_eq!(runs, 1, "{test}: creators");
    assert!(
        values.iter().all(|v| *v == values[0]),
        "{test}: the tasks got different values"
    );
}

#[test]
fn one_creator_multi_thread() {
    one_creator(multi_thread(), "one_creator_multi_thread");
}

#[test]
fn one_creator_current_thread() {
    one_creator(current_thread(), "one_creator_current_thread");
}

#[test]
fn dropped_creator_releases_the_lock() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let (first, second) = (cache(&url, "cancel"), cache(&url, "cancel"));
    let raw = raw(&url, "cancel");
    let runtime = multi_thread();
    runtime.block_on(async {
        network::cancelled_creator_frees_the_lock(first, second, || lock_held(&raw, b"k")).await;
        lock_freed(&raw, b"k").await;
    });
}

/// A loopback TCP proxy in front of a server that counts round trips:
/// a "turn" starts when a client sends after the server last answered (or
/// first), so a pipelined batch is one turn and a request sent after
/// another's answer is a second one. Summed over every connection.
struct Proxy {
    addr: String,
    turns: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(server: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let turns = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&turns);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(&server) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                // Open: the client has sent since the server last answered.
                let open = Arc::new(AtomicBool::new(false));
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (open2, counted2) = (Arc::clone(&open), Arc::clone(&counted));
                std::thread::spawn(move || {
                    pump(client, upstream, |_| {
                        if !open2.swap(true, Ordering::SeqCst) {
                            counted2.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                });
                std::thread::spawn(move || pump(u2, c2, |_| open.store(false, Ordering::SeqCst)));
            }
        });
        Proxy { addr, turns }
    }

    fn turns(&self) -> usize {
        self.turns.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, calling `seen` before forwarding each read.
fn pump(mut from: TcpStream, mut to: TcpStream, seen: impl Fn(usize)) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen(n);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
fn a_hit_is_one_round_trip() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let proxy = Proxy::start(server.address());
    let m = manager(&proxy.addr);
    let plain = m.get_cache("trips").unwrap();
    let in_region = m.region("r").unwrap().cache("trips").unwrap();
    // Straight to the server, not through the proxy.
    let raw = raw(&server.address(), "trips");
    let runtime = current_thread();
    runtime.block_on(async {
        for (c, what) in [
            (plain.to_async(), "namespace"),
            (in_region.to_async(), "region"),
        ] {
            // Warm up: the runtime's client and its pooled connection.
            c.set("k", "v").await.unwrap();
            assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v"));
            let before = proxy.turns();
            for _ in 0..5 {
                let v: String = c
                    .get_or_create("k", || async { Ok::<_, String>("created".into()) })
                    .await
                    .unwrap();
                assert_eq!(v, "v", "{what}: not a hit");
            }
            assert_eq!(
                proxy.turns() - before,
                5,
                "{what}: five get_or_create hits took other than five round trips"
            );
            let before = proxy.turns();
            assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v"));
            assert!(c.contains("k").await.unwrap());
            assert!(c.get_entry::<String>("k").await.unwrap().is_some());
            assert_eq!(
                proxy.turns() - before,
                3,
                "{what}: get, contains and get_entry took other than one round trip each"
            );
            // A miss: the lookup's round trip, then the lock, the lookup
            // under it, the write, the release; not counted, only checked
            // (and its release, which the lock's task sends after the
            // call, waited for, so that it does not count in the next
            // round).
            let v: String = c
                .get_or_create("miss", || async { Ok::<_, String>("made".into()) })
                .await
                .unwrap();
            assert_eq!(v, "made");
            lock_freed(&raw, b"miss").await;
        }
    });
}

#[test]
fn stopped_server_times_out_without_blocking_the_worker() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let c = cache(&url, "stopped");
    let runtime = current_thread();
    runtime.block_on(async {
        c.set("k", "v").await.unwrap();
        assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    });
    server.signal("STOP");
    let ticks = Arc::new(AtomicUsize::new(0));
    let outcome = runtime.block_on(async {
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(10));
                loop {
                    every.tick().await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // Let the ticker start.
        while ticks.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let start = (ticks.load(Ordering::SeqCst), Instant::now());
        let got = c.get::<String>("k").await;
        let read = (ticks.load(Ordering::SeqCst) - start.0, start.1.elapsed());
        let start = (ticks.load(Ordering::SeqCst), Instant::now());
        let created: Result<String, _> = c
            .get_or_create("other", || async { Ok::<_, String>("x".into()) })
            .await;
        let create = (ticks.load(Ordering::SeqCst) - start.0, start.1.elapsed());
        ticker.abort();
        (got, read, created, create)
    });
    server.signal("CONT");
    let (got, (read_ticks, read_took), created, (create_ticks, create_took)) = outcome;
    let bound = TIMEOUT * 3 + Duration::from_secs(2);
    // The read: a typed timeout naming the server, within the bound.
    let err = got.expect_err("a stopped server answered");
    let e = server_error(&err);
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert_eq!(e.server, url, "{e}");
    assert_eq!(e.timeout, TIMEOUT, "{e}");
    assert!(
        read_took >= TIMEOUT / 2 && read_took <= bound,
        "took {read_took:?}"
    );
    // The ticker ticked all along (every 10 ms; a blocked worker would
    // have frozen it for the whole wait).
    let expected = |took: Duration| (took.as_millis() / 10 / 3) as usize;
    assert!(
        read_ticks >= expected(read_took).max(5),
        "the ticker ticked {read_ticks} times in {read_took:?}: the read blocked the worker"
    );
    // The same for get_or_create: a cache error naming the server.
    let Err(CreateError::Cache(err)) = &created else {
        panic!("expected a cache error, got {created:?}");
    };
    let e = server_error(err);
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert_eq!(e.server, url, "{e}");
    assert!(create_took <= bound, "took {create_took:?}");
    assert!(
        create_ticks >= expected(create_took).max(5),
        "the ticker ticked {create_ticks} times in {create_took:?}: get_or_create blocked the worker"
    );
    // Continued: used again, on a new connection (the timed-out one was
    // dropped).
    runtime.block_on(async {
        assert_eq!(c.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    });
}

/// `cache.max_connections` caps the connections a burst of concurrent
/// tasks dials: 200 tasks reading at once through a client capped at 2
/// open at most one more connection than the warm-up's (memcached's
/// `total_connections` also counts the one `stats` itself opens), and
/// all are answered. Without a cap (`0`) the same burst dials dozens.
#[test]
fn max_connections_caps_a_burst() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let burst = |cap: Option<&str>| -> u64 {
        let mut builder = CacheManager::builder()
            .backend_factory("memcached", Arc::new(MemcachedFactory::new()))
            .option("url", &url)
            .option("timeout", "5")
            .option("pool_size", "2")
            .expire(Duration::from_secs(60));
        builder = builder.option("max_connections", cap.unwrap_or("0"));
        let c = Arc::new(
            builder
                .build()
                .unwrap()
                .get_cache("burst")
                .unwrap()
                .to_async(),
        );
        multi_thread().block_on(async {
            c.set("k", &7u32).await.unwrap();
            // Warm: this runtime's client holds its connections.
            assert_eq!(c.get::<u32>("k").await.unwrap(), Some(7));
            let before = server.stat("total_connections").unwrap();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let c = Arc::clone(&c);
                    tokio::spawn(async move { c.get::<u32>("k").await })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap(), Some(7));
            }
            server.stat("total_connections").unwrap() - before
        })
    };
    let capped = burst(Some("2"));
    let uncapped = burst(None);
    eprintln!("connections dialed by {TASKS} tasks: capped at 2: {capped}, no cap: {uncapped}");
    // The second `stats` call's own connection, and at most the second of
    // the two the client may hold (the warm-up opened one).
    assert!(
        capped <= 2,
        "a client capped at 2 connections dialed {capped}"
    );
    assert!(
        uncapped > 4,
        "without the cap the burst should dial more ({uncapped}): the test cannot tell otherwise"
    );
}
