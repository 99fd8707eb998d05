//! `CarboyStore` keeps tower-sessions' `SessionStore` contract on carboy's
//! `memory` and `file` backends: records round-trip whole; `create` never
//! overwrites a live record (it takes a new id); expiry follows the
//! manager's clock (a `MockClock`, never a sleep); `delete` and
//! `delete_expired` remove the stored bytes; stored bytes that are not a
//! record read as no session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::CacheManager;
use carboy_tower_sessions::CarboyStore;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::{ExpiredDeletion, SessionStore};

/// 2026-01-01T00:00:00Z, in Unix ms.
const START_MS: u64 = 1_767_225_600_000;

struct Fixture {
    dir: tempfile::TempDir,
    clock: MockClock,
    manager: CacheManager,
    store: CarboyStore,
}

fn fixture(backend: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = MockClock::new(START_MS);
    let manager = CacheManager::builder()
        .backend(backend)
        .data_dir(dir.path())
        .stale_for(Duration::ZERO)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("a cache manager");
    let store = CarboyStore::new(&manager, "sessions").expect("the sessions namespace");
    Fixture {
        dir,
        clock,
        manager,
        store,
    }
}

/// A record with `count` that expires `secs` after START_MS.
fn record(count: u64, secs: i64) -> Record {
    let start = OffsetDateTime::from_unix_timestamp((START_MS / 1000) as i64).expect("a date");
    Record {
        id: Id::default(),
        data: HashMap::from([
            ("count".to_string(), json!(count)),
            (
                "user".to_string(),
                json!({"name": "alice", "roles": ["a", "b"]}),
            ),
        ]),
        expiry_date: start + time::Duration::seconds(secs),
    }
}

const BACKENDS: [&str; 2] = ["memory", "file"];

#[tokio::test]
async fn a_saved_record_loads_whole_and_an_unknown_id_loads_nothing() {
    for backend in BACKENDS {
        let f = fixture(backend);
        let r = record(7, 3600);
        f.store.save(&r).await.expect("save");
        assert_eq!(
            f.store.load(&r.id).await.expect("load"),
            Some(r.clone()),
            "{backend}"
        );
        assert_eq!(
            f.store.load(&Id::default()).await.expect("load"),
            None,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn create_never_overwrites_a_live_record() {
    for backend in BACKENDS {
        let f = fixture(backend);
        let existing = record(1, 3600);
        f.store.save(&existing).await.expect("save");
        let mut newcomer = record(2, 3600);
        newcomer.id = existing.id;
        f.store.create(&mut newcomer).await.expect("create");
        assert_ne!(
            newcomer.id, existing.id,
            "{backend}: the colliding id was replaced"
        );
        assert_eq!(
            f.store.load(&existing.id).await.expect("load"),
            Some(existing.clone())
        );
        assert_eq!(
            f.store.load(&newcomer.id).await.expect("load"),
            Some(newcomer.clone())
        );

        // An expired record's id is free again.
        let old = record(3, 10);
        f.store.save(&old).await.expect("save");
        f.clock.advance(Duration::from_secs(11));
        let mut reuse = record(4, 3600);
        reuse.id = old.id;
        f.store.create(&mut reuse).await.expect("create");
        assert_eq!(reuse.id, old.id, "{backend}: an expired id is reused");
        assert_eq!(f.store.load(&old.id).await.expect("load"), Some(reuse));
    }
}

#[tokio::test]
async fn a_record_expires_at_its_expiry_date_by_the_managers_clock() {
    for backend in BACKENDS {
        let f = fixture(backend);
        let r = record(1, 60);
        f.store.save(&r).await.expect("save");
        f.clock.advance(Duration::from_secs(59));
        assert!(
            f.store.load(&r.id).await.expect("load").is_some(),
            "{backend}: 1 s left"
        );
        f.clock.advance(Duration::from_secs(1));
        assert_eq!(
            f.store.load(&r.id).await.expect("load"),
            None,
            "{backend}: at expiry"
        );

        // Saving a record that has already expired removes it.
        let live = record(2, 3600);
        f.store.save(&live).await.expect("save");
        let mut dead = live.clone();
        dead.expiry_date -= time::Duration::hours(2);
        f.store.save(&dead).await.expect("save");
        assert_eq!(
            f.store.load(&live.id).await.expect("load"),
            None,
            "{backend}"
        );
        let cache = f.manager.get_cache("sessions").expect("the namespace");
        assert!(
            !cache
                .backend()
                .contains(live.id.to_string().as_bytes())
                .expect("contains")
        );
    }
}

#[tokio::test]
async fn delete_removes_the_stored_bytes() {
    for backend in BACKENDS {
        let f = fixture(backend);
        let r = record(1, 3600);
        f.store.save(&r).await.expect("save");
        let cache = f.manager.get_cache("sessions").expect("the namespace");
        let key = r.id.to_string();
        assert!(cache.backend().contains(key.as_bytes()).expect("contains"));
        f.store.delete(&r.id).await.expect("delete");
        assert!(
            !cache.backend().contains(key.as_bytes()).expect("contains"),
            "{backend}"
        );
        assert_eq!(f.store.load(&r.id).await.expect("load"), None);
    }
}

#[tokio::test]
async fn delete_expired_removes_expired_records_and_keeps_live_ones() {
    for backend in BACKENDS {
        let f = fixture(backend);
        // Without a stale grace the backend keeps expired bytes: the sweep
        // is what removes them.
        let manager = CacheManager::builder()
            .backend(backend)
            .data_dir(f.dir.path())
            .clock(Arc::new(f.clock.clone()))
            .build()
            .expect("a cache manager");
        let store = CarboyStore::new(&manager, "swept").expect("a namespace");
        let short = record(1, 10);
        let long = record(2, 3600);
        store.save(&short).await.expect("save");
        store.save(&long).await.expect("save");
        let cache = manager.get_cache("swept").expect("the namespace");
        cache.set("not-a-record", &5u32).expect("set");
        f.clock.advance(Duration::from_secs(20));
        assert_eq!(
            cache.keys().expect("keys").len(),
            3,
            "{backend}: nothing dropped yet"
        );
        store.delete_expired().await.expect("delete_expired");
        let keys = cache.keys().expect("keys");
        assert_eq!(keys, vec![long.id.to_string().into_bytes()], "{backend}");
        assert_eq!(store.load(&long.id).await.expect("load"), Some(long));
    }
}

#[tokio::test]
async fn bytes_that_are_not_a_record_load_as_no_session() {
    for backend in BACKENDS {
        let f = fixture(backend);
        let cache = f.manager.get_cache("sessions").expect("the namespace");
        let id = Id::default();
        // A postcard value, then JSON of another shape, under a session key.
        cache.set(&id.to_string(), &"alice").expect("set");
        assert_eq!(f.store.load(&id).await.expect("load"), None, "{backend}");
        let json = cache.with_codec(JsonForTest);
        json.set(&id.to_string(), &json!({"id": 5, "data": []}))
            .expect("set");
        assert_eq!(f.store.load(&id).await.expect("load"), None, "{backend}");
        // A record stored under another id's key is not that session.
        let r = record(1, 3600);
        json.set(&id.to_string(), &r).expect("set");
        assert_eq!(f.store.load(&id).await.expect("load"), None, "{backend}");
    }
}

/// JSON, as the store encodes records.
#[derive(Clone, Copy, Debug)]
struct JsonForTest;

impl carboy::cache::Codec for JsonForTest {
    fn encode<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        serde_json::to_writer(out, value).map_err(|e| e.to_string())
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
