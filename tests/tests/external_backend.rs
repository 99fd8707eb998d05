//! A backend written outside `carboy`, with only its public API: a toy
//! over `Mutex<HashMap>` that passes the published conformance suite
//! (`carboy::cache::testing`), is given to a `CacheManager` through the
//! builder without the global registry, and serves a cache. It declares
//! fewer capabilities than the built-ins (no change stamp, no eviction
//! promise, no cross-process locks, TTLs ignored), and a `bare` variant
//! declares none at all, as a memcached without `cas` would: the cache's
//! degraded paths run here. A marker it loses errs toward a miss.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carboy::cache::testing::{Outcome, Suite};
use carboy::cache::{
    Backend, BackendConfig, BackendFactory, CacheManager, Capabilities, CreateError, Fetched,
    Invalidation, OpenOptions, UpdateFn, unsupported,
};

/// One namespace: a map behind a mutex.
#[derive(Debug, Default)]
struct ToyNamespace {
    entries: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    caps: Capabilities,
}

impl Backend for ToyNamespace {
    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        let entries = self.entries.lock().unwrap();
        Ok(entries.get(key).map(|v| Fetched::Owned(v.clone())))
    }

    fn set(&self, key: &[u8], value: &[u8], _ttl: Option<Duration>) -> carboy::Result<()> {
        // The TTL is a permission to drop, not a duty: kept until removed.
        let mut entries = self.entries.lock().unwrap();
        entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        Ok(self.entries.lock().unwrap().remove(key).is_some())
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn keys(&self) -> carboy::Result<Vec<Vec<u8>>> {
        if !self.caps.list_keys {
            return Err(unsupported::<Self>("list keys"));
        }
        Ok(self.entries.lock().unwrap().keys().cloned().collect())
    }

    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        if !self.caps.atomic_update {
            return Err(unsupported::<Self>("update atomically"));
        }
        let mut entries = self.entries.lock().unwrap();
        match f(entries.get(key).map(Vec::as_slice)) {
            Some(v) => entries.insert(key.to_vec(), v),
            None => entries.remove(key),
        };
        Ok(())
    }
}

/// The toy "server": namespaces by data directory (as a server address)
/// and name.
type Namespaces = HashMap<(Option<PathBuf>, String), Arc<ToyNamespace>>;

/// Opens toy namespaces. Namespaces are shared by every manager given the
/// same factory and `data_dir`, as a server's would be by every process.
#[derive(Debug)]
struct Toy {
    caps: Capabilities,
    namespaces: Mutex<Namespaces>,
}

impl Toy {
    /// Key listing and atomic update.
    fn full() -> Arc<Toy> {
        Toy::declaring(Capabilities::NONE.list_keys(true).atomic_update(true))
    }

    /// Nothing beyond get, set and remove.
    fn bare() -> Arc<Toy> {
        Toy::declaring(Capabilities::NONE)
    }

    fn declaring(caps: Capabilities) -> Arc<Toy> {
        Arc::new(Toy {
            caps,
            namespaces: Mutex::default(),
        })
    }

    /// The stored namespace `name` under `data_dir`, as a test reaches
    /// into the server.
    fn namespace(&self, data_dir: Option<PathBuf>, name: &str) -> Arc<ToyNamespace> {
        let mut namespaces = self.namespaces.lock().unwrap();
        let ns = namespaces
            .entry((data_dir, name.to_string()))
            .or_insert_with(|| {
                Arc::new(ToyNamespace {
                    entries: Mutex::default(),
                    caps: self.caps,
                })
            });
        Arc::clone(ns)
    }
}

impl BackendFactory for Toy {
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        _options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        // Asked to pin the markers, the toy cannot promise it (it stands
        // for an LRU): it leaves `never_evicts` false.
        Ok(self.namespace(config.data_dir.clone(), namespace))
    }
}

fn skipped(suite: Suite) -> Vec<(&'static str, &'static str)> {
    let report = suite.run();
    report.assert_passed();
    report
        .cases
        .iter()
        .filter_map(|(name, o)| match o {
            Outcome::Skipped(cap) => Some((*name, *cap)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_toy_passes_the_published_suite() {
    assert_eq!(
        skipped(Suite::new("toy", Toy::full())),
        vec![
            ("ttl_against_the_clock", "expires_by_clock"),
            ("update_keeps_the_ttl", "expires_by_clock"),
            ("change_stamp_moves_with_content", "change_stamp"),
            ("async_raw_operations", "as_async"),
            ("async_creation_locks", "as_async"),
        ]
    );
}

#[test]
fn the_bare_toy_passes_the_published_suite() {
    assert_eq!(
        skipped(Suite::new("bare toy", Toy::bare())),
        vec![
            ("listing_and_clearing", "list_keys"),
            ("ttl_against_the_clock", "expires_by_clock"),
            ("update_is_atomic", "atomic_update"),
            ("update_keeps_the_ttl", "atomic_update"),
            ("change_stamp_moves_with_content", "change_stamp"),
            ("async_raw_operations", "as_async"),
            ("async_creation_locks", "as_async"),
        ]
    );
}

#[test]
fn a_cache_on_the_toy_backend() {
    for toy in [Toy::full(), Toy::bare()] {
        let manager = CacheManager::builder()
            .backend_factory("toy", toy)
            .expire(Duration::from_secs(60))
            .build()
            .unwrap();
        let users = manager.get_cache("users").unwrap();
        assert_eq!(users.get::<String>("u1").unwrap(), None);
        users.set("u1", "alice").unwrap();
        assert_eq!(users.get::<String>("u1").unwrap().as_deref(), Some("alice"));

        let mut runs = 0;
        for _ in 0..2 {
            let v: String = users
                .get_or_create("u2", || {
                    runs += 1;
                    Ok::<_, std::io::Error>("bob".to_string())
                })
                .unwrap();
            assert_eq!(v, "bob");
        }
        assert_eq!(runs, 1, "created once, then a hit");
        let err = users
            .get_or_create::<String, _, _>("u3", || Err("down"))
            .unwrap_err();
        assert!(matches!(err, CreateError::Creator(ref e) if **e == "down"));

        users.invalidate("u1", Invalidation::Hard).unwrap();
        assert_eq!(users.get::<String>("u1").unwrap(), None);
        users.invalidate_all(Invalidation::Hard).unwrap();
        assert_eq!(users.get::<String>("u2").unwrap(), None);
        assert_eq!(
            users
                .get_or_insert_with("u2", || "carol".to_string())
                .unwrap(),
            "carol"
        );
        assert_eq!(users.get::<String>("u2").unwrap().as_deref(), Some("carol"));
    }
    // The factory was given to that manager only: the registry does not
    // know the name.
    let err = CacheManager::builder().backend("toy").build().unwrap_err();
    assert!(matches!(err, carboy::Error::UnknownBackend { .. }), "{err}");
}

/// The toy may evict anything, markers included. A lost marker must not
/// bring back the values it had invalidated, in this process or another.
#[test]
fn a_lost_marker_errs_toward_a_miss() {
    for toy in [Toy::full(), Toy::bare()] {
        let clock = carboy::MockClock::new(1_700_000_000_000);
        let manager = |toy: &Arc<Toy>| {
            CacheManager::builder()
                .backend_factory("toy", Arc::clone(toy) as Arc<dyn BackendFactory>)
                .clock(Arc::new(clock.clone()))
                .build()
                .unwrap()
        };
        let (one, two) = (manager(&toy), manager(&toy));
        let users = one.get_cache("users").unwrap();
        users.set("u1", "alice").unwrap();
        clock.advance(Duration::from_millis(3));
        users.invalidate_all(Invalidation::Hard).unwrap();
        assert_eq!(users.get::<String>("u1").unwrap(), None);

        // The marker is evicted.
        let markers = toy.namespace(None, "carboy:markers");
        assert!(
            markers.remove(b"ns:users").unwrap(),
            "the marker was stored"
        );
        clock.advance(Duration::from_millis(3));
        for (who, m) in [("this process", &one), ("another process", &two)] {
            let c = m.get_cache("users").unwrap();
            assert_eq!(
                c.get::<String>("u1").unwrap(),
                None,
                "{who}: an invalidated value came back after its marker was lost"
            );
        }
        // A value created after the loss is a hit everywhere.
        users.set("u1", "bob").unwrap();
        let seen = two.get_cache("users").unwrap().get::<String>("u1").unwrap();
        assert_eq!(seen.as_deref(), Some("bob"));
    }
}
