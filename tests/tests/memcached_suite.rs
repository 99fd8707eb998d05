//! The published conformance suite (`carboy::cache::testing`) against the
//! memcached backend on real servers: one server, and two servers with the
//! keys spread over both, its native async cases on a tokio runtime
//! included. Also: the factory's settings (bad values named),
//! both type names registered by one call, keys and values at memcached's
//! limits.

use std::sync::Arc;
use std::time::Duration;

use carboy::cache::testing::Suite;
use carboy::cache::{Backend, BackendConfig, BackendFactory, CacheManager};
use carboy_memcached::{MemcachedFactory, MemcachedNamespace};
use carboy_tests::memcached_server::MemcachedServer;

/// The cases a memcached namespace cannot run, and the capability each
/// needs: memcached lists no keys, keeps its own time, has no change stamp.
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

#[test]
fn one_server() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    conforms(on_tokio(
        Suite::new("memcached", Arc::new(MemcachedFactory::new()))
            .option("url", &server.address())
            .option("item_size_max", "2m"),
    ));
}

#[test]
fn two_servers_keys_spread() {
    let (Some(a), Some(b)) = (MemcachedServer::start(), MemcachedServer::start()) else {
        return;
    };
    let url = format!("{};{}", a.address(), b.address());
    conforms(on_tokio(
        Suite::new("memcached x2", Arc::new(MemcachedFactory::new()))
            .option("url", &url)
            .option("item_size_max", "2m")
            .option("key_prefix", "suite:"),
    ));
    // Both servers hold keys.
    let ns = namespace(&url, "spread");
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..64u32 {
        let key = format!("k{i}");
        ns.set(key.as_bytes(), b"v", None).unwrap();
        *on.entry(ns.server_of(key.as_bytes()).to_string())
            .or_default() += 1;
    }
    assert_eq!(on.len(), 2, "64 keys all on one server: {on:?}");
    // One multi-get over both servers, answers in the order asked.
    let keys: Vec<String> = (0..70u32).map(|i| format!("k{i}")).collect();
    let asked: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let got = ns.get_many(&asked).unwrap();
    for (i, v) in got.iter().enumerate() {
        let want = (i < 64).then(|| b"v".to_vec());
        assert_eq!(*v, want, "{}", keys[i]);
    }
    assert!(ns.get_many(&[]).unwrap().is_empty());
    assert!(
        a.stat("curr_items").unwrap() >= on[&a.address()] as u64
            && b.stat("curr_items").unwrap() >= on[&b.address()] as u64,
        "{on:?}"
    );
}

fn namespace(url: &str, ns: &str) -> Arc<MemcachedNamespace> {
    let mut config = BackendConfig::new("memcached");
    config.options.insert("url".into(), url.into());
    MemcachedFactory::new().open_namespace(ns, &config).unwrap()
}

#[test]
fn both_names_registered_by_one_call() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    carboy_memcached::register().unwrap();
    for kind in ["memcached", "ext:memcached"] {
        let manager = CacheManager::builder()
            .backend(kind)
            .option("url", server.address())
            .expire(Duration::from_secs(60))
            .build()
            .unwrap();
        let c = manager.get_cache("names").unwrap();
        c.set(kind, &1u8).unwrap();
        assert_eq!(c.get::<u8>(kind).unwrap(), Some(1), "{kind}");
    }
    // Beaker's settings, switched from `file` by changing the type and
    // adding the url.
    let manager = CacheManager::from_settings([
        ("beaker.cache.type", "ext:memcached"),
        ("beaker.cache.url", server.address().as_str()),
        ("beaker.cache.expire", "60"),
        ("beaker.cache.regions", "short_term"),
        ("beaker.cache.short_term.expire", "10"),
    ])
    .unwrap();
    let pages = manager
        .region("short_term")
        .unwrap()
        .cache("pages")
        .unwrap();
    let html: String = pages
        .get_or_create("/", || Ok::<_, String>("<h1>hi</h1>".into()))
        .unwrap();
    assert_eq!(html, "<h1>hi</h1>");
    let entry = pages.get_entry::<String>("/").unwrap().unwrap();
    assert_eq!(
        entry.expires_unix_ms.map(|e| e - entry.created_unix_ms),
        Some(10_000),
        "the region's expiry"
    );
    // A setting the backend does not take, and a bad value, fail at build.
    let err = CacheManager::builder()
        .backend("memcached")
        .option("url", server.address())
        .option("ttl", "5")
        .build()
        .unwrap_err();
    assert!(matches!(err, carboy::Error::InvalidSetting { .. }), "{err}");
    for (name, value) in [("timeout", "-1"), ("url", "")] {
        let err = CacheManager::builder()
            .backend("memcached")
            .option("url", server.address())
            .option(name, value)
            .build()
            .unwrap_err();
        match err {
            carboy::Error::InvalidOption { name: got, .. } => {
                assert_eq!(got, format!("cache.{name}"))
            }
            other => panic!("{name}={value}: {other}"),
        }
    }
    let err = CacheManager::builder()
        .backend("memcached")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cache.url"), "{err}");
}

#[test]
fn keys_and_values_at_memcacheds_limits() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let mut config = BackendConfig::new("memcached");
    config.options.insert("url".into(), server.address());
    config.options.insert("item_size_max".into(), "2m".into());
    let factory = MemcachedFactory::new();
    let long_ns = "n".repeat(500);
    for ns in ["plain", "with space/and#", long_ns.as_str()] {
        let b = factory.open(ns, &config, &Default::default()).unwrap();
        for key in [&b"x"[..], b"", b"a b\r\n", &[0xff; 1000], b"#lock/x"] {
            b.set(key, key, None).unwrap();
            assert_eq!(b.get(key).unwrap().as_deref(), Some(key), "{ns} {key:?}");
        }
    }
    let b = factory.open("big", &config, &Default::default()).unwrap();
    let fits = vec![7u8; (2 << 20) - 200];
    b.set(b"fits", &fits, None).unwrap();
    assert_eq!(b.get(b"fits").unwrap().as_deref(), Some(&fits[..]));
    let err = b.set(b"huge", &vec![7u8; 2 << 20], None).unwrap_err();
    assert!(matches!(err, carboy::Error::ValueTooLong { .. }), "{err}");
    // A server whose -I is below the setting refuses it: the same typed error.
    config.options.insert("item_size_max".into(), "8m".into());
    let b = factory.open("big", &config, &Default::default()).unwrap();
    let err = b.set(b"huge", &vec![7u8; 3 << 20], None).unwrap_err();
    assert!(matches!(err, carboy::Error::ValueTooLong { .. }), "{err}");
    // TTLs longer than memcached's 30-day relative limit are not read as a
    // time in 1970 (which would expire the entry at once).
    let b = factory.open("ttl", &config, &Default::default()).unwrap();
    for days in [29u64, 31, 365, 100 * 365] {
        let key = format!("d{days}");
        b.set(
            key.as_bytes(),
            b"v",
            Some(Duration::from_secs(days * 86_400)),
        )
        .unwrap();
        assert!(b.get(key.as_bytes()).unwrap().is_some(), "{days} days");
    }
}
