//! The redis backend (`carboy-redis`) on real servers: the published
//! conformance suite against a standalone `redis-server` and against a
//! three-master cluster (its native async cases on a tokio runtime
//! included), what it stores where (hash tags, hashed long
//! keys, TTLs kept by `update`), the capabilities it declares from the
//! server's eviction policy, and its settings' errors.

use std::sync::Arc;

use carboy::cache::testing::Suite;
use carboy::cache::{BackendFactory, CacheManager};
use carboy_redis::RedisFactory;
use carboy_tests::redis_server::{RedisCluster, RedisServer};

/// The cases the redis backend cannot run: it declares neither key
/// listing nor expiry on carboy's clock, and a change stamp only for the
/// pinned markers namespace (the suite's case opens an ordinary one;
/// `redis_tracking.rs` tests the markers' stamp).
const SKIPPED: &[(&str, &str)] = &[
    ("listing_and_clearing", "list_keys"),
    ("ttl_against_the_clock", "expires_by_clock"),
    ("update_keeps_the_ttl", "expires_by_clock"),
    ("change_stamp_moves_with_content", "change_stamp"),
];

#[path = "support/network.rs"]
mod network;
#[path = "support/runtimes.rs"]
mod runtimes;
use network::on_tokio;

fn conforms(suite: Suite) {
    network::conforms(suite, SKIPPED);
}

fn factory() -> Arc<dyn BackendFactory> {
    Arc::new(RedisFactory::new())
}

#[test]
fn conformance_standalone() {
    let Some(server) = RedisServer::start("conformance_standalone") else {
        return;
    };
    conforms(on_tokio(
        Suite::new("redis", factory())
            .option("url", &server.url())
            .option("prefix", "suite:"),
    ));
    // It stored under its prefix, in hash-tagged namespaces.
    let keys = server.cli(&["--scan", "--pattern", "suite:*"]);
    assert!(keys.contains("suite:{users}:"), "{keys}");
    assert!(keys.contains("suite:{carboy:markers}:"), "{keys}");
    assert!(!keys.contains("#lock"), "no creation lock is left: {keys}");
}

#[test]
fn conformance_cluster() {
    let Some(cluster) = RedisCluster::start("conformance_cluster") else {
        return;
    };
    conforms(on_tokio(
        Suite::new("redis cluster", factory())
            .option("url", &cluster.url())
            .option("prefix", "suite:"),
    ));
    // Each namespace's keys share a slot; the namespaces spread over the
    // masters.
    let mut holding = 0;
    for node in cluster.nodes() {
        let keys = node.cli(&["--scan", "--pattern", "suite:*"]);
        if !keys.trim().is_empty() {
            holding += 1;
        }
    }
    assert!(
        holding >= 2,
        "the suite's namespaces all hashed to one master"
    );
}

fn manager(url: &str, extra: &[(&str, &str)]) -> carboy::Result<CacheManager> {
    let mut b = CacheManager::builder()
        .backend_factory("redis", factory())
        .option("url", url);
    for (k, v) in extra {
        b = b.option(k, *v);
    }
    b.build()
}

#[test]
fn keys_ttls_and_capabilities() {
    let Some(server) = RedisServer::start("keys_ttls_and_capabilities") else {
        return;
    };
    let m = manager(&server.url(), &[("max_key_length", "200")]).unwrap();
    let c = m.get_cache("ns").unwrap();
    let b = Arc::clone(c.backend());
    // A long key is stored under its SHA-256, and read back.
    let long = vec![b'x'; 300];
    b.set(&long, b"v", None).unwrap();
    assert_eq!(b.get(&long).unwrap().as_deref(), Some(&b"v"[..]));
    let keys = server.cli(&["--scan", "--pattern", "carboy:{ns}*"]);
    assert!(keys.contains("carboy:{ns}#sha256:"), "{keys}");
    // A TTL is the server's PX; update keeps it.
    b.set(b"t", b"1", Some(std::time::Duration::from_secs(100)))
        .unwrap();
    b.update(b"t", &mut |cur| {
        assert_eq!(cur, Some(&b"1"[..]));
        Some(b"2".to_vec())
    })
    .unwrap();
    let pttl: i64 = server
        .cli(&["pttl", "carboy:{ns}:t"])
        .trim()
        .parse()
        .unwrap();
    assert!((1..=100_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(b.get(b"t").unwrap().as_deref(), Some(&b"2"[..]));
    // Default policy noeviction: nothing is evicted.
    let caps = b.capabilities();
    assert!(caps.never_evicts && caps.creation_locks && caps.atomic_update);
    assert!(!caps.list_keys && !caps.change_stamp && !caps.expires_by_clock);

    // Under volatile-lru, only the pinned markers are safe.
    server.cli(&["config", "set", "maxmemory-policy", "volatile-lru"]);
    let m = manager(&server.url(), &[("prefix", "v:")]).unwrap();
    let data = m.get_cache("ns").unwrap();
    assert!(!data.backend().capabilities().never_evicts);
    let markers = RedisFactory::new()
        .open(
            "carboy:markers",
            &config(&server.url(), "v2:"),
            &carboy::cache::OpenOptions::new().pinned(true),
        )
        .unwrap();
    assert!(markers.capabilities().never_evicts);
    // Under allkeys-lru, nothing is.
    server.cli(&["config", "set", "maxmemory-policy", "allkeys-lru"]);
    let markers = RedisFactory::new()
        .open(
            "carboy:markers",
            &config(&server.url(), "v3:"),
            &carboy::cache::OpenOptions::new().pinned(true),
        )
        .unwrap();
    assert!(!markers.capabilities().never_evicts);
}

/// Two databases of one server, through one factory: two stores.
#[test]
fn databases_are_apart() {
    let Some(server) = RedisServer::start("databases_are_apart") else {
        return;
    };
    let f = factory();
    let open = |db: u32| {
        CacheManager::builder()
            .backend_factory("redis", Arc::clone(&f))
            .option("url", format!("redis://127.0.0.1:{}/{db}", server.port()))
            .build()
            .unwrap()
            .get_cache("ns")
            .unwrap()
    };
    let (zero, one) = (open(0), open(1));
    zero.set("k", "in 0").unwrap();
    assert_eq!(one.get::<String>("k").unwrap(), None);
    one.set("k", "in 1").unwrap();
    assert_eq!(zero.get::<String>("k").unwrap().as_deref(), Some("in 0"));
    assert_eq!(
        server.cli(&["-n", "1", "exists", "carboy:{ns}:k"]).trim(),
        "1"
    );
}

fn config(url: &str, prefix: &str) -> carboy::cache::BackendConfig {
    let mut c = carboy::cache::BackendConfig::new("redis");
    c.options.insert("url".into(), url.into());
    c.options.insert("prefix".into(), prefix.into());
    c
}

#[test]
fn bad_settings_are_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("url", "http://x", "cache.url"),
        ("url", "redis://a:1,,redis://b:2", "cache.url"),
        ("url", "redis://a:1/3,redis://b:2", "cache.url"),
        ("cluster", "maybe", "cache.cluster"),
        ("connect_timeout_ms", "0", "cache.connect_timeout_ms"),
        ("command_timeout_ms", "soon", "cache.command_timeout_ms"),
        ("pool_size", "0", "cache.pool_size"),
        ("prefix", "a{b", "cache.prefix"),
        ("lock_lease_ms", "10", "cache.lock_lease_ms"),
        ("max_key_length", "5", "cache.max_key_length"),
    ];
    for (name, value, named) in cases {
        let err = manager("redis://127.0.0.1:1/0", &[(name, value)]).unwrap_err();
        assert!(
            matches!(err, carboy::Error::InvalidOption { name, .. } if name == *named),
            "{name} = {value}: {err}"
        );
    }
    let err = manager("redis://127.0.0.1:1/0", &[("pool", "3")]).unwrap_err();
    assert!(err.to_string().contains("cache.pool"), "{err}");
    // Beaker's settings through the registry: both names.
    carboy_redis::register().unwrap();
    for kind in ["redis", "ext:redis"] {
        let err = CacheManager::from_settings([
            ("cache.type", kind),
            ("cache.url", "redis://127.0.0.1:1/0"),
            ("cache.pool_size", "none"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("cache.pool_size"), "{err}");
    }
}

/// Beaker's settings, through the registry: `cache.type` switched from
/// `file` to `ext:redis` (or `redis`) with a `cache.url`, and nothing else
/// changes for the code.
#[test]
fn beaker_settings_switch_to_redis() {
    let Some(server) = RedisServer::start("beaker_settings_switch_to_redis") else {
        return;
    };
    carboy_redis::register().unwrap();
    let url = server.url();
    for (kind, prefix) in [("ext:redis", "beaker:"), ("redis", "plain:")] {
        let manager = CacheManager::from_settings([
            ("cache.type", kind),
            ("cache.url", url.as_str()),
            ("cache.prefix", prefix),
            ("cache.expire", "300"),
            ("cache.regions", "short_term"),
            ("cache.short_term.expire", "60"),
        ])
        .unwrap();
        let users = manager.get_cache("users").unwrap();
        users.set("u1", "alice").unwrap();
        let pages = manager
            .region("short_term")
            .unwrap()
            .cache("pages")
            .unwrap();
        let page: String = pages
            .get_or_create("home", || Ok::<_, String>("<html>".to_string()))
            .unwrap();
        assert_eq!(page, "<html>");
        let keys = server.cli(&["--scan", "--pattern", &format!("{prefix}*")]);
        assert!(
            keys.contains(&format!("{prefix}{{users}}:u1")),
            "{kind}: {keys}"
        );
        assert!(
            keys.contains(&format!("{prefix}{{pages}}:home")),
            "{kind}: {keys}"
        );
        assert_eq!(users.get::<String>("u1").unwrap().as_deref(), Some("alice"));
    }
}
