//! The process-wide registry of backend type names: `cache.type = <name>`
//! (or [`CacheManagerBuilder::backend`](super::CacheManagerBuilder::backend))
//! finds its [`BackendFactory`] here. The built-in `memory` and `file` are
//! registered from the start; [`register_backend`] adds others.
//!
//! The registry depends on the backends it registers, never the other way
//! round: `memory.rs` and `file.rs` know only the contract (`backend.rs`).
//! A manager can also be given a factory directly, without a name in this
//! registry ([`CacheManagerBuilder::backend_factory`](super::CacheManagerBuilder::backend_factory)).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use super::backend::BackendFactory;
use super::file::FileFactory;
use super::memory::MemoryFactory;
use crate::error::{Error, Result};

type Registry = RwLock<BTreeMap<String, Arc<dyn BackendFactory>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut map: BTreeMap<String, Arc<dyn BackendFactory>> = BTreeMap::new();
        map.insert("memory".into(), Arc::new(MemoryFactory));
        map.insert("file".into(), Arc::new(FileFactory));
        RwLock::new(map)
    })
}

/// Registers `factory` under the backend type name `name`, for every
/// [`CacheManager`](super::CacheManager) built afterwards (Beaker's
/// backend entry points, dogpile's `register_backend`).
///
/// Names are case-sensitive. Registering a name again replaces the
/// earlier factory, except for the built-in `memory` and `file`, which
/// are refused with [`Error::Reserved`].
///
/// ```
/// use std::sync::Arc;
/// use carboy::cache::{Backend, BackendConfig, BackendFactory, OpenOptions, register_backend};
///
/// #[derive(Debug)]
/// struct Scratch;
/// impl BackendFactory for Scratch {
///     fn open(
///         &self,
///         ns: &str,
///         config: &BackendConfig,
///         options: &OpenOptions,
///     ) -> carboy::Result<Arc<dyn Backend>> {
///         // A memory backend under another name, for the example.
///         carboy::cache::MemoryFactory.open(ns, config, options)
///     }
/// }
/// register_backend("scratch", Arc::new(Scratch))?;
/// let manager = carboy::cache::CacheManager::builder().backend("scratch").build()?;
/// manager.get_cache("ns")?.set("k", &1u32)?;
/// # Ok::<(), carboy::Error>(())
/// ```
pub fn register_backend(name: &str, factory: Arc<dyn BackendFactory>) -> Result<()> {
    if name == "memory" || name == "file" {
        return Err(Error::Reserved {
            what: "backend type",
            name: name.to_string(),
            reason: "the built-in backends cannot be replaced",
        });
    }
    if name.is_empty() {
        return Err(Error::InvalidSetting {
            setting: "cache.type".into(),
            value: String::new(),
            reason: "a backend type name cannot be empty".into(),
        });
    }
    registry().write().insert(name.to_string(), factory);
    Ok(())
}

/// The factory registered under `name`.
pub(crate) fn factory(name: &str) -> Result<Arc<dyn BackendFactory>> {
    let map = registry().read();
    map.get(name).cloned().ok_or_else(|| Error::UnknownBackend {
        name: name.to_string(),
        known: map.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}
