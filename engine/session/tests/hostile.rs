//! Hostile and stale cookies over real HTTP (an in-process server on
//! loopback, a mock clock for expiry): fixation, tampering, truncation,
//! garbage, a cookie signed by an unknown key, an expired session, an
//! oversized cookie session, logout and login followed by reuse of the old
//! cookie. Each gives the documented fresh session or error status, never
//! a 500 or a panic.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use carboy::MockClock;
use carboy_session::{
    Session, SessionConfig, SessionError, SessionId, SessionType, Sessions, demo,
};
use http::StatusCode;
use support::{Client, serve};

const SECRET: &str = "a test secret of at least sixteen bytes";
const OTHER: &str = "another secret, also sixteen bytes+";

fn server_side(dir: &std::path::Path, clock: &MockClock, secret: Option<&str>) -> Sessions {
    let mut c = SessionConfig::new()
        .data_dir(dir)
        .timeout(Some(Duration::from_secs(60)))
        .clock(Arc::new(clock.clone()));
    if let Some(s) = secret {
        c = c.secret([s]);
    }
    c.build().unwrap()
}

/// The session id inside an id cookie `name=value` (signed: the id is the
/// value's last 22 characters).
fn id_of(cookie: &str) -> String {
    let value = cookie.split_once('=').unwrap().1;
    value[value.len() - 22..].to_string()
}

async fn stored(sessions: &Sessions, id: &str) -> bool {
    sessions.cache().unwrap().contains(id).await.unwrap()
}

/// A fresh session: count 1, a new cookie that is not the one sent.
fn assert_fresh(got: &support::Answer, sent: &str) {
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body, "1", "a fresh session");
    let new = got.cookie().expect("a fresh session gets a cookie");
    assert_ne!(new, sent, "the client's id is never adopted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_id_cookies_give_fresh_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = server_side(dir.path(), &clock, Some(SECRET));
    let url = serve(demo::router(sessions.clone())).await;
    let client = Client::new();
    let count = format!("{url}/count");
    let good = client.get(&count, None).await.cookie().unwrap();
    assert_eq!(client.get(&count, Some(&good)).await.body, "2");

    // Tampered: one character of the id changed (the signature no longer
    // verifies).
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_fresh(&client.get(&count, Some(&tampered)).await, &tampered);
    // Truncated.
    let truncated = good[..good.len() / 2].to_string();
    assert_fresh(&client.get(&count, Some(&truncated)).await, &truncated);
    // Garbage, and a header that is not even cookie syntax.
    for garbage in [
        "beaker.session.id=%%%%",
        "beaker.session.id=\"\\\"",
        "beaker.session.id",
        ";;;=;",
        "beaker.session.id=",
    ] {
        assert_fresh(&client.get(&count, Some(garbage)).await, garbage);
    }
    // Signed by an unknown key: a cookie from a server with another secret.
    let other = server_side(dir.path(), &clock, Some(OTHER));
    let other_url = serve(demo::router(other)).await;
    let foreign = client
        .get(&format!("{other_url}/count"), None)
        .await
        .cookie()
        .unwrap();
    assert_fresh(&client.get(&count, Some(&foreign)).await, &foreign);
    // The good session is untouched by all this.
    assert_eq!(client.get(&count, Some(&good)).await.body, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_well_formed_id_is_never_adopted() {
    // No secret: ids are sent bare, so an attacker can plant a well-formed
    // one (session fixation). It is not in the store: a new id is issued.
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = server_side(dir.path(), &clock, None);
    let url = serve(demo::router(sessions.clone())).await;
    let client = Client::new();
    let planted = format!("beaker.session.id={}", SessionId::generate().unwrap());
    let got = client.get(&format!("{url}/count"), Some(&planted)).await;
    assert_fresh(&got, &planted);
    assert!(!stored(&sessions, &id_of(&planted)).await);
    let issued = got.cookie().unwrap();
    assert!(stored(&sessions, &id_of(&issued)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_slide_then_expire_and_leave_storage() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = server_side(dir.path(), &clock, Some(SECRET));
    let url = serve(demo::router(sessions.clone())).await;
    let client = Client::new();
    let count = format!("{url}/count");
    let cookie = client.get(&count, None).await.cookie().unwrap();
    // Sliding: each access within the timeout keeps it alive.
    for n in 2..=4 {
        clock.advance(Duration::from_secs(50));
        assert_eq!(client.get(&count, Some(&cookie)).await.body, n.to_string());
    }
    // Idle past the timeout: a fresh session, and the old data removed.
    clock.advance(Duration::from_secs(61));
    assert!(
        stored(&sessions, &id_of(&cookie)).await,
        "still stored until the next load"
    );
    assert_fresh(&client.get(&count, Some(&cookie)).await, &cookie);
    assert!(!stored(&sessions, &id_of(&cookie)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_login_make_old_cookies_worthless() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = server_side(dir.path(), &clock, Some(SECRET));
    let url = serve(demo::router(sessions.clone())).await;
    let client = Client::new();
    let count = format!("{url}/count");
    let before = client.get(&count, None).await.cookie().unwrap();
    let login = client.post(&format!("{url}/login"), Some(&before)).await;
    assert_eq!(login.body, "1");
    let after = login.cookie().unwrap();
    assert!(
        !stored(&sessions, &id_of(&before)).await,
        "regenerate_id removes the old id's data"
    );
    assert_fresh(&client.get(&count, Some(&before)).await, &before);
    assert_eq!(client.get(&count, Some(&after)).await.body, "2");
    let logout = client.post(&format!("{url}/logout"), Some(&after)).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert!(
        logout.set_cookies[0].contains("Max-Age=0"),
        "{:?}",
        logout.set_cookies
    );
    assert!(
        !stored(&sessions, &id_of(&after)).await,
        "delete removes the stored data"
    );
    assert_fresh(&client.get(&count, Some(&after)).await, &after);
}

fn cookie_sessions(clock: &MockClock, keys: &[&str], encrypt: &[&str]) -> Sessions {
    SessionConfig::new()
        .session_type(SessionType::Cookie)
        .validate_key(keys.iter().copied())
        .encrypt_key(encrypt.iter().copied())
        .timeout(Some(Duration::from_secs(60)))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

async fn grow(session: Session) -> Result<&'static str, SessionError> {
    session.insert("blob", "x".repeat(5000)).await?;
    Ok("grown")
}

/// Calls save itself, sees the error, drops the data and answers 413.
async fn grow_checked(session: Session) -> (StatusCode, String) {
    session.insert("blob", "x".repeat(5000)).await.unwrap();
    match session.save().await {
        Err(SessionError::CookieTooLarge { size, limit }) => {
            session.remove::<String>("blob").await.unwrap();
            (StatusCode::PAYLOAD_TOO_LARGE, format!("{size} > {limit}"))
        }
        other => (StatusCode::OK, format!("{other:?}")),
    }
}

fn cookie_app(sessions: Sessions) -> Router {
    demo::router(sessions.clone()).merge(
        Router::new()
            .route("/grow", get(grow))
            .route("/grow_checked", get(grow_checked))
            .layer(sessions.layer()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_cookie_session_is_an_error_at_save_never_a_500() {
    let clock = MockClock::new(1_700_000_000_000);
    for encrypt in [&[][..], &[OTHER][..]] {
        let sessions = cookie_sessions(&clock, &[SECRET], encrypt);
        let url = serve(cookie_app(sessions)).await;
        let client = Client::new();
        let cookie = client
            .get(&format!("{url}/count"), None)
            .await
            .cookie()
            .unwrap();
        // The middleware's save: 507, no Set-Cookie, the error names the size.
        let grown = client.get(&format!("{url}/grow"), Some(&cookie)).await;
        assert_eq!(grown.status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(grown.set_cookies.is_empty());
        assert!(grown.body.contains("4096"), "{}", grown.body);
        // The handler's own save: it sees the error first.
        let checked = client
            .get(&format!("{url}/grow_checked"), Some(&cookie))
            .await;
        assert_eq!(
            checked.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            checked.body
        );
        let (size, limit) = checked.body.split_once(" > ").unwrap();
        assert!(size.parse::<usize>().unwrap() > 4096 && limit == "4096");
        // The client's previous cookie still holds the previous state.
        assert_eq!(
            client
                .get(&format!("{url}/count"), Some(&cookie))
                .await
                .body,
            "2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cookie_sessions_give_fresh_sessions() {
    let clock = MockClock::new(1_700_000_000_000);
    for encrypt in [&[][..], &[OTHER][..]] {
        let sessions = cookie_sessions(&clock, &[SECRET], encrypt);
        let url = serve(demo::router(sessions)).await;
        let client = Client::new();
        let count = format!("{url}/count");
        let c1 = client.get(&count, None).await.cookie().unwrap();
        let c2 = client.get(&count, Some(&c1)).await.cookie().unwrap();
        assert_eq!(client.get(&count, Some(&c2)).await.body, "3");
        let value = c2.split_once('=').unwrap().1;
        // Tampered in the middle, truncated, garbage.
        let mid = value.len() / 2;
        let flipped = if &value[mid..=mid] == "A" { "B" } else { "A" };
        let tampered = format!(
            "beaker.session.id={}{flipped}{}",
            &value[..mid],
            &value[mid + 1..]
        );
        let truncated = format!("beaker.session.id={}", &value[..value.len() - 3]);
        for bad in [tampered, truncated, "beaker.session.id=!!".to_string()] {
            let got = client.get(&count, Some(&bad)).await;
            assert_eq!(
                (got.status, got.body.as_str()),
                (StatusCode::OK, "1"),
                "{bad}"
            );
        }
        // Signed (or sealed) by a key this server does not have.
        let foreign_sessions = cookie_sessions(&clock, &[OTHER], &["yet another key, 16 bytes+"]);
        let foreign_url = serve(demo::router(foreign_sessions)).await;
        let foreign = client
            .get(&format!("{foreign_url}/count"), None)
            .await
            .cookie()
            .unwrap();
        assert_eq!(client.get(&count, Some(&foreign)).await.body, "1");
        // Expired.
        clock.advance(Duration::from_secs(61));
        assert_eq!(client.get(&count, Some(&c2)).await.body, "1");
        // Logout then reuse: a cookie session cannot be revoked (documented).
        let c3 = client.get(&count, None).await.cookie().unwrap();
        let logout = client.post(&format!("{url}/logout"), Some(&c3)).await;
        assert!(logout.set_cookies[0].contains("Max-Age=0"));
        assert_eq!(
            client.get(&count, Some(&c3)).await.body,
            "2",
            "the old cookie still holds its state"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_verify_old_cookies_and_reissue_them_with_the_newest() {
    let clock = MockClock::new(1_700_000_000_000);
    const NEW: &str = "the newest key, sixteen bytes+";
    for (old_enc, new_enc) in [
        (vec![], vec![]),
        (vec![OTHER], vec!["newest encrypt key, 16 bytes+", OTHER]),
    ] {
        let old = cookie_sessions(&clock, &[SECRET], &old_enc);
        let rotated = cookie_sessions(&clock, &[NEW, SECRET], &new_enc);
        let new_only = cookie_sessions(&clock, &[NEW], &new_enc[..new_enc.len().min(1)]);
        let (old_url, rotated_url, new_url) = (
            serve(demo::router(old)).await,
            serve(demo::router(rotated)).await,
            serve(demo::router(new_only)).await,
        );
        let client = Client::new();
        let old_cookie = client
            .get(&format!("{old_url}/count"), None)
            .await
            .cookie()
            .unwrap();
        // The rotated server reads it, and re-issues it with the newest key.
        let got = client
            .get(&format!("{rotated_url}/count"), Some(&old_cookie))
            .await;
        assert_eq!(got.body, "2");
        let reissued = got.cookie().unwrap();
        // The newest key alone reads the re-issued cookie, not the old one.
        assert_eq!(
            client
                .get(&format!("{new_url}/count"), Some(&reissued))
                .await
                .body,
            "3"
        );
        assert_eq!(
            client
                .get(&format!("{new_url}/count"), Some(&old_cookie))
                .await
                .body,
            "1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_sessions_hide_their_data_in_cookies_and_in_storage() {
    let clock = MockClock::new(1_700_000_000_000);
    const MARKER: &str = "plain-marker-value";
    let marker = MARKER;
    let app = |sessions: Sessions| {
        Router::new()
            .route(
                "/put",
                get(|s: Session| async move {
                    s.insert("secret", MARKER).await.unwrap();
                    "ok"
                }),
            )
            .route(
                "/read",
                get(|s: Session| async move {
                    s.get::<String>("secret").await.unwrap().unwrap_or_default()
                }),
            )
            .layer(sessions.layer())
    };
    // Cookie session, encrypted.
    let sessions = cookie_sessions(&clock, &[SECRET], &[OTHER]);
    let url = serve(app(sessions)).await;
    let client = Client::new();
    let cookie = client
        .get(&format!("{url}/put"), None)
        .await
        .cookie()
        .unwrap();
    assert!(!cookie.contains(marker) && !cookie.contains("secret"));
    assert_eq!(
        client.get(&format!("{url}/read"), Some(&cookie)).await.body,
        marker
    );
    // Server-side with encrypt_key: the stored bytes hold no plaintext.
    let dir = tempfile::tempdir().unwrap();
    let sessions = SessionConfig::new()
        .data_dir(dir.path())
        .encrypt_key([OTHER])
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let url = serve(app(sessions.clone())).await;
    let cookie = client
        .get(&format!("{url}/put"), None)
        .await
        .cookie()
        .unwrap();
    let id = id_of(&cookie);
    let raw = sessions
        .cache()
        .unwrap()
        .blocking()
        .backend()
        .get(id.as_bytes())
        .unwrap()
        .unwrap()
        .to_vec();
    assert!(!raw.windows(marker.len()).any(|w| w == marker.as_bytes()));
    assert_eq!(
        client.get(&format!("{url}/read"), Some(&cookie)).await.body,
        marker
    );
    // Read by a server without the key: never taken as plaintext, a fresh session.
    let plain = SessionConfig::new()
        .data_dir(dir.path())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let plain_url = serve(app(plain)).await;
    assert_eq!(
        client
            .get(&format!("{plain_url}/read"), Some(&cookie))
            .await
            .body,
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_several_cookies_by_the_session_name_the_first_live_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let sessions = server_side(dir.path(), &clock, Some(SECRET));
    let url = serve(demo::router(sessions)).await;
    let client = Client::new();
    let count = format!("{url}/count");
    let good = client.get(&count, None).await.cookie().unwrap();
    // A stale path-scoped duplicate or junk before the live cookie.
    let both = format!("beaker.session.id=junk; other=1; {good}");
    let got = client.get(&count, Some(&both)).await;
    assert_eq!((got.body.as_str(), got.set_cookies.len()), ("2", 0));
}
