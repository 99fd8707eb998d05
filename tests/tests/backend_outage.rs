//! `cache.on_backend_error`: what `get_or_create` does when its backend
//! fails (a network server down or stopped). With `error` (the default)
//! the caller gets the backend's typed error and the creator does not run;
//! with `create` the creator runs without the cache, its value is returned
//! and nothing is stored, and the cache is used again once the backend is
//! back. The failing backend here is the built-in `memory` behind a switch,
//! written outside the crate like any network backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use carboy::ErrorKind;
use carboy::cache::{
    Backend, BackendConfig, BackendFactory, CacheManager, Capabilities, CreateError, Fetched,
    MemoryFactory, OnBackendError, OpenOptions, UpdateFn,
};

/// A namespace of the `memory` backend that fails every operation while
/// `down` is set, as a client whose server is unreachable does.
#[derive(Debug)]
struct Switched {
    inner: Arc<dyn Backend>,
    down: Arc<AtomicBool>,
    namespace: String,
}

impl Switched {
    fn check(&self) -> carboy::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(carboy::Error::Backend {
                backend: "switched".into(),
                namespace: self.namespace.clone(),
                source: "server 127.0.0.1:9 did not answer GET within 300 ms".into(),
            });
        }
        Ok(())
    }
}

impl Backend for Switched {
    fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
        self.check()?;
        self.inner.get(key)
    }
    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> carboy::Result<()> {
        self.check()?;
        self.inner.set(key, value, ttl)
    }
    fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
        self.check()?;
        self.inner.remove(key)
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn keys(&self) -> carboy::Result<Vec<Vec<u8>>> {
        self.check()?;
        self.inner.keys()
    }
    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
        self.check()?;
        self.inner.update(key, f)
    }
    fn change_stamp(&self) -> carboy::Result<u128> {
        self.check()?;
        self.inner.change_stamp()
    }
}

#[derive(Debug)]
struct SwitchedFactory {
    down: Arc<AtomicBool>,
}

impl BackendFactory for SwitchedFactory {
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        options: &OpenOptions,
    ) -> carboy::Result<Arc<dyn Backend>> {
        Ok(Arc::new(Switched {
            inner: MemoryFactory.open(namespace, config, options)?,
            down: Arc::clone(&self.down),
            namespace: namespace.to_string(),
        }))
    }
}

fn manager(action: Option<OnBackendError>) -> (CacheManager, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let factory = Arc::new(SwitchedFactory {
        down: Arc::clone(&down),
    });
    let mut builder = CacheManager::builder().backend_factory("switched", factory);
    if let Some(action) = action {
        builder = builder.on_backend_error(action);
    }
    (builder.build().expect("manager"), down)
}

#[test]
fn by_default_an_outage_is_the_backends_typed_error_and_the_creator_does_not_run() {
    let (manager, down) = manager(None);
    let cache = manager.get_cache("users").unwrap();
    cache.set("u1", &"alice".to_string()).unwrap();
    down.store(true, Ordering::SeqCst);
    let runs = AtomicUsize::new(0);
    let got: Result<String, CreateError<std::io::Error>> = cache.get_or_create("u1", || {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok("created".to_string())
    });
    match got {
        Err(CreateError::Cache(e)) => {
            assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
            assert!(
                e.to_string().contains("127.0.0.1:9"),
                "names the server: {e}"
            );
        }
        other => panic!("expected the backend's error, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    down.store(false, Ordering::SeqCst);
    assert_eq!(cache.get::<String>("u1").unwrap().as_deref(), Some("alice"));
}

#[test]
fn with_create_an_outage_runs_the_creator_uncached_and_the_cache_is_used_once_back() {
    let (manager, down) = manager(Some(OnBackendError::Create));
    let cache = manager.get_cache("users").unwrap();
    down.store(true, Ordering::SeqCst);
    let runs = AtomicUsize::new(0);
    let create = || {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(format!("made {}", runs.load(Ordering::SeqCst)))
    };
    let first: String = cache.get_or_create("u1", create).unwrap();
    let second: String = cache.get_or_create("u1", create).unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("made 1", "made 2"));
    // A creator's own error is still the creator's.
    let failed: Result<String, _> = cache.get_or_create("u2", || Err(std::io::Error::other("db")));
    assert!(matches!(failed, Err(CreateError::Creator(_))), "{failed:?}");

    down.store(false, Ordering::SeqCst);
    // Nothing was stored during the outage.
    assert_eq!(cache.get::<String>("u1").unwrap(), None);
    let third: String = cache.get_or_create("u1", create).unwrap();
    let hit: String = cache.get_or_create("u1", create).unwrap();
    assert_eq!((third.as_str(), hit.as_str()), ("made 3", "made 3"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[test]
fn the_setting_reads_from_beaker_style_settings_and_names_itself_when_bad() {
    let down = Arc::new(AtomicBool::new(true));
    carboy::cache::register_backend(
        "switched-outage-test",
        Arc::new(SwitchedFactory {
            down: Arc::clone(&down),
        }),
    )
    .unwrap();
    let manager = CacheManager::from_settings([
        ("cache.type", "switched-outage-test"),
        ("cache.on_backend_error", "create"),
    ])
    .unwrap();
    let cache = manager.get_cache("pages").unwrap();
    let page: String = cache
        .get_or_create("home", || Ok::<_, std::io::Error>("<html>".to_string()))
        .unwrap();
    assert_eq!(page, "<html>");

    let err = CacheManager::from_settings([
        ("cache.type", "switched-outage-test"),
        ("cache.on_backend_error", "ignore"),
    ])
    .expect_err("a bad value is an error");
    assert!(err.to_string().contains("cache.on_backend_error"), "{err}");
}

#[test]
fn the_async_front_follows_the_same_setting() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for action in [OnBackendError::Error, OnBackendError::Create] {
        let (manager, down) = manager(Some(action));
        let cache = manager.get_cache("users").unwrap().to_async();
        down.store(true, Ordering::SeqCst);
        let got: Result<String, CreateError<std::io::Error>> = runtime.block_on(async {
            cache
                .get_or_create("u1", || async { Ok("made".to_string()) })
                .await
        });
        match (action, got) {
            (OnBackendError::Error, Err(CreateError::Cache(e))) => {
                assert_eq!(e.kind(), ErrorKind::Backend, "{e}")
            }
            (OnBackendError::Create, Ok(v)) => assert_eq!(v, "made"),
            (action, other) => panic!("{action:?}: unexpected {other:?}"),
        }
        down.store(false, Ordering::SeqCst);
        let stored: Option<String> = runtime.block_on(cache.get("u1")).unwrap();
        assert_eq!(stored, None, "{action:?}: nothing stored during the outage");
    }
}
