//! The Session API outside the happy path: get_by_id, delete,
//! regenerate_id and invalidate remove what Beaker left behind; typed
//! values; expired sessions leave storage (TTL, and the cleanup call).

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use carboy::MockClock;
use carboy_session::{
    STORAGE_GRACE, Session, SessionConfig, SessionError, SessionType, Sessions, demo,
};
use support::{Client, serve};

fn file_sessions(dir: &std::path::Path, clock: &MockClock) -> Sessions {
    SessionConfig::new()
        .data_dir(dir)
        .timeout(Some(Duration::from_secs(60)))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn id_of(cookie: &str) -> String {
    cookie.split_once('=').unwrap().1.to_string()
}

/// Makes a session with count 1 over HTTP; returns its id.
async fn new_session(sessions: &Sessions) -> String {
    let url = serve(demo::router(sessions.clone())).await;
    id_of(
        &Client::new()
            .get(&format!("{url}/count"), None)
            .await
            .cookie()
            .unwrap(),
    )
}

async fn stored(sessions: &Sessions, id: &str) -> bool {
    sessions.cache().unwrap().contains(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_by_id_loads_locks_and_saves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = file_sessions(dir.path(), &clock);
    let id = new_session(&sessions).await;
    let s = sessions.get_by_id(&id).await.unwrap().expect("stored");
    assert_eq!(s.get::<u64>("count").await.unwrap(), Some(1));
    assert!(!s.is_new().await.unwrap());
    s.insert("count", 41u64).await.unwrap();
    s.save().await.unwrap();
    drop(s);
    let again = sessions.get_by_id(&id).await.unwrap().unwrap();
    assert_eq!(again.get::<u64>("count").await.unwrap(), Some(41));
    drop(again);
    assert!(sessions.get_by_id("not an id").await.unwrap().is_none());
    let unknown = carboy_session::SessionId::generate().unwrap();
    assert!(
        sessions
            .get_by_id(unknown.as_str())
            .await
            .unwrap()
            .is_none()
    );
    // A typed get of the wrong type is an error, not a misread.
    let s = sessions.get_by_id(&id).await.unwrap().unwrap();
    assert!(matches!(
        s.get::<String>("count").await,
        Err(SessionError::Value { .. })
    ));
    // Cookie sessions have no store.
    let cookie = SessionConfig::new()
        .session_type(SessionType::Cookie)
        .validate_key(["a validation key of 16+ bytes"])
        .build()
        .unwrap();
    assert!(matches!(
        cookie.get_by_id(&id).await,
        Err(SessionError::Unsupported { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_regenerate_and_invalidate_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = file_sessions(dir.path(), &clock);

    let id = new_session(&sessions).await;
    let s = sessions.get_by_id(&id).await.unwrap().unwrap();
    s.delete().await.unwrap();
    assert!(!stored(&sessions, &id).await, "delete removes at once");
    drop(s);

    let id = new_session(&sessions).await;
    let s = sessions.get_by_id(&id).await.unwrap().unwrap();
    s.regenerate_id().await.unwrap();
    let new_id = s.id().await.unwrap();
    assert_ne!(new_id.as_str(), id);
    s.save().await.unwrap();
    assert!(
        !stored(&sessions, &id).await,
        "regenerate_id removes the old id at save"
    );
    assert!(stored(&sessions, new_id.as_str()).await);
    assert_eq!(s.get::<u64>("count").await.unwrap(), Some(1), "data kept");
    drop(s);

    let id = new_session(&sessions).await;
    let s = sessions.get_by_id(&id).await.unwrap().unwrap();
    s.invalidate().await.unwrap();
    assert_eq!(s.get::<u64>("count").await.unwrap(), None, "data gone");
    let new_id = s.id().await.unwrap();
    s.save().await.unwrap();
    assert!(!stored(&sessions, &id).await);
    assert!(
        stored(&sessions, new_id.as_str()).await,
        "the invalidated session is a new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_leave_storage() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = file_sessions(dir.path(), &clock);
    let a = new_session(&sessions).await;
    let b = new_session(&sessions).await;
    // Timed out but within the storage grace: still stored; cleanup
    // removes it (and leaves a live one).
    clock.advance(Duration::from_secs(30));
    let c = new_session(&sessions).await;
    clock.advance(Duration::from_secs(31));
    assert!(stored(&sessions, &a).await);
    assert_eq!(sessions.cleanup().await.unwrap(), 2);
    assert!(!stored(&sessions, &a).await && !stored(&sessions, &b).await);
    assert!(stored(&sessions, &c).await);
    // Past timeout + grace, the backend's TTL drops it by itself.
    clock.advance(STORAGE_GRACE + Duration::from_secs(60));
    let raw = sessions
        .cache()
        .unwrap()
        .blocking()
        .backend()
        .get(c.as_bytes())
        .unwrap();
    assert!(raw.is_none(), "the file backend's TTL expired it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_used_after_its_request_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = file_sessions(dir.path(), &clock);
    let (tx, rx) = tokio::sync::oneshot::channel::<Session>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = Router::new()
        .route(
            "/keep",
            get(move |s: Session| {
                let tx = Arc::clone(&tx);
                async move {
                    s.insert("x", 1).await.unwrap();
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(s);
                    }
                    "kept"
                }
            }),
        )
        .layer(sessions.layer());
    let url = serve(app).await;
    assert_eq!(
        Client::new().get(&format!("{url}/keep"), None).await.body,
        "kept"
    );
    let kept = rx.await.unwrap();
    assert!(matches!(
        kept.insert("y", 2).await,
        Err(SessionError::Finished)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_locked_too_long_is_a_503_and_stays_the_same_session() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = SessionConfig::new()
        .data_dir(dir.path())
        .lock_timeout(Some(Duration::from_millis(100)))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let url = serve(demo::router(sessions.clone())).await;
    let client = Client::new();
    let cookie = client
        .get(&format!("{url}/count"), None)
        .await
        .cookie()
        .unwrap();
    // Another holder keeps the session's lock past session.lock_timeout.
    let held = sessions.get_by_id(&id_of(&cookie)).await.unwrap().unwrap();
    let got = client.get(&format!("{url}/count"), Some(&cookie)).await;
    assert_eq!(got.status.as_u16(), 503, "{}", got.body);
    assert!(got.set_cookies.is_empty());
    drop(held);
    // Not a fresh session: the same one, its count intact.
    let got = client.get(&format!("{url}/count"), Some(&cookie)).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stored_session_is_fresh_or_an_error_as_invalidate_corrupt_says() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let config = || {
        SessionConfig::new()
            .data_dir(dir.path())
            .clock(Arc::new(clock.clone()))
    };
    // Stored sealed; read by servers that lack the key: undecodable.
    let sealed = config()
        .encrypt_key(["an encryption key of 16+ bytes"])
        .build()
        .unwrap();
    let id = new_session(&sealed).await;
    let cookie = format!("beaker.session.id={id}");
    let client = Client::new();
    let strict = config().invalidate_corrupt(false).build().unwrap();
    let url = serve(demo::router(strict)).await;
    let got = client.get(&format!("{url}/count"), Some(&cookie)).await;
    assert_eq!(got.status.as_u16(), 500);
    assert!(
        got.body.contains("corrupt") && got.body.contains("invalidate_corrupt"),
        "{}",
        got.body
    );
    assert!(stored(&sealed, &id).await, "kept for inspection");
    let lenient = config().build().unwrap();
    let url = serve(demo::router(lenient)).await;
    let got = client.get(&format!("{url}/count"), Some(&cookie)).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "1"));
    assert!(!stored(&sealed, &id).await, "replaced by a fresh session");
}
