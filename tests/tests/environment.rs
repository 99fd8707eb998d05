//! The environment changing under an open store: the lock file, the data
//! file or their directory removed, renamed or replaced by another program,
//! the data file truncated, and permissions that refuse access. Each is a
//! typed error naming the path (never two writers at once, never a SIGBUS
//! in the process that detected it, nothing committed lost once the file is
//! put back), and the permission cases run for real: as user 65534 when the
//! suite runs as root, which bypasses permission checks.
//!
//! The writer checks these only when it takes the lock afresh, not on a
//! commit under a lease, so most tests first take the lease away from the
//! child (a write from this process) before they change the files. Parent
//! and child take turns over pipes (`carboy_tests::served`), one line each
//! way; only the lease-thread test waits for time to pass, since what it
//! checks is a look made about once a second.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use carboy::{Error, Options, Store};
use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::Kind;
use carboy_tests::served::{Served, Unprivileged, error_kind, parse};
use carboy_tests::{assert_clean, assert_names_path, log_blocks, read_live_word, truncate_file};

fn child() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carboy-test-child"))
}

/// Starts a child serving `path` and checks that it opened it.
fn serve(path: &Path, name: &str) -> Served {
    let (served, first) = Served::start(child(), path, name);
    assert_eq!(
        first,
        "ready",
        "{name}: the child could not open {}",
        path.display()
    );
    served
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Writes `key` from this process, then closes the store: whoever held
/// the writer lock as a lease gave it up for that write, so its next write
/// takes the lock afresh (which is where the files are checked).
fn take_lease(path: &Path, key: &str) {
    let store = Store::open(path).unwrap();
    store.put(key.as_bytes(), b"parent").unwrap();
}

/// Asserts that `reply` is the error `kind`, and returns its message.
fn expect_err(reply: &str, kind: &str, what: &str) -> String {
    let (got, message) = parse(reply);
    assert_eq!(got, kind, "{what}: expected a {kind} error, got {reply:?}");
    message.to_string()
}

/// Asserts that `reply` is `ok <value>` (as `get` prints it).
fn expect_value(reply: &str, value: &str, what: &str) {
    assert_eq!(reply, format!("ok {value}"), "{what}");
}

fn expect_open_refused(path: &Path, kind: &str, what: &str) -> Error {
    let err = Store::open(path).expect_err(what);
    assert_eq!(error_kind(&err), kind, "{what}: {err}");
    err
}

fn populated(dir: &Path) -> PathBuf {
    let path = dir.join("ns.carboy");
    let store = Store::open(&path).unwrap();
    for i in 0..10 {
        store.put(format!("before/{i}").as_bytes(), b"v").unwrap();
    }
    path
}

fn assert_before_keys(store: &Store) {
    for i in 0..10 {
        assert_eq!(
            store.get_owned(format!("before/{i}").as_bytes()).unwrap(),
            Some(b"v".to_vec()),
            "before/{i}"
        );
    }
}

// ---------------------------------------------------------------------------
// The lock file
// ---------------------------------------------------------------------------

#[test]
fn a_lock_file_removed_under_an_open_store_leaves_no_process_able_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let lock = lock_path(&path);
    let mut a = serve(&path, "writer");
    expect_value(&a.ask("put a 1"), "()", "first put");
    take_lease(&path, "b");

    std::fs::remove_file(&lock).unwrap();

    // The process that had the store open: refused, naming the lock file.
    let reply = a.ask("put c 3");
    let message = expect_err(&reply, "LockFileReplaced", "put after the removal");
    assert!(message.contains(&lock.display().to_string()), "{message}");
    assert!(message.contains("removed"), "{message}");
    assert!(message.contains("close every handle"), "{message}");
    // A process opening now makes a new lock file, and sees that the data
    // file is still used through the old one: refused too.
    let err = expect_open_refused(&path, "LockFileReplaced", "open after the removal");
    assert_names_path(&err, &lock);
    assert!(err.to_string().contains("another process"), "{err}");
    // Reads go on; snapshots (which rely on the lock) do not; the refusal
    // lasts as long as the condition.
    expect_value(&a.ask("get a"), "1", "read after the removal");
    expect_err(&a.ask("snapshot"), "LockFileReplaced", "snapshot");
    expect_err(&a.ask("put c 3"), "LockFileReplaced", "second put");
    a.quit();

    // Once the old lock file's last user is gone, the namespace opens, with
    // everything committed and nothing refused.
    let store = Store::open(&path).unwrap();
    assert_before_keys(&store);
    assert_eq!(store.get_owned(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        store.get_owned(b"b").unwrap().as_deref(),
        Some(&b"parent"[..])
    );
    assert_eq!(store.get_owned(b"c").unwrap(), None);
    store.put(b"c", b"3").unwrap();
    assert_clean(&store);
}

#[test]
fn a_lock_file_replaced_under_an_open_store_leaves_no_process_able_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let lock = lock_path(&path);
    let mut a = serve(&path, "writer");
    expect_value(&a.ask("put a 1"), "()", "first put");
    take_lease(&path, "b");

    // A valid, initialized lock file (a copy), renamed over the old one: an
    // opener finds nothing to initialize, so only the presence marks tell.
    let copy = dir.path().join("copy.lock");
    std::fs::copy(&lock, &copy).unwrap();
    std::fs::rename(&copy, &lock).unwrap();

    let message = expect_err(&a.ask("put c 3"), "LockFileReplaced", "put");
    assert!(message.contains("names another file"), "{message}");
    expect_open_refused(&path, "LockFileReplaced", "open through the new lock file");
    expect_value(&a.ask("get a"), "1", "read");
    a.quit();

    let store = Store::open(&path).unwrap();
    assert_before_keys(&store);
    assert_eq!(store.get_owned(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    store.put(b"c", b"3").unwrap();
    assert_clean(&store);
}

#[test]
fn a_lease_holder_stays_the_only_writer_until_its_lease_thread_notices_the_lock_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut a = serve(&path, "lease holder");
    // The child keeps the lock as a lease after this put.
    expect_value(&a.ask("put a 1"), "()", "first put");
    std::fs::remove_file(lock_path(&path)).unwrap();

    // Its commits under the lease make no system call, so it may go on
    // writing for a moment (unless its lease thread has looked already)...
    let reply = a.ask("put b 2");
    let kept_writing = reply == "ok ()";
    if !kept_writing {
        expect_err(&reply, "LockFileReplaced", "put under the lease");
    }
    // ...but it is the only writer: nobody else can open the namespace.
    expect_open_refused(&path, "LockFileReplaced", "open beside the lease holder");
    // Its lease thread looks about once a second and gives the lease up;
    // the next write takes the lock afresh and is refused.
    let reply = a.ask("put-until-error c 10000");
    expect_err(
        &reply,
        "LockFileReplaced",
        "puts while the lease thread looks",
    );
    expect_open_refused(&path, "LockFileReplaced", "open after the lease ended");
    a.quit();

    let store = Store::open(&path).unwrap();
    assert_before_keys(&store);
    assert_eq!(store.get_owned(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    let b = kept_writing.then_some(b"2".to_vec());
    assert_eq!(store.get_owned(b"b").unwrap(), b);
    assert_clean(&store);
}

#[test]
fn handles_of_one_process_through_an_old_and_a_new_lock_file_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let old = Store::open(&path).unwrap();
    std::fs::remove_file(lock_path(&path)).unwrap();
    // A new open in the same process finds a new lock file, and this
    // process's own old handle on the data file.
    expect_open_refused(&path, "LockFileReplaced", "second open in the process");
    // Dropping every old handle lets the next open through at once.
    drop(old);
    let store = Store::open(&path).unwrap();
    assert_before_keys(&store);
    store.put(b"after", b"reopen").unwrap();
    assert_clean(&store);
}

#[test]
fn a_data_file_reached_through_a_second_name_is_refused_while_in_use_through_the_first() {
    // A hard link and a symbolic link each bring a lock file of their own
    // (the name plus `.lock`), which would not exclude the first name's
    // writers: the presence marks refuse them.
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let first = Store::open(&path).unwrap();
    let hard = dir.path().join("hard.carboy");
    std::fs::hard_link(&path, &hard).unwrap();
    let soft = dir.path().join("soft.carboy");
    std::os::unix::fs::symlink(&path, &soft).unwrap();
    for other in [&hard, &soft] {
        let err = expect_open_refused(other, "LockFileReplaced", "second name");
        assert_names_path(&err, &lock_path(other));
    }
    // Through one name at a time, either works.
    drop(first);
    let store = Store::open(&hard).unwrap();
    store.put(b"through", b"hard link").unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.get_owned(b"through").unwrap().as_deref(),
        Some(&b"hard link"[..])
    );
    assert_before_keys(&store);
    assert_clean(&store);
}

#[test]
fn a_namespace_opened_by_a_relative_path_survives_a_change_of_working_directory() {
    // The checks look the files up by path again: a relative path is made
    // absolute at open, or a `chdir` would make the files look removed.
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut command = child();
    command.current_dir(dir.path());
    let (mut a, first) = Served::start(command, Path::new("ns.carboy"), "relative");
    assert_eq!(first, "ready");
    expect_value(&a.ask("put a 1"), "()", "first put");
    expect_value(&a.ask("cd /"), "()", "cd");
    take_lease(&path, "b");
    expect_value(&a.ask("put c 3"), "()", "put after cd");
    expect_value(&a.ask("compact"), "13", "compact after cd");
    expect_value(&a.ask("get b"), "parent", "read after cd");
    a.quit();
}

// ---------------------------------------------------------------------------
// The data file and its directory
// ---------------------------------------------------------------------------

#[test]
fn a_data_file_removed_under_an_open_store_refuses_writes_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut a = serve(&path, "writer");
    expect_value(&a.ask("put a 1"), "()", "first put");
    take_lease(&path, "b");

    std::fs::remove_file(&path).unwrap();

    let message = expect_err(&a.ask("put c 3"), "DataFileReplaced", "put");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("removed"), "{message}");
    // Reads are served from the mapping this process has.
    expect_value(&a.ask("get a"), "1", "read a");
    expect_value(&a.ask("get b"), "parent", "read b");

    // Opening the namespace again makes a new, empty file, under the next
    // generation: the process that had the old one moves to it, as after a
    // compaction, instead of writing into a file nobody can open.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.len().unwrap(), 0);
    store.put(b"x", b"9").unwrap();
    drop(store);
    expect_value(&a.ask("put c 3"), "()", "put after the new file was made");
    assert_eq!(a.ask("get a"), "none");
    expect_value(&a.ask("get x"), "9", "read x");
    a.quit();

    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_owned(b"c").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(store.len().unwrap(), 2);
    assert_clean(&store);
}

#[test]
fn a_data_file_replaced_by_another_file_refuses_writes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated(dir.path());
    let mut a = serve(&path, "writer");
    expect_value(&a.ask("put a 1"), "()", "first put");
    // A backup taken now, renamed over the file after more writes.
    let backup = dir.path().join("backup.carboy");
    std::fs::copy(&path, &backup).unwrap();
    expect_value(&a.ask("put a 2"), "()", "second put");
    take_lease(&path, "b");
    std::fs::rename(&backup, &path).unwrap();

    let message = expect_err(&a.ask("put c 3"), "DataFileReplaced", "put");
    assert!(message.contains("names another file"), "{message}");
    expect_value(&a.ask("get a"), "2", "read from the old mapping");
    // The refusal holds as long as the handle does.
    expect_err(&a.ask("put c 3"), "DataFileReplaced", "second put");
    // Reopened, the process uses the file now at the path.
    assert_eq!(a.ask("open"), "ready");
    expect_value(&a.ask("get a"), "1", "read from the backup");
    assert_eq!(a.ask("get b"), "none");
    expect_value(&a.ask("put c 3"), "()", "put after reopening");
    expect_value(&a.ask("verify"), "0", "verify");
    a.quit();
}

#[test]
fn a_data_directory_renamed_or_removed_refuses_writes_until_it_is_back() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let path = populated(&dir);
    let mut a = serve(&path, "writer");
    expect_value(&a.ask("put a 1"), "()", "first put");
    take_lease(&path, "b");

    let moved = top.path().join("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let message = expect_err(&a.ask("put c 3"), "LockFileReplaced", "put");
    assert!(
        message.contains(&format!(
            "directory {} was removed or renamed",
            dir.display()
        )),
        "{message}"
    );
    expect_value(&a.ask("get a"), "1", "read");

    // Put back, it is the same files again: writes go on (nothing latched).
    std::fs::rename(&moved, &dir).unwrap();
    expect_value(&a.ask("put c 3"), "()", "put after the directory is back");
    expect_value(&a.ask("verify"), "0", "verify");

    take_lease(&path, "d");
    std::fs::remove_dir_all(&dir).unwrap();
    expect_err(&a.ask("put e 5"), "LockFileReplaced", "put after rm -r");
    expect_value(&a.ask("get c"), "3", "read after rm -r");
    a.quit();
}

// ---------------------------------------------------------------------------
// Truncation by another program
// ---------------------------------------------------------------------------

/// A child holding `keys` keys in as many commits, with no lease, and the
/// file's bytes as they were.
fn truncation_case(dir: &Path, keys: u32) -> (PathBuf, Served, Vec<u8>) {
    let path = dir.join("cut.carboy");
    let mut a = serve(&path, "writer");
    for i in 0..keys {
        expect_value(&a.ask(&format!("put k{i} v{i}")), "()", "put");
    }
    take_lease(&path, "p");
    let bytes = std::fs::read(&path).unwrap();
    (path, a, bytes)
}

/// Puts `bytes` back into the file at `path` (the same file, made whole).
fn restore(path: &Path, bytes: &[u8]) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_len(bytes.len() as u64).unwrap();
    file.write_all_at(bytes, 0).unwrap();
}

#[test]
fn a_data_file_truncated_below_its_committed_end_is_refused_not_faulted_on() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 30;
    let (path, mut a, bytes) = truncation_case(dir.path(), keys);
    let committed = read_live_word(&path, live::COMMIT_END);
    let cut = (HEADER_SIZE + (committed - HEADER_SIZE) / 2) / 8 * 8;
    truncate_file(&path, cut);

    // The writer: a typed error with the path, the length and the committed
    // end, and the store latches.
    let message = expect_err(&a.ask("put x 1"), "FileTruncated", "put");
    for part in [
        path.display().to_string(),
        format!("{cut} bytes long"),
        format!("ends at byte {committed}"),
    ] {
        assert!(message.contains(&part), "no {part:?} in {message}");
    }
    // Its reads are refused too, rather than faulting on the missing pages
    // (the child is still alive to answer).
    expect_err(&a.ask("get k0"), "FileTruncated", "read of an early key");
    expect_err(
        &a.ask(&format!("get k{}", keys - 1)),
        "FileTruncated",
        "read of a late key",
    );
    let message = expect_err(&a.ask("put x 1"), "Latched", "second put");
    assert!(message.contains("truncated"), "{message}");
    expect_err(
        &a.ask("recover"),
        "FileTruncated",
        "recover while still cut",
    );
    // A new opener in this boot refuses it rather than rebuilding from
    // what is left (which would drop committed transactions silently).
    let err = expect_open_refused(&path, "FileTruncated", "open of the cut file");
    assert!(err.is_corruption());

    // The bytes put back: nothing committed was lost.
    restore(&path, &bytes);
    expect_value(&a.ask("recover"), "true", "recover");
    for i in [0, keys / 2, keys - 1] {
        expect_value(
            &a.ask(&format!("get k{i}")),
            &format!("v{i}"),
            "read after restore",
        );
    }
    expect_value(&a.ask("put x 1"), "()", "put after restore");
    expect_value(&a.ask("verify"), "0", "verify");
    a.quit();
    let store = Store::open(&path).unwrap();
    for i in 0..keys {
        assert_eq!(
            store.get_owned(format!("k{i}").as_bytes()).unwrap(),
            Some(format!("v{i}").into_bytes()),
            "k{i}"
        );
    }
    assert_eq!(store.get_owned(b"x").unwrap().as_deref(), Some(&b"1"[..]));
    assert_clean(&store);
}

#[test]
fn a_data_file_cut_inside_its_header_page_is_refused_not_faulted_on() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut a, bytes) = truncation_case(dir.path(), 5);
    truncate_file(&path, 100);
    let message = expect_err(&a.ask("put x 1"), "FileTruncated", "put");
    assert!(
        message.contains(&format!("ends at byte {HEADER_SIZE}")),
        "{message}"
    );
    // Reads reopen the path and find no whole header there.
    let reply = a.ask("get k0");
    let (kind, message) = parse(&reply);
    assert!(
        kind == "NotCarboy" || kind == "FileTruncated",
        "read of a file cut in its header: {kind} {message}"
    );
    restore(&path, &bytes);
    expect_value(&a.ask("recover"), "true", "recover");
    expect_value(&a.ask("get k4"), "v4", "read after restore");
    expect_value(&a.ask("put x 1"), "()", "put after restore");
    a.quit();
}

#[test]
fn a_cut_that_spares_the_committed_log_loses_nothing_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut a, bytes) = truncation_case(dir.path(), 5);
    let committed = read_live_word(&path, live::COMMIT_END);
    assert!(
        (bytes.len() as u64) > committed,
        "the file has no space past its log"
    );
    // Allocated space past the committed end: nothing anyone reads.
    truncate_file(&path, committed);
    expect_value(&a.ask("put x 1"), "()", "put");
    expect_value(&a.ask("get k0"), "v0", "read");
    expect_value(&a.ask("verify"), "0", "verify");
    a.quit();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.len().unwrap(), 7);
    assert_clean(&store);
}

#[test]
fn what_a_cut_left_is_kept_by_salvage_or_by_an_explicit_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.carboy");
    let store = Store::open(&path).unwrap();
    for i in 0..20 {
        store
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    drop(store);
    // Cut right after the 10th commit marker: commits 1..=10 survive whole.
    let marker = log_blocks(&path)
        .into_iter()
        .filter(|b| b.kind == Kind::Commit)
        .nth(9)
        .unwrap();
    truncate_file(&path, marker.offset + marker.len);

    let err = expect_open_refused(&path, "FileTruncated", "plain open");
    assert_names_path(&err, &path);

    let salvaged = dir.path().join("salvaged.carboy");
    let report = carboy::salvage(&path, &salvaged).unwrap();
    assert_eq!(report.keys, 10, "{report:?}");
    let rebuilt = Options::new().rebuild_index(true).open(&path).unwrap();
    for store in [&Store::open(&salvaged).unwrap(), &rebuilt] {
        for i in 0..20 {
            let want = (i < 10).then(|| format!("v{i}").into_bytes());
            assert_eq!(
                store.get_owned(format!("k{i}").as_bytes()).unwrap(),
                want,
                "k{i}"
            );
        }
        assert_clean(store);
    }
}

// ---------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------

/// The child's first line for opening `path` as the unprivileged user.
fn open_as_unprivileged(user: &Unprivileged, path: &Path, what: &str) -> (Served, String) {
    Served::start(user.command(), path, what)
}

fn expect_denied(reply: &str, op: &str, path: &Path, what: &str) {
    let message = expect_err(reply, "PermissionDenied", what);
    assert!(
        message.starts_with(&format!("{op} {}: permission denied", path.display())),
        "{what}: {message}"
    );
    assert!(
        message.contains("read and write permission"),
        "{what}: {message}"
    );
}

/// A directory `name` in a fresh temporary directory, both open to the
/// unprivileged user; the namespace `ns.carboy` in it, made by this process
/// and given to that user, when `populate`.
fn unprivileged_dir(
    user: &Unprivileged,
    name: &str,
    populate: bool,
) -> (tempfile::TempDir, PathBuf) {
    let top = tempfile::tempdir().unwrap();
    user.give(top.path(), 0o755);
    let dir = top.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    user.give(&dir, 0o755);
    let path = dir.join("ns.carboy");
    if populate {
        let store = Store::open(&path).unwrap();
        store.put(b"k", b"v").unwrap();
        drop(store);
        user.give(&path, 0o644);
        user.give(&lock_path(&path), 0o644);
    }
    (top, path)
}

#[test]
fn creating_a_namespace_in_a_read_only_directory_is_a_typed_error() {
    let user = Unprivileged::new(Path::new(env!("CARGO_BIN_EXE_carboy-test-child")));
    let (_top, path) = unprivileged_dir(&user, "ro", false);
    let dir = path.parent().unwrap();
    user.give(dir, 0o555);
    let (_a, first) = open_as_unprivileged(&user, &path, "create in 0555");
    expect_denied(
        &first,
        "create lock file",
        &lock_path(&path),
        "create in 0555",
    );
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "files were left behind"
    );
    user.give(dir, 0o755);
}

#[test]
fn a_read_only_or_unreadable_data_file_is_a_typed_error() {
    let user = Unprivileged::new(Path::new(env!("CARGO_BIN_EXE_carboy-test-child")));
    let (_top, path) = unprivileged_dir(&user, "d", true);
    for mode in [0o444, 0o000] {
        user.give(&path, mode);
        let what = format!("data file {mode:o}");
        let (_a, first) = open_as_unprivileged(&user, &path, &what);
        expect_denied(&first, "open", &path, &what);
    }
}

#[test]
fn a_read_only_or_unreadable_lock_file_is_a_typed_error() {
    let user = Unprivileged::new(Path::new(env!("CARGO_BIN_EXE_carboy-test-child")));
    let (_top, path) = unprivileged_dir(&user, "d", true);
    for mode in [0o444, 0o000] {
        user.give(&lock_path(&path), mode);
        let what = format!("lock file {mode:o}");
        let (_a, first) = open_as_unprivileged(&user, &path, &what);
        expect_denied(&first, "open lock file", &lock_path(&path), &what);
    }
}

#[test]
fn a_directory_that_cannot_be_searched_is_a_typed_error() {
    let user = Unprivileged::new(Path::new(env!("CARGO_BIN_EXE_carboy-test-child")));
    let (_top, path) = unprivileged_dir(&user, "d", true);
    // Readable and writable, but no search (x) bit: no name in it resolves.
    user.give(path.parent().unwrap(), 0o666);
    let (_a, first) = open_as_unprivileged(&user, &path, "directory 0666");
    expect_denied(
        &first,
        "open lock file",
        &lock_path(&path),
        "directory 0666",
    );
    user.give(path.parent().unwrap(), 0o755);
}

#[test]
fn a_namespace_in_a_read_only_directory_works_but_cannot_compact() {
    let user = Unprivileged::new(Path::new(env!("CARGO_BIN_EXE_carboy-test-child")));
    let (_top, path) = unprivileged_dir(&user, "ro", true);
    let dir = path.parent().unwrap().to_path_buf();
    user.give(&dir, 0o555);
    let (mut a, first) = open_as_unprivileged(&user, &path, "namespace in 0555");
    assert_eq!(first, "ready");
    expect_value(&a.ask("put a 1"), "()", "put");
    // Compaction creates a file beside the old one: refused, typed, and
    // the store goes on.
    let message = expect_err(&a.ask("compact"), "PermissionDenied", "compact");
    assert!(
        message.starts_with(&format!("create {}/.ns.carboy.compact-", dir.display())),
        "{message}"
    );
    expect_value(&a.ask("put b 2"), "()", "put after the failed compaction");
    expect_value(&a.ask("get k"), "v", "read");

    // The directory made unsearchable while the store is open: the next
    // fresh lock acquisition cannot check the files, and says why.
    take_lease(&path, "c");
    user.give(&dir, 0o000);
    let message = expect_err(
        &a.ask("put d 4"),
        "PermissionDenied",
        "put in a 000 directory",
    );
    assert!(message.starts_with("stat "), "{message}");
    expect_value(&a.ask("get a"), "1", "read in a 000 directory");
    user.give(&dir, 0o755);
    expect_value(&a.ask("put d 4"), "()", "put after chmod back");
    expect_value(&a.ask("verify"), "0", "verify");
    a.quit();
}

/// `open` on another thread, with a deadline: a call that blocks fails
/// the test instead of hanging it.
fn open_with_deadline(path: &Path, options: Options) -> carboy::Result<Store> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(options.open(&owned));
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("opening {} blocked", path.display()))
}

#[test]
fn a_fifo_socket_or_device_as_data_or_lock_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mkfifo = |path: &Path| {
        let status = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
    };
    let fifo = dir.path().join("fifo.carboy");
    mkfifo(&fifo);
    let socket = dir.path().join("socket.carboy");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let device = dir.path().join("device.carboy");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    for (path, kind) in [
        (&fifo, "a FIFO"),
        (&socket, "a socket"),
        (&device, "a character device"),
    ] {
        for create in [false, true] {
            let err = open_with_deadline(path, Options::new().create(create))
                .expect_err("a special data file is refused");
            match &err {
                Error::NotRegularFile { path: p, kind: k } => {
                    assert_eq!(p, path, "{err}");
                    assert_eq!(*k, kind, "{err}");
                }
                other => panic!("{}: expected NotRegularFile, got {other:?}", path.display()),
            }
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        // The calls that only read the file refuse it as well.
        let (tx, rx) = std::sync::mpsc::channel();
        let (src, out) = (path.to_path_buf(), dir.path().join("never.carboy"));
        std::thread::spawn(move || {
            let salvaged = carboy::salvage(&src, &out).map(drop);
            let inspected = carboy::inspect_recovery(&src).map(drop);
            let _ = tx.send((salvaged, inspected));
        });
        let (salvaged, inspected) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("salvage or inspect of {} blocked", path.display()));
        for err in [salvaged.unwrap_err(), inspected.unwrap_err()] {
            assert_eq!(error_kind(&err), "NotRegularFile", "{err}");
        }
    }

    // The lock file: a FIFO where FILE.lock should be.
    let path = populated(dir.path());
    let lock = lock_path(&path);
    std::fs::remove_file(&lock).unwrap();
    mkfifo(&lock);
    for options in [Options::new(), Options::new().create(false)] {
        let err = open_with_deadline(&path, options).expect_err("a FIFO lock file is refused");
        assert_eq!(error_kind(&err), "NotRegularFile", "{err}");
        assert_names_path(&err, &lock);
    }
    // Put back a regular lock file: the namespace opens as before.
    std::fs::remove_file(&lock).unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get(b"before/3").unwrap().as_deref(), Some(&b"v"[..]));
}
