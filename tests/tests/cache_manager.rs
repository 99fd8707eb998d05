//! The cache manager's settings and policies: Beaker-style settings (both
//! prefixes) building the same manager as the builder, errors that name the
//! setting, `lock_dir`, `stale_for` (stale values dropped after their grace),
//! the bounded memory backend evicting, registered backends, and the
//! installed manager.

use std::sync::Arc;
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{
    Backend, BackendConfig, BackendFactory, CacheManager, MemoryFactory, OpenOptions,
    register_backend,
};

#[test]
fn settings_with_either_prefix_configure_regions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let locks = dir.path().join("locks");
    let (d, l) = (data.to_str().unwrap(), locks.to_str().unwrap());
    let manager = CacheManager::from_settings([
        ("beaker.cache.type", "file"),
        ("beaker.cache.data_dir", d),
        ("cache.lock_dir", l),
        ("cache.expire", "30"),
        ("cache.regions", "short_term, long_term"),
        ("cache.short_term.expire", "60"),
        ("cache.long_term.expire", "none"),
        ("cache.long_term.key_length", "8"),
        ("cache.durability", "sync"),
        ("session.type", "cookie"),
    ])
    .unwrap();
    assert_eq!(manager.region_names(), ["short_term", "long_term"]);
    let short = manager.region("short_term").unwrap();
    assert_eq!(short.expire(), Some(Duration::from_secs(60)));
    assert_eq!(manager.region("long_term").unwrap().expire(), None);
    assert_eq!(
        manager.get_cache("plain").unwrap().expire(),
        Some(Duration::from_secs(30))
    );

    // Data in data_dir, creation locks in lock_dir.
    let c = short.cache("users").unwrap();
    c.get_or_insert_with("k", || 1u8).unwrap();
    assert!(data.join("users.carboy").exists());
    assert!(locks.join("users.carboy.create-lock").exists());
    assert!(!data.join("users.carboy.create-lock").exists());

    // key_length per region: "k" is short, a 9-byte key is hashed.
    let long = manager.region("long_term").unwrap().cache("pages").unwrap();
    long.set("123456789", &1u8).unwrap();
    assert_eq!(long.keys().unwrap()[0].len(), 64);

    let err = manager.region("medium").unwrap_err();
    assert!(
        err.to_string().contains("medium") && err.to_string().contains("short_term"),
        "{err}"
    );
}

#[test]
fn invalid_settings_name_the_setting() {
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("cache.expire", "1 minute")], "cache.expire"),
        (&[("cache.enabled", "maybe")], "cache.enabled"),
        (&[("cache.key_length", "-1")], "cache.key_length"),
        (&[("cache.type", "file")], "cache.data_dir"),
        (
            &[("cache.type", "memory"), ("cache.max_entries", "0")],
            "cache.max_entries",
        ),
        (
            &[("cache.regions", "a"), ("cache.b.expire", "1")],
            "cache.b.expire",
        ),
        (&[("beaker.cache.expier", "1")], "beaker.cache.expier"),
    ];
    for (settings, named) in cases {
        let err = CacheManager::from_settings(settings.iter().copied()).unwrap_err();
        assert!(
            matches!(err, carboy::Error::InvalidSetting { .. }),
            "{settings:?}: {err}"
        );
        assert!(err.to_string().contains(named), "{settings:?}: {err}");
    }
    let err = CacheManager::from_settings([("cache.type", "nosuch")]).unwrap_err();
    assert!(matches!(err, carboy::Error::UnknownBackend { .. }), "{err}");
    assert!(
        err.to_string().contains("memory"),
        "lists what is known: {err}"
    );
}

#[test]
fn stale_values_are_dropped_after_stale_for() {
    for backend in ["memory", "file"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = MockClock::new(1_000_000);
        let c = CacheManager::builder()
            .backend(backend)
            .data_dir(dir.path())
            .expire(Duration::from_secs(10))
            .stale_for(Duration::from_secs(5))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
            .get_cache("grace")
            .unwrap();
        c.set("k", &1u8).unwrap();
        clock.advance(Duration::from_secs(14));
        let e = c.get_entry::<u8>("k").unwrap().unwrap();
        assert!(e.stale, "{backend}: stale within the grace");
        clock.advance(Duration::from_secs(1));
        assert!(
            c.get_entry::<u8>("k").unwrap().is_none(),
            "{backend}: gone after expiry + stale_for"
        );
    }
}

#[test]
fn bounded_memory_evicts() {
    let by_count = CacheManager::builder()
        .option("max_entries", "100")
        .build()
        .unwrap()
        .get_cache("small")
        .unwrap();
    for i in 0..1_000u32 {
        by_count.set(&i, &i).unwrap();
    }
    let kept = by_count.keys().unwrap().len();
    assert!(
        (1..=110).contains(&kept),
        "kept {kept} of 1000 with max_entries 100"
    );

    let by_bytes = CacheManager::builder()
        .option("max_bytes", "20000")
        .build()
        .unwrap()
        .get_cache("small")
        .unwrap();
    let value = vec![7u8; 1000];
    for i in 0..100u32 {
        by_bytes.set(&i, &value).unwrap();
    }
    let kept = by_bytes.keys().unwrap().len();
    assert!((1..=20).contains(&kept), "kept {kept} 1 KB values in 20 KB");
    // Invalidation markers are never evicted.
    by_bytes.set(&1000u32, &value).unwrap();
    by_bytes
        .invalidate_all(carboy::cache::Invalidation::Hard)
        .unwrap();
    for i in 0..100u32 {
        by_bytes.set(&(i + 2000), &value).unwrap();
    }
    assert!(by_bytes.get::<Vec<u8>>(&1000u32).unwrap().is_none());
}

/// A backend registered under its own name: a memory backend that counts
/// the namespaces it opened.
#[derive(Debug, Default)]
struct Counting(std::sync::atomic::AtomicUsize);

impl BackendFactory for Counting {
    fn open(
        &self,
        ns: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        MemoryFactory.open(ns, config, options)
    }
    fn options(&self) -> &'static [&'static str] {
        &["flavour"]
    }
}

#[test]
fn registered_backends_are_chosen_by_name() {
    let factory = Arc::new(Counting::default());
    register_backend("counting", factory.clone()).unwrap();
    let manager =
        CacheManager::from_settings([("cache.type", "counting"), ("cache.flavour", "vanilla")])
            .unwrap();
    let c = manager.get_cache("a").unwrap();
    c.set("k", &1u8).unwrap();
    assert_eq!(c.get::<u8>("k").unwrap(), Some(1));
    // The namespace, and the markers namespace beside it.
    assert_eq!(factory.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Its own settings only.
    let err =
        CacheManager::from_settings([("cache.type", "counting"), ("cache.url", "x")]).unwrap_err();
    assert!(err.to_string().contains("flavour"), "{err}");
    // The built-ins cannot be replaced.
    let err = register_backend("file", factory).unwrap_err();
    assert!(matches!(err, carboy::Error::Reserved { .. }), "{err}");
}
