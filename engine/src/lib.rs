//! carboy: an embedded key-value store for caching.
//!
//! Three entry points, one on top of the other:
//!
//! | entry point | what it is |
//! |---|---|
//! | [`Store`] | bytes in one file, shared by threads and processes: lock-free point reads, transactions, expiry |
//! | [`cache::CacheManager`] | typed values in namespaces and regions, expiry, one creator per key across processes, invalidation (Beaker's cache layer) |
//! | [`sync`] | the building blocks: name locks, `flock` file locks, striped cross-process locks, create-once maps |
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! // The cache: one creator per key, in every thread and process.
//! let manager = carboy::cache::CacheManager::builder().backend("file").data_dir(dir.path()).build()?;
//! let users = manager.get_cache("users")?;
//! let name: String = users.get_or_create("user:1", || Ok::<_, std::io::Error>("alice".into()))?;
//! # assert_eq!(name, "alice");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! use carboy::sync::{FileLock, Synchronizer};
//! # let dir = tempfile::tempdir()?;
//! // A lock one process at a time holds, gone with its process.
//! let lock = FileLock::open(dir.path(), "nightly-report")?;
//! let _held = lock.write()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The store
//!
//! A *namespace* is one file in carboy's own hash-file format, memory-mapped
//! and shared by many threads and processes at once:
//!
//! * **Point reads take no lock and make no system call**: a keyed hash
//!   (SipHash-1-3, random key per file) picks a slot in an open-addressing
//!   index; the slot points at a record in the same file; the record's CRC is
//!   checked and its value is returned without copying ([`ValueRef`]).
//! * **Writers are serialized** across threads (an in-process lock) and
//!   processes (`flock` on a lock file beside the data file). A commit
//!   appends records and a commit marker, then publishes index slots; a
//!   process killed at any instant leaves a file the next writer finishes
//!   without manual repair.
//! * **Durability is a choice**: [`Durability::None`] survives process
//!   crashes, [`Durability::Sync`] survives power loss (one `fdatasync` per
//!   commit).
//! * **Bad input is an error, never a panic**: foreign, truncated and
//!   damaged files, oversized keys and values, invalid names.
//!
//! ```
//! use carboy::{Durability, Options};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Options::new()
//!     .durability(Durability::Sync)
//!     .open_namespace(dir.path(), "sessions")?;
//! store.put(b"user:1", b"alice")?;
//! store.put_for(b"token:9", b"xyz", Duration::from_secs(60))?;
//!
//! let mut txn = store.transaction()?;          // read-modify-write, atomically
//! let name = txn.get(b"user:1")?.unwrap().to_vec();
//! txn.put(b"owner", &name)?;
//! txn.commit()?;
//!
//! assert_eq!(store.get(b"owner")?.as_deref(), Some(&b"alice"[..]));
//! assert_eq!(store.len()?, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The file format is specified in `format/FORMAT.md`; the design and the
//! soundness argument for the shared mapping in `engine/DESIGN.md`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
mod clock;
mod error;
// The storage seam is public only with its feature (tests use it); without
// it the checks it places compile to nothing and nothing of it is shown.
#[cfg(feature = "fault-injection")]
pub mod faults;
#[cfg(not(feature = "fault-injection"))]
mod faults;
#[allow(unsafe_code)]
mod file;
pub mod name;

mod store;
pub mod sync;

pub use carboy_format::Expiry;
pub use carboy_format::record::{MAX_KEY_LEN, MAX_VALUE_LEN};
/// Caches a function's results in a region of the
/// [`install`](cache::install)ed [`CacheManager`](cache::CacheManager):
/// `#[carboy::cache_region("short_term")]`.
///
/// The values of `fn load(user: u32, lang: &str) -> User` live in the
/// namespace `my_crate::module::load` of region `short_term`, keyed by the
/// postcard encoding of `(&user, &lang)`; arguments must implement
/// [`serde::Serialize`], the return type `Serialize + DeserializeOwned`.
/// A function returning `Result` caches only its `Ok` values. Beside
/// `load`, the macro writes `load_invalidate(user: u32, lang: &str) ->
/// carboy::Result<()>`, which removes the value of one call in every
/// process sharing the cache.
///
/// With no manager installed, a region that is not configured or switched
/// off, or a cache that fails, the function simply runs: caching is never a
/// new way to fail. Methods, generic type parameters, `impl Trait`, `&mut`
/// and destructured arguments are compile errors; the `carboy-macros`
/// crate docs show the expansion and why.
///
/// An `async fn` is cached the same way through the async front
/// (`carboy::cache::AsyncCache`, cargo feature `async`; without it,
/// the build fails naming `async_requires_the_carboy_feature_async`), and
/// its `load_invalidate` is an `async fn` too.
///
/// ```
/// use carboy::cache::{self, CacheManager, RegionSettings};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
///
/// static RUNS: AtomicUsize = AtomicUsize::new(0);
///
/// /// A greeting, computed at most once a minute per user and language.
/// #[carboy::cache_region("short_term")]
/// fn greeting(user: u32, lang: &str) -> String {
///     RUNS.fetch_add(1, Ordering::SeqCst);
///     format!("{lang}: hello, user {user}")
/// }
///
/// cache::install(
///     CacheManager::builder()
///         .region("short_term", RegionSettings::new().expire(Duration::from_secs(60)))
///         .build()?,
/// );
/// assert_eq!(greeting(1, "en"), "en: hello, user 1"); // runs
/// assert_eq!(greeting(1, "en"), "en: hello, user 1"); // cached
/// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
/// greeting_invalidate(1, "en")?;
/// greeting(1, "en"); // runs again
/// assert_eq!(RUNS.load(Ordering::SeqCst), 2);
/// # Ok::<(), carboy::Error>(())
/// ```
pub use carboy_macros::cache_region;
/// Caches a function's results in a namespace of the
/// [`install`](cache::install)ed [`CacheManager`](cache::CacheManager),
/// with the manager's default settings: `#[carboy::cached]`, or
/// `#[carboy::cached(namespace = "users", expire = 60)]`.
///
/// * `namespace`: a string literal; default: the function's path. Several
///   functions may share one; each one's keys start with its path, so they
///   never read each other's values.
/// * `expire`: how many seconds values stay fresh, a positive integer
///   literal; default: the manager's expiry.
///
/// Otherwise the same as [`macro@cache_region`]: keys, `Result`, the
/// generated `<name>_invalidate`, running uncached when there is no cache.
///
/// ```
/// use carboy::cache::{self, CacheManager};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// static RUNS: AtomicUsize = AtomicUsize::new(0);
///
/// /// The length of a user's name, or why it could not be found.
/// #[carboy::cached(namespace = "users", expire = 60)]
/// fn name_len(user: u32) -> Result<usize, String> {
///     RUNS.fetch_add(1, Ordering::SeqCst);
///     match user {
///         1 => Ok("alice".len()),
///         _ => Err(format!("no user {user}")),
///     }
/// }
///
/// let manager = CacheManager::builder().build()?;
/// cache::install(manager.clone());
/// assert_eq!(name_len(1), Ok(5)); // runs
/// assert_eq!(name_len(1), Ok(5)); // cached
/// assert_eq!(name_len(2), Err("no user 2".to_string())); // runs; errors are not cached
/// assert_eq!(name_len(2), Err("no user 2".to_string())); // runs again
/// assert_eq!(RUNS.load(Ordering::SeqCst), 3);
/// assert_eq!(manager.get_cache("users")?.keys()?.len(), 1);
/// # Ok::<(), carboy::Error>(())
/// ```
pub use carboy_macros::cached;
pub use clock::{Clock, MockClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use store::{
    CompactReport, Entries, Entry, EntryRef, Iter, Problem, RecoveryPlan, SalvageReport, SetAside,
    Snapshot, Stats, Store, SyncStats, Transaction, ValueRef, VerifyReport, inspect_recovery,
    salvage, set_aside_files,
};
pub use store::{Durability, Options};

/// The README's Rust example, compiled and run as a doctest so that it
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExample;
