//! A [tower-sessions](https://docs.rs/tower-sessions) store over carboy's
//! cache backends: [`CarboyStore`] implements
//! [`SessionStore`] and
//! [`ExpiredDeletion`] on one
//! namespace of a [`CacheManager`], with carboy's public cache API only.
//!
//! On the `file` backend, every process that opens the same data directory
//! sees the same sessions: a record written by one server process is read
//! by the next request in another, and writes are whole (one store commit
//! each, never a torn record; tower-sessions' own file store writes
//! without locking). On `memory`, sessions live in the process.
//!
//! ```
//! use carboy::cache::CacheManager;
//! use carboy_tower_sessions::CarboyStore;
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let manager = CacheManager::builder()
//!     .backend("file")
//!     .data_dir(dir.path())
//!     // Records leave the backend at their expiry (see "Expiry").
//!     .stale_for(Duration::ZERO)
//!     .build()?;
//! let store = CarboyStore::new(&manager, "sessions")?;
//! // let layer = tower_sessions::SessionManagerLayer::new(store);
//! # let _ = store;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How records are stored
//!
//! | what | how |
//! |---|---|
//! | key | the session id as tower-sessions prints it (22 characters, URL-safe base64 of its 128 bits) |
//! | value | the [`Record`] as JSON, inside carboy's value envelope; decoded with serde only, and a value that does not decode as a record reads as no session |
//! | expiry | the record's `expiry_date`, stored as the value's expiry (by the manager's clock, so a [`MockClock`](carboy::MockClock) moves it) |
//!
//! ## Expiry
//!
//! A record past its `expiry_date` is never loaded. Whether its bytes
//! leave the backend on their own depends on the manager: carboy hands a
//! value's expiry to the backend as a TTL only when the cache has a stale
//! grace (`stale_for`), as the TTL is then expiry plus grace. Build the
//! manager (or the region) with `stale_for(Duration::ZERO)`, as above, and
//! each record is stored with a TTL at its expiry: the `file` backend
//! drops it at compaction, a server backend by its own expiry. Otherwise,
//! or on a backend that keeps no TTL, call
//! [`delete_expired`](tower_sessions_core::ExpiredDeletion::delete_expired)
//! now and then (tower-sessions' `continuously_delete_expired` does).
//!
//! ## Creating a session never overwrites one
//!
//! [`create`](tower_sessions_core::SessionStore::create) stores the record
//! through carboy's `get_or_create` under the key's cross-process creation
//! lock: the existing record of that id, if one is fresh, is kept and the
//! record gets a new random id (tower-sessions' contract), in a loop. Two
//! processes creating the same id at once therefore keep one record and
//! renumber the other. A [`save`](tower_sessions_core::SessionStore::save)
//! takes no lock: it replaces the record whole.
//!
//! ## Concurrent requests of one session: lost updates, and the lock layer
//!
//! tower-sessions' layer loads a session when a handler first touches it
//! and saves the whole record after the response, if it changed. Two
//! requests of **the same session** that overlap (two tabs, a page and its
//! XHRs, two server processes) each load the same record and each save
//! their own copy: the later save wins and the other's change is lost. A
//! store alone cannot prevent it: the `SessionStore` trait has no "the
//! request ended" call and passes no version to `save`. The test
//! `tests/two_processes.rs` measures it: 8 clients at once on one session,
//! across two server processes, keep about a fifth of their 201
//! increments.
//!
//! Without more, this store guarantees: every record is written whole and
//! read whole by every process; requests of one session that do not
//! overlap (each waits for the previous response) see each other's writes
//! in every process; distinct sessions never interfere.
//!
//! **With [`SessionLocks`] and [`SessionLockLayer`]**, no update is lost:
//! `load` takes the session's cross-process lock (a byte-range stripe of
//! one lock file, [`carboy::sync::StripeLocks`], released by the kernel if
//! the process dies) and the request holds it until its save is written
//! (or, if it saves nothing, until its response is done), so the requests
//! of one session run their read-modify-write one at a time in every
//! thread and process. The same test counts all 201 increments with it.
//!
//! ```text
//! Router::new()
//!     .route(..)
//!     .layer(SessionManagerLayer::new(store.with_session_locks(SessionLocks::open(path)?)))
//!     .layer(SessionLockLayer::new())      // outside: covers the save
//! ```
//!
//! What the locks cost and assume:
//!
//! * Requests of one session wait for each other, reads included, from the
//!   first touch of the session; other sessions do not wait (but for the
//!   rare two that share one of the 1024 stripes).
//! * A wait is bounded by [`SessionLocks::timeout`] (60 s by default,
//!   carboy's `cache.lock_timeout`); past it `load` fails and
//!   tower-sessions answers 500. A handler that, holding its session, waits
//!   for another request of the same session (a call back to the server
//!   with the same cookie) waits until that timeout.
//! * Each held lock occupies a lock thread (a stripe belongs to the
//!   thread that locked it, and a task moves between threads); idle lock
//!   threads wait for the next request (at most 64 wait). A contended wait
//!   polls the lock, backing off from 50 µs to 2 ms, so that it is bounded
//!   without a runtime timer.
//! * The layer must be outside tower-sessions' layer, in the same task:
//!   under it, or without it, `load` takes no lock (nothing would release
//!   it) and the store behaves as without locks.
//! * Cookie-only sessions (no store) cannot be serialised this way.
//!
//! ## Benchmark
//!
//! `cargo bench -p carboy-tower-sessions --bench sessions` serves a
//! session counter through tower-sessions' layer over each store
//! (`MemoryStore`, this store on `file` with and without the lock layer,
//! on `memory`) and drives it over loopback keep-alive HTTP/1.1
//! connections; it prints requests/s and the ratio to `MemoryStore`.

mod lock;

pub use lock::{HeldSessionLock, SessionLockLayer, SessionLockService, SessionLocks};

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use carboy::Clock;
use carboy::cache::{AsyncCache, CacheManager, Codec, CreateError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

/// A tower-sessions [`SessionStore`] over one namespace of a carboy
/// [`CacheManager`] (any backend: `file` to share sessions between
/// processes, `memory`, or a registered one). See the crate docs for the
/// stored form, expiry, and what it promises.
///
/// Cheap to clone: clones share the namespace.
#[derive(Clone, Debug)]
pub struct CarboyStore {
    cache: AsyncCache<Json>,
    clock: Arc<dyn Clock>,
    locks: Option<SessionLocks>,
}

impl CarboyStore {
    /// The store of sessions in `namespace` of `manager` (opened now).
    ///
    /// The namespace should hold sessions only:
    /// [`delete_expired`](ExpiredDeletion::delete_expired) removes any of
    /// its values that is not a live record.
    pub fn new(manager: &CacheManager, namespace: &str) -> Result<CarboyStore, carboy::Error> {
        let cache = manager
            .get_cache(namespace)?
            .with_codec(Json)
            // An expired record is no session: never serve one while
            // `create` replaces it.
            .serving_stale(false)
            .to_async();
        Ok(CarboyStore {
            cache,
            clock: Arc::clone(manager.clock()),
            locks: None,
        })
    }

    /// This store, locking each session from its load to the end of the
    /// request, for requests served under a [`SessionLockLayer`]: the
    /// requests of one session then run their read-modify-write one at a
    /// time, in every thread and process that opened the same lock file,
    /// and none loses another's update (see the crate docs).
    pub fn with_session_locks(mut self, locks: SessionLocks) -> CarboyStore {
        self.locks = Some(locks);
        self
    }

    /// The namespace the sessions are stored in.
    pub fn namespace(&self) -> &str {
        self.cache.namespace()
    }

    /// How long until `record` expires, by the manager's clock; `None` when
    /// it already has.
    fn time_left(&self, record: &Record) -> Option<Duration> {
        let expiry_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let now_ms = i128::from(self.clock.now_unix_ms());
        let left = u64::try_from(expiry_ms - now_ms).ok()?;
        (left > 0).then(|| Duration::from_millis(left))
    }
}

/// The stored key of a session id.
fn key(id: &Id) -> String {
    id.to_string()
}

/// A carboy error as tower-sessions' backend error, naming the operation.
fn backend_error(operation: &str, id: &Id, e: carboy::Error) -> session_store::Error {
    match e {
        carboy::Error::Encode { reason, .. } => session_store::Error::Encode(format!(
            "carboy store, {operation} session {id}: {reason}"
        )),
        e => session_store::Error::Backend(format!("carboy store, {operation} session {id}: {e}")),
    }
}

#[async_trait]
impl SessionStore for CarboyStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            // Already expired: nothing to store, and no id to reserve.
            let Some(left) = self.time_left(record) else {
                return Ok(());
            };
            let created = AtomicBool::new(false);
            let ours = record.clone();
            let kept: Result<Record, CreateError<Infallible>> = self
                .cache
                .clone()
                .with_expire(Some(left))
                .get_or_create(&key(&record.id), || {
                    created.store(true, Ordering::Relaxed);
                    async move { Ok(ours) }
                })
                .await;
            match kept {
                Ok(_) if created.load(Ordering::Relaxed) => return Ok(()),
                // A live record holds this id: take another one.
                Ok(_) => record.id = Id::default(),
                Err(CreateError::Cache(e)) => return Err(backend_error("create", &record.id, e)),
                Err(CreateError::Creator(never)) => match *never {},
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = key(&record.id);
        let stored = match self.time_left(record) {
            Some(left) => self.cache.set_for(&id, record, Some(left)).await,
            // Saved already expired: it must not load again.
            None => self.cache.remove(&id).await.map(|_| ()),
        };
        // Written (or failed): the next request of the session may go.
        SessionLocks::release_for_request(&record.id);
        stored.map_err(|e| backend_error("save", &record.id, e))
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let key = key(session_id);
        if let Some(locks) = &self.locks {
            locks.lock_for_request(session_id, &key).await?;
        }
        let record: Option<Record> = self
            .cache
            .get(&key)
            .await
            .map_err(|e| backend_error("load", session_id, e))?;
        // The envelope's expiry is the record's, in milliseconds; this also
        // drops a record whose expiry_date disagrees with it.
        Ok(record.filter(|r| r.id == *session_id && self.time_left(r).is_some()))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let removed = self.cache.remove(&key(session_id)).await;
        SessionLocks::release_for_request(session_id);
        removed
            .map(|_| ())
            .map_err(|e| backend_error("delete", session_id, e))
    }
}

#[async_trait]
impl ExpiredDeletion for CarboyStore {
    /// Removes every expired record (and every value of the namespace that
    /// is not a record) from the backend, for backends that keep no TTL or
    /// a manager without a stale grace (see the crate docs, "Expiry").
    ///
    /// On a backend that cannot list its keys, this does nothing and
    /// returns `Ok`: records there leave by the backend's own TTL.
    ///
    /// A record saved again between this sweep's read of it (expired) and
    /// its removal is removed too: only a session that had already expired
    /// when the sweep read it can be caught so.
    async fn delete_expired(&self) -> session_store::Result<()> {
        let cache = self.cache.blocking();
        if !cache.backend().capabilities().list_keys {
            return Ok(());
        }
        let keys = cache.keys().map_err(|e| {
            session_store::Error::Backend(format!("carboy store, list sessions: {e}"))
        })?;
        for stored in keys {
            let entry = self
                .cache
                .get_entry::<Record>(&stored[..])
                .await
                .map_err(|e| {
                    session_store::Error::Backend(format!("carboy store, read a session: {e}"))
                })?;
            let live = entry.is_some_and(|e| !e.stale && self.time_left(&e.value).is_some());
            if !live {
                self.cache.remove(&stored[..]).await.map_err(|e| {
                    session_store::Error::Backend(format!("carboy store, delete a session: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

/// carboy's value codec for records: JSON through serde_json. A record's
/// data is `serde_json::Value`s, which postcard (not self-describing)
/// cannot decode.
#[derive(Clone, Copy, Debug, Default)]
struct Json;

impl Codec for Json {
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
