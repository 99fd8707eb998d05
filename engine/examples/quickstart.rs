//! carboy in one process, then in two.
//!
//! `cargo run -p carboy --example quickstart` creates a namespace in a
//! temporary directory, writes keys (one with an expiry, one through a
//! transaction), reopens the file and reads them back, then runs itself again
//! as a second process (`--child PATH`) that opens the same file, reads every
//! key and writes one more, which the first process then reads. Then the
//! cache layer: a value created once through `get_or_create`, read by a
//! second process without recreating it, and invalidated there for both.
//! It exits non-zero if anything does not match.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use carboy::{Expiry, Options, Store};

/// What a step returns: any failure, as an error to print.
type Outcome = Result<(), Box<dyn std::error::Error>>;

/// The keys the first process writes, with their values.
const WRITTEN: [(&[u8], &[u8]); 3] = [
    (b"user:1", b"alice"),
    (b"token:9", b"xyz"),
    (b"owner", b"alice"),
];

/// The key the child process writes; its value is the child's process id.
const CHILD_KEY: &[u8] = b"child:pid";

/// Runs the parent, or the child when given `--child PATH`.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [] => parent(),
        [flag, path] if flag == "--child" => child(Path::new(path)),
        [flag, dir] if flag == "--cache-child" => cache_child(Path::new(dir)),
        _ => Err("usage: quickstart [--child PATH | --cache-child DIR]".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first process: write, reopen, read, hand the file to a child, read
/// the child's key.
fn parent() -> Outcome {
    let dir = tempfile::tempdir()?;

    let store = Store::open_namespace(dir.path(), "sessions")?;
    let path = store.path().to_path_buf();
    println!("1. created namespace \"sessions\" at {}", path.display());
    store.put(b"user:1", b"alice")?;
    store.put_for(b"token:9", b"xyz", Duration::from_secs(60))?;
    let mut txn = store.transaction()?;
    let name = txn
        .get(b"user:1")?
        .ok_or("user:1 is missing inside the transaction")?
        .to_vec();
    txn.put(b"owner", &name)?;
    txn.commit()?;
    println!("   put user:1, token:9 (expires in 60 s); transaction copied user:1 to owner");
    drop(store);

    let store = Store::open_namespace(dir.path(), "sessions")?;
    expect_written(&store)?;
    println!("2. reopened: read back all {} keys", WRITTEN.len());

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&path)
        .spawn()?;
    let child_pid = child.id().to_string();
    println!("3. spawned child process {child_pid} on the same file");
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("child process {child_pid} failed ({status})").into());
    }

    // The parent's store has stayed open: the child's commit is visible
    // through the same mapping, without reopening.
    expect(&store, CHILD_KEY, child_pid.as_bytes())?;
    println!(
        "4. parent reads {} = {child_pid}, written by the child",
        show(CHILD_KEY)
    );

    let report = store.verify()?;
    if let Some(p) = report.problems.first() {
        return Err(format!(
            "verify found {} problems, first: {p}",
            report.problems.len()
        )
        .into());
    }
    println!("   {} keys, file verifies clean", store.len()?);

    // The cache layer on the same engine: values with expiry, created once.
    let cache_dir = dir.path().join("cache");
    let reports = cache(&cache_dir)?;
    let mut runs = 0;
    let report: String = reports
        .get_or_create("daily", || {
            runs += 1;
            Ok::<_, std::io::Error>("42 orders".to_string())
        })
        .map_err(|e| e.to_string())?;
    let again: String = reports
        .get_or_create("daily", || {
            runs += 1;
            Ok::<_, std::io::Error>("recomputed".to_string())
        })
        .map_err(|e| e.to_string())?;
    if (report.as_str(), again.as_str(), runs) != ("42 orders", "42 orders", 1) {
        return Err(format!("cache: got {report:?}, {again:?} after {runs} runs").into());
    }
    println!("5. cache: get_or_create ran its creator once; the second call was a hit");
    let status = Command::new(std::env::current_exe()?)
        .arg("--cache-child")
        .arg(&cache_dir)
        .status()?;
    if !status.success() {
        return Err(format!("cache child failed ({status})").into());
    }
    if let Some(v) = reports.get::<String>("daily")? {
        return Err(format!("the child's invalidation was not seen: {v:?}").into());
    }
    println!("6. parent sees the child's invalidation: \"daily\" must be created again");
    println!("ok");
    Ok(())
}

/// The cache both processes open: the `file` backend in `dir`.
fn cache(dir: &Path) -> Result<carboy::cache::Cache, carboy::Error> {
    carboy::cache::CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .expire(Duration::from_secs(300))
        .build()?
        .get_cache("reports")
}

/// The cache's second process: read the parent's value, then invalidate
/// the namespace for everyone.
fn cache_child(dir: &Path) -> Outcome {
    let reports = cache(dir)?;
    let got: String = reports
        .get_or_create("daily", || {
            Err::<String, _>("the child must not recreate it")
        })
        .map_err(|e| e.to_string())?;
    println!(
        "   cache child {}: read \"daily\" = {got:?} without creating it",
        std::process::id()
    );
    reports.invalidate_all(carboy::cache::Invalidation::Hard)?;
    println!("   cache child: invalidated the namespace");
    Ok(())
}

/// The second process: open the parent's file, check every key, add one.
fn child(path: &Path) -> Outcome {
    let pid = std::process::id();
    let store = Options::new().create(false).open(path)?;
    expect_written(&store)?;

    let mut keys = store.keys()?;
    keys.sort();
    let mut want: Vec<Vec<u8>> = WRITTEN.iter().map(|(k, _)| k.to_vec()).collect();
    want.sort();
    if keys != want {
        let list: Vec<String> = keys.iter().map(|k| show(k)).collect();
        return Err(format!("child found keys {list:?}").into());
    }

    store.put(CHILD_KEY, pid.to_string().as_bytes())?;
    println!(
        "   child {pid}: opened the file, read all {} keys, wrote {}",
        keys.len(),
        show(CHILD_KEY)
    );
    Ok(())
}

/// Checks that every key in [`WRITTEN`] has its value, and that `token:9`
/// still carries its expiry.
fn expect_written(store: &Store) -> Outcome {
    for (key, value) in WRITTEN {
        expect(store, key, value)?;
    }
    match store.get(b"token:9")?.map(|v| v.expiry()) {
        Some(Expiry::AtUnixMs(_)) => Ok(()),
        other => Err(format!("token:9 should carry an expiry, found {other:?}").into()),
    }
}

/// Checks that `key` reads as `want`.
fn expect(store: &Store, key: &[u8], want: &[u8]) -> Outcome {
    let got = store.get_owned(key)?;
    if got.as_deref() == Some(want) {
        return Ok(());
    }
    Err(format!(
        "{}: expected {:?}, found {:?}",
        show(key),
        show(want),
        got.as_deref().map(show)
    )
    .into())
}

/// A key or value as text, for messages.
fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
