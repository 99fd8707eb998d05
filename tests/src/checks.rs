//! Whole-store checks: a store's contents as a map, `verify` finding
//! nothing, an error naming its file.

use std::collections::BTreeMap;
use std::path::Path;

use carboy::{Error, Expiry, Store};

use crate::show;

/// Every live entry of `store`, as `store.iter()` yields them: key to value
/// and expiry. Panics if iteration fails or yields a key twice.
pub fn contents(store: &Store) -> BTreeMap<Vec<u8>, (Vec<u8>, Expiry)> {
    let path = store.path().display().to_string();
    let mut out = BTreeMap::new();
    let iter = store
        .iter()
        .unwrap_or_else(|e| panic!("iter() on {path} failed: {e}"));
    for entry in iter {
        let entry = entry.unwrap_or_else(|e| panic!("iterating {path} failed: {e}"));
        let key = entry.key.clone();
        if out.insert(entry.key, (entry.value, entry.expiry)).is_some() {
            panic!("iter() on {path} yielded key {} twice", show(&key));
        }
    }
    out
}

/// Asserts that `store.verify()` succeeds and finds nothing wrong.
pub fn assert_clean(store: &Store) {
    let report = store
        .verify()
        .unwrap_or_else(|e| panic!("verify() of {} failed: {e}", store.path().display()));
    assert!(
        report.is_clean(),
        "verify() of {} found {} problem(s):\n{}",
        store.path().display(),
        report.problems.len(),
        report
            .problems
            .iter()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Asserts that `err`'s message is not empty and names `path`.
pub fn assert_names_path(err: &Error, path: &Path) {
    let text = err.to_string();
    assert!(
        !text.trim().is_empty(),
        "error {err:?} has an empty message"
    );
    let shown = path.display().to_string();
    assert!(
        text.contains(&shown),
        "error message {text:?} does not name the file {shown}"
    );
}
