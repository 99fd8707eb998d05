//! `Backend::get_with`: on a backend whose markers namespace has no change
//! stamp (a network backend), a read fetches the value and the
//! invalidation markers in one backend call instead of one after the
//! other, and judges the value exactly as before: invalidations (of the
//! namespace and of its region, from another manager) still make it a
//! miss or stale, and a lost marker still errs toward a miss. The backend
//! here is the built-in `memory` without its change stamp, counting calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{
    Backend, BackendConfig, BackendFactory, CacheManager, Capabilities, Fetched, Invalidation,
    MemoryFactory, OpenOptions, RegionSettings, UpdateFn,
};

#[derive(Debug, Default)]
struct Counts {
    gets: AtomicUsize,
    get_withs: AtomicUsize,
}

/// A `memory` namespace that declares no change stamp and no eviction
/// promise, and offers `get_with` (counting what the cache calls).
#[derive(Debug)]
struct Unstamped {
    inner: Arc<dyn Backend>,
    counts: Arc<Counts>,
    offer_get_with: bool,
}

impl Backend for Unstamped {
    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        self.counts.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> carboy::Result<()> {
        self.inner.set(key, value, ttl)
    }
    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        self.inner.remove(key)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.atomic_update(true)
    }
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        self.inner.update(key, f)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn get_with<'s>(
        &'s self,
        key: &[u8],
        other: &'s dyn Backend,
        other_keys: &[&[u8]],
    ) -> carboy::Result<Option<(Option<Fetched<'s>>, Vec<Option<Fetched<'s>>>)>> {
        let Some(other) = other.as_any().and_then(|o| o.downcast_ref::<Unstamped>()) else {
            return Ok(None);
        };
        if !self.offer_get_with {
            return Ok(None);
        }
        self.counts.get_withs.fetch_add(1, Ordering::SeqCst);
        let value = self.inner.get(key)?;
        let others = other_keys
            .iter()
            .map(|k| other.inner.get(k))
            .collect::<carboy::Result<Vec<_>>>()?;
        Ok(Some((value, others)))
    }
}

#[derive(Debug)]
struct UnstampedFactory {
    counts: Arc<Counts>,
    offer_get_with: bool,
    /// Every namespace opened, by name (to evict a marker by hand).
    opened: Mutex<Vec<(String, Arc<dyn Backend>)>>,
}

impl BackendFactory for UnstampedFactory {
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        let inner = MemoryFactory.open(namespace, config, options)?;
        self.opened
            .lock()
            .unwrap()
            .push((namespace.to_string(), Arc::clone(&inner)));
        Ok(Arc::new(Unstamped {
            inner,
            counts: Arc::clone(&self.counts),
            offer_get_with: self.offer_get_with,
        }))
    }
}

fn manager(factory: &Arc<UnstampedFactory>, clock: &MockClock) -> CacheManager {
    CacheManager::builder()
        .clock(Arc::new(clock.clone()))
        .backend_factory("unstamped", Arc::clone(factory) as Arc<dyn BackendFactory>)
        .region("short", RegionSettings::new())
        .build()
        .unwrap()
}

fn factory(offer_get_with: bool) -> Arc<UnstampedFactory> {
    Arc::new(UnstampedFactory {
        counts: Arc::default(),
        offer_get_with,
        opened: Mutex::default(),
    })
}

#[test]
fn a_hit_is_one_backend_call_when_the_backend_offers_get_with() {
    for offered in [true, false] {
        let f = factory(offered);
        let m = manager(&f, &MockClock::new(1_700_000_000_000));
        for cache in [
            m.get_cache("users").unwrap(),
            m.region("short").unwrap().cache("users").unwrap(),
        ] {
            cache.set("u1", &7u32).unwrap();
            let (gets, withs) = (
                f.counts.gets.load(Ordering::SeqCst),
                f.counts.get_withs.load(Ordering::SeqCst),
            );
            for _ in 0..10 {
                let v: u32 = cache.get_or_create("u1", || Ok::<_, String>(0)).unwrap();
                assert_eq!(v, 7);
                assert_eq!(cache.get::<u32>("u1").unwrap(), Some(7));
            }
            let gets = f.counts.gets.load(Ordering::SeqCst) - gets;
            let withs = f.counts.get_withs.load(Ordering::SeqCst) - withs;
            if offered {
                assert_eq!((gets, withs), (0, 20), "one get_with per read, no get");
            } else {
                assert_eq!(withs, 0);
                assert!(
                    gets >= 40,
                    "markers then value, one after the other: {gets}"
                );
            }
        }
    }
}

#[test]
fn invalidations_and_lost_markers_are_judged_as_before() {
    let f = factory(true);
    // One manager: memory namespaces live in the manager that opened
    // them. Markers are read on every access here (no change stamp), so
    // two handles see each other's invalidations as two processes would.
    let clock = MockClock::new(1_700_000_000_000);
    let m = manager(&f, &clock);
    let (writer, reader) = (&m, &m);
    let w = writer.region("short").unwrap().cache("pages").unwrap();
    let r = reader.region("short").unwrap().cache("pages").unwrap();
    w.set("home", &"v1".to_string()).unwrap();
    assert_eq!(r.get::<String>("home").unwrap().as_deref(), Some("v1"));

    // The namespace, soft then hard.
    w.invalidate_all(Invalidation::Soft).unwrap();
    assert!(r.get_entry::<String>("home").unwrap().unwrap().stale);
    assert_eq!(r.get::<String>("home").unwrap(), None);
    w.set("home", &"v2".to_string()).unwrap();
    assert_eq!(r.get::<String>("home").unwrap().as_deref(), Some("v2"));
    // The region, hard.
    writer
        .region("short")
        .unwrap()
        .invalidate(Invalidation::Hard)
        .unwrap();
    assert_eq!(r.get::<String>("home").unwrap(), None);
    w.set("home", &"v3".to_string()).unwrap();
    assert_eq!(r.get::<String>("home").unwrap().as_deref(), Some("v3"));

    // A lost marker (evicted): restarted at the current time, so the
    // value created under the old one is a miss, never fresh.
    let markers = f
        .opened
        .lock()
        .unwrap()
        .iter()
        .find(|(name, _)| name == "carboy:markers")
        .map(|(_, b)| Arc::clone(b))
        .expect("the markers namespace was opened");
    let keys: Vec<Vec<u8>> = markers.keys().unwrap();
    assert!(!keys.is_empty(), "markers are stored");
    for key in keys {
        assert!(markers.remove(&key).unwrap());
    }
    // Epochs count milliseconds, and every invalidation above happened at
    // one mock instant (each moved the epoch by one): the restart comes a
    // second later (engine/DESIGN.md, bursts of invalidations).
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        r.get::<String>("home").unwrap(),
        None,
        "lost marker: a miss"
    );
    let v: String = r
        .get_or_create("home", || Ok::<_, String>("v4".to_string()))
        .unwrap();
    assert_eq!(v, "v4");
    assert_eq!(w.get::<String>("home").unwrap().as_deref(), Some("v4"));
    assert!(f.counts.get_withs.load(Ordering::SeqCst) > 0);
}
