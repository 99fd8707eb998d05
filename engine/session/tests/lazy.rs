//! The lazy handle, by counting backend calls: a request that never
//! touches its session costs no storage access and sets no cookie; a new
//! session that is changed sets exactly one cookie; a touched session is
//! written only when it changed or its access time is due.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use carboy::MockClock;
use carboy::cache::{
    Backend, BackendConfig, BackendFactory, CacheManager, Capabilities, CreationGuard, Fetched,
    FileFactory, OpenOptions, UpdateFn,
};
use carboy_session::{Session, SessionConfig, demo};
use support::{Client, serve};

/// Calls made to the sessions namespace's backend.
#[derive(Debug, Default)]
struct Calls {
    all: AtomicUsize,
    sets: AtomicUsize,
}

#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Backend>,
    calls: Arc<Calls>,
}

impl Counting {
    fn count(&self) {
        self.calls.all.fetch_add(1, Ordering::SeqCst);
    }
}

impl Backend for Counting {
    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        self.count();
        self.inner.get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> carboy::Result<()> {
        self.count();
        self.calls.sets.fetch_add(1, Ordering::SeqCst);
        self.inner.set(key, value, ttl)
    }
    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        self.count();
        self.inner.remove(key)
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn contains(&self, key: &[u8]) -> carboy::Result<bool> {
        self.count();
        self.inner.contains(key)
    }
    fn keys(&self) -> carboy::Result<Vec<Vec<u8>>> {
        self.count();
        self.inner.keys()
    }
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        self.count();
        self.inner.update(key, f)
    }
    fn lock_creation(
        &self,
        key: &[u8],
        hash: u64,
        wait: bool,
    ) -> carboy::Result<Option<CreationGuard<'_>>> {
        self.count();
        self.inner.lock_creation(key, hash, wait)
    }
    fn change_stamp(&self) -> carboy::Result<u128> {
        // Read on every cache access for its markers: counted too.
        self.count();
        self.inner.change_stamp()
    }
}

/// The file backend, with the calls to namespace `sessions` counted.
#[derive(Debug)]
struct CountingFactory {
    calls: Arc<Calls>,
}

impl BackendFactory for CountingFactory {
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        let inner = FileFactory.open(namespace, config, options)?;
        Ok(Arc::new(Counting {
            inner,
            calls: Arc::clone(&self.calls),
        }))
    }
    fn options(&self) -> &'static [&'static str] {
        FileFactory.options()
    }
    fn check(&self, config: &BackendConfig) -> carboy::Result<()> {
        FileFactory.check(config)
    }
}

async fn peek(session: Session) -> String {
    let n: Option<u64> = session.get("count").await.unwrap();
    n.unwrap_or(0).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_sessions_cost_nothing_touched_ones_write_only_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let calls = Arc::new(Calls::default());
    let manager = CacheManager::builder()
        .backend_factory(
            "counting-file",
            Arc::new(CountingFactory {
                calls: Arc::clone(&calls),
            }),
        )
        .data_dir(dir.path())
        .never_expire()
        .stale_for(Duration::ZERO)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let sessions = SessionConfig::new()
        .cache_manager(manager, "sessions")
        .timeout(Some(Duration::from_secs(160)))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let app: Router = demo::router(sessions.clone()).merge(
        Router::new()
            .route("/peek", get(peek))
            .layer(sessions.layer()),
    );
    let url = serve(app).await;
    let client = Client::new();
    let all = || calls.all.load(Ordering::SeqCst);
    let sets = || calls.sets.load(Ordering::SeqCst);

    // /health never touches the session, with or without a cookie.
    let before = all();
    for cookie in [None, Some("beaker.session.id=whatever")] {
        let got = client.get(&format!("{url}/health"), cookie).await;
        assert_eq!(got.body, "ok");
        assert!(got.set_cookies.is_empty(), "{:?}", got.set_cookies);
    }
    assert_eq!(all(), before, "no storage access for an untouched session");

    // A new client's /count: storage is used, exactly one cookie is set.
    let got = client.get(&format!("{url}/count"), None).await;
    assert_eq!(got.body, "1");
    assert_eq!(got.set_cookies.len(), 1, "{:?}", got.set_cookies);
    assert!(all() > before);
    assert_eq!(sets(), 1);
    let cookie = got.cookie().unwrap();

    // Read only, access time fresh: no write, no cookie.
    let got = client.get(&format!("{url}/peek"), Some(&cookie)).await;
    assert_eq!((got.body.as_str(), got.set_cookies.len()), ("1", 0));
    assert_eq!(
        sets(),
        1,
        "a read-only request with a fresh access time writes nothing"
    );
    // Read only, access time older than timeout/16 (10 s): one write.
    clock.advance(Duration::from_secs(11));
    client.get(&format!("{url}/peek"), Some(&cookie)).await;
    assert_eq!(sets(), 2, "the access time is refreshed");
    // A new client that only reads: nothing stored, no cookie.
    let got = client.get(&format!("{url}/peek"), None).await;
    assert!(got.set_cookies.is_empty());
    assert_eq!(sets(), 2, "an unchanged new session is not stored");
    // A change: written, no new cookie (the id did not change).
    let got = client.get(&format!("{url}/count"), Some(&cookie)).await;
    assert_eq!((got.body.as_str(), got.set_cookies.len()), ("2", 0));
    assert_eq!(sets(), 3);
}
