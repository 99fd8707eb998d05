//! Sessions on a real redis and a real memcached, over real HTTP with real
//! processes: two demo servers started with `--type redis|memcached --url`
//! share sessions through one server without losing an update (8 clients
//! at once on one session, alternating servers); a logout on one server
//! leaves a fresh session on the other; the session lock is the server's
//! (`SET NX PX` / memcached `add`): held across a request, renewed while
//! held past its lease, released when the session is dropped. The test
//! binary re-executes itself as the demo servers (harness = false).
//!
//! Without `redis-server` or `memcached` installed these tests print why
//! and skip, unless `CI` is set: then they fail.

mod support;

use std::time::Duration;

use carboy_session::SessionConfig;
use carboy_tests::memcached_server::MemcachedServer;
use carboy_tests::redis_server::RedisServer;
use support::{Client, runtime, spawn_demo};

const SECRET: &str = "a test secret of at least sixteen bytes";

fn main() {
    if support::run_child_if_asked() {
        return;
    }
    // This process opens sessions on the servers too (the lock tests).
    carboy_redis::register().expect("register the redis backend");
    carboy_memcached::register().expect("register the memcached backend");
    support::run_tests(&[
        (
            "redis_two_servers_share_sessions_and_lose_no_update",
            redis_two_servers_share_sessions_and_lose_no_update,
        ),
        (
            "redis_logout_on_one_server_is_seen_by_the_other",
            redis_logout_on_one_server_is_seen_by_the_other,
        ),
        (
            "redis_session_lock_is_held_renewed_and_released",
            redis_session_lock_is_held_renewed_and_released,
        ),
        (
            "memcached_two_servers_share_sessions_and_lose_no_update",
            memcached_two_servers_share_sessions_and_lose_no_update,
        ),
        (
            "memcached_logout_on_one_server_is_seen_by_the_other",
            memcached_logout_on_one_server_is_seen_by_the_other,
        ),
        (
            "memcached_session_lock_is_held_renewed_and_released",
            memcached_session_lock_is_held_renewed_and_released,
        ),
    ]);
}

/// A running redis or memcached and the demo flags that reach it.
struct Store {
    kind: &'static str,
    url: String,
    // Keeps the server running; killed when dropped.
    redis: Option<RedisServer>,
    memcached: Option<MemcachedServer>,
}

impl Store {
    /// A fresh redis, or `None` after printing why (not installed, no CI).
    fn redis(test: &str) -> Option<Store> {
        let Some(server) = RedisServer::start(test) else {
            support::mark_skipped();
            return None;
        };
        Some(Store {
            kind: "redis",
            url: server.url(),
            redis: Some(server),
            memcached: None,
        })
    }

    /// A fresh memcached, or `None` after printing why.
    fn memcached(test: &str) -> Option<Store> {
        let Some(server) = MemcachedServer::start() else {
            eprintln!("SKIPPED {test}: see above");
            support::mark_skipped();
            return None;
        };
        Some(Store {
            kind: "memcached",
            url: server.address(),
            redis: None,
            memcached: Some(server),
        })
    }

    /// The demo server's flags for this store (and `extra`).
    fn demo_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--type", self.kind, "--url", self.url.as_str()];
        args.extend_from_slice(extra);
        args
    }
}

const CLIENTS: usize = 8;
const REQUESTS_EACH: usize = 25;

/// Two demo servers on `store`; 8 clients at once increment one session,
/// each alternating between the servers: every increment is counted.
fn two_servers_share_sessions_and_lose_no_update(store: &Store) {
    let a = spawn_demo(&store.demo_args(&["--secret", SECRET]));
    let b = spawn_demo(&store.demo_args(&["--secret", SECRET]));
    runtime().block_on(async {
        let client = Client::new();
        let first = client.get(&format!("{}/count", a.url), None).await;
        assert_eq!((first.status.as_u16(), first.body.as_str()), (200, "1"));
        let cookie = first.cookie().expect("a new session sets its cookie");
        // The other process reads the session A stored on the server.
        let second = client.get(&format!("{}/count", b.url), Some(&cookie)).await;
        assert_eq!(second.body, "2", "B sees the session A stored");
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, cookie) = (client.clone(), cookie.clone());
            let urls = [a.url.clone(), b.url.clone()];
            tasks.push(tokio::spawn(async move {
                for r in 0..REQUESTS_EACH {
                    let url = format!("{}/count", urls[(c + r) % 2]);
                    let got = client.get(&url, Some(&cookie)).await;
                    assert_eq!(got.status.as_u16(), 200, "{}", got.body);
                    assert!(got.set_cookies.is_empty(), "{:?}", got.set_cookies);
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
        let last = client.get(&format!("{}/count", a.url), Some(&cookie)).await;
        assert_eq!(
            last.body,
            (CLIENTS * REQUESTS_EACH + 3).to_string(),
            "every increment of both servers is counted"
        );
    });
}

/// Login on A, logout on B: the logged-out id is a fresh session on A.
fn logout_on_one_server_is_seen_by_the_other(store: &Store) {
    let a = spawn_demo(&store.demo_args(&["--secret", SECRET]));
    let b = spawn_demo(&store.demo_args(&["--secret", SECRET]));
    runtime().block_on(async {
        let client = Client::new();
        let first = client.get(&format!("{}/count", a.url), None).await;
        let before = first.cookie().expect("a new session sets its cookie");
        assert_eq!(
            client
                .get(&format!("{}/count", b.url), Some(&before))
                .await
                .body,
            "2"
        );
        let login = client
            .post(&format!("{}/login", a.url), Some(&before))
            .await;
        assert_eq!(login.body, "2");
        let after = login.cookie().expect("login sends the new id");
        assert_ne!(after, before);
        assert_eq!(
            client
                .get(&format!("{}/count", b.url), Some(&after))
                .await
                .body,
            "3",
            "B sees the new id's data"
        );
        let stale = client.get(&format!("{}/count", b.url), Some(&before)).await;
        assert_eq!(stale.body, "1", "the pre-login id is gone from the server");
        let logout = client
            .post(&format!("{}/logout", b.url), Some(&after))
            .await;
        assert_eq!((logout.status.as_u16(), logout.body.as_str()), (200, "bye"));
        assert!(
            logout.set_cookies[0].contains("Max-Age=0"),
            "{:?}",
            logout.set_cookies
        );
        let reuse = client.get(&format!("{}/count", a.url), Some(&after)).await;
        assert_eq!(reuse.body, "1", "the logged-out session is gone on A too");
        let fresh = reuse.cookie().expect("a fresh session sets its cookie");
        assert_ne!(fresh, after, "the logged-out id is never adopted");
    });
}

/// This process holds a session's lock (as a long request does) for
/// several leases while demo server B serves a request on that session:
/// B waits (the lease was renewed), and after the release B runs on what
/// the holder stored. `lease` is the holder's lease setting.
fn session_lock_is_held_renewed_and_released(store: &Store, lease: (&str, &str), hold: Duration) {
    // No secret: the cookie's value is the session id itself.
    let b = spawn_demo(&store.demo_args(&[]));
    runtime().block_on(async {
        let client = Client::new();
        let first = client.get(&format!("{}/count", b.url), None).await;
        assert_eq!(first.body, "1");
        let cookie = first.cookie().expect("a new session sets its cookie");
        let id = cookie
            .split_once('=')
            .map(|(_, v)| v.to_string())
            .expect("name=value");
        let sessions = SessionConfig::from_settings([
            ("session.type", store.kind),
            ("session.url", store.url.as_str()),
            lease,
        ])
        .expect("settings")
        .build()
        .expect("sessions on the server");
        let held = sessions
            .get_by_id(&id)
            .await
            .expect("load")
            .expect("the session B stored is on the server");
        assert_eq!(held.get::<u64>("count").await.unwrap(), Some(1));
        let waiting = {
            let (client, url) = (client.clone(), format!("{}/count", b.url));
            tokio::spawn(async move { client.get(&url, Some(&cookie)).await })
        };
        // The lease runs out on the server's clock, which this test does
        // not own: real time has to pass. Several leases go by; a lock
        // whose lease was not renewed would let B in meanwhile.
        tokio::time::sleep(hold).await;
        assert!(
            !waiting.is_finished(),
            "B's request ran while this process held the session's lock"
        );
        held.insert("count", 100u64).await.unwrap();
        held.save().await.expect("save");
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("B's request runs once the lock is released")
            .expect("client task");
        assert_eq!(
            got.body, "101",
            "B waited for the holder and read what it stored"
        );
    });
}

fn redis_two_servers_share_sessions_and_lose_no_update() {
    let Some(store) = Store::redis("redis_two_servers_share_sessions_and_lose_no_update") else {
        return;
    };
    two_servers_share_sessions_and_lose_no_update(&store);
    // The sessions are on this server (session.url reached cache.url),
    // not in some default one.
    let server = store.redis.as_ref().expect("a redis store");
    let keys = server.cli(&["--scan", "--pattern", "carboy:{sessions}:*"]);
    assert!(
        keys.lines().any(|l| !l.trim().is_empty()),
        "no session key on the server: {keys:?}"
    );
}

fn redis_logout_on_one_server_is_seen_by_the_other() {
    let Some(store) = Store::redis("redis_logout_on_one_server_is_seen_by_the_other") else {
        return;
    };
    logout_on_one_server_is_seen_by_the_other(&store);
}

fn redis_session_lock_is_held_renewed_and_released() {
    let Some(store) = Store::redis("redis_session_lock_is_held_renewed_and_released") else {
        return;
    };
    // A 300 ms lease, held for 1.5 s: five leases.
    session_lock_is_held_renewed_and_released(
        &store,
        ("session.lock_lease_ms", "300"),
        Duration::from_millis(1500),
    );
}

fn memcached_two_servers_share_sessions_and_lose_no_update() {
    let Some(store) = Store::memcached("memcached_two_servers_share_sessions_and_lose_no_update")
    else {
        return;
    };
    two_servers_share_sessions_and_lose_no_update(&store);
    let server = store.memcached.as_ref().expect("a memcached store");
    assert!(
        server.stat("curr_items").is_some_and(|n| n > 0),
        "no item on the memcached server"
    );
}

fn memcached_logout_on_one_server_is_seen_by_the_other() {
    let Some(store) = Store::memcached("memcached_logout_on_one_server_is_seen_by_the_other")
    else {
        return;
    };
    logout_on_one_server_is_seen_by_the_other(&store);
}

fn memcached_session_lock_is_held_renewed_and_released() {
    let Some(store) = Store::memcached("memcached_session_lock_is_held_renewed_and_released")
    else {
        return;
    };
    // memcached's shortest lease is 2 s (whole seconds); held for 4.5 s.
    session_lock_is_held_renewed_and_released(
        &store,
        ("session.lock_lease", "2"),
        Duration::from_millis(4500),
    );
}
