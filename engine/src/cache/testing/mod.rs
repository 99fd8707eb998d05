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
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
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
    needs: fn(&Capabilities) -> Option<&'static str>,
    run: fn(&Fixture),
}

fn always(_: &Capabilities) -> Option<&'static str> {
    None
}

macro_rules! needs {
    ($($field:ident),+) => {
        |c: &Capabilities| {
            $(if !c.$field {
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
];

impl Suite {
    /// The suite for the backend `factory` opens; `name` is its type name
    /// in messages.
    pub fn new(name: &str, factory: Arc<dyn BackendFactory>) -> Suite {
        Suite {
            name: name.to_string(),
            factory,
            options: Vec::new(),
        }
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
            if let Some(cap) = (case.needs)(&fixture.caps) {
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
        let caps = {
            let probe: Cache = manager.get_cache("probe").expect("a namespace opens");
            probe.backend().capabilities()
        };
        Fixture {
            suite: suite.clone(),
            dir,
            clock,
            manager,
            caps,
        }
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
