//! Settings: every Beaker session setting the issue lists is accepted with
//! both prefixes; a bad or unknown one is an error naming it; the cookie's
//! attributes (HttpOnly, SameSite, Secure, Path, Domain, Max-Age/Expires)
//! follow the settings.

mod support;

use std::sync::Arc;

use carboy::MockClock;
use carboy_session::{SessionConfig, SessionError, demo};
use support::{Client, serve};

const SECRET: &str = "a test secret of at least sixteen bytes";

#[test]
fn every_listed_setting_is_accepted_under_both_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    for prefix in ["session.", "beaker.session."] {
        let settings = [
            ("type", "file"),
            ("data_dir", data.as_str()),
            ("key", "sid"),
            ("secret", SECRET),
            ("timeout", "600"),
            ("cookie_expires", "3600"),
            ("cookie_domain", "example.test"),
            ("cookie_path", "/app"),
            ("secure", "true"),
            ("httponly", "false"),
            ("samesite", "Strict"),
            ("save_accessed_time", "false"),
            ("invalidate_corrupt", "false"),
            ("encrypt_key", "an encryption key of 16+ bytes"),
            ("validate_key", "a validation key of 16+ bytes"),
            ("lock_timeout", "5"),
            ("durability", "sync"),
        ];
        let config = SessionConfig::from_settings(
            settings
                .iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v.to_string()))
                .chain([("unrelated.setting".to_string(), "x".to_string())]),
        )
        .unwrap();
        config.build().unwrap();
    }
}

fn setting_error(settings: &[(&str, &str)]) -> String {
    let result = SessionConfig::from_settings(settings.iter().copied()).and_then(|c| c.build());
    match result {
        Err(SessionError::Setting { setting, .. }) => setting,
        other => panic!("{settings:?}: expected a setting error, got {other:?}"),
    }
}

#[test]
fn a_bad_or_unknown_setting_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let d = data.as_str();
    for (settings, named) in [
        (vec![("session.timeout", "soon")], "session.timeout"),
        (vec![("session.timeout", "0")], "session.timeout"),
        (
            vec![("beaker.session.secure", "maybe")],
            "beaker.session.secure",
        ),
        (vec![("session.httponly", "")], "session.httponly"),
        (vec![("session.samesite", "sideways")], "session.samesite"),
        (
            vec![("session.cookie_expires", "-1")],
            "session.cookie_expires",
        ),
        (
            vec![("session.invalidate_corrupt", "2")],
            "session.invalidate_corrupt",
        ),
        (
            vec![("session.save_accessed_time", "nope")],
            "session.save_accessed_time",
        ),
        (vec![("session.secret", "short")], "session.secret"),
        (
            vec![("session.encrypt_key", "short")],
            "session.encrypt_key",
        ),
        (vec![("session.key", "a b")], "session.key"),
        (vec![("session.cookie_path", "app")], "session.cookie_path"),
        (
            vec![("session.cookie_domain", "a;b")],
            "session.cookie_domain",
        ),
        (vec![("session.samesite", "None")], "session.samesite"),
        (vec![("session.type", "cookie")], "session.validate_key"),
        (vec![("session.type", "file")], "session.data_dir"),
        (
            vec![("session.data_dir", ""), ("session.type", "file")],
            "session.data_dir",
        ),
        (
            vec![("session.data_dir", d), ("session.bogus", "1")],
            "session.bogus",
        ),
        (
            vec![("session.data_dir", d), ("beaker.session.auto", "true")],
            "beaker.session.auto",
        ),
        (
            vec![("session.data_dir", d), ("session.durability", "often")],
            "session.durability",
        ),
    ] {
        assert_eq!(setting_error(&settings), named, "{settings:?}");
    }
    // An unknown backend type is an error too.
    let err = SessionConfig::from_settings([("session.type", "nosuchbackend")])
        .unwrap()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("nosuchbackend"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_carries_the_configured_attributes() {
    // 2023-11-14T22:13:20Z
    let clock = MockClock::new(1_700_000_000_000);
    let config = |settings: &[(&str, &str)]| {
        SessionConfig::from_settings(settings.iter().copied())
            .unwrap()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    };
    let client = Client::new();
    let set_cookie = |sessions| async {
        let url = serve(demo::router(sessions)).await;
        let got = client.get(&format!("{url}/count"), None).await;
        assert_eq!(got.set_cookies.len(), 1);
        got.set_cookies[0].clone()
    };
    // Defaults: HttpOnly, SameSite=Lax, Path=/, a browser-session cookie.
    let c = set_cookie(config(&[])).await;
    assert!(c.starts_with("beaker.session.id="), "{c}");
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(c.contains(part), "{c}");
    }
    for absent in ["Secure", "Max-Age", "Expires", "Domain"] {
        assert!(!c.contains(absent), "{c}");
    }
    // Everything set.
    let c = set_cookie(config(&[
        ("session.key", "sid"),
        ("session.secure", "true"),
        ("session.httponly", "false"),
        ("session.samesite", "Strict"),
        ("session.cookie_path", "/app"),
        ("session.cookie_domain", "example.test"),
        ("session.cookie_expires", "3600"),
    ]))
    .await;
    assert!(c.starts_with("sid="), "{c}");
    for part in [
        "Secure",
        "SameSite=Strict",
        "Path=/app",
        "Domain=example.test",
        "Max-Age=3600",
        "Expires=Tue, 14 Nov 2023 23:13:20 GMT",
    ] {
        assert!(c.contains(part), "{part} missing: {c}");
    }
    assert!(!c.contains("HttpOnly"), "{c}");
    // cookie_expires = false: Beaker's 2038; samesite = off: no attribute.
    let c = set_cookie(config(&[
        ("session.cookie_expires", "false"),
        ("session.samesite", "off"),
    ]))
    .await;
    assert!(c.contains("Expires=Tue, 19 Jan 2038 03:14:07 GMT"), "{c}");
    assert!(!c.contains("SameSite"), "{c}");
    // Seconds past any date: Max-Age alone, no panic.
    let c = set_cookie(config(&[(
        "session.cookie_expires",
        "18446744073709551615",
    )]))
    .await;
    assert!(c.contains("Max-Age=9223372036854775807"), "{c}");
    assert!(!c.contains("Expires"), "{c}");
}
