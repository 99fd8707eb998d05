//! The `carboy` command-line tool: inspect, check, read and write namespace
//! files.
//!
//! A first, hand-parsed version; the full tool comes in issue 4.
//! Exit status: 0 on success, 1 when a command fails (including a `check`
//! that finds problems and a `get` of an absent key), 2 on a usage error.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use carboy::{Options, Store};

/// The text of `carboy --help`.
const USAGE: &str = "\
carboy: inspect, check, read and write carboy namespace files

Usage:
  carboy stat FILE             print the file's figures
  carboy check FILE            verify every record, commit and index slot
  carboy get FILE KEY          write KEY's value to stdout
  carboy put FILE KEY VALUE    set KEY to VALUE (creates FILE if missing)
  carboy --help                print this help

Exit status: 0 success, 1 failure (problems found, key absent, error),
2 usage error.
";

/// Why a command did not succeed.
#[derive(Debug)]
enum Failure {
    /// The command line is wrong (exit status 2).
    Usage(String),
    /// The command ran and failed (exit status 1).
    Failed(String),
}

impl From<carboy::Error> for Failure {
    fn from(e: carboy::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

/// Runs the command line and maps its outcome to an exit status.
fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("carboy: {msg}\nRun `carboy --help` for usage.");
            ExitCode::from(2)
        }
        Err(Failure::Failed(msg)) => {
            eprintln!("carboy: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches `args` (without the program name) to its command.
fn run(args: &[OsString]) -> Result<(), Failure> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Failure::Usage("no command given".to_string()));
    };
    match command.to_str() {
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("stat") => {
            let [file] = operands(rest, "stat FILE")?;
            stat(Path::new(file))
        }
        Some("check") => {
            let [file] = operands(rest, "check FILE")?;
            check(Path::new(file))
        }
        Some("get") => {
            let [file, key] = operands(rest, "get FILE KEY")?;
            get(Path::new(file), key.as_bytes())
        }
        Some("put") => {
            let [file, key, value] = operands(rest, "put FILE KEY VALUE")?;
            put(Path::new(file), key.as_bytes(), value.as_bytes())
        }
        _ => Err(Failure::Usage(format!(
            "unknown command {}",
            command.to_string_lossy()
        ))),
    }
}

/// The operands of a command, when there are exactly `N`; otherwise a
/// usage error quoting `synopsis`.
fn operands<'a, const N: usize>(
    rest: &'a [OsString],
    synopsis: &str,
) -> Result<&'a [OsString; N], Failure> {
    rest.try_into()
        .map_err(|_| Failure::Usage(format!("usage: carboy {synopsis}")))
}

/// Opens an existing namespace file; a missing one is an error, not created.
fn open_existing(file: &Path) -> Result<Store, Failure> {
    Ok(Options::new().create(false).open(file)?)
}

/// `carboy stat FILE`: prints every field of [`Store::stats`], one a line.
fn stat(file: &Path) -> Result<(), Failure> {
    let s = open_existing(file)?.stats()?;
    println!("path                 {}", s.path.display());
    println!("format_version       {}", s.format_version);
    println!("generation           {}", s.generation);
    println!("allocated_bytes      {}", s.allocated_bytes);
    println!("committed_bytes      {}", s.committed_bytes);
    println!("stored_keys          {}", s.stored_keys);
    println!("expiring_keys        {}", s.expiring_keys);
    println!("used_slots           {}", s.used_slots);
    println!("index_capacity       {}", s.index_capacity);
    println!("dead_bytes           {}", s.dead_bytes);
    println!("last_txn             {}", s.last_txn);
    println!("last_commit_unix_ms  {}", s.last_commit_unix_ms);
    Ok(())
}

/// `carboy check FILE`: runs [`Store::verify`]; prints a summary when the
/// file is clean, otherwise each problem as `offset N: what` and fails.
fn check(file: &Path) -> Result<(), Failure> {
    let report = open_existing(file)?.verify()?;
    if report.is_clean() {
        println!(
            "clean: {} records, {} transactions, {} slots, {} live keys",
            report.records, report.transactions, report.slots, report.live_keys
        );
        return Ok(());
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    Err(Failure::Failed(format!(
        "{}: {} problem(s) found",
        file.display(),
        report.problems.len()
    )))
}

/// `carboy get FILE KEY`: writes the value's bytes, unchanged, to stdout.
fn get(file: &Path, key: &[u8]) -> Result<(), Failure> {
    let store = open_existing(file)?;
    let value = store.get(key)?.ok_or_else(|| {
        Failure::Failed(format!(
            "{}: no key {:?}",
            file.display(),
            String::from_utf8_lossy(key)
        ))
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(&value)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Failed(format!("writing to stdout: {e}")))
}

/// `carboy put FILE KEY VALUE`: sets `key` to `value` as one commit,
/// creating the file if it does not exist.
fn put(file: &Path, key: &[u8], value: &[u8]) -> Result<(), Failure> {
    Store::open(file)?.put(key, value)?;
    Ok(())
}
