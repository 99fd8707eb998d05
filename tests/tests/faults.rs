//! A write that fails part way (here: the file cannot grow past a file-size
//! limit, as on a full disk) returns a typed error, and loses nothing that
//! was committed before it: the next opener finds a clean file holding every
//! acknowledged commit.
//!
//! The child runs under `ulimit -f` with SIGXFSZ ignored (set by the shell,
//! inherited across exec), so growing the file fails with EFBIG. The other
//! tests fail `fsync`, `fallocate` and `rename` through the storage seam
//! (`carboy::faults`, feature `fault-injection`); the seam is process-wide,
//! so those tests take turns.

use std::io;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use carboy::faults::{self, Op};
use carboy::{Durability, Error, Options, Store};
use carboy_tests::{assert_clean, contents, versioned_value};

/// Serializes the tests that install a fault hook.
static SEAM: Mutex<()> = Mutex::new(());

/// Runs `f` with every `op` failing, then removes the hook.
fn failing<T>(op: Op, f: impl FnOnce() -> T) -> T {
    failing_from(op, 1, f)
}

/// Runs `f` with the `nth` and later calls of `op` failing (counting from
/// 1), then removes the hook.
fn failing_from<T>(op: Op, nth: u32, f: impl FnOnce() -> T) -> T {
    let seen = std::sync::atomic::AtomicU32::new(0);
    faults::set_hook(Some(Box::new(move |o| {
        if o != op || seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 < nth {
            return None;
        }
        Some(io::Error::other(format!("injected {op:?} failure")))
    })));
    let out = f();
    faults::set_hook(None);
    out
}

fn populated(dir: &std::path::Path, durability: Durability) -> Store {
    let store = Options::new()
        .durability(durability)
        .expected_keys(16)
        .open(dir.join("faulty.carboy"))
        .unwrap();
    for i in 0..20u32 {
        store.put(&i.to_le_bytes(), &versioned_value(i, 1)).unwrap();
    }
    store
}

fn assert_holds_first_twenty(store: &Store) {
    for i in 0..20u32 {
        assert_eq!(
            store.get_owned(&i.to_le_bytes()).unwrap(),
            Some(versioned_value(i, 1)),
            "key {i}"
        );
    }
}

#[test]
fn a_failed_fsync_latches_the_store_until_recovered() {
    let _turn = SEAM.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path(), Durability::Sync);
    let err = failing(Op::Fsync, || store.put(b"doomed", b"x")).unwrap_err();
    // The sync comes after the commit point (group commit): the commit is
    // applied and visible, but not known durable, and the error says so.
    assert!(matches!(err, Error::CommitNotDurable { .. }), "{err:?}");
    assert!(err.to_string().contains("applied"), "{err}");
    assert_eq!(
        store.get_owned(b"doomed").unwrap().as_deref(),
        Some(&b"x"[..])
    );
    // The state after a failed fsync is unknown: no more writes...
    let err = store.put(b"next", b"y").unwrap_err();
    assert!(matches!(err, Error::Latched { .. }), "{err:?}");
    assert!(err.to_string().contains("reopen"), "{err}");
    // ...nor syncs, but reads go on, and nothing committed before is lost.
    let err = store.sync().unwrap_err();
    assert!(matches!(err, Error::Latched { .. }), "{err:?}");
    assert_holds_first_twenty(&store);
    let cause = store.recover().unwrap();
    assert!(cause.is_some_and(|c| c.contains("fsync")));
    store.put(b"next", b"y").unwrap();
    // Store::sync's own failure (with something to sync: a commit of a
    // handle without durability) is an I/O error, and latches too.
    let fast = Options::new()
        .durability(Durability::None)
        .open(dir.path().join("faulty.carboy"))
        .unwrap();
    fast.put(b"unsynced", b"z").unwrap();
    let err = failing(Op::Fsync, || store.sync()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(matches!(store.put(b"x", b"y"), Err(Error::Latched { .. })));
    assert!(store.recover().unwrap().is_some());
    drop(fast);
    // Latched again, then every handle dropped and the file opened afresh:
    // the new handle is not latched.
    let err = failing(Op::Fsync, || store.put(b"doomed", b"x")).unwrap_err();
    assert!(matches!(err, Error::CommitNotDurable { .. }), "{err:?}");
    drop(store);
    let store = Options::new()
        .durability(Durability::Sync)
        .open(dir.path().join("faulty.carboy"))
        .unwrap();
    store.put(b"after", b"reopen").unwrap();
    assert_clean(&store);
    drop(store);
    let store = Store::open(dir.path().join("faulty.carboy")).unwrap();
    assert_holds_first_twenty(&store);
    assert_eq!(
        store.get_owned(b"next").unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert_clean(&store);
}

#[test]
fn a_failed_fallocate_fails_the_transaction_only() {
    let _turn = SEAM.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path(), Durability::None);
    let before = contents(&store);
    // Large enough to need more file than is allocated.
    let big = vec![7u8; 3 << 20];
    let err = failing(Op::Fallocate, || store.put(b"big", &big)).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("faulty.carboy"), "{err}");
    // Nothing half-written is visible, and the store takes writes again.
    assert_eq!(contents(&store), before);
    assert_clean(&store);
    store.put(b"big", &big).unwrap();
    assert_eq!(store.get_owned(b"big").unwrap().as_deref(), Some(&big[..]));
    assert_clean(&store);
}

#[test]
fn a_failed_compaction_leaves_the_old_file_in_use() {
    let _turn = SEAM.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path(), Durability::None);
    for (op, what) in [(Op::Rename, "rename"), (Op::Fallocate, "fallocate")] {
        let err = failing(op, || store.compact()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{what}: {err:?}");
        // No temporary file is left behind, and the store works on.
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["faulty.carboy", "faulty.carboy.lock"], "{what}");
        assert_holds_first_twenty(&store);
        store.put(what.as_bytes(), b"after").unwrap();
        assert_clean(&store);
    }
    // The new file's own fsync failing: nothing changes.
    let err = failing(Op::Fsync, || store.compact()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(store.stats().unwrap().generation, 0);
    // The directory's fsync (the second) failing after the rename: the new
    // file is in place and complete, and every handle moves to it.
    let err = failing_from(Op::Fsync, 2, || store.compact()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_holds_first_twenty(&store);
    // Whether the rename survives power loss is unknown: writes wait for
    // recover(), which syncs the directory again.
    assert!(matches!(
        store.put(b"after", b"fsync"),
        Err(Error::Latched { .. })
    ));
    assert!(store.recover().unwrap().is_some());
    store.put(b"after", b"fsync").unwrap();
    drop(store);
    let store = Store::open(dir.path().join("faulty.carboy")).unwrap();
    assert_holds_first_twenty(&store);
    assert_eq!(
        store.get_owned(b"after").unwrap().as_deref(),
        Some(&b"fsync"[..])
    );
    assert_eq!(store.stats().unwrap().generation, 1);
    assert_clean(&store);
}

#[test]
fn a_file_that_cannot_grow_fails_writes_but_keeps_commits() {
    let _turn = SEAM.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.carboy");
    // 4 MiB in 1 KiB blocks: the first file allocation fits, later growth
    // does not.
    let script = "trap '' XFSZ; ulimit -f 4096; exec \"$0\" fill \"$1\"";
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_carboy-test-child"))
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = carboy_tests::stdout_of_success(output, "the child");
    let last_line = stdout.lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("error: ") && last_line.contains("full.carboy"),
        "the failure should be a typed error naming the file, got {last_line:?}"
    );
    let acked: Vec<u64> = stdout.lines().filter_map(|l| l.parse().ok()).collect();
    let last = *acked.last().expect("no commit fit under the limit");
    assert!(
        last >= 3,
        "only {last} commits before the limit: the limit is too tight"
    );

    let store = Store::open(&path).unwrap();
    assert_clean(&store);
    // The newest acknowledged commit wrote fill/0..min(4·last, 5000).
    for i in 0..(last * 4).min(5000) {
        let key = format!("fill/{i}").into_bytes();
        let newest = (i..last * 4).step_by(5000).last().unwrap_or(i);
        assert_eq!(
            store.get_owned(&key).unwrap(),
            Some(versioned_value(newest as u32, last)),
            "fill/{i} after commit {last}"
        );
    }
    // Without the limit, the same file takes writes again.
    store.put(b"after", b"the limit").unwrap();
    assert_clean(&store);
}
