//! The redis backend when its server fails, during a run of
//! `get_or_create` calls: a killed server gives typed errors
//! (`Error::Backend` whose source is a `RedisFailure` naming the server
//! and the operation) within the configured timeouts, never a panic or a
//! hang; a stopped server (SIGSTOP) costs at most a timeout per call; a
//! restarted or continued server is used again by the same manager, from
//! the first call on. Also: a server whose eviction policy may drop
//! anything (`--maxmemory` small, `allkeys-lru`), made to evict the
//! invalidation markers, never serves an invalidated value as fresh.
//!
//! carboy has no setting yet that makes `get_or_create` run its creator
//! uncached on a cache outage: today the outage is `CreateError::Cache`,
//! and these tests pin that down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carboy::cache::{Cache, CacheManager, CreateError, Invalidation};
use carboy_redis::RedisFailure;
use carboy_tests::redis_server::{RedisCluster, RedisServer};

const TIMEOUT_MS: u64 = 300;

fn cache(url: &str) -> Cache {
    cache_on(url, Arc::new(carboy_redis::RedisFactory::new()))
}

fn cache_on(url: &str, factory: Arc<carboy_redis::RedisFactory>) -> Cache {
    CacheManager::builder()
        .backend_factory("redis", factory)
        .option("url", url)
        .option("connect_timeout_ms", TIMEOUT_MS.to_string())
        .option("command_timeout_ms", TIMEOUT_MS.to_string())
        .expire(Duration::from_secs(60))
        .build()
        .unwrap()
        .get_cache("faults")
        .unwrap()
}

/// The longest a failing call may take: a connect and a command timeout,
/// plus scheduling slack on a loaded machine.
fn bound() -> Duration {
    Duration::from_millis(2 * TIMEOUT_MS) + Duration::from_secs(2)
}

/// One `get_or_create`, timed.
fn call(c: &Cache, key: &str, runs: &mut u32) -> (Result<String, CreateError<String>>, Duration) {
    let started = Instant::now();
    let r = c.get_or_create(key, || {
        *runs += 1;
        Ok::<_, String>(format!("value of {key}"))
    });
    (r, started.elapsed())
}

/// Asserts `r` is the backend's typed failure naming `server`; returns it.
fn failure<'a>(r: &'a Result<String, CreateError<String>>, server: &str) -> &'a RedisFailure {
    let Err(CreateError::Cache(err)) = r else {
        panic!("expected a cache error, got {r:?}");
    };
    let carboy::Error::Backend {
        backend, source, ..
    } = err
    else {
        panic!("expected Error::Backend, got {err:?}");
    };
    assert_eq!(backend, "redis");
    let f = source
        .downcast_ref::<RedisFailure>()
        .unwrap_or_else(|| panic!("the source is not a RedisFailure: {source:?}"));
    assert_eq!(f.server, server, "{err}");
    assert!(err.to_string().contains(server), "{err}");
    f
}

#[test]
fn kill_and_restart() {
    let Some(mut server) = RedisServer::start("kill_and_restart") else {
        return;
    };
    let c = cache(&server.url());
    let mut runs = 0;
    for i in 0..5 {
        let (r, _) = call(&c, &format!("k{i}"), &mut runs);
        assert_eq!(r.unwrap(), format!("value of k{i}"));
    }
    assert_eq!(runs, 5);
    server.kill();
    for i in 0..5 {
        let (r, took) = call(&c, &format!("k{i}"), &mut runs);
        let f = failure(&r, &server.addr());
        assert!(!f.timed_out, "a dead server refuses at once: {f}");
        assert!(took < bound(), "a call on a dead server took {took:?}");
    }
    assert_eq!(runs, 5, "no creator ran during the outage");
    assert!(c.set("x", "y").is_err());
    assert!(c.get::<String>("x").is_err());
    server.restart();
    // The same manager, from the first call on; the restarted server is
    // empty, so values are created again.
    for i in 0..5 {
        let (r, _) = call(&c, &format!("k{i}"), &mut runs);
        assert_eq!(r.unwrap(), format!("value of k{i}"));
    }
    assert_eq!(runs, 10);
    let (r, _) = call(&c, "k0", &mut runs);
    assert_eq!(r.unwrap(), "value of k0");
    assert_eq!(runs, 10, "a hit after the restart");
    // Restarted between two calls, with idle connections to the old
    // process in the pool: the next call still succeeds.
    server.restart();
    let (r, _) = call(&c, "k0", &mut runs);
    assert_eq!(r.unwrap(), "value of k0");
    assert_eq!(runs, 11, "created again on the empty server");
}

#[test]
fn stop_and_continue() {
    let Some(server) = RedisServer::start("stop_and_continue") else {
        return;
    };
    let c = cache(&server.url());
    let mut runs = 0;
    let (r, _) = call(&c, "k", &mut runs);
    assert_eq!(r.unwrap(), "value of k");
    server.signal("STOP");
    for key in ["k", "other"] {
        let (r, took) = call(&c, key, &mut runs);
        let f = failure(&r, &server.addr());
        assert!(f.timed_out, "a stopped server times out: {f}");
        assert!(took < bound(), "a call on a stopped server took {took:?}");
        assert!(
            took >= Duration::from_millis(TIMEOUT_MS) / 2,
            "{took:?}: no timeout was waited?"
        );
    }
    let started = Instant::now();
    assert!(c.set("x", "y").is_err());
    assert!(started.elapsed() < bound());
    server.signal("CONT");
    let (r, _) = call(&c, "k", &mut runs);
    assert_eq!(r.unwrap(), "value of k");
    let (r, _) = call(&c, "other", &mut runs);
    assert_eq!(r.unwrap(), "value of other");
    assert_eq!(runs, 2, "k was a hit, other was created after the stop");
}

/// Fills a server limited to a few megabytes with `allkeys-lru` until the
/// markers are evicted, then reads values that were invalidated before:
/// every one is a miss (or regenerated), never the old value as fresh.
#[test]
fn evicted_markers_err_toward_a_miss() {
    let Some(server) = RedisServer::start_with(
        "evicted_markers_err_toward_a_miss",
        &["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"],
    ) else {
        return;
    };
    let factory = Arc::new(carboy_redis::RedisFactory::new());
    let c = cache_on(&server.url(), Arc::clone(&factory));
    assert!(
        !c.backend().capabilities().never_evicts,
        "allkeys-lru may evict anything"
    );
    // The markers namespace, as the cache opened it: it keeps its markers
    // in memory under this change stamp.
    let mut config = carboy::cache::BackendConfig::new("redis");
    for (k, v) in [
        ("url", server.url()),
        ("connect_timeout_ms", TIMEOUT_MS.to_string()),
        ("command_timeout_ms", TIMEOUT_MS.to_string()),
    ] {
        config.options.insert(k.into(), v);
    }
    let markers = carboy::cache::BackendFactory::open(
        &*factory,
        "carboy:markers",
        &config,
        &carboy::cache::OpenOptions::new().pinned(true),
    )
    .unwrap();
    assert!(markers.capabilities().change_stamp);
    let marker = "carboy:{carboy:markers}:ns:faults";
    c.set("precious", "old").unwrap();
    c.invalidate_all(Invalidation::Hard).unwrap();
    assert_eq!(c.get::<String>("precious").unwrap(), None);
    assert_eq!(server.cli(&["exists", marker]).trim(), "1");
    // The invalidated value's bytes, to put back if eviction takes them
    // too: the case to test is a value that outlives its marker.
    let old = c
        .backend()
        .get(b"precious")
        .unwrap()
        .expect("stored")
        .to_vec();
    // Fill until the marker is evicted (each round writes 1 MiB more than
    // the limit, in values that are never read).
    let filler = cache(&server.url());
    factory.sync_invalidations().unwrap();
    let stamp = markers.change_stamp().unwrap();
    assert_eq!(stamp, markers.change_stamp().unwrap(), "tracking");
    let blob = vec![7u8; 64 * 1024];
    let mut round = 0;
    while server.cli(&["exists", marker]).trim() == "1" {
        round += 1;
        assert!(round < 200, "the marker was never evicted");
        for i in 0..80 {
            filler
                .backend()
                .set(format!("fill-{round}-{i}").as_bytes(), &blob, None)
                .unwrap();
        }
    }
    c.backend().set(b"precious", &old, None).unwrap();
    // redis's message about the eviction has arrived once this returns;
    // it moved the stamp (a sync alone does not), so the cache reads the
    // marker again and finds it lost.
    factory.sync_invalidations().unwrap();
    assert_ne!(
        markers.change_stamp().unwrap(),
        stamp,
        "the eviction of a marker moved the change stamp"
    );
    assert_eq!(
        c.get::<String>("precious").unwrap(),
        None,
        "an invalidated value came back as fresh after its marker was evicted"
    );
    let mut runs = 0;
    let (r, _) = call(&c, "precious", &mut runs);
    assert_eq!(r.unwrap(), "value of precious");
    assert_eq!(runs, 1);
    assert_eq!(
        c.get::<String>("precious").unwrap().as_deref(),
        Some("value of precious")
    );
}

/// A cluster whose master holding the namespace's slot is killed: typed
/// errors within the timeouts; namespaces on the other masters still
/// work; once the master is back, the same manager uses it again.
#[test]
fn cluster_master_killed_and_restarted() {
    let Some(mut cluster) = RedisCluster::start("cluster_master_killed_and_restarted") else {
        return;
    };
    let url = cluster.url();
    let m = CacheManager::builder()
        .backend_factory("redis", Arc::new(carboy_redis::RedisFactory::new()))
        .option("url", url.as_str())
        .option("connect_timeout_ms", TIMEOUT_MS.to_string())
        .option("command_timeout_ms", TIMEOUT_MS.to_string())
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let owner = |ns: &str| {
        let slot: u16 = cluster.nodes()[0]
            .cli(&["cluster", "keyslot", &format!("carboy:{{{ns}}}:k")])
            .trim()
            .parse()
            .unwrap();
        cluster.owner_of(slot)
    };
    // A namespace on a master that does not hold the markers (which
    // every call reads), and one on another master.
    let markers = owner("carboy:markers");
    let names: Vec<String> = (0..100).map(|i| format!("ns{i}")).collect();
    let victim_ns = names
        .iter()
        .find(|ns| owner(ns) != markers)
        .expect("a namespace away from the markers");
    let victim = owner(victim_ns);
    let survivor_ns = names
        .iter()
        .find(|ns| owner(ns) != victim)
        .expect("a namespace on another master");
    let (a, b) = (
        m.get_cache(victim_ns).unwrap(),
        m.get_cache(survivor_ns).unwrap(),
    );
    let mut runs = 0;
    assert_eq!(call(&a, "k", &mut runs).0.unwrap(), "value of k");
    assert_eq!(call(&b, "k", &mut runs).0.unwrap(), "value of k");
    cluster.node_mut(victim).kill();
    for _ in 0..3 {
        let (r, took) = call(&a, "k", &mut runs);
        let err = match &r {
            Err(CreateError::Cache(e)) => e.to_string(),
            other => panic!("expected a cache error, got {other:?}"),
        };
        assert!(err.contains("redis"), "{err}");
        assert!(took < bound() * 3, "a call on a dead master took {took:?}");
        eprintln!("a call on a dead master failed after {took:?}: {err}");
    }
    // The other masters still serve their namespaces (a hit).
    assert_eq!(call(&b, "k", &mut runs).0.unwrap(), "value of k");
    assert_eq!(runs, 2);
    cluster.node_mut(victim).restart();
    // The restarted master keeps its slots (nodes.conf in its directory)
    // but lost its data: the value is created again.
    cluster.wait_ok();
    // The first call after the cluster is whole again succeeds.
    let (r, _) = call(&a, "k", &mut runs);
    assert_eq!(
        r.unwrap(),
        "value of k",
        "the same manager uses the master again"
    );
    assert_eq!(runs, 3, "created again on the emptied master");

    // Stopped (for less than the cluster's node timeout): a typed error
    // within the timeouts, then served again once it continues.
    cluster.nodes()[victim].signal("STOP");
    let (r, took) = call(&a, "k", &mut runs);
    assert!(
        matches!(r, Err(CreateError::Cache(carboy::Error::Backend { .. }))),
        "{r:?}"
    );
    assert!(took < bound(), "a call on a stopped master took {took:?}");
    eprintln!("a call on a stopped master failed after {took:?}: {r:?}");
    cluster.nodes()[victim].signal("CONT");
    let (r, _) = call(&a, "k", &mut runs);
    assert_eq!(r.unwrap(), "value of k");
    assert_eq!(runs, 3, "a hit once the master continues");
}
