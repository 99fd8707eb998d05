//! The cache backend conformance suite (published as
//! `carboy::cache::testing`, feature `testing`) run against every built-in
//! backend: `memory`, `memory` bounded, `file`. One test per backend; a
//! failure names each failed case.

use std::sync::Arc;

use carboy::cache::testing::{Outcome, Suite};
use carboy::cache::{FileFactory, MemoryFactory};

/// The cases of backends with native async operations, which no built-in
/// backend has.
const NATIVE_ASYNC: &[&str] = &["async_raw_operations", "async_creation_locks"];

/// Runs the suite and checks that nothing the built-in backends offer was
/// skipped: they declare every capability they have, and each one's cases
/// must run.
fn conforms(suite: Suite, skipped: &[&str]) {
    let report = suite.run();
    report.assert_passed();
    let got: Vec<&str> = report
        .cases
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Skipped(_)))
        .map(|(name, _)| *name)
        .collect();
    let expected: Vec<&str> = skipped.iter().chain(NATIVE_ASYNC).copied().collect();
    assert_eq!(got, expected, "{report}");
}

#[test]
fn memory() {
    conforms(Suite::new("memory", Arc::new(MemoryFactory)), &[]);
}

#[test]
fn memory_bounded() {
    conforms(
        Suite::new("memory, bounded", Arc::new(MemoryFactory)).option("max_entries", "100000"),
        &[],
    );
}

#[test]
fn file() {
    conforms(Suite::new("file", Arc::new(FileFactory)), &[]);
}

/// The suite's own harness: a case that fails is reported by name, and
/// the others still run.
#[test]
fn a_failing_case_is_named() {
    use carboy::cache::{
        Backend, BackendConfig, BackendFactory, Capabilities, Fetched, OpenOptions, UpdateFn,
    };

    /// A memory backend that claims a cross-process creation lock it does
    /// not have.
    #[derive(Debug)]
    struct Boastful;
    #[derive(Debug)]
    struct Wrapped(Arc<dyn Backend>);
    impl Backend for Wrapped {
        fn get(&self, key: &[u8]) -> carboy::Result<Option<Fetched<'_>>> {
            self.0.get(key)
        }
        fn set(
            &self,
            key: &[u8],
            value: &[u8],
            ttl: Option<std::time::Duration>,
        ) -> carboy::Result<()> {
            self.0.set(key, value, ttl)
        }
        fn remove(&self, key: &[u8]) -> carboy::Result<bool> {
            self.0.remove(key)
        }
        fn keys(&self) -> carboy::Result<Vec<Vec<u8>>> {
            self.0.keys()
        }
        fn clear(&self) -> carboy::Result<()> {
            self.0.clear()
        }
        fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> carboy::Result<()> {
            self.0.update(key, f)
        }
        fn change_stamp(&self) -> carboy::Result<u128> {
            self.0.change_stamp()
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities().creation_locks(true)
        }
    }
    impl BackendFactory for Boastful {
        fn open(
            &self,
            ns: &str,
            config: &BackendConfig,
            options: &OpenOptions,
        ) -> carboy::Result<Arc<dyn Backend>> {
            Ok(Arc::new(Wrapped(MemoryFactory.open(ns, config, options)?)))
        }
    }

    let report = Suite::new("boastful", Arc::new(Boastful)).run();
    let failed: Vec<&str> = report.failures().map(|(name, _)| name).collect();
    assert_eq!(failed, vec!["creation_locks"], "{report}");
    let message = report.failures().next().unwrap().1.to_string();
    assert!(
        message.contains("a second holder got the lock"),
        "{message}"
    );
    let panic = std::panic::catch_unwind(|| report.assert_passed()).unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("creation_locks"), "{text}");
}
