//! The cache layer across real processes (`carboy-memcached-child`) on a
//! real memcached: 3 processes × 4 threads calling `get_or_create` on one
//! expired key run the creator exactly once (it holds an assertion flock
//! while it runs, so a second one would fail) while every other caller is
//! served the stale value; with no value, everyone waits for that one
//! creator; a creator killed with SIGKILL while it holds the creation lock
//! delays the others only until the lock's lease runs out (and the lease
//! is renewed while a live creator runs past it); values and
//! invalidations made by one process are seen by another.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use carboy::cache::{Cache, CacheManager, Invalidation};
use carboy_tests::child_process::ChildProcess;
use carboy_tests::memcached_server::MemcachedServer;

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-memcached-child");
const PROCESSES: usize = 3;
const THREADS: usize = 4;

fn manager(url: &str) -> CacheManager {
    carboy_memcached::register().unwrap();
    CacheManager::builder()
        .backend("memcached")
        .option("url", url)
        .expire(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `carboy-memcached-child <url> <lease> <args>` as a command.
fn child(url: &str, lease: u32, args: &[&str]) -> Command {
    let mut command = Command::new(CHILD);
    command.arg(url).arg(lease.to_string()).args(args);
    command
}

/// Runs the child to completion; its stdout, trimmed.
fn run(url: &str, args: &[&str]) -> String {
    let out = child(url, 30, args).output().unwrap();
    carboy_tests::stdout_of_success(out, &format!("child {args:?}"))
        .trim()
        .to_string()
}

fn spawn_dogpile(
    url: &str,
    dir: &Path,
    serve_stale: bool,
) -> (Vec<ChildProcess>, mpsc::Receiver<(usize, String)>) {
    let (tx, rx) = mpsc::channel();
    let children = (0..PROCESSES)
        .map(|i| {
            let command = child(
                url,
                30,
                &[
                    "dogpile",
                    &THREADS.to_string(),
                    if serve_stale { "1" } else { "0" },
                    dir.to_str().unwrap(),
                ],
            );
            ChildProcess::start_sharing(command, &format!("dogpile child {i}"), i, &tx)
        })
        .collect();
    (children, rx)
}

/// Collects the children's lines, letting the creator finish (a line on
/// its stdin) once `ready(lines so far)` holds; returns every line.
fn drive(
    mut children: Vec<ChildProcess>,
    rx: mpsc::Receiver<(usize, String)>,
    ready: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let total = PROCESSES * THREADS;
    let mut lines = Vec::new();
    let mut creator = None;
    let mut released = false;
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("got "))
        .count()
        < total
    {
        let (i, line) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("children stalled; lines so far: {lines:?}"));
        assert_ne!(line, "DOUBLE", "two creators ran at once");
        if line == "creating" {
            assert!(creator.is_none(), "a second creator started: {lines:?}");
            creator = Some(i);
        }
        lines.push(line);
        if let Some(c) = creator
            && !released
            && ready(&lines)
        {
            children[c].say("go");
            released = true;
        }
    }
    for c in children {
        c.finish();
    }
    lines
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

fn creators(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("creators"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn expired_key_one_creator_across_processes_others_get_stale() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(&url).get_cache("dogpile").unwrap();
    // Stored already expired: a stale value for everyone to serve.
    cache.set_for("k", "old", Some(Duration::ZERO)).unwrap();
    let (children, rx) = spawn_dogpile(&url, dir.path(), true);
    let total = PROCESSES * THREADS;
    // The creator may finish only once every other caller has returned
    // the stale value: nobody waited for it.
    let lines = drive(children, rx, |l| count(l, "got old") == total - 1);
    assert_eq!(count(&lines, "creating"), 1, "{lines:?}");
    assert_eq!(count(&lines, "got old"), total - 1, "{lines:?}");
    assert_eq!(count(&lines, "got new"), 1, "{lines:?}");
    assert_eq!(creators(dir.path()), 1);
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

#[test]
fn missing_key_one_creator_across_processes_everyone_waits() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let dir = tempfile::tempdir().unwrap();
    let (children, rx) = spawn_dogpile(&url, dir.path(), false);
    let total = PROCESSES * THREADS;
    let lines = drive(children, rx, |l| count(l, "calling") == total);
    assert_eq!(count(&lines, "creating"), 1, "{lines:?}");
    assert_eq!(count(&lines, "got new"), total, "{lines:?}");
    assert_eq!(creators(dir.path()), 1);
    let cache = manager(&url).get_cache("dogpile").unwrap();
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

/// Whether the creation lock of `key` in namespace `dogpile` is free
/// (taken and released at once when it is).
fn lock_is_free(cache: &Cache, key: &str) -> bool {
    cache
        .backend()
        .lock_creation(key.as_bytes(), 0, false)
        .unwrap()
        .is_some()
}

#[test]
fn a_creator_killed_holding_the_lock_delays_others_by_one_lease() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    const LEASE: u32 = 3;
    let cache = manager(&url).get_cache("dogpile").unwrap();
    let mut holder = ChildProcess::start(child(&url, LEASE, &["hold", "k"]), "holder");
    holder.expect_line("creating");
    assert!(!lock_is_free(&cache, "k"), "the creator holds the lock");
    // Past one lease, a live holder still holds it: renewed while it runs
    // (real time on the server: it cannot be mocked).
    std::thread::sleep(Duration::from_secs(u64::from(LEASE) + 1));
    assert!(
        !lock_is_free(&cache, "k"),
        "the lease was not renewed while its creator ran"
    );
    let (status, _) = holder.kill();
    assert!(!status.success());
    // Dead, its lock is not released: it runs out with the lease.
    let killed = Instant::now();
    assert!(
        !lock_is_free(&cache, "k"),
        "a dead holder's lock was released"
    );
    let mut next = ChildProcess::start(child(&url, LEASE, &["create", "k"]), "next creator");
    next.expect_line("creating");
    let got = next.reply("the value");
    let waited = killed.elapsed();
    assert!(got.starts_with("got new "), "{got}");
    next.finish();
    assert!(lock_is_free(&cache, "k"), "the next creator released it");
    assert_eq!(
        cache.get::<String>("k").unwrap().as_deref(),
        Some(&got["got ".len()..])
    );
    eprintln!("the next creator ran {waited:?} after the kill (lease {LEASE} s)");
}

fn get(cache: &Cache, key: &str) -> String {
    match cache.get_entry::<String>(key).unwrap() {
        Some(e) if e.stale => format!("stale {}", e.value),
        Some(e) => e.value,
        None => "none".into(),
    }
}

#[test]
fn values_and_invalidations_cross_processes() {
    let Some(server) = MemcachedServer::start() else {
        return;
    };
    let url = server.address();
    let users = manager(&url).get_cache("users").unwrap();

    users.set("alice", "admin").unwrap();
    assert_eq!(run(&url, &["get", "users", "alice"]), "admin");
    run(&url, &["set", "users", "bob", "editor"]);
    assert_eq!(get(&users, "bob"), "editor");

    run(&url, &["invalidate", "users", "soft"]);
    assert_eq!(get(&users, "alice"), "stale admin");
    run(&url, &["invalidate", "users", "hard"]);
    assert_eq!(get(&users, "alice"), "none");
    assert_eq!(get(&users, "bob"), "none");
    users.set("alice", "admin again").unwrap();
    assert_eq!(run(&url, &["get", "users", "alice"]), "admin again");
    // Here to there as well.
    users.invalidate("alice", Invalidation::Soft).unwrap();
    assert_eq!(run(&url, &["get", "users", "alice"]), "stale admin again");
    users.invalidate_all(Invalidation::Hard).unwrap();
    assert_eq!(run(&url, &["get", "users", "alice"]), "none");
}
