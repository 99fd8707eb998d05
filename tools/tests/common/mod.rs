//! Helpers shared by the tools tests: the built `carboy` binary, a scratch
//! directory, and files made through the engine.

#![allow(dead_code)] // Each test file uses a different subset.

use std::path::{Path, PathBuf};

use carboy::{Expiry, Store};
use tempfile::TempDir;

/// The built `carboy` binary, ready for arguments. Its stdin is empty
/// unless a test writes to it, so no test can hang on a read.
pub fn carboy() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_carboy"));
    cmd.write_stdin(Vec::new());
    cmd
}

/// A scratch directory and the path of a (not yet existing) data file in it.
pub fn scratch() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy");
    (dir, path)
}

/// Far-future expiries (2100-01-01 and later), so entries stay live.
pub const FUTURE_MS: u64 = 4_102_444_800_000;

/// Entries with binary keys and values, empty ones and expiries: what a
/// round trip must keep byte for byte.
pub fn awkward_entries() -> Vec<(Vec<u8>, Vec<u8>, Expiry)> {
    let mut entries = vec![
        (b"".to_vec(), b"empty key".to_vec(), Expiry::Never),
        (b"empty value".to_vec(), b"".to_vec(), Expiry::Never),
        (
            vec![0, 255, 10, 13, 9],
            vec![0; 300],
            Expiry::AtUnixMs(FUTURE_MS),
        ),
        (
            b"end 1".to_vec(),
            b"carboy-export 1\n".to_vec(),
            Expiry::Never,
        ),
        (
            b"#not a comment".to_vec(),
            b"\t-\t".to_vec(),
            Expiry::AtUnixMs(u64::MAX),
        ),
        (
            "ключ".as_bytes().to_vec(),
            "значение".as_bytes().to_vec(),
            Expiry::Never,
        ),
        (
            vec![0xc3, 0x28],
            vec![0xff; 70_000],
            Expiry::AtUnixMs(FUTURE_MS + 1),
        ),
    ];
    for i in 0u32..2_500 {
        let key = format!("k/{i}").into_bytes();
        let value = i.to_le_bytes().repeat((i % 7) as usize);
        let expiry = if i % 3 == 0 {
            Expiry::AtUnixMs(FUTURE_MS + u64::from(i))
        } else {
            Expiry::Never
        };
        entries.push((key, value, expiry));
    }
    entries
}

/// Writes `entries` to a new store at `path`, in one transaction.
pub fn write_entries(path: &Path, entries: &[(Vec<u8>, Vec<u8>, Expiry)]) {
    let store = Store::open(path).unwrap();
    let mut txn = store.transaction().unwrap();
    for (k, v, e) in entries {
        txn.put_with_expiry(k, v, *e).unwrap();
    }
    txn.commit().unwrap();
}

/// Every live entry of the store at `path`, sorted, read through the engine.
pub fn read_entries(path: &Path) -> Vec<(Vec<u8>, Vec<u8>, Expiry)> {
    let store = Store::open(path).unwrap();
    let mut out: Vec<_> = store
        .iter()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.key, e.value, e.expiry)
        })
        .collect();
    out.sort();
    out
}

/// The stdout of a finished command, as text.
pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}
