//! The backend conformance suite, published for backend authors (cargo
//! feature `testing`, off by default): dogpile.cache's
//! `_GenericBackendTestSuite`, for any [`BackendFactory`].
//!
//! The suite opens namespaces through a [`CacheManager`] given the factory
//! directly ([`CacheManagerBuilder::backend_factory`]; the global registry
//! is not touched), with a [`MockClock`] and a temporary `cache.data_dir`.
//! It checks the raw backend operations, then the cache's semantics on top
//! (expiry against the mock clock, invalidation of a key, a namespace and
//! a region, misses for values that no longer decode). A case that needs
//! an optional [`Capabilities`] field runs only when the backend declares
//! it, and must then pass; one case checks that every undeclared
//! operation answers [`Error::Unsupported`](crate::Error::Unsupported). Cases whose operations
//! degrade without a capability assert the degraded behaviour instead.
//!
//! A backend with native async operations ([`Backend::as_async`]) also
//! runs the `async_*` cases: get, set, remove and update through
//! [`AsyncBackend`](super::AsyncBackend), seen by the blocking methods
//! and the other way round; its creation lock (without waiting, forever,
//! and up to a time, which the backend's own timer ends: the case waits
//! 50 ms of real time for it), excluding blocking holders and excluded by
//! them. The other backends skip these two ("does not declare
//! as_async"). With feature `async`, every backend also runs
//! get-or-create, get, set and remove through
//! `AsyncCache` (`async_front_get_or_create`: on the
//! native path when there is one, on the helper threads otherwise). The
//! futures of these cases run on [`Suite::block_on_with`]'s executor (a
//! backend whose futures need a runtime, such as tokio's reactor or timer,
//! passes that runtime's `block_on`).
//!
//! ```toml
//! [dev-dependencies]
//! carboy = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use carboy::cache::MemoryFactory;
//! use carboy::cache::testing::Suite;
//!
//! // In a #[test]: panics naming every failed case.
//! Suite::new("memory", Arc::new(MemoryFactory)).run().assert_passed();
//! ```
//!
//! [`CacheManagerBuilder::backend_factory`]: super::CacheManagerBuilder::backend_factory

mod cases;

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tempfile::TempDir;

use cases::*;

use super::{Backend, BackendFactory, Cache, CacheManager, Capabilities, RegionSettings};
use crate::MockClock;

/// The suite for one backend: its factory and the settings it needs.
#[derive(Clone, Debug)]
pub struct Suite {
    name: String,
    factory: Arc<dyn BackendFactory>,
    options: Vec<(String, String)>,
    executor: Executor,
}

/// A future the async cases run to completion.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Runs the async cases' futures ([`Suite::block_on_with`]).
#[derive(Clone)]
struct Executor(Arc<dyn Fn(CaseFuture<'_>) + Send + Sync>);

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Executor")
    }
}

/// The default executor: polls on this thread, parking it between
/// wake-ups. Enough for futures that need no runtime of their own.
fn park_until_done(mut future: CaseFuture<'_>) {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    while future.as_mut().poll(&mut cx) == Poll::Pending {
        std::thread::park();
    }
}

/// What became of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// Not run: the backend does not declare the capability named.
    Skipped(&'static str),
    /// An assertion failed (or the case panicked): its message.
    Failed(String),
}

/// The outcome of every case, in the suite's order.
#[derive(Clone, Debug)]
pub struct Report {
    /// The backend's name, as given to [`Suite::new`].
    pub backend: String,
    /// Each case's name and outcome.
    pub cases: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// The cases that failed, with their messages.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.cases.iter().filter_map(|(name, o)| match o {
            Outcome::Failed(m) => Some((*name, m.as_str())),
            _ => None,
        })
    }

    /// Panics, naming every failed case and its message, unless none
    /// failed.
    pub fn assert_passed(&self) {
        let failed: Vec<String> = self
            .failures()
            .map(|(name, m)| format!("  {name}: {m}"))
            .collect();
        assert!(
            failed.is_empty(),
            "backend {:?} failed {} conformance case(s):\n{}\n{self}",
            self.backend,
            failed.len(),
            failed.join("\n")
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance of backend {:?}:", self.backend)?;
        for (name, outcome) in &self.cases {
            match outcome {
                Outcome::Passed => writeln!(f, "  ok      {name}")?,
                Outcome::Skipped(cap) => writeln!(f, "  skipped {name} (does not declare {cap})")?,
                Outcome::Failed(m) => writeln!(f, "  FAILED  {name}: {m}")?,
            }
        }
        Ok(())
    }
}

/// One case: its name, the capability it needs (if any), and its body.
struct Case {
    name: &'static str,
    needs: fn(&Fixture) -> Option<&'static str>,
    run: fn(&Fixture),
}

fn always(_: &Fixture) -> Option<&'static str> {
    None
}

/// The backend offers native async operations.
fn native(f: &Fixture) -> Option<&'static str> {
    (!f.native).then_some("as_async")
}

macro_rules! needs {
    ($($field:ident),+) => {
        |f: &Fixture| {
            $(if !f.caps.$field {
                return Some(stringify!($field));
            })+
            None
        }
    };
}

const CASES: &[Case] = &[
    Case {
        name: "raw_operations",
        needs: always,
        run: raw_operations,
    },
    Case {
        name: "listing_and_clearing",
        needs: needs!(list_keys),
        run: listing_and_clearing,
    },
    Case {
        name: "undeclared_operations_are_unsupported",
        needs: always,
        run: undeclared_operations_are_unsupported,
    },
    Case {
        name: "ttl_against_the_clock",
        needs: needs!(expires_by_clock),
        run: ttl_against_the_clock,
    },
    Case {
        name: "update_is_atomic",
        needs: needs!(atomic_update),
        run: update_is_atomic,
    },
    Case {
        name: "update_keeps_the_ttl",
        needs: needs!(atomic_update, expires_by_clock),
        run: update_keeps_the_ttl,
    },
    Case {
        name: "change_stamp_moves_with_content",
        needs: needs!(change_stamp),
        run: change_stamp_moves_with_content,
    },
    Case {
        name: "creation_locks",
        needs: always,
        run: creation_locks,
    },
    Case {
        name: "cache_expiry_and_get_or_create",
        needs: always,
        run: cache_expiry_and_get_or_create,
    },
    Case {
        name: "cache_invalidation",
        needs: always,
        run: cache_invalidation,
    },
    Case {
        name: "cache_misses_on_what_does_not_decode",
        needs: always,
        run: cache_misses_on_what_does_not_decode,
    },
    Case {
        name: "cache_keys_and_settings",
        needs: always,
        run: cache_keys_and_settings,
    },
    Case {
        name: "cache_with_another_codec",
        needs: always,
        run: cache_with_another_codec,
    },
    Case {
        name: "async_raw_operations",
        needs: native,
        run: async_raw_operations,
    },
    Case {
        name: "async_creation_locks",
        needs: native,
        run: async_creation_locks,
    },
    #[cfg(feature = "async")]
    Case {
        name: "async_front_get_or_create",
        needs: always,
        run: async_front_get_or_create,
    },
];

impl Suite {
    /// The suite for the backend `factory` opens; `name` is its type name
    /// in messages.
    pub fn new(name: &str, factory: Arc<dyn BackendFactory>) -> Suite {
        Suite {
            name: name.to_string(),
            factory,
            options: Vec::new(),
            executor: Executor(Arc::new(park_until_done)),
        }
    }

    /// How the `async_*` cases run their futures (for a backend with
    /// native async operations): `run` must poll the future to
    /// completion. The default polls it on the calling thread, parking
    /// between wake-ups; a backend whose futures need a runtime passes
    /// its `block_on`:
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use carboy::cache::{MemoryFactory, testing::Suite};
    /// # struct Runtime;
    /// # impl Runtime { fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # } }
    /// let runtime = Arc::new(Runtime); // tokio::runtime::Runtime, say
    /// let suite = Suite::new("memory", Arc::new(MemoryFactory))
    ///     .block_on_with(move |future| runtime.block_on(future));
    /// ```
    pub fn block_on_with(mut self, run: impl Fn(CaseFuture<'_>) + Send + Sync + 'static) -> Suite {
        self.executor = Executor(Arc::new(run));
        self
    }

    /// A backend setting by its short name (as
    /// [`CacheManagerBuilder::option`](super::CacheManagerBuilder::option)
    /// takes it), for every manager the suite builds.
    pub fn option(mut self, name: &str, value: &str) -> Suite {
        self.options.push((name.to_string(), value.to_string()));
        self
    }

    /// The names of the cases, in the order [`run`](Suite::run) runs them.
    pub fn case_names() -> Vec<&'static str> {
        CASES.iter().map(|c| c.name).collect()
    }

    /// Runs every case, each on a fresh manager and data directory, and
    /// reports each outcome. A failing case does not stop the others.
    pub fn run(&self) -> Report {
        let cases = CASES
            .iter()
            .map(|case| (case.name, self.outcome(case)))
            .collect();
        Report {
            backend: self.name.clone(),
            cases,
        }
    }

    /// Runs the case `name` alone; panics with its message if it fails or
    /// if there is no such case. A case the backend's capabilities exclude
    /// passes without running.
    pub fn run_case(&self, name: &str) -> Outcome {
        let Some(case) = CASES.iter().find(|c| c.name == name) else {
            panic!(
                "no conformance case {name:?} (cases: {:?})",
                Suite::case_names()
            );
        };
        match self.outcome(case) {
            Outcome::Failed(m) => panic!("backend {:?}, case {name}: {m}", self.name),
            other => other,
        }
    }

    fn outcome(&self, case: &Case) -> Outcome {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let fixture = Fixture::new(self);
            if let Some(cap) = (case.needs)(&fixture) {
                return Outcome::Skipped(cap);
            }
            (case.run)(&fixture);
            Outcome::Passed
        }));
        result.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string());
            Outcome::Failed(message)
        })
    }
}

/// A manager on the backend under test, with a mock clock and its own
/// data directory.
struct Fixture {
    suite: Suite,
    dir: TempDir,
    clock: MockClock,
    manager: CacheManager,
    /// What a data namespace of the backend declares.
    caps: Capabilities,
    /// It offers native async operations ([`Backend::as_async`]).
    native: bool,
}

impl Fixture {
    fn new(suite: &Suite) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = MockClock::new(1_700_000_000_000);
        let manager = suite
            .builder(&dir)
            .clock(Arc::new(clock.clone()))
            .region(
                "short_term",
                RegionSettings::new().expire(Duration::from_secs(60)),
            )
            .region(
                "no_stale",
                RegionSettings::new()
                    .expire(Duration::from_secs(60))
                    .serve_stale(false),
            )
            .build()
            .expect("the suite's cache manager builds");
        let (caps, native) = {
            let probe: Cache = manager.get_cache("probe").expect("a namespace opens");
            let backend = probe.backend();
            (backend.capabilities(), backend.as_async().is_some())
        };
        Fixture {
            suite: suite.clone(),
            dir,
            clock,
            manager,
            caps,
            native,
        }
    }

    /// Runs an async case's future on the suite's executor.
    fn block_on(&self, future: impl Future<Output = ()>) {
        (self.suite.executor.0)(Box::pin(future));
    }

    /// A raw backend namespace.
    fn backend(&self, ns: &str) -> Arc<dyn Backend> {
        let cache: Cache = self.manager.get_cache(ns).unwrap();
        Arc::clone(cache.backend())
    }

    fn name(&self) -> &str {
        &self.suite.name
    }
}

impl Suite {
    fn builder(&self, dir: &TempDir) -> super::CacheManagerBuilder {
        let mut b = CacheManager::builder()
            .backend_factory(&self.name, Arc::clone(&self.factory))
            .data_dir(dir.path());
        for (k, v) in &self.options {
            b = b.option(k, v.as_str());
        }
        b
    }
}
