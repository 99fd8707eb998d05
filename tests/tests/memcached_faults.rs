//! The memcached backend when its server fails during a run of
//! `get_or_create` calls: killed, the calls fail with a typed error naming
//! the server and the operation (a refused connection, at once); stopped
//! with SIGSTOP, they fail with a timeout after about `cache.timeout`,
//! never hang; restarted (or continued), the same manager works again
//! without being rebuilt. Nothing panics.
//!
//! carboy's cache layer has no "on a cache outage, run the creator
//! uncached" setting yet: `get_or_create` returns the backend's error,
//! which is what these tests pin down.

use std::time::{Duration, Instant};

use carboy::cache::{Cache, CacheManager, CreateError};
use carboy_memcached::{FailureKind, ServerError};
use carboy_tests::memcached_server::MemcachedServer;

const TIMEOUT: Duration = Duration::from_millis(300);

fn cache(url: &str) -> Cache {
    carboy_memcached::register().unwrap();
    CacheManager::builder()
        .backend("memcached")
        .option("url", url)
        .option("timeout", format!("{}", TIMEOUT.as_secs_f64()))
        .expire(Duration::from_secs(60))
        .build()
        .unwrap()
        .get_cache("faults")
        .unwrap()
}

/// One `get_or_create` of `key`: its outcome and how long it took.
fn call(c: &Cache, key: &str) -> (Result<String, CreateError<String>>, Duration) {
    let start = Instant::now();
    let got = c.get_or_create(key, || Ok::<_, String>(format!("made {key}")));
    (got, start.elapsed())
}

/// The server error inside a failed call, checked to name `server`.
fn server_error<'a>(got: &'a Result<String, CreateError<String>>, server: &str) -> &'a ServerError {
    let err = match got {
        Err(CreateError::Cache(err)) => err,
        other => panic!("expected a cache error, got {other:?}"),
    };
    let carboy::Error::Backend {
        backend, source, ..
    } = err
    else {
        panic!("expected Error::Backend, got {err:?}");
    };
    assert_eq!(backend, "memcached");
    let e = source
        .downcast_ref::<ServerError>()
        .unwrap_or_else(|| panic!("the source is not a ServerError: {err}"));
    assert_eq!(e.server, server, "{err}");
    assert!(
        err.to_string().contains(server),
        "the message names the server: {err}"
    );
    e
}

#[test]
fn killed_then_restarted() {
    let Some(mut server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let c = cache(&url);
    for i in 0..20 {
        assert_eq!(call(&c, &format!("k{i}")).0.unwrap(), format!("made k{i}"));
    }
    server.kill();
    for i in 0..20 {
        let (got, took) = call(&c, &format!("k{i}"));
        let e = server_error(&got, &url);
        assert_eq!(e.kind, FailureKind::Connection, "{e}");
        assert!(
            took < TIMEOUT * 4,
            "a refused connection took {took:?} (timeout {TIMEOUT:?})"
        );
    }
    server.restart();
    // The same manager, the same cache: it dials again. The restarted
    // server is empty, so the values are made again.
    for i in 0..20 {
        assert_eq!(call(&c, &format!("k{i}")).0.unwrap(), format!("made k{i}"));
    }
    assert_eq!(c.get::<String>("k3").unwrap().as_deref(), Some("made k3"));
}

#[test]
fn stopped_costs_the_timeout_then_continued() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let c = cache(&url);
    assert_eq!(call(&c, "a").0.unwrap(), "made a");
    server.signal("STOP");
    let mut slowest = Duration::ZERO;
    for key in ["a", "b", "c"] {
        let (got, took) = call(&c, key);
        let e = server_error(&got, &url);
        assert_eq!(e.kind, FailureKind::Timeout, "{e}");
        assert!(e.to_string().contains("cache.timeout"), "{e}");
        slowest = slowest.max(took);
    }
    // One exchange times out and the call gives up: about one timeout (a
    // bound far above it, only to catch a hang).
    assert!(
        slowest < TIMEOUT * 10,
        "a call to a stopped server took {slowest:?} (timeout {TIMEOUT:?})"
    );
    eprintln!("slowest call to the stopped server: {slowest:?} (timeout {TIMEOUT:?})");
    server.signal("CONT");
    // The timed-out connections were dropped, not reused out of step.
    assert_eq!(call(&c, "b").0.unwrap(), "made b");
    assert_eq!(c.get::<String>("a").unwrap().as_deref(), Some("made a"));
    assert_eq!(c.get::<String>("b").unwrap().as_deref(), Some("made b"));
}

#[test]
fn a_server_that_never_ran_is_a_typed_error() {
    // A port nobody listens on: the manager builds (connections are made
    // lazily), opening a namespace reads its marker and fails, typed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("127.0.0.1:{port}");
    carboy_memcached::register().unwrap();
    let manager = CacheManager::builder()
        .backend("memcached")
        .option("url", &url)
        .build()
        .unwrap();
    let err = manager.get_cache("none").unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
    assert!(matches!(err, carboy::Error::Backend { .. }), "{err}");
}

/// Waits (polling, with a deadline) until `done()`; `what` for the panic.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stopped_killed_and_restarted_under_load() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let Some(mut server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let c = cache(&url);
    let (ok, failed, stop) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicBool::new(false),
    );
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (c, ok, failed, stop, slowest, url) = (&c, &ok, &failed, &stop, &slowest, &url);
            s.spawn(move || {
                let mut i = 0usize;
                while !stop.load(SeqCst) {
                    let key = format!("k{}", (i * 4 + t) % 64);
                    i += 1;
                    let (got, took) = call(c, &key);
                    let mut worst = slowest.lock().unwrap();
                    *worst = (*worst).max(took);
                    drop(worst);
                    match &got {
                        Ok(v) => {
                            assert_eq!(*v, format!("made {key}"));
                            ok.fetch_add(1, SeqCst);
                        }
                        Err(_) => {
                            let e = server_error(&got, url);
                            assert!(
                                matches!(
                                    e.kind,
                                    FailureKind::Connection
                                        | FailureKind::Timeout
                                        | FailureKind::Ambiguous
                                ),
                                "{e}"
                            );
                            failed.fetch_add(1, SeqCst);
                        }
                    }
                }
            });
        }
        let progress = |counter: &AtomicUsize, more: usize, what: &str| {
            let from = counter.load(SeqCst);
            wait_for(what, || counter.load(SeqCst) >= from + more);
        };
        progress(&ok, 200, "calls to succeed");
        server.signal("STOP");
        progress(&failed, 8, "calls to a stopped server to time out");
        server.signal("CONT");
        progress(&ok, 200, "calls to succeed once continued");
        server.kill();
        progress(&failed, 8, "calls to a killed server to fail");
        server.restart();
        progress(&ok, 200, "calls to succeed once restarted");
        stop.store(true, SeqCst);
    });
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < TIMEOUT * 10,
        "a call took {slowest:?} (timeout {TIMEOUT:?})"
    );
    eprintln!(
        "{} calls served, {} failed typed; slowest {slowest:?} (timeout {TIMEOUT:?})",
        ok.load(SeqCst),
        failed.load(SeqCst)
    );
}
