//! Helpers shared by carboy's integration tests: whole-store comparisons,
//! self-checking values for the concurrency tests, the work plan the
//! multi-process tests and their child binary agree on, and byte-level
//! surgery on data files.
//!
//! These are test helpers: they panic, with a message saying what and
//! where, on any failure that is not the point of the test.

pub mod fuzzing;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use carboy::{Error, Expiry, MockClock, Options, Store};
use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{Kind, Prefix};

/// Where every mock clock in these tests starts (November 2023, Unix ms):
/// far from zero, so that "now minus a little" is still a valid time.
pub const CLOCK_START_MS: u64 = 1_700_000_000_000;

/// Default options reading time from `clock`.
pub fn options_with_clock(clock: &MockClock) -> Options {
    Options::new().clock(Arc::new(clock.clone()))
}

/// A byte string, printable, cut short for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    let mut text = bytes.escape_ascii().to_string();
    if text.len() > 48 {
        text.truncate(48);
        text.push_str("...");
    }
    format!("\"{text}\" ({} bytes)", bytes.len())
}

/// splitmix64: reproducible randomness for the crash tests (a failing case
/// names its seed).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Whole-store checks
// ---------------------------------------------------------------------------

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

/// The stdout of a child process that must have exited successfully; on
/// failure, panics with `what`, its status, stdout and stderr.
pub fn stdout_of_success(out: std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number of cases a property test runs: `PROPTEST_CASES` from the
/// environment when set, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// Self-checking values
// ---------------------------------------------------------------------------

/// Length of one stamp in a versioned value: key id (u32 LE) and version
/// (u64 LE).
const STAMP_LEN: usize = 12;

/// Number of stamps a versioned value of `version` holds. Lengths vary with
/// the version, so that a read mixing two versions shows up as a length or
/// content mismatch.
fn stamps_for(version: u64) -> usize {
    1 + (version % 23) as usize
}

/// A value that names its key and version and checks itself: the stamp
/// (`key_id`, `version`) repeated a version-dependent number of times.
pub fn versioned_value(key_id: u32, version: u64) -> Vec<u8> {
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..4].copy_from_slice(&key_id.to_le_bytes());
    stamp[4..].copy_from_slice(&version.to_le_bytes());
    stamp.repeat(stamps_for(version))
}

/// Decodes a [`versioned_value`] into (key id, version), or says why the
/// bytes are not one (a torn or foreign value).
pub fn parse_versioned(bytes: &[u8]) -> Result<(u32, u64), String> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(STAMP_LEN) {
        return Err(format!(
            "{} is not a whole number of {STAMP_LEN}-byte stamps",
            show(bytes)
        ));
    }
    let (first, _) = bytes.split_at(STAMP_LEN);
    if let Some(i) = bytes.chunks(STAMP_LEN).position(|c| c != first) {
        return Err(format!(
            "torn value: stamp {i} differs from stamp 0 in {}",
            show(bytes)
        ));
    }
    let key_id = u32::from_le_bytes(first[..4].try_into().unwrap_or_default());
    let version = u64::from_le_bytes(first[4..].try_into().unwrap_or_default());
    if bytes.len() / STAMP_LEN != stamps_for(version) {
        return Err(format!(
            "torn value: {} stamps, version {version} has {}",
            bytes.len() / STAMP_LEN,
            stamps_for(version)
        ));
    }
    Ok((key_id, version))
}

/// Encodes a counter value.
pub fn encode_counter(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

/// Decodes a counter value; an absent counter is 0.
pub fn decode_counter(bytes: Option<&[u8]>) -> Result<u64, String> {
    match bytes {
        None => Ok(0),
        Some(b) => b
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| format!("counter value {} is not 8 bytes", show(b))),
    }
}

// ---------------------------------------------------------------------------
// The multi-process work plan
// ---------------------------------------------------------------------------

/// What the children of `tests/multiprocess.rs` do, so that the parent can
/// compute what the file must hold afterwards.
///
/// Operation `i` of child `c`: put [`plan::child_key`]`(c, i % KEYS_PER_CHILD)`
/// = [`versioned_value`]`(c, i)`, then add one to counter
/// `i % COUNTERS` in a read-modify-write transaction.
pub mod plan {
    use crate::versioned_value;

    /// Keys each child owns (and rewrites in turn).
    pub const KEYS_PER_CHILD: u64 = 16;
    /// Counters shared by every child.
    pub const COUNTERS: u64 = 4;

    /// Key number `slot` of child `child`.
    pub fn child_key(child: u32, slot: u64) -> Vec<u8> {
        format!("child{child}/key{slot}").into_bytes()
    }

    /// Shared counter number `c`.
    pub fn counter_key(c: u64) -> Vec<u8> {
        format!("counter{c}").into_bytes()
    }

    /// The two keys every transaction of `child` sets to the same value.
    pub fn batch_keys(child: u32) -> [Vec<u8>; 2] {
        [
            format!("batch{child}/a").into_bytes(),
            format!("batch{child}/b").into_bytes(),
        ]
    }

    /// The short-lived key `child` puts in op `op` and deletes in the next.
    pub fn temp_key(child: u32, op: u64) -> Vec<u8> {
        format!("temp{child}/{}", op % 4).into_bytes()
    }

    /// Every key of `child` after `ops` operations, with its final value.
    pub fn final_values(child: u32, ops: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..KEYS_PER_CHILD.min(ops))
            .map(|slot| {
                let last = slot + KEYS_PER_CHILD * ((ops - 1 - slot) / KEYS_PER_CHILD);
                (child_key(child, slot), versioned_value(child, last))
            })
            .collect()
    }

    /// Final value of counter `c` after `children` children did `ops`
    /// operations each.
    pub fn counter_total(children: u64, ops: u64, c: u64) -> u64 {
        let per_child = (0..ops).filter(|i| i % COUNTERS == c).count() as u64;
        children * per_child
    }

    /// The entries the "handoff" writer process leaves behind.
    pub fn handoff_entries(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("handoff/{i}").into_bytes(),
                    versioned_value(i, u64::from(i) * 7 + 1),
                )
            })
            .collect()
    }
}

/// A namespace of several MiB: large enough that the passes over a whole
/// file (compaction, large transactions, verify, salvage, index rebuild)
/// work through it in many steps, releasing the pages behind each from the
/// process's memory (the engine's steps are 1 MiB), while readers run.
///
/// Key `i` always holds a [`versioned_value`] of a version congruent to
/// `i` modulo 23, so its value's length never changes and a value of
/// another key or a torn one shows; versions only grow.
pub mod big_file {
    use carboy::Store;

    use crate::{parse_versioned, show, versioned_value};

    /// Keys in the file (about 7 MiB of records).
    pub const KEYS: u32 = 40_000;

    /// Key number `i`.
    pub fn key(i: u32) -> Vec<u8> {
        format!("big/{i:06}").into_bytes()
    }

    /// The version key `i` gets in round `round` (round 0: the first).
    pub fn version(i: u32, round: u64) -> u64 {
        u64::from(i % 23) + 23 * round
    }

    /// Opens a new store at `path`, sized for [`KEYS`], and [`fill`]s it.
    pub fn create(path: &std::path::Path) -> Store {
        let store = carboy::Options::new()
            .expected_keys(KEYS.into())
            .open(path)
            .expect("open the big file");
        fill(&store);
        store
    }

    /// Writes every key at round 0, in one transaction.
    pub fn fill(store: &Store) {
        let mut txn = store.transaction().expect("transaction");
        for i in 0..KEYS {
            txn.put(&key(i), &versioned_value(i, version(i, 0)))
                .expect("put");
        }
        txn.commit().expect("commit");
    }

    /// Rewrites every `every`-th key (from key `round % every`) at
    /// `round`, in one transaction.
    pub fn rewrite(store: &Store, round: u64, every: u32) {
        let mut txn = store.transaction().expect("transaction");
        let first = (round % u64::from(every)) as u32;
        for i in (first..KEYS).step_by(every as usize) {
            txn.put(&key(i), &versioned_value(i, version(i, round)))
                .expect("put");
        }
        txn.commit().expect("commit");
    }

    /// The version of a value read for key `i`, or why it is not a value
    /// key `i` can hold.
    pub fn check(i: u32, bytes: &[u8]) -> Result<u64, String> {
        let (id, version) = parse_versioned(bytes)?;
        if id != i || version % 23 != u64::from(i % 23) {
            return Err(format!(
                "key {} holds {} (key {id}, version {version})",
                show(&key(i)),
                show(bytes)
            ));
        }
        Ok(version)
    }

    /// A reader's checks over many reads: every value is one key `i` can
    /// hold, no key's version goes back, and up to 64 values held at once
    /// (borrowed from the mapping, each with a copy taken when read) never
    /// change, even while compaction replaces the file under them.
    pub struct Reader<'s> {
        store: &'s Store,
        newest: Vec<u64>,
        held: Vec<(u32, carboy::ValueRef<'s>, Vec<u8>)>,
        /// Reads made so far.
        pub reads: u64,
    }

    impl<'s> Reader<'s> {
        /// A reader of `store`, which holds a `big_file`.
        pub fn new(store: &'s Store) -> Reader<'s> {
            Reader {
                store,
                newest: vec![0; KEYS as usize],
                held: Vec::new(),
                reads: 0,
            }
        }

        /// Reads key `i` and checks everything above.
        pub fn read(&mut self, i: u32) -> Result<(), String> {
            let reads = self.reads;
            let value = self
                .store
                .get(&key(i))
                .map_err(|e| format!("read {reads}: get {i}: {e}"))?
                .ok_or_else(|| format!("read {reads}: key {i} is missing"))?;
            let version = check(i, &value).map_err(|e| format!("read {reads}: {e}"))?;
            let newest = &mut self.newest[i as usize];
            if version < *newest {
                return Err(format!(
                    "read {reads}: key {i} went back from version {newest} to {version}"
                ));
            }
            *newest = version;
            let copy = value.to_vec();
            if self.held.len() < 64 {
                self.held.push((i, value, copy));
            } else {
                self.held[reads as usize % 64] = (i, value, copy);
            }
            if let Some((k, value, copy)) = self.held.iter().find(|(_, v, c)| **v != c[..]) {
                return Err(format!(
                    "read {reads}: a value of key {k} it held changed: {} was {}",
                    show(value),
                    show(copy)
                ));
            }
            self.reads += 1;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// File surgery
// ---------------------------------------------------------------------------

/// XORs the byte at `offset` of the file at `path` with `mask`.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset)
        .unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
    b[0] ^= mask;
    file.write_all_at(&b, offset)
        .unwrap_or_else(|e| panic!("write {} at {offset}: {e}", path.display()));
}

/// Cuts the file at `path` to `len` bytes.
pub fn truncate_file(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {} to {len}: {e}", path.display()));
}

/// Reads the live word at `word` (an offset in the header page, such as
/// `carboy_format::header::live::COMMIT_END`) straight from the file.
pub fn read_live_word(path: &Path, word: usize) -> u64 {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, word as u64)
        .unwrap_or_else(|e| panic!("read {} at {word}: {e}", path.display()));
    u64::from_le_bytes(b)
}

/// Overwrites the live word at `word` in the file at `path` with `value`.
pub fn write_live_word(path: &Path, word: usize, value: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&value.to_le_bytes(), word as u64))
        .unwrap_or_else(|e| panic!("write {} at {word}: {e}", path.display()));
}

/// One block of a data file's committed log, as found by [`log_blocks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBlock {
    /// Offset of the block in the file.
    pub offset: u64,
    /// What it is.
    pub kind: Kind,
    /// Bytes its CRC covers, counted from the block start (the CRC field
    /// itself, bytes 0..4, is checked against them too).
    pub covered: u64,
    /// Length of the whole block, padding (and index slots) included.
    pub len: u64,
}

/// Every block of the committed log of the (undamaged, closed) data file at
/// `path`, walked by prefix from the header page to `commit_end`.
pub fn log_blocks(path: &Path) -> Vec<LogBlock> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let end = read_live_word(path, live::COMMIT_END);
    let mut out = Vec::new();
    let mut pos = HEADER_SIZE;
    while pos < end {
        let at = pos as usize;
        let prefix = bytes
            .get(at..at + carboy_format::record::PREFIX_LEN)
            .and_then(|b| Prefix::decode(b).ok())
            .unwrap_or_else(|| panic!("{}: no valid block at {pos}", path.display()));
        let block = LogBlock {
            offset: pos,
            kind: prefix.kind,
            covered: prefix.covered_len(),
            len: prefix.block_len(),
        };
        out.push(block);
        pos += block.len;
    }
    assert_eq!(pos, end, "{}: the log overruns commit_end", path.display());
    out
}

/// The transactions of the kill loop (`tests/crash_kill.rs`): each version
/// sets three batch keys to the same version (all or nothing), one of a
/// rotating set of single keys, and sometimes deletes a key.
pub mod kill_loop {
    use super::versioned_value;

    /// Keys written by every transaction, all to the same version.
    pub const BATCH: [&[u8]; 3] = [b"batch/a", b"batch/b", b"batch/c"];
    /// Number of rotating single keys.
    pub const SINGLES: u64 = 40;
    /// The writer compacts after every this many commits.
    pub const COMPACT_EVERY: u64 = 61;

    /// The rotating key written by `version`.
    pub fn single(version: u64) -> Vec<u8> {
        format!("single/{}", version % SINGLES).into_bytes()
    }

    /// Every put of transaction `version`.
    pub fn writes(version: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut w: Vec<(Vec<u8>, Vec<u8>)> = BATCH
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_vec(), versioned_value(i as u32, version)))
            .collect();
        w.push((single(version), versioned_value(100, version)));
        w.push((
            format!("gone/{}", version % 5).into_bytes(),
            versioned_value(200, version),
        ));
        w
    }

    /// The key transaction `version` deletes after its puts, if any.
    pub fn deletion(version: u64) -> Option<Vec<u8>> {
        version
            .is_multiple_of(3)
            .then(|| format!("gone/{}", version % 5).into_bytes())
    }
}

/// What the group-commit test (`tests/group_commit.rs`) and its child
/// processes (`sync-*` modes of the child binary) agree on: each child
/// commits versions of its own key and increments one shared counter, with
/// `Durability::Sync`, and acknowledges each commit on stdout once it
/// returned; at the end it reports its [`carboy::SyncStats`].
pub mod group_plan {
    use super::versioned_value;

    /// The counter every commit of every child increments.
    pub const COUNTER: &[u8] = b"gc/counter";

    /// Child `child`'s own key.
    pub fn key(child: u32) -> Vec<u8> {
        format!("gc/{child}").into_bytes()
    }

    /// What child `child` stores in its key at `version`.
    pub fn value(child: u32, version: u64) -> Vec<u8> {
        versioned_value(child, version)
    }

    /// The line a child prints once commit `version` returned.
    pub fn ack(version: u64) -> String {
        format!("ack {version}")
    }

    /// The version of an acknowledgement line.
    pub fn parse_ack(line: &str) -> Option<u64> {
        line.strip_prefix("ack ")?.parse().ok()
    }

    /// The line a child ends with: its Sync commits and its fsyncs.
    pub fn stats(s: carboy::SyncStats) -> String {
        format!("stats commits={} fsyncs={}", s.commits, s.fsyncs)
    }

    /// (commits, fsyncs) from a stats line.
    pub fn parse_stats(line: &str) -> Option<(u64, u64)> {
        let rest = line.strip_prefix("stats commits=")?;
        let (commits, fsyncs) = rest.split_once(" fsyncs=")?;
        Some((commits.parse().ok()?, fsyncs.parse().ok()?))
    }
}

/// The `serve` mode of the child binary, and how a test talks to it: one
/// command per line, one reply per line, so that parent and child take
/// turns without sleeping.
///
/// | command | reply |
/// |---|---|
/// | `put <key> <value>` | `ok ()` |
/// | `get <key>` | `ok <value>` or `none` |
/// | `snapshot` | `ok <live keys in a snapshot>` |
/// | `compact` | `ok <keys kept>` |
/// | `recover` | `ok <whether a latch was cleared>` |
/// | `verify` | `ok <number of problems>` |
/// | `open` | drops the store and opens it again: `ready` |
/// | `cd <dir>` | changes the working directory: `ok ()` |
/// | `put-until-error <key> <ms>` | puts every 20 ms until one fails: its error and `(after <n> puts)`; `ok <n>` if none failed within `<ms>` |
/// | `quit` | (exits) |
///
/// A failed call replies `err <Variant> <message>` (see [`served::error_kind`]).
pub mod served {
    use std::fmt::Debug;
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::mpsc::{Receiver, channel};
    use std::time::Duration;

    use carboy::Error;

    /// How long a reply may take before the test gives up on the child.
    const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

    /// The reply line for the result of a call.
    pub fn reply<T: Debug>(result: Result<T, Error>) -> String {
        match result {
            Ok(v) => format!("ok {v:?}"),
            Err(e) => format!("err {} {e}", error_kind(&e)),
        }
    }

    /// The name of `e`'s variant, as its `Debug` form begins (every
    /// variant has fields, so the name ends at the first ` `, `{` or `(`).
    pub fn error_kind(e: &Error) -> String {
        let debug = format!("{e:?}");
        let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
        debug[..end].to_string()
    }

    /// A child process running `carboy-test-child serve <path>`; killed
    /// when dropped.
    pub struct Served {
        child: Child,
        stdin: ChildStdin,
        lines: Receiver<String>,
        name: String,
    }

    impl Served {
        /// Starts `command` (the child binary, without arguments) serving
        /// `path`. Returns it and its first line: `ready`, or the error of
        /// the open.
        pub fn start(mut command: Command, path: &Path, name: &str) -> (Served, String) {
            let mut child = command
                .arg("serve")
                .arg(path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("{name}: cannot start the child: {e}"));
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, lines) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            let mut served = Served {
                child,
                stdin,
                lines,
                name: name.to_string(),
            };
            let first = served.next_line("(start)");
            (served, first)
        }

        /// Sends `command`, returns the reply.
        pub fn ask(&mut self, command: &str) -> String {
            writeln!(self.stdin, "{command}")
                .and_then(|()| self.stdin.flush())
                .unwrap_or_else(|e| panic!("{}: sending {command:?}: {e}", self.name));
            self.next_line(command)
        }

        fn next_line(&mut self, command: &str) -> String {
            match self.lines.recv_timeout(REPLY_TIMEOUT) {
                Ok(line) => line,
                Err(e) => {
                    let _ = self.child.kill();
                    panic!(
                        "{}: no reply to {command:?} ({e}); the child exited with {:?}",
                        self.name,
                        self.child.wait()
                    )
                }
            }
        }

        /// Sends `quit` and waits for the child to exit successfully.
        pub fn quit(mut self) {
            let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
            let status = self.child.wait().expect("wait for the child");
            assert!(
                status.success(),
                "{}: the child exited with {status}",
                self.name
            );
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A reply split into its variant and message: `("ok", rest)`,
    /// `("none", "")`, `("ready", "")` or `(variant, message)` for errors.
    pub fn parse(reply: &str) -> (&str, &str) {
        match reply.strip_prefix("err ") {
            Some(rest) => rest.split_once(' ').unwrap_or((rest, "")),
            None => reply.split_once(' ').unwrap_or((reply, "")),
        }
    }

    /// Runs the child as a user without privileges, so that permission
    /// checks apply: as uid and gid 65534 ("nobody") when this process is
    /// root (which bypasses them), else as this user. The child binary is
    /// copied into a directory of its own that everyone can enter, since
    /// the build directory may not be.
    pub struct Unprivileged {
        ids: Option<(u32, u32)>,
        _dir: tempfile::TempDir,
        bin: PathBuf,
    }

    impl Unprivileged {
        /// The user 65534 when running as root.
        pub const NOBODY: u32 = 65534;

        /// Prepares to run the child binary at `child_bin`.
        pub fn new(child_bin: &Path) -> Unprivileged {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let dir = tempfile::tempdir().expect("temp dir");
            let root = std::fs::metadata(dir.path()).expect("stat temp dir").uid() == 0;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
            let bin = dir.path().join("carboy-test-child");
            std::fs::copy(child_bin, &bin).expect("copy the child binary");
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the child binary");
            // A process another test thread forked while the copy's file
            // was open for writing holds that descriptor until it execs,
            // and exec of the copy fails meanwhile (ETXTBSY). Once one exec
            // succeeds, no such descriptor is left, and none can appear.
            for attempt in 0.. {
                match Command::new(&bin)
                    .arg("--version")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                {
                    Ok(mut child) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 500 =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => panic!("run the copy of the child binary: {e}"),
                }
            }
            Unprivileged {
                ids: root.then_some((Self::NOBODY, Self::NOBODY)),
                _dir: dir,
                bin,
            }
        }

        /// Whether the child drops root privileges.
        pub fn drops_root(&self) -> bool {
            self.ids.is_some()
        }

        /// A command running the child as the unprivileged user.
        pub fn command(&self) -> Command {
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(&self.bin);
            command.current_dir("/");
            if let Some((uid, gid)) = self.ids {
                command.uid(uid).gid(gid);
            }
            command
        }

        /// Makes `path` (and, for a directory, nothing below it) belong to
        /// the child's user, with permission bits `mode`.
        pub fn give(&self, path: &Path, mode: u32) {
            use std::os::unix::fs::PermissionsExt;
            if let Some((uid, gid)) = self.ids {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        }
    }
}
