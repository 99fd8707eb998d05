//! [`CacheManager`] and [`Region`]: caches built from settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::backend::Backend;
use super::backend::{BackendFactory, OpenOptions};
use super::markers::{Invalidation, MarkerSlot};
use super::namespace::{Cache, Namespace, Shared};
use super::settings::{self, BackendChoice, CacheConfig, Overrides};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// Namespace names starting with this are carboy's own.
const RESERVED_NAMESPACE: &str = "carboy:";
/// The namespace holding a backend's invalidation markers: `ns:<name>` for
/// each namespace, `region:<name>` for each region.
const MARKERS_NAMESPACE: &str = "carboy:markers";

struct Inner {
    defaults: CacheConfig,
    regions: Vec<(String, CacheConfig)>,
    clock: Arc<dyn Clock>,
    /// Views of namespaces, by (region, namespace); "" is no region.
    namespaces: Mutex<HashMap<(String, String), Arc<Namespace>>>,
    /// Opened backend namespaces, by (backend identity, namespace): two
    /// regions with the same backend settings share one.
    opened: Mutex<HashMap<(String, String), Arc<Shared>>>,
    /// Region markers, by region.
    markers: Mutex<HashMap<String, Arc<MarkerSlot>>>,
    /// Markers namespaces, by backend identity.
    marker_backends: Mutex<HashMap<String, Arc<dyn Backend>>>,
}

/// The entry point of the cache layer: Beaker's `CacheManager`.
///
/// Built from Beaker-style settings ([`from_settings`]) or a typed
/// [`builder`]; hands out [`Cache`]s by namespace ([`get_cache`]) and
/// [`Region`]s by name. Cheap to clone; clones share their namespaces.
///
/// ```
/// use carboy::cache::CacheManager;
///
/// let dir = tempfile::tempdir()?;
/// let data_dir = dir.path().display().to_string();
/// let manager = CacheManager::from_settings([
///     ("cache.type", "file"),
///     ("cache.data_dir", data_dir.as_str()),
///     ("cache.regions", "short_term, long_term"),
///     ("cache.short_term.expire", "60"),
///     ("cache.long_term.expire", "3600"),
/// ])?;
/// let users = manager.region("short_term")?.cache("users")?;
/// users.set("user:1", "alice")?;
/// assert_eq!(users.get::<String>("user:1")?.as_deref(), Some("alice"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`from_settings`]: CacheManager::from_settings
/// [`builder`]: CacheManager::builder
/// [`get_cache`]: CacheManager::get_cache
#[derive(Clone)]
pub struct CacheManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("backend", &self.inner.defaults.backend.kind)
            .field(
                "regions",
                &self
                    .inner
                    .regions
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl CacheManager {
    /// A manager from Beaker-style settings: `cache.type`,
    /// `cache.data_dir`, `cache.lock_dir`, `cache.expire` (seconds),
    /// `cache.regions` (a comma list), `cache.<region>.<setting>`,
    /// `cache.key_length`, `cache.enabled`, plus carboy's
    /// `cache.serve_stale`, `cache.stale_for`, `cache.lock_timeout` and
    /// `cache.on_lock_timeout`, and the backend's own
    /// settings (`cache.durability` for `file`, `cache.max_entries` or
    /// `cache.max_bytes` for `memory`). `beaker.cache.` works as a prefix
    /// too; keys with neither prefix are ignored, so a whole application
    /// config can be passed.
    ///
    /// A setting carboy cannot use is an [`Error::InvalidSetting`] naming
    /// it.
    pub fn from_settings<K: AsRef<str>, V: AsRef<str>>(
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Result<CacheManager> {
        CacheManager::builder().settings(settings)?.build()
    }

    /// A typed builder; see [`CacheManagerBuilder`] for the defaults.
    ///
    /// ```
    /// use carboy::cache::CacheManager;
    /// use std::time::Duration;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let manager = CacheManager::builder()
    ///     .backend("file")
    ///     .data_dir(dir.path())
    ///     .expire(Duration::from_secs(300))
    ///     .build()?;
    /// let pages = manager.get_cache("pages")?;
    /// let html: String = pages.get_or_create("/", || Ok::<_, std::io::Error>("<h1>hi</h1>".into()))?;
    /// assert_eq!(html, "<h1>hi</h1>");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> CacheManagerBuilder {
        CacheManagerBuilder::default()
    }

    /// The cache of namespace `name`, with the manager's default settings.
    pub fn get_cache(&self, name: &str) -> Result<Cache> {
        self.cache_in(None, name)
    }

    /// The region `name`.
    pub fn region(&self, name: &str) -> Result<Region> {
        let index = self
            .inner
            .regions
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| Error::UnknownRegion {
                name: name.to_string(),
                known: self.region_names().join(", "),
            })?;
        Ok(Region {
            manager: self.clone(),
            index,
        })
    }

    /// The names of the configured regions, in the order configured.
    pub fn region_names(&self) -> Vec<String> {
        self.inner.regions.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The manager's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    fn config(&self, region: Option<usize>) -> &CacheConfig {
        match region {
            Some(i) => &self.inner.regions[i].1,
            None => &self.inner.defaults,
        }
    }

    fn cache_in(&self, region: Option<usize>, name: &str) -> Result<Cache> {
        if name.starts_with(RESERVED_NAMESPACE) {
            return Err(Error::Reserved {
                what: "namespace",
                name: name.to_string(),
                reason: "names starting with \"carboy:\" hold invalidation markers",
            });
        }
        let config = self.config(region);
        let region_name = region.map(|i| self.inner.regions[i].0.clone());
        let id = (region_name.clone().unwrap_or_default(), name.to_string());
        let mut namespaces = self.inner.namespaces.lock();
        let ns = match namespaces.get(&id) {
            Some(ns) => Arc::clone(ns),
            None => {
                let shared = self.opened(config, name)?;
                let region = match &region_name {
                    Some(r) => Some(self.region_marker(r, config)?),
                    None => None,
                };
                let ns = Arc::new(Namespace {
                    name: name.to_string(),
                    shared,
                    region,
                    clock: Arc::clone(&self.inner.clock),
                });
                namespaces.insert(id, Arc::clone(&ns));
                ns
            }
        };
        Ok(Cache::new(ns, config.policy.clone()))
    }

    fn region_marker(&self, region: &str, config: &CacheConfig) -> Result<Arc<MarkerSlot>> {
        let mut markers = self.inner.markers.lock();
        if let Some(m) = markers.get(region) {
            return Ok(Arc::clone(m));
        }
        let slot = Arc::new(MarkerSlot::open(
            self.markers_backend(config)?,
            format!("region:{region}").into_bytes(),
            Arc::clone(&self.inner.clock),
        )?);
        markers.insert(region.to_string(), Arc::clone(&slot));
        Ok(slot)
    }

    /// The markers namespace of `config`'s backend.
    fn markers_backend(&self, config: &CacheConfig) -> Result<Arc<dyn Backend>> {
        let mut backends = self.inner.marker_backends.lock();
        if let Some(b) = backends.get(&config.identity) {
            return Ok(Arc::clone(b));
        }
        // Pinned: an evicted marker would forget an invalidation. A
        // backend that cannot promise it says so in its capabilities, and
        // the marker slots then treat a missing marker as lost.
        let pinned = OpenOptions::new().pinned(true);
        let b = config
            .factory
            .open(MARKERS_NAMESPACE, &config.backend, &pinned)?;
        backends.insert(config.identity.clone(), Arc::clone(&b));
        Ok(b)
    }

    /// The backend namespace `name` under `config`'s backend settings,
    /// opened once per manager.
    fn opened(&self, config: &CacheConfig, name: &str) -> Result<Arc<Shared>> {
        let id = (config.identity.clone(), name.to_string());
        let mut opened = self.inner.opened.lock();
        if let Some(s) = opened.get(&id) {
            return Ok(Arc::clone(s));
        }
        let backend: Arc<dyn Backend> =
            config
                .factory
                .open(name, &config.backend, &OpenOptions::new())?;
        let marker = MarkerSlot::open(
            self.markers_backend(config)?,
            format!("ns:{name}").into_bytes(),
            Arc::clone(&self.inner.clock),
        )?;
        let shared = Arc::new(Shared::new(backend, marker));
        opened.insert(id, Arc::clone(&shared));
        Ok(shared)
    }
}

/// A named group of cache settings (Beaker's `cache_regions`): every
/// namespace opened through it shares its expiry and backend, and the
/// region can be invalidated as a whole.
#[derive(Clone, Debug)]
pub struct Region {
    manager: CacheManager,
    index: usize,
}

impl Region {
    /// The region's name.
    pub fn name(&self) -> &str {
        &self.manager.inner.regions[self.index].0
    }

    /// How long values created in this region stay fresh.
    pub fn expire(&self) -> Option<Duration> {
        self.manager.config(Some(self.index)).policy.expire
    }

    /// False when the region is switched off (`cache.<region>.enabled =
    /// false`): its caches store nothing and always create.
    pub fn enabled(&self) -> bool {
        self.manager.config(Some(self.index)).policy.enabled
    }

    /// The cache of namespace `name` in this region.
    pub fn cache(&self, name: &str) -> Result<Cache> {
        self.manager.cache_in(Some(self.index), name)
    }

    /// Invalidates every value of every namespace of this region, in every
    /// process that shares the region's backend (the marker is stored
    /// there).
    pub fn invalidate(&self, how: Invalidation) -> Result<()> {
        let config = self.manager.config(Some(self.index));
        self.manager
            .region_marker(self.name(), config)?
            .invalidate(how)
    }
}

/// Builds a [`CacheManager`] with typed settings.
///
/// ## Defaults
///
/// | setting | default |
/// |---|---|
/// | [`backend`](CacheManagerBuilder::backend) or [`backend_factory`](CacheManagerBuilder::backend_factory) | `memory` |
/// | [`data_dir`](CacheManagerBuilder::data_dir) | none (required by `file`) |
/// | [`lock_dir`](CacheManagerBuilder::lock_dir) | the data directory |
/// | [`expire`](CacheManagerBuilder::expire) | none: values stay fresh until invalidated |
/// | [`key_length`](CacheManagerBuilder::key_length) | 250 bytes, then SHA-256 |
/// | [`enabled`](CacheManagerBuilder::enabled) | `true` |
/// | [`serve_stale`](CacheManagerBuilder::serve_stale) | `true` |
/// | [`stale_for`](CacheManagerBuilder::stale_for) | none: stale values are kept until overwritten |
/// | [`lock_timeout`](CacheManagerBuilder::lock_timeout) | 60 s ([`DEFAULT_LOCK_TIMEOUT`](super::DEFAULT_LOCK_TIMEOUT)) |
/// | [`on_lock_timeout`](CacheManagerBuilder::on_lock_timeout) | [`OnLockTimeout::Error`](super::OnLockTimeout::Error) |
/// | [`on_backend_error`](CacheManagerBuilder::on_backend_error) | [`OnBackendError::Error`](super::OnBackendError::Error) |
/// | [`clock`](CacheManagerBuilder::clock) | [`SystemClock`] |
///
/// ```
/// use carboy::cache::{CacheManager, RegionSettings};
/// use std::time::Duration;
///
/// let manager = CacheManager::builder()
///     .expire(Duration::from_secs(300))
///     .region("short_term", RegionSettings::new().expire(Duration::from_secs(60)))
///     .build()?;
/// assert_eq!(manager.region("short_term")?.expire(), Some(Duration::from_secs(60)));
/// # Ok::<(), carboy::Error>(())
/// ```
#[derive(Default)]
pub struct CacheManagerBuilder {
    defaults: Overrides,
    regions: Vec<(String, Overrides)>,
    clock: Option<Arc<dyn Clock>>,
}

/// The settings of one region, on top of the manager's defaults.
#[derive(Clone, Debug, Default)]
pub struct RegionSettings(Overrides);

macro_rules! setters {
    ($($wrap:tt)*) => {
        /// The backend type (`memory`, `file`, or a name given to
        /// [`register_backend`](super::register_backend)). Replaces an
        /// earlier [`backend_factory`](Self::backend_factory).
        pub fn backend(mut self, kind: &str) -> Self {
            self.$($wrap)*.kind = Some(BackendChoice::Named(kind.to_string()));
            self
        }

        /// A backend given by its factory, for this manager only: the
        /// process-wide registry is neither read nor changed. `name` is the
        /// backend's type name in messages and in
        /// [`BackendConfig::kind`](super::BackendConfig::kind). Replaces an
        /// earlier [`backend`](Self::backend).
        ///
        /// Namespaces opened through the same `Arc` (by the defaults and by
        /// regions, with equal storage settings) are the same stored
        /// namespace; two factories are two backends, whatever their names.
        ///
        /// ```
        /// use std::sync::Arc;
        /// use carboy::cache::{CacheManager, MemoryFactory};
        ///
        /// let manager = CacheManager::builder()
        ///     .backend_factory("scratch", Arc::new(MemoryFactory))
        ///     .build()?;
        /// manager.get_cache("ns")?.set("k", &1u32)?;
        /// # Ok::<(), carboy::Error>(())
        /// ```
        pub fn backend_factory(mut self, name: &str, factory: Arc<dyn BackendFactory>) -> Self {
            self.$($wrap)*.kind = Some(BackendChoice::Given(name.to_string(), factory));
            self
        }

        /// Where file-based backends keep their files.
        pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
            self.$($wrap)*.data_dir = Some(dir.into());
            self
        }

        /// Where lock files go.
        pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
            self.$($wrap)*.lock_dir = Some(dir.into());
            self
        }

        /// How long values stay fresh after their creation.
        pub fn expire(mut self, expire: Duration) -> Self {
            self.$($wrap)*.expire = Some(Some(expire));
            self
        }

        /// Values stay fresh until invalidated.
        pub fn never_expire(mut self) -> Self {
            self.$($wrap)*.expire = Some(None);
            self
        }

        /// Keys longer than this many bytes are stored as their SHA-256.
        pub fn key_length(mut self, bytes: usize) -> Self {
            self.$($wrap)*.key_length = Some(bytes);
            self
        }

        /// `false` switches caching off: nothing is stored, creators
        /// always run.
        pub fn enabled(mut self, enabled: bool) -> Self {
            self.$($wrap)*.enabled = Some(enabled);
            self
        }

        /// Whether stale values are served while one caller regenerates.
        pub fn serve_stale(mut self, serve: bool) -> Self {
            self.$($wrap)*.serve_stale = Some(serve);
            self
        }

        /// How long after expiry a value may still be served stale; then
        /// the backend drops it.
        pub fn stale_for(mut self, grace: Duration) -> Self {
            self.$($wrap)*.stale_for = Some(Some(grace));
            self
        }

        /// How long `get_or_create` waits for a key's creation lock held
        /// by another caller (`cache.lock_timeout`, in seconds there)
        /// before it does what [`on_lock_timeout`](Self::on_lock_timeout)
        /// says.
        pub fn lock_timeout(mut self, timeout: Duration) -> Self {
            self.$($wrap)*.lock_timeout = Some(Some(timeout));
            self
        }

        /// Wait for creation locks as long as it takes
        /// (`cache.lock_timeout = none`): a lock cycle then never ends.
        pub fn no_lock_timeout(mut self) -> Self {
            self.$($wrap)*.lock_timeout = Some(None);
            self
        }

        /// What a caller does once it waited
        /// [`lock_timeout`](Self::lock_timeout) (`cache.on_lock_timeout`).
        pub fn on_lock_timeout(mut self, action: super::OnLockTimeout) -> Self {
            self.$($wrap)*.on_lock_timeout = Some(action);
            self
        }

        /// What `get_or_create` does when the backend fails under it
        /// (`cache.on_backend_error`): return the error, or run the
        /// creator uncached so that a cache outage leaves the application
        /// serving ([`OnBackendError`](super::OnBackendError)).
        pub fn on_backend_error(mut self, action: super::OnBackendError) -> Self {
            self.$($wrap)*.on_backend_error = Some(action);
            self
        }

        /// A backend-specific setting by its short name (`durability`,
        /// `max_entries`, …), as its string form.
        pub fn option(mut self, name: &str, value: impl Into<String>) -> Self {
            self.$($wrap)*.options.insert(
                name.to_string(),
                (format!("cache.{name}"), value.into()),
            );
            self
        }
    };
}

impl RegionSettings {
    /// Settings that inherit everything from the manager's defaults.
    pub fn new() -> RegionSettings {
        RegionSettings::default()
    }

    setters!(0);
}

impl CacheManagerBuilder {
    setters!(defaults);

    /// Applies Beaker-style settings (see
    /// [`CacheManager::from_settings`]) on top of what the builder has, so
    /// that settings from a file and typed ones (a clock, say) combine.
    pub fn settings<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let parsed = settings::parse(settings)?;
        self.defaults = self.defaults.then(&parsed.defaults);
        for (name, over) in parsed.regions {
            match self.regions.iter_mut().find(|(n, _)| *n == name) {
                Some((_, o)) => *o = o.then(&over),
                None => self.regions.push((name, over)),
            }
        }
        Ok(self)
    }

    /// Adds (or replaces) region `name`.
    pub fn region(mut self, name: &str, settings: RegionSettings) -> Self {
        self.regions.retain(|(n, _)| n != name);
        self.regions.push((name.to_string(), settings.0));
        self
    }

    /// The clock that stamps and checks expiry; tests inject a
    /// [`MockClock`](crate::MockClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks every setting (and each region's) and builds the manager.
    /// Namespaces are opened when first asked for.
    pub fn build(self) -> Result<CacheManager> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let defaults = settings::resolve(&self.defaults, &Overrides::default(), &clock)?;
        let mut regions = Vec::new();
        for (name, over) in &self.regions {
            if name.is_empty() || name.contains('.') {
                return Err(Error::InvalidSetting {
                    setting: "cache.regions".into(),
                    value: name.clone(),
                    reason: "region names are non-empty and contain no '.'".into(),
                });
            }
            regions.push((
                name.clone(),
                settings::resolve(&self.defaults, over, &clock)?,
            ));
        }
        Ok(CacheManager {
            inner: Arc::new(Inner {
                defaults,
                regions,
                clock,
                namespaces: Mutex::default(),
                opened: Mutex::default(),
                markers: Mutex::default(),
                marker_backends: Mutex::default(),
            }),
        })
    }
}

static INSTALLED: RwLock<Option<CacheManager>> = RwLock::new(None);
/// Bumped by every [`install`], so that memoized functions notice.
pub(crate) static INSTALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes `manager` the process's cache manager, the one that
/// [`#[cache_region]`](crate::cache_region) and
/// [`#[cached]`](crate::cached) functions use (Beaker's global
/// `cache_regions`). Replaces any earlier one.
pub fn install(manager: CacheManager) {
    let mut installed = INSTALLED.write();
    *installed = Some(manager);
    INSTALLS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// The manager [`install`]ed, if any.
pub fn installed() -> Option<CacheManager> {
    INSTALLED.read().clone()
}
