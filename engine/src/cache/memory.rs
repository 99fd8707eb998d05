//! The `memory` backend ([`MemoryBackend`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::backend::{
    Backend, BackendConfig, BackendFactory, Capabilities, Fetched, OpenOptions, UpdateFn,
};
use crate::clock::Clock;
use crate::error::{Error, Result};

/// One stored value and when the backend may drop it (Unix ms).
#[derive(Clone)]
struct Slot {
    value: Arc<[u8]>,
    drop_at: Option<u64>,
}

/// Weighs entries by their bytes, or each as 1 when bounding by count.
#[derive(Clone)]
struct Weigh {
    by_bytes: bool,
}

impl quick_cache::Weighter<Vec<u8>, Slot> for Weigh {
    fn weight(&self, key: &Vec<u8>, val: &Slot) -> u64 {
        if self.by_bytes {
            // Never zero: quick_cache treats zero-weight entries as pinned.
            (key.len() + val.value.len()) as u64 + 1
        } else {
            1
        }
    }
}

enum Entries {
    Unbounded(RwLock<HashMap<Vec<u8>, Slot>>),
    Bounded(quick_cache::sync::Cache<Vec<u8>, Slot, Weigh>),
}

/// How a bounded [`MemoryBackend`] is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes of keys and values.
    Bytes(u64),
}

/// A namespace in memory.
///
/// The `memory` backend: a namespace held in this process's memory.
///
/// Unbounded by default, like Beaker's. With `cache.max_entries` or
/// `cache.max_bytes` it evicts with quick_cache's S3-FIFO policy (better hit
/// rates than LRU on skewed workloads, and scan-resistant), weighing each
/// entry by its key and value bytes. A namespace opened
/// [`pinned`](OpenOptions::pinned) (the cache's invalidation markers) is
/// never bounded: a marker is never evicted.
///
/// Each [`CacheManager`](super::CacheManager) opens its own memory
/// namespaces: two managers in one process do not share them.
pub struct MemoryBackend {
    entries: Entries,
    /// Serializes writers, so that `update` is atomic.
    writes: Mutex<()>,
    /// Bumped after every change (see [`Backend::change_stamp`]).
    stamp: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("bounded", &matches!(self.entries, Entries::Bounded(_)))
            .finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// An unbounded namespace.
    pub fn new(clock: Arc<dyn Clock>) -> MemoryBackend {
        MemoryBackend::with_entries(Entries::Unbounded(RwLock::default()), clock)
    }

    /// A namespace of at most `max` entries ([`Bound::Entries`]) or at
    /// most `max` bytes of keys and values ([`Bound::Bytes`]).
    pub fn bounded(bound: Bound, clock: Arc<dyn Clock>) -> MemoryBackend {
        let (items, weight, by_bytes) = match bound {
            Bound::Entries(n) => (n.clamp(1, 1 << 24) as usize, n.max(1), false),
            Bound::Bytes(n) => ((n / 128).clamp(16, 1 << 24) as usize, n.max(1), true),
        };
        let cache = quick_cache::sync::Cache::with_weighter(items, weight, Weigh { by_bytes });
        MemoryBackend::with_entries(Entries::Bounded(cache), clock)
    }

    fn with_entries(entries: Entries, clock: Arc<dyn Clock>) -> MemoryBackend {
        MemoryBackend {
            entries,
            writes: Mutex::new(()),
            stamp: AtomicU64::new(0),
            clock,
        }
    }

    fn live(&self, slot: Option<Slot>) -> Option<Slot> {
        let slot = slot?;
        match slot.drop_at {
            Some(at) if at <= self.clock.now_unix_ms() => None,
            _ => Some(slot),
        }
    }

    fn lookup(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.live(self.slot(key)).map(|s| s.value)
    }

    /// The slot of `key`, expired or not.
    fn slot(&self, key: &[u8]) -> Option<Slot> {
        match &self.entries {
            Entries::Unbounded(map) => map.read().get(key).cloned(),
            Entries::Bounded(cache) => cache.get(key),
        }
    }

    /// Stores `slot` under `key`. The caller holds `writes`.
    fn put(&self, key: &[u8], slot: Slot) {
        match &self.entries {
            Entries::Unbounded(map) => {
                map.write().insert(key.to_vec(), slot);
            }
            Entries::Bounded(cache) => cache.insert(key.to_vec(), slot),
        }
    }

    fn changed(&self) {
        self.stamp.fetch_add(1, Ordering::Release);
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Fetched<'_>>> {
        Ok(self.lookup(key).map(Fetched::Shared))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let drop_at = ttl.map(|t| {
            self.clock
                .now_unix_ms()
                .saturating_add(t.as_millis().min(u128::from(u64::MAX)) as u64)
        });
        let slot = Slot {
            value: Arc::from(value),
            drop_at,
        };
        let _w = self.writes.lock();
        self.put(key, slot);
        self.changed();
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        let _w = self.writes.lock();
        let stored = match &self.entries {
            Entries::Unbounded(map) => self.live(map.write().remove(key)).is_some(),
            Entries::Bounded(cache) => self.live(cache.remove(key).map(|(_, v)| v)).is_some(),
        };
        self.changed();
        Ok(stored)
    }

    /// Always immediate: the map lives in this process, its locks are
    /// held only for the length of one operation.
    fn try_set_now(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.set(key, value, ttl).map(|()| true)
    }

    fn try_remove_now(&self, key: &[u8]) -> Result<Option<bool>> {
        self.remove(key).map(Some)
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        let now = self.clock.now_unix_ms();
        let fresh = |s: &Slot| s.drop_at.is_none_or(|at| at > now);
        let mut keys = Vec::new();
        match &self.entries {
            Entries::Unbounded(map) => keys.extend(
                map.read()
                    .iter()
                    .filter(|(_, s)| fresh(s))
                    .map(|(k, _)| k.clone()),
            ),
            Entries::Bounded(cache) => {
                keys.extend(cache.iter().filter(|(_, s)| fresh(s)).map(|(k, _)| k))
            }
        }
        Ok(keys)
    }

    fn clear(&self) -> Result<()> {
        let _w = self.writes.lock();
        match &self.entries {
            Entries::Unbounded(map) => map.write().clear(),
            Entries::Bounded(cache) => cache.clear(),
        }
        self.changed();
        Ok(())
    }

    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<()> {
        let _w = self.writes.lock();
        let current = self.live(self.slot(key));
        match f(current.as_ref().map(|s| &*s.value)) {
            // The entry keeps its expiry.
            Some(v) => self.put(
                key,
                Slot {
                    value: Arc::from(v),
                    drop_at: current.and_then(|s| s.drop_at),
                },
            ),
            None => match &self.entries {
                Entries::Unbounded(map) => {
                    map.write().remove(key);
                }
                Entries::Bounded(cache) => {
                    cache.remove(key);
                }
            },
        }
        self.changed();
        Ok(())
    }

    fn change_stamp(&self) -> Result<u128> {
        Ok(u128::from(self.stamp.load(Ordering::Acquire)))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .list_keys(true)
            .atomic_update(true)
            .change_stamp(true)
            // Data lives in this process: the in-process single flight is
            // the whole lock.
            .creation_locks(false)
            .never_evicts(matches!(self.entries, Entries::Unbounded(_)))
            .expires_by_clock(true)
    }
}

/// Opens [`MemoryBackend`]s: the built-in backend type `memory`.
///
/// Settings: `cache.max_entries` and `cache.max_bytes` bound each
/// namespace except pinned ones (both unset: unbounded).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

impl MemoryFactory {
    fn bound(config: &BackendConfig, name: &str) -> Result<Option<u64>> {
        let Some(raw) = config.options.get(name) else {
            return Ok(None);
        };
        match raw.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Error::InvalidSetting {
                setting: BackendConfig::setting_name(name),
                value: raw.clone(),
                reason: "expected a whole number above zero".into(),
            }),
        }
    }
}

impl MemoryFactory {
    /// The bound the settings ask for, if any.
    fn bound_of(config: &BackendConfig) -> Result<Option<Bound>> {
        let entries = MemoryFactory::bound(config, "max_entries")?;
        let bytes = MemoryFactory::bound(config, "max_bytes")?;
        match (entries, bytes) {
            (None, None) => Ok(None),
            (Some(n), None) => Ok(Some(Bound::Entries(n))),
            (None, Some(n)) => Ok(Some(Bound::Bytes(n))),
            (Some(_), Some(n)) => Err(Error::InvalidSetting {
                setting: BackendConfig::setting_name("max_bytes"),
                value: n.to_string(),
                reason: "set cache.max_entries or cache.max_bytes, not both".into(),
            }),
        }
    }
}

impl BackendFactory for MemoryFactory {
    fn open(
        &self,
        _namespace: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> Result<Arc<dyn Backend>> {
        let clock = Arc::clone(&config.clock);
        let bound = MemoryFactory::bound_of(config)?;
        Ok(Arc::new(match bound {
            // Pinned (the markers' namespace): evicting a marker would
            // undo an invalidation, so the bound does not apply.
            Some(_) if options.pinned => MemoryBackend::new(clock),
            None => MemoryBackend::new(clock),
            Some(bound) => MemoryBackend::bounded(bound, clock),
        }))
    }

    fn options(&self) -> &'static [&'static str] {
        &["max_entries", "max_bytes"]
    }

    fn check(&self, config: &BackendConfig) -> Result<()> {
        MemoryFactory::bound_of(config).map(|_| ())
    }
}
