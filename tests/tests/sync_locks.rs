//! carboy::sync's cross-process locks between real processes: a FileLock or
//! a StripeLocks stripe excludes other processes (and their threads) with
//! no lost update, a try from another process sees the lock held, different
//! stripes are held at once, and a lock held by a SIGKILLed process is free
//! right after, with no file to clean. An owned stripe
//! (`StripeLocks::try_lock_owned`, the async front's) and another
//! process's stripe exclude each other both ways; an owned stripe a
//! process keeps idle after use (its lease) goes to another process that
//! tries, waits or locks it, is free at once when its holder is killed,
//! and is unlocked by itself once nobody here uses it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carboy::sync::{FileLock, OwnedTry, StripeLocks, Synchronizer};
use carboy_tests::child_process::ChildProcess;

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-test-child");

/// Longest the test waits for a child to block on a lock.
const DEADLINE: Duration = Duration::from_secs(60);

/// Starts the child binary with `args`, its stderr kept for failure
/// messages.
fn spawn(args: &[&str]) -> ChildProcess {
    let mut command = Command::new(CHILD);
    command.args(args).stderr(Stdio::piped());
    ChildProcess::start(command, &format!("carboy-test-child {}", args.join(" ")))
}

/// Waits for the child to exit successfully; returns its last line of
/// output.
fn last_line(helper: ChildProcess) -> String {
    helper.finish().pop().unwrap_or_default()
}

/// Kills the child with SIGKILL and reaps it.
fn kill(helper: ChildProcess) {
    let what = helper.what().to_string();
    let (status, _) = helper.kill();
    assert!(!status.success(), "{what} exited normally");
}

/// Arguments naming a FileLock for the child.
fn file_lock_args<'a>(dir: &'a str, name: &'a str, mode: &'a str) -> Vec<&'a str> {
    vec!["file", dir, name, mode]
}

/// Arguments naming a StripeLocks stripe for the child.
fn stripe_args<'a>(path: &'a str, stripes: &'a str, hash: &'a str) -> Vec<&'a str> {
    vec!["stripe", path, stripes, hash]
}

/// Arguments naming an owned stripe (`try_lock_owned`) for the child.
fn owned_args<'a>(path: &'a str, stripes: &'a str, hash: &'a str) -> Vec<&'a str> {
    vec!["owned", path, stripes, hash]
}

fn child(sub: &str, lock: &[&str]) -> ChildProcess {
    let mut args = vec![sub];
    args.extend_from_slice(lock);
    spawn(&args)
}

/// Runs `children` processes of `threads` threads, each thread doing
/// `rounds` increments of one counter file under `lock`, and checks the
/// final count is exact.
fn count_under(dir: &Path, lock: &[&str], children: u64, threads: u64, rounds: u64) {
    let locks: Vec<&[&str]> = (0..children).map(|_| lock).collect();
    count_under_each(dir, &locks, threads, rounds);
}

/// As [`count_under`], with one child per entry of `locks`, each under its
/// own way of taking the lock.
fn count_under_each(dir: &Path, locks: &[&[&str]], threads: u64, rounds: u64) {
    let children = locks.len() as u64;
    let counter = dir.join("counter");
    std::fs::write(&counter, "").unwrap();
    let counter_arg = counter.to_str().unwrap();
    let (rounds_arg, threads_arg) = (rounds.to_string(), threads.to_string());
    let mut helpers: Vec<ChildProcess> = locks
        .iter()
        .map(|lock| {
            let mut args = vec!["lock-count", counter_arg, &rounds_arg, &threads_arg];
            args.extend_from_slice(lock);
            spawn(&args)
        })
        .collect();
    for h in &mut helpers {
        h.say("go");
    }
    for h in helpers {
        let out = last_line(h);
        assert_eq!(out, format!("counted {}", rounds * threads));
    }
    let total: u64 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        total,
        children * threads * rounds,
        "increments were lost: the lock let two holders in"
    );
}

#[test]
fn file_lock_excludes_processes_and_their_threads() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let lock_dir = lock_dir.to_str().unwrap();
    count_under(
        dir.path(),
        &file_lock_args(lock_dir, "shared counter", "write"),
        4,
        2,
        100,
    );
}

#[test]
fn stripe_locks_exclude_processes_and_their_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    // Hash 2051 is stripe 3 of 1024.
    count_under(
        dir.path(),
        &stripe_args(path.to_str().unwrap(), "1024", "2051"),
        4,
        2,
        100,
    );
}

#[test]
fn a_held_file_lock_is_busy_for_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().to_str().unwrap();
    let mine = FileLock::open(dir.path(), "report").unwrap();

    // Another process writes: this process and a third one are kept out.
    let mut writer = child("lock-hold", &file_lock_args(lock_dir, "report", "write"));
    writer.expect_line("held");
    assert!(mine.try_write().unwrap().is_none(), "write beside a writer");
    assert!(mine.try_read().unwrap().is_none(), "read beside a writer");
    for mode in ["write", "read"] {
        let out = last_line(child("lock-try", &file_lock_args(lock_dir, "report", mode)));
        assert_eq!(out, "busy", "a third process could {mode}");
    }
    // Another name is not affected.
    let out = last_line(child(
        "lock-try",
        &file_lock_args(lock_dir, "other", "write"),
    ));
    assert_eq!(out, "acquired");
    writer.say("release");
    assert_eq!(last_line(writer), "released");
    assert!(
        mine.try_write().unwrap().is_some(),
        "still held after release"
    );

    // Another process reads: readers share, writers wait.
    let mut reader = child("lock-hold", &file_lock_args(lock_dir, "report", "read"));
    reader.expect_line("held");
    assert!(
        mine.try_read().unwrap().is_some(),
        "readers of two processes"
    );
    assert!(mine.try_write().unwrap().is_none(), "write beside a reader");
    let out = last_line(child(
        "lock-try",
        &file_lock_args(lock_dir, "report", "read"),
    ));
    assert_eq!(out, "acquired");
    reader.say("release");
    reader.finish();
}

#[test]
fn stripes_exclude_across_processes_only_when_they_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    let path_arg = path.to_str().unwrap();
    let mine = StripeLocks::open(&path, 64).unwrap();

    let mut first = child("lock-hold", &stripe_args(path_arg, "64", "5"));
    first.expect_line("held");
    // Same stripe, through another hash: busy for this process and another.
    assert!(mine.try_lock(5).unwrap().is_none());
    assert!(mine.try_lock(5 + 64).unwrap().is_none());
    let out = last_line(child("lock-try", &stripe_args(path_arg, "64", "69")));
    assert_eq!(out, "busy");
    // Another stripe: a second process holds it while the first holds 5.
    let mut second = child("lock-hold", &stripe_args(path_arg, "64", "6"));
    second.expect_line("held");
    assert!(mine.try_lock(6).unwrap().is_none());
    assert!(mine.try_lock(7).unwrap().is_some());
    first.say("release");
    assert_eq!(last_line(first), "released");
    assert!(mine.try_lock(5).unwrap().is_some(), "stripe 5 still held");
    second.say("release");
    second.finish();
    // One lock file, whatever the number of stripes used.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_blocked_process_gets_the_stripe_when_the_holder_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    let path_arg = path.to_str().unwrap();
    let mine = StripeLocks::open(&path, 1024).unwrap();
    let held = mine.lock(9).unwrap();
    let mut waiter = child("lock-hold", &stripe_args(path_arg, "1024", "9"));
    // Once the kernel shows the child waiting for the stripe, release it:
    // the waiter must get it.
    wait_until_blocked_on(&path);
    drop(held);
    waiter.expect_line("held");
    assert!(mine.try_lock(9).unwrap().is_none());
    waiter.say("release");
    waiter.finish();
}

#[test]
fn locks_of_a_killed_process_are_free_at_once_with_nothing_to_clean() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    let stripe_path = lock_dir.join("ns.carboy.create-lock");
    let (lock_dir_arg, stripe_arg) = (lock_dir.to_str().unwrap(), stripe_path.to_str().unwrap());

    let mut stripe_holder = child("lock-hold", &stripe_args(stripe_arg, "1024", "77"));
    stripe_holder.expect_line("held");
    let mut file_holder = child("lock-hold", &file_lock_args(lock_dir_arg, "ns", "write"));
    file_holder.expect_line("held");
    let files_before = list(&lock_dir);

    let stripes = StripeLocks::open(&stripe_path, 1024).unwrap();
    let file_lock = FileLock::open(&lock_dir, "ns").unwrap();
    assert!(stripes.try_lock(77).unwrap().is_none());
    assert!(file_lock.try_write().unwrap().is_none());

    kill(stripe_holder);
    kill(file_holder);
    assert!(
        stripes.try_lock(77).unwrap().is_some(),
        "the killed process's stripe is still locked"
    );
    assert!(
        file_lock.try_write().unwrap().is_some(),
        "the killed process's file lock is still held"
    );
    // The same two lock files, reused: nothing was left to clean up.
    assert_eq!(list(&lock_dir), files_before);
    assert_eq!(files_before.len(), 2, "{files_before:?}");
}

#[test]
fn owned_stripes_and_other_processes_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    let path_arg = path.to_str().unwrap();
    let mine = StripeLocks::open(&path, 64).unwrap();

    // Held here as an owned stripe: busy for another process.
    let owned = mine.try_lock_owned(5).unwrap().expect("free");
    let out = last_line(child("lock-try", &stripe_args(path_arg, "64", "69")));
    assert_eq!(out, "busy", "another process took an owned stripe");
    let out = last_line(child("lock-try", &stripe_args(path_arg, "64", "6")));
    assert_eq!(out, "acquired", "another stripe");
    // A process waiting for it gets it once the guard (moved to another
    // thread) is dropped; then the owned attempt here is busy.
    let mut waiter = child("lock-hold", &stripe_args(path_arg, "64", "5"));
    wait_until_blocked_on(&path);
    std::thread::spawn(move || drop(owned)).join().unwrap();
    waiter.expect_line("held");
    assert!(mine.try_lock_owned(5).unwrap().is_none());
    assert!(mine.try_lock_owned(69).unwrap().is_none());
    assert!(mine.try_lock_owned(6).unwrap().is_some());
    // Killed while holding it: free at once.
    kill(waiter);
    assert!(
        mine.try_lock_owned(5).unwrap().is_some(),
        "the killed process's stripe is still locked"
    );
}

#[test]
fn owned_stripes_kept_idle_exclude_processes_and_their_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    let path_arg = path.to_str().unwrap();
    // Two processes of owned stripes (kept idle between their uses, handed
    // over on request) and one of thread stripes (waiting in the kernel),
    // all on stripe 3 of 1024.
    let owned = owned_args(path_arg, "1024", "2051");
    let thread = stripe_args(path_arg, "1024", "3");
    count_under_each(dir.path(), &[&owned, &owned, &thread], 2, 150);
}

#[test]
fn an_idle_stripe_goes_to_another_process_that_asks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    let path_arg = path.to_str().unwrap();
    let mine = StripeLocks::open(&path, 64).unwrap();
    let mut holder = child("lock-lease", &owned_args(path_arg, "64", "5"));
    holder.expect_line("released");
    // Released, but kept locked and marked idle by the child.
    assert_eq!(locked_bytes(&path), vec![5], "the child kept no lease");
    assert_eq!(idle_word(&path, 5), holder.pid());
    // A try that must not wait says so.
    assert!(matches!(
        mine.try_lock_owned_now(5).unwrap(),
        OwnedTry::Leased
    ));

    // A try from here asks the child, which lets go.
    let got = mine.try_lock(5).unwrap();
    assert!(got.is_some(), "the idle stripe was not handed over");
    drop(got);
    holder.say("again");
    holder.expect_line("released");
    let got = mine.try_lock_owned(69).unwrap(); // stripe 5 too
    assert!(got.is_some(), "the idle stripe was not handed over");
    // Now kept idle here: the child's tries ask this process in turn.
    drop(got);
    assert_eq!(idle_word(&path, 5), std::process::id());
    holder.say("again");
    holder.expect_line("released");
    // A waiting lock from here: the child lets go too.
    drop(mine.lock(5).unwrap());

    // Killed while keeping it idle: free at once, and the next holder
    // clears the mark the child left.
    holder.say("again");
    holder.expect_line("released");
    assert_eq!(idle_word(&path, 5), holder.pid());
    kill(holder);
    let got = mine.try_lock_owned(5).unwrap();
    assert!(got.is_some(), "the killed process's stripe is still locked");
    assert_eq!(idle_word(&path, 5), 0);
}

#[test]
fn an_idle_stripe_nobody_uses_is_unlocked_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy.create-lock");
    let path_arg = path.to_str().unwrap();
    let holder = {
        let mut h = child("lock-lease", &owned_args(path_arg, "64", "7"));
        h.expect_line("released");
        h
    };
    assert_eq!(locked_bytes(&path), vec![7], "the child kept no lease");
    // Nobody asks (as with a process that does not announce itself, such
    // as an older carboy): the child's lease thread unlocks it after two
    // looks, about a second apart.
    let deadline = Instant::now() + DEADLINE;
    while !locked_bytes(&path).is_empty() {
        assert!(Instant::now() < deadline, "the idle stripe is still locked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(last_line(holder), "done");
}

/// The bytes of the file at `path` that a granted lock covers, from
/// `/proc/locks` (one-byte locks: their start). The kernel prints that
/// file a page at a time, and a line can go missing when other processes
/// take or drop locks between two pages: the answer is one that three
/// reads in a row agree on.
fn locked_bytes(path: &Path) -> Vec<u64> {
    let mut last = read_locked_bytes(path);
    let mut agreeing = 1;
    let deadline = Instant::now() + DEADLINE;
    while agreeing < 3 {
        assert!(Instant::now() < deadline, "/proc/locks never read the same");
        let now = read_locked_bytes(path);
        if now == last {
            agreeing += 1;
        } else {
            (last, agreeing) = (now, 1);
        }
    }
    last
}

/// One read of [`locked_bytes`].
fn read_locked_bytes(path: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let suffix = format!(":{}", std::fs::metadata(path).unwrap().ino());
    let locks = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
    let mut bytes: Vec<u64> = locks
        .lines()
        .filter(|line| !line.contains("->"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields
                .iter()
                .position(|f| f.matches(':').count() == 2 && f.ends_with(&suffix))?;
            fields.get(at + 1)?.parse().ok()
        })
        .collect();
    bytes.sort_unstable();
    bytes
}

/// The `idle` word of `stripe` in a stripe lock file (FORMAT: offset
/// 64 + 8 stripe + 4, little-endian): the process keeping it idle, or 0.
fn idle_word(path: &Path, stripe: usize) -> u32 {
    let bytes = std::fs::read(path).unwrap();
    let at = 64 + 8 * stripe + 4;
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Waits until `/proc/locks` shows a blocked waiter (a `->` line) on the
/// file at `path`.
fn wait_until_blocked_on(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let suffix = format!(":{}", std::fs::metadata(path).unwrap().ino());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let locks = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
        let blocked = locks.lines().any(|line| {
            line.contains("->")
                && line
                    .split_whitespace()
                    .any(|field| field.matches(':').count() == 2 && field.ends_with(&suffix))
        });
        if blocked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nobody blocked on {}",
            path.display()
        );
        std::thread::yield_now();
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
