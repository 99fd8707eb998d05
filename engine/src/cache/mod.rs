//! The cache layer: Beaker's caching, done right, on carboy's store.
//!
//! ```text
//! CacheManager ── settings (cache.type, cache.expire, cache.regions, …)
//!   ├─ get_cache(ns) ─────────────┐
//!   └─ region(name).cache(ns) ────┴─> Cache (one namespace)
//!                                      ├─ value envelope: created, expiry, epochs, payload (codec)
//!                                      ├─ get_or_create: in-process single flight
//!                                      │                 + the backend's cross-process creation lock
//!                                      └─ Backend (memory | file | yours, by type name or factory)
//! ```
//!
//! The pieces follow dogpile.cache's split, with Beaker's names outside:
//!
//! | piece | module | what it does |
//! |---|---|---|
//! | backend | [`Backend`], [`MemoryBackend`], [`FileBackend`] | bytes under keys, atomic update, creation lock |
//! | native async backend | [`AsyncBackend`], through [`Backend::as_async`] | the same, as futures, for a backend with an async client |
//! | creation lock | [`Backend::lock_creation`] + `flight.rs` | one creator per key across processes, and per process |
//! | value envelope | `envelope.rs` | creation time, expiry, invalidation epochs, payload |
//! | region policy | [`CacheManager`], [`Region`] | expiry, stale serving, key length, on/off |
//! | lock algorithm | [`Cache::get_or_create`] | fresh → return; stale → serve while one regenerates; missing → wait |
//! | async front | `AsyncCache` (feature `async`) | the same, with future creators; waits on carboy's helper threads |
//!
//! What it does (DESIGN.md, "The cache layer", compares each point with
//! Beaker and dogpile.cache):
//!
//! * **A hit is one fetch**, and on the `file` backend one lock-free probe
//!   of a mapped file.
//! * **Creation locks are bounded**: byte-range stripes on one lock file
//!   per namespace, which die with their process; no lock directory grows
//!   or needs cleaning.
//! * **Invalidation crosses processes**: markers are stored in the
//!   backend, hard or soft, per key, namespace or region.
//! * **Stale serving is a choice** ([`Cache::serving_stale`]).
//! * **Expiry is stored with each value.**
//! * **Values that no longer decode are misses**, never errors; values are
//!   serde types through a pluggable [`Codec`] ([`Postcard`] by default),
//!   never pickle.
//! * **The memory backend can be bounded** (S3-FIFO, by count or bytes).
//!
//! ```
//! use carboy::cache::{CacheManager, Invalidation};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let manager = CacheManager::builder()
//!     .backend("file")
//!     .data_dir(dir.path())
//!     .expire(Duration::from_secs(60))
//!     .build()?;
//! let users = manager.get_cache("users")?;
//! let load = || Ok::<_, std::io::Error>(vec!["alice".to_string()]);
//! let names: Vec<String> = users.get_or_create("all", load).unwrap(); // creates
//! let again: Vec<String> = users.get_or_create("all", load).unwrap(); // hit
//! assert_eq!(names, again);
//! users.invalidate_all(Invalidation::Hard)?; // every process regenerates
//! assert_eq!(users.get::<Vec<String>>("all")?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod async_backend;
mod backend;
mod codec;
mod create;
mod envelope;
mod file;
mod flight;
#[cfg(feature = "async")]
mod future;
mod helper_threads;
mod key;
mod key_lock;
mod lock_wait;
mod manager;
mod markers;
#[doc(hidden)]
pub mod memo;
mod memory;
mod namespace;
mod policy;
mod registry;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use async_backend::{
    AsyncBackend, AsyncCreationGuard, AsyncUpdateFn, BackendFuture, Backoff, LockWait, Locked,
};
pub use backend::{
    Backend, BackendConfig, BackendFactory, Capabilities, CreationGuard, Fetched, OpenOptions,
    OwnedCreation, OwnedCreationGuard, UpdateFn, unsupported,
};
pub use codec::{Codec, Postcard};
pub use create::CreateError;
pub use file::{FileBackend, FileFactory};
#[cfg(feature = "async")]
pub use future::AsyncCache;
pub use key::{CacheKey, DEFAULT_KEY_LENGTH, Serialized, lock_hash};
#[cfg(feature = "async")]
pub use key_lock::AsyncKeyLock;
pub use key_lock::KeyLock;
pub use manager::{CacheManager, CacheManagerBuilder, Region, RegionSettings, install, installed};
pub use markers::Invalidation;
pub use memory::{Bound, MemoryBackend, MemoryFactory};
pub use namespace::{Cache, CachedValue};
pub use policy::{DEFAULT_LOCK_TIMEOUT, OnBackendError, OnLockTimeout};
pub use registry::register_backend;
