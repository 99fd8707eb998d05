//! A child process for `tests/multiprocess.rs`: it opens a namespace file
//! and does one part of a multi-process test, checking what it reads as it
//! goes. It exits 0 when every check held, 1 with a message on stderr
//! otherwise.
//!
//! ```text
//! carboy-test-child work <path> <child> <children> <ops>
//!     waits for a line on stdin, then does <ops> operations of the work
//!     plan (carboy_tests::plan) as child number <child> of <children>
//! carboy-test-child compact <path> <rounds>
//!     waits for a line on stdin, then compacts the file <rounds> times,
//!     verifying it after each
//! carboy-test-child read-big <path> <millis>
//!     waits for a line on stdin, then reads keys of a big_file namespace
//!     for <millis> ms, checking each value, that no key's version goes
//!     back, and that values it holds meanwhile do not change
//! carboy-test-child peak <op> <path> [<dst>]
//!     runs one pass over a whole file and prints `peak <bytes> before
//!     <bytes>`: the process's peak resident memory (VmHWM) after and
//!     before it; <op> is `load` (big_file::fill into a new file),
//!     `compact`, `verify` or `salvage` (to <dst>)
//! carboy-test-child write <path> <n>
//!     writes the first <n> handoff entries and exits without syncing
//! carboy-test-child read <path> <n>
//!     checks that the file holds exactly the first <n> handoff entries
//! carboy-test-child fill <path>
//!     commits growing transactions until one fails, printing the version
//!     of each commit that returned, then the failure as `error: ...`;
//!     exits 0 when the failure is a typed I/O error
//! carboy-test-child commit-forever <path> <first version> [sync]
//!     commits kill-loop transactions (carboy_tests::kill_loop) from
//!     <first version> on, printing each version on stdout once its commit
//!     returned, until killed; with `sync`, with Durability::Sync
//! carboy-test-child sync-commits <path> <child> <first version> <count>
//!     waits for a line on stdin, then makes Durability::Sync commits of
//!     the group-commit plan (carboy_tests::group_plan) for versions
//!     <first version>.. (<count> of them, or forever if 0), printing
//!     `ack <version>` once each returned, then its sync stats
//! carboy-test-child sync-held <path> <key>
//!     commits <key> with Durability::Sync, printing `syncing` when its
//!     first fsync is about to start and holding it there until a line
//!     arrives on stdin; then prints its sync stats
//! carboy-test-child sync-put <path> <key>
//!     commits <key> with Durability::Sync and prints its sync stats
//! carboy-test-child serve <path>
//!     opens the namespace and prints `ready` (or the error), then runs one
//!     command per line of stdin and prints one line for each
//!     (carboy_tests::served lists the commands and the replies); used by
//!     tests/environment.rs, also as an unprivileged user
//! ```
//!
//! For `tests/sync_locks.rs` (carboy::sync's cross-process locks), where
//! `<lock>` is `file <lock dir> <name> <read|write>` (a FileLock),
//! `stripe <lock file> <stripes> <hash>` (a StripeLocks stripe) or
//! `owned <lock file> <stripes> <hash>` (an owned stripe,
//! `StripeLocks::try_lock_owned`, retried while busy to wait for it):
//!
//! ```text
//! carboy-test-child lock-count <counter file> <rounds> <threads> <lock>
//!     waits for a line on stdin, then <threads> threads each do <rounds>
//!     read-modify-writes of the number in <counter file> under the (write)
//!     lock, failing if another holder is ever inside at the same time
//! carboy-test-child lock-hold <lock>
//!     takes the lock, prints `held`, and keeps it until a line (or EOF)
//!     arrives on stdin
//! carboy-test-child lock-try <lock>
//!     tries the lock once and prints `acquired` or `busy`
//! carboy-test-child lock-lease <lock>
//!     takes the lock and releases it at once (an owned stripe stays
//!     locked and idle: the lease), prints `released`, and does it again
//!     for each line on stdin until EOF
//! ```

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use carboy::Store;
use carboy::sync::{FileLock, StripeLocks, Synchronizer};
use carboy_tests::{decode_counter, encode_counter, parse_versioned, plan, show, versioned_value};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("carboy-test-child {}: {e}", args.join(" "));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let num = |i: usize| -> Result<u64, String> {
        args.get(i)
            .ok_or_else(|| format!("argument {i} missing"))?
            .parse()
            .map_err(|e| format!("argument {i}: {e}"))
    };
    let path = Path::new(args.get(1).ok_or("no path given")?);
    match args.first().map(String::as_str) {
        Some("work") => {
            let child = u32::try_from(num(2)?).map_err(|e| e.to_string())?;
            work(path, child, num(3)?, num(4)?)
        }
        Some("compact") => compact(path, num(2)?),
        Some("read-big") => read_big(path, num(2)?),
        Some("peak") => peak(
            args.get(1).map(String::as_str),
            args.get(2..).unwrap_or_default(),
        ),
        Some("write") => write(path, u32::try_from(num(2)?).map_err(|e| e.to_string())?),
        Some("read") => read(path, u32::try_from(num(2)?).map_err(|e| e.to_string())?),
        Some("commit-forever") => {
            commit_forever(path, num(2)?, args.get(3).is_some_and(|a| a == "sync"))
        }
        Some("fill") => fill(path),
        Some("sync-commits") => {
            let child = u32::try_from(num(2)?).map_err(|e| e.to_string())?;
            sync_commits(path, child, num(3)?, num(4)?)
        }
        Some("sync-held") => sync_held(path, args.get(2).ok_or("no key given")?),
        Some("sync-put") => sync_put(path, args.get(2).ok_or("no key given")?),
        Some("lock-count") => {
            let lock = ChildLock::parse(args.get(4..).unwrap_or_default())?;
            lock_count(path, num(2)?, num(3)?, &lock)
        }
        Some("lock-hold") => lock_hold(&ChildLock::parse(&args[1..])?),
        Some("lock-try") => lock_try(&ChildLock::parse(&args[1..])?),
        Some("lock-lease") => lock_lease(&ChildLock::parse(&args[1..])?),
        Some("serve") => serve(path),
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// The work plan: own keys, shared counters, and reads of the others' keys.
fn work(path: &Path, child: u32, children: u64, ops: u64) -> Result<String, String> {
    wait_for_start()?;
    let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
    // Newest version this child has seen of each other child's key, and of
    // each counter: neither may go backwards.
    let mut seen_keys: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut seen_counters = vec![0u64; plan::COUNTERS as usize];
    let mut foreign_reads = 0u64;
    for i in 0..ops {
        let slot = i % plan::KEYS_PER_CHILD;
        let key = plan::child_key(child, slot);
        let value = versioned_value(child, i);
        store
            .put(&key, &value)
            .map_err(|e| format!("op {i}: put: {e}"))?;
        let back = store
            .get_owned(&key)
            .map_err(|e| format!("op {i}: get own key: {e}"))?;
        if back.as_deref() != Some(&value[..]) {
            return Err(format!(
                "op {i}: own key {} reads {:?} right after the put",
                show(&key),
                back.as_deref().map(show)
            ));
        }

        let c = i % plan::COUNTERS;
        let ckey = plan::counter_key(c);
        let mut txn = store
            .transaction()
            .map_err(|e| format!("op {i}: transaction: {e}"))?;
        let n = decode_counter(
            txn.get(&ckey)
                .map_err(|e| format!("op {i}: txn get: {e}"))?,
        )
        .map_err(|e| format!("op {i}: {e}"))?;
        if n < seen_counters[c as usize] {
            return Err(format!(
                "op {i}: counter {c} went back from {} to {n} inside a transaction",
                seen_counters[c as usize]
            ));
        }
        txn.put(&ckey, &encode_counter(n + 1))
            .map_err(|e| format!("op {i}: txn put: {e}"))?;
        // In the same transaction: a batch of two keys set alike, and a
        // short-lived key put here and deleted by the next op.
        for bkey in plan::batch_keys(child) {
            txn.put(&bkey, &value)
                .map_err(|e| format!("op {i}: txn put batch: {e}"))?;
        }
        if i > 0 {
            let gone = txn
                .delete(&plan::temp_key(child, i - 1))
                .map_err(|e| format!("op {i}: txn delete: {e}"))?;
            if !gone {
                return Err(format!("op {i}: the previous op's temp key was not there"));
            }
        }
        txn.put(&plan::temp_key(child, i), &value)
            .map_err(|e| format!("op {i}: txn put temp: {e}"))?;
        txn.commit().map_err(|e| format!("op {i}: commit: {e}"))?;

        // Now and then a snapshot: every child's batch is whole.
        if i % 25 == 0 {
            let snap = store
                .snapshot()
                .map_err(|e| format!("op {i}: snapshot: {e}"))?;
            for other in 0..u32::try_from(children).map_err(|e| e.to_string())? {
                let [a, b] = plan::batch_keys(other);
                let a = snap
                    .get(&a)
                    .map_err(|e| format!("op {i}: snapshot get: {e}"))?;
                let b = snap
                    .get(&b)
                    .map_err(|e| format!("op {i}: snapshot get: {e}"))?;
                if a != b {
                    return Err(format!(
                        "op {i}: child {other}'s batch is half applied in a snapshot: {:?} vs {:?}",
                        a.map(show),
                        b.map(show)
                    ));
                }
            }
        }
        seen_counters[c as usize] = n + 1;

        // Lock-free reads: a counter, and one key of another child.
        let read_c = (i / plan::COUNTERS) % plan::COUNTERS;
        let got = store
            .get(&plan::counter_key(read_c))
            .map_err(|e| format!("op {i}: get counter: {e}"))?;
        let got = decode_counter(got.as_deref()).map_err(|e| format!("op {i}: {e}"))?;
        if got < seen_counters[read_c as usize] {
            return Err(format!(
                "op {i}: counter {read_c} reads {got}, this child already saw {}",
                seen_counters[read_c as usize]
            ));
        }
        seen_counters[read_c as usize] = got;

        if children > 1 {
            let other = (u64::from(child) + 1 + i % (children - 1)) % children;
            let other = u32::try_from(other).map_err(|e| e.to_string())?;
            let okey = plan::child_key(other, (i * 7) % plan::KEYS_PER_CHILD);
            if let Some(v) = store
                .get(&okey)
                .map_err(|e| format!("op {i}: get {}: {e}", show(&okey)))?
            {
                let (id, version) =
                    parse_versioned(&v).map_err(|e| format!("op {i}: {}: {e}", show(&okey)))?;
                if id != other || version % plan::KEYS_PER_CHILD != (i * 7) % plan::KEYS_PER_CHILD {
                    return Err(format!(
                        "op {i}: {} holds the value of child {id} op {version}",
                        show(&okey)
                    ));
                }
                let newest = seen_keys.entry(okey.clone()).or_insert(0);
                if version < *newest {
                    return Err(format!(
                        "op {i}: {} went back from op {} to op {version}",
                        show(&okey),
                        *newest
                    ));
                }
                *newest = version;
                foreign_reads += 1;
            }
        }
    }
    Ok(format!(
        "child {child}: {ops} ops, {foreign_reads} reads of other children's keys"
    ))
}

/// Compacts the file again and again while the workers run.
fn compact(path: &Path, rounds: u64) -> Result<String, String> {
    wait_for_start()?;
    let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
    let mut kept = 0;
    for r in 0..rounds {
        let report = store
            .compact()
            .map_err(|e| format!("round {r}: compact: {e}"))?;
        kept = report.keys;
        let check = store
            .verify()
            .map_err(|e| format!("round {r}: verify: {e}"))?;
        if !check.is_clean() {
            return Err(format!(
                "round {r}: verify after compaction: {:?}",
                check.problems
            ));
        }
    }
    Ok(format!("compacted {rounds} times, last kept {kept} keys"))
}

/// Runs one pass over a whole file and reports the peak memory around it
/// (see the usage above).
fn peak(op: Option<&str>, paths: &[String]) -> Result<String, String> {
    let vm_hwm = || -> Result<u64, String> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix(" kB")?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| "no VmHWM in /proc/self/status".to_string())
    };
    let path = Path::new(paths.first().ok_or("no path given")?);
    let before = vm_hwm()?;
    match op {
        Some("load") => {
            carboy_tests::big_file::create(path);
        }
        Some("compact") => {
            let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
            store.compact().map_err(|e| format!("compact: {e}"))?;
        }
        Some("verify") => {
            let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
            let report = store.verify().map_err(|e| format!("verify: {e}"))?;
            if !report.is_clean() {
                return Err(format!("verify: {:?}", report.problems));
            }
        }
        Some("salvage") => {
            let dst = paths.get(1).ok_or("no salvage target given")?;
            carboy::salvage(path, dst).map_err(|e| format!("salvage: {e}"))?;
        }
        other => return Err(format!("unknown pass {other:?}")),
    }
    Ok(format!("peak {} before {before}", vm_hwm()?))
}

/// Reads a `big_file` namespace for `millis` ms (see the usage above).
fn read_big(path: &Path, millis: u64) -> Result<String, String> {
    use carboy_tests::big_file;
    wait_for_start()?;
    let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(millis);
    let mut reader = big_file::Reader::new(&store);
    let mut state = u64::from(std::process::id());
    while std::time::Instant::now() < deadline {
        let i = (carboy_tests::splitmix(&mut state) % u64::from(big_file::KEYS)) as u32;
        reader.read(i)?;
    }
    let reads = reader.reads;
    Ok(format!("{reads} reads"))
}

/// Writes the handoff entries and exits without syncing or closing
/// carefully: the next process must see them from the page cache.
fn write(path: &Path, n: u32) -> Result<String, String> {
    let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
    for (key, value) in plan::handoff_entries(n) {
        store
            .put(&key, &value)
            .map_err(|e| format!("put {}: {e}", show(&key)))?;
    }
    Ok(format!("wrote {n} entries"))
}

/// Checks that the file holds exactly the handoff entries.
fn read(path: &Path, n: u32) -> Result<String, String> {
    let store = carboy::Options::new()
        .create(false)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    for (key, value) in plan::handoff_entries(n) {
        let got = store
            .get_owned(&key)
            .map_err(|e| format!("get {}: {e}", show(&key)))?;
        if got.as_deref() != Some(&value[..]) {
            return Err(format!(
                "{} reads {:?}, the writer process wrote {}",
                show(&key),
                got.as_deref().map(show),
                show(&value)
            ));
        }
    }
    let len = store.len().map_err(|e| format!("len: {e}"))?;
    if len != u64::from(n) {
        return Err(format!("len() is {len}, the writer wrote {n} keys"));
    }
    let report = store.verify().map_err(|e| format!("verify: {e}"))?;
    if !report.is_clean() {
        return Err(format!("verify found problems: {:?}", report.problems));
    }
    Ok(format!("read {n} entries"))
}

/// Blocks until the parent writes the start line: it releases every child
/// at once.
fn wait_for_start() -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the start line: {e}"))?;
    Ok(())
}

/// Commits kill-loop transactions until killed, acknowledging each one on
/// stdout only after its commit returned.
fn commit_forever(path: &Path, first: u64, sync: bool) -> Result<String, String> {
    use std::io::Write;
    let durability = if sync {
        carboy::Durability::Sync
    } else {
        carboy::Durability::None
    };
    let store = carboy::Options::new()
        .durability(durability)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let mut out = std::io::stdout().lock();
    for version in first.. {
        let mut txn = store.transaction().map_err(|e| format!("begin: {e}"))?;
        for (key, value) in carboy_tests::kill_loop::writes(version) {
            txn.put(&key, &value)
                .map_err(|e| format!("put {}: {e}", show(&key)))?;
        }
        if let Some(key) = carboy_tests::kill_loop::deletion(version) {
            txn.delete(&key)
                .map_err(|e| format!("delete {}: {e}", show(&key)))?;
        }
        txn.commit().map_err(|e| format!("commit {version}: {e}"))?;
        writeln!(out, "{version}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("ack: {e}"))?;
        if version % carboy_tests::kill_loop::COMPACT_EVERY == 0 {
            store.compact().map_err(|e| format!("compact: {e}"))?;
        }
    }
    Ok(String::new())
}

/// Opens `path` for Durability::Sync commits (the file must exist).
fn open_sync(path: &Path) -> Result<Store, String> {
    carboy::Options::new()
        .durability(carboy::Durability::Sync)
        .create(false)
        .open(path)
        .map_err(|e| format!("open: {e}"))
}

/// The group-commit plan's commits, each acknowledged once it returned.
fn sync_commits(path: &Path, child: u32, first: u64, count: u64) -> Result<String, String> {
    use carboy_tests::group_plan;
    use std::io::Write;
    wait_for_start()?;
    let store = open_sync(path)?;
    let mut out = std::io::stdout().lock();
    let last = if count == 0 { u64::MAX } else { first + count };
    for version in first..last {
        let mut txn = store.transaction().map_err(|e| format!("begin: {e}"))?;
        let n = decode_counter(
            txn.get(group_plan::COUNTER)
                .map_err(|e| format!("get counter: {e}"))?,
        )?;
        txn.put(group_plan::COUNTER, &encode_counter(n + 1))
            .map_err(|e| format!("put counter: {e}"))?;
        txn.put(&group_plan::key(child), &group_plan::value(child, version))
            .map_err(|e| format!("put: {e}"))?;
        txn.commit().map_err(|e| format!("commit {version}: {e}"))?;
        writeln!(out, "{}", group_plan::ack(version))
            .and_then(|()| out.flush())
            .map_err(|e| format!("ack: {e}"))?;
    }
    Ok(group_plan::stats(store.sync_stats()))
}

/// One Sync commit whose first fsync waits, announced, until the parent
/// says go: meanwhile the parent lets other processes commit.
fn sync_held(path: &Path, key: &str) -> Result<String, String> {
    use std::io::Write;
    let store = open_sync(path)?;
    let held = std::sync::atomic::AtomicBool::new(false);
    carboy::faults::set_hook(Some(Box::new(move |op| {
        if op == carboy::faults::Op::Fsync && !held.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "syncing").and_then(|()| out.flush());
            drop(out);
            let _ = wait_for_start();
        }
        None
    })));
    store
        .put(key.as_bytes(), b"held")
        .map_err(|e| format!("put {key}: {e}"))?;
    carboy::faults::set_hook(None);
    Ok(carboy_tests::group_plan::stats(store.sync_stats()))
}

/// One Sync commit.
fn sync_put(path: &Path, key: &str) -> Result<String, String> {
    let store = open_sync(path)?;
    store
        .put(key.as_bytes(), b"put")
        .map_err(|e| format!("put {key}: {e}"))?;
    Ok(carboy_tests::group_plan::stats(store.sync_stats()))
}

/// Commits ever larger transactions until the file cannot grow (the parent
/// runs this under a file-size limit), acknowledging each commit.
fn fill(path: &Path) -> Result<String, String> {
    use std::io::Write;
    let store = Store::open(path).map_err(|e| format!("open: {e}"))?;
    let mut out = std::io::stdout().lock();
    for version in 1u64.. {
        let result = (|| {
            let mut txn = store.transaction()?;
            for i in 0..version * 4 {
                let key = format!("fill/{}", i % 5000).into_bytes();
                txn.put(&key, &carboy_tests::versioned_value(i as u32, version))?;
            }
            txn.commit()
        })();
        match result {
            Ok(()) => writeln!(out, "{version}")
                .and_then(|()| out.flush())
                .map_err(|e| format!("ack: {e}"))?,
            Err(e @ carboy::Error::Io { .. }) => return Ok(format!("error: {e}")),
            Err(e) => {
                return Err(format!(
                    "commit {version} failed with an untyped error: {e:?}"
                ));
            }
        }
    }
    Ok(String::new())
}

/// The lock a `lock-*` subcommand works on.
enum ChildLock {
    File { lock: FileLock, write: bool },
    Stripe { locks: StripeLocks, hash: u64 },
    Owned { locks: StripeLocks, hash: u64 },
}

/// Something held by a [`ChildLock`], released on drop.
enum Held<'a> {
    File {
        _guard: carboy::sync::FileLockGuard<'a>,
    },
    Stripe {
        _guard: carboy::sync::StripeGuard<'a>,
    },
    Owned {
        _guard: carboy::sync::OwnedStripe,
    },
}

impl ChildLock {
    /// Parses `file <lock dir> <name> <read|write>` or
    /// `stripe <lock file> <stripes> <hash>`.
    fn parse(args: &[String]) -> Result<ChildLock, String> {
        let arg = |i: usize| {
            args.get(i)
                .ok_or_else(|| format!("lock argument {i} missing"))
        };
        match arg(0)?.as_str() {
            "file" => {
                let lock = FileLock::open(arg(1)?, arg(2)?).map_err(|e| format!("open: {e}"))?;
                let write = match arg(3)?.as_str() {
                    "read" => false,
                    "write" => true,
                    other => return Err(format!("mode {other:?} is neither read nor write")),
                };
                Ok(ChildLock::File { lock, write })
            }
            kind @ ("stripe" | "owned") => {
                let stripes = arg(2)?.parse().map_err(|e| format!("stripes: {e}"))?;
                let hash = arg(3)?.parse().map_err(|e| format!("hash: {e}"))?;
                let locks =
                    StripeLocks::open(arg(1)?, stripes).map_err(|e| format!("open: {e}"))?;
                Ok(if kind == "owned" {
                    ChildLock::Owned { locks, hash }
                } else {
                    ChildLock::Stripe { locks, hash }
                })
            }
            other => Err(format!("lock kind {other:?} is neither file nor stripe")),
        }
    }

    /// Takes the lock, waiting if `wait`; `None` if busy and not waiting.
    fn take(&self, wait: bool) -> Result<Option<Held<'_>>, String> {
        let held = match (self, wait) {
            (ChildLock::File { lock, write: true }, true) => lock.write().map(Some),
            (ChildLock::File { lock, write: false }, true) => lock.read().map(Some),
            (ChildLock::File { lock, write: true }, false) => lock.try_write(),
            (ChildLock::File { lock, write: false }, false) => lock.try_read(),
            (ChildLock::Stripe { locks, hash }, true) => {
                return locks
                    .lock(*hash)
                    .map(|guard| Some(Held::Stripe { _guard: guard }))
                    .map_err(|e| format!("lock: {e}"));
            }
            (ChildLock::Stripe { locks, hash }, false) => {
                return locks
                    .try_lock(*hash)
                    .map(|g| g.map(|guard| Held::Stripe { _guard: guard }))
                    .map_err(|e| format!("try_lock: {e}"));
            }
            (ChildLock::Owned { locks, hash }, wait) => loop {
                match locks.try_lock_owned(*hash) {
                    Ok(Some(guard)) => return Ok(Some(Held::Owned { _guard: guard })),
                    // Not a spin: on 2 cores, spinning children starve
                    // the holder (and the test) of the CPU.
                    Ok(None) if wait => std::thread::sleep(std::time::Duration::from_micros(50)),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(format!("try_lock_owned: {e}")),
                }
            },
        };
        held.map(|g| g.map(|guard| Held::File { _guard: guard }))
            .map_err(|e| format!("lock: {e}"))
    }
}

/// Increments the number in `counter` `rounds` times from each of
/// `threads` threads, each time under the lock. A marker file made with
/// `create_new` on entry and removed on exit catches two holders at once.
fn lock_count(
    counter: &Path,
    rounds: u64,
    threads: u64,
    lock: &ChildLock,
) -> Result<String, String> {
    wait_for_start()?;
    let marker = counter.with_extension("inside");
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let marker = &marker;
                s.spawn(move || -> Result<(), String> {
                    for round in 0..rounds {
                        let held = lock.take(true)?;
                        std::fs::File::create_new(marker).map_err(|e| {
                            format!("thread {t} round {round}: another holder is inside ({e})")
                        })?;
                        let text = std::fs::read_to_string(counter)
                            .map_err(|e| format!("read {}: {e}", counter.display()))?;
                        let n: u64 = if text.is_empty() {
                            0
                        } else {
                            text.trim()
                                .parse()
                                .map_err(|e| format!("counter {text:?}: {e}"))?
                        };
                        std::fs::write(counter, (n + 1).to_string())
                            .map_err(|e| format!("write {}: {e}", counter.display()))?;
                        std::fs::remove_file(marker)
                            .map_err(|e| format!("remove {}: {e}", marker.display()))?;
                        drop(held);
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| "a counting thread panicked".to_string())??;
        }
        Ok::<(), String>(())
    })?;
    Ok(format!("counted {}", rounds * threads))
}

/// Holds the lock until the parent says so (a line, or closing stdin).
fn lock_hold(lock: &ChildLock) -> Result<String, String> {
    use std::io::Write;
    let held = lock.take(true)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "held")
        .and_then(|()| out.flush())
        .map_err(|e| format!("ack: {e}"))?;
    wait_for_start()?;
    drop(held);
    Ok("released".to_string())
}

/// Takes and releases the lock, once and then again for each line of
/// stdin.
fn lock_lease(lock: &ChildLock) -> Result<String, String> {
    use std::io::Write;
    let mut lines = std::io::stdin().lock().lines();
    loop {
        drop(lock.take(true)?);
        let mut out = std::io::stdout().lock();
        writeln!(out, "released")
            .and_then(|()| out.flush())
            .map_err(|e| format!("ack: {e}"))?;
        drop(out);
        match lines.next() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("stdin: {e}")),
            None => return Ok("done".to_string()),
        }
    }
}

/// Tries the lock once.
fn lock_try(lock: &ChildLock) -> Result<String, String> {
    Ok(match lock.take(false)? {
        Some(_) => "acquired",
        None => "busy",
    }
    .to_string())
}

/// Runs the commands of `carboy_tests::served` against the namespace at
/// `path`, one line of stdin each, answering each with one line of stdout.
fn serve(path: &Path) -> Result<String, String> {
    use carboy_tests::served::reply;
    use std::io::Write;
    let open = || Store::open(path);
    let mut store = None;
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("reply: {e}"))
    };
    say(match open() {
        Ok(s) => {
            store = Some(s);
            "ready".to_string()
        }
        Err(e) => reply::<()>(Err(e)),
    })?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading a command: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match (words.as_slice(), &store) {
            (["quit"], _) => break,
            (["cd", dir], _) => match std::env::set_current_dir(dir) {
                Ok(()) => "ok ()".to_string(),
                Err(e) => format!("err Io cd {dir}: {e}"),
            },
            (["open"], _) => {
                store = None;
                match open() {
                    Ok(s) => {
                        store = Some(s);
                        "ready".to_string()
                    }
                    Err(e) => reply::<()>(Err(e)),
                }
            }
            (_, None) => "err NotOpen no store is open".to_string(),
            (["put", key, value], Some(s)) => reply(s.put(key.as_bytes(), value.as_bytes())),
            (["get", key], Some(s)) => match s.get_owned(key.as_bytes()) {
                Ok(Some(v)) => format!("ok {}", String::from_utf8_lossy(&v)),
                Ok(None) => "none".to_string(),
                Err(e) => reply::<()>(Err(e)),
            },
            (["snapshot"], Some(s)) => reply(s.snapshot().and_then(|snap| snap.len())),
            (["compact"], Some(s)) => reply(s.compact().map(|r| r.keys)),
            (["recover"], Some(s)) => reply(s.recover().map(|cause| cause.is_some())),
            (["verify"], Some(s)) => reply(s.verify().map(|r| r.problems.len())),
            (["put-until-error", key, ms], Some(s)) => {
                let ms: u64 = ms.parse().map_err(|e| format!("{line}: {e}"))?;
                put_until_error(s, key.as_bytes(), std::time::Duration::from_millis(ms))
            }
            _ => return Err(format!("unknown command {line:?}")),
        };
        say(answer)?;
    }
    Ok(String::new())
}

/// Puts `key` every 20 ms until a put fails or `limit` passes: for a
/// process whose writer lock is a lease, which only its lease thread's
/// look, about once a second, can end. Replies with the failure (and how
/// many puts went through before it), or `ok <puts>` at the limit.
fn put_until_error(store: &Store, key: &[u8], limit: std::time::Duration) -> String {
    let start = std::time::Instant::now();
    let mut puts = 0u64;
    loop {
        match store.put(key, &puts.to_le_bytes()) {
            Ok(()) => puts += 1,
            Err(e) => {
                return format!(
                    "{} (after {puts} puts)",
                    carboy_tests::served::reply::<()>(Err(e))
                );
            }
        }
        if start.elapsed() > limit {
            return format!("ok {puts}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
