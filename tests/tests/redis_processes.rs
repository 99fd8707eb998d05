//! The cache on the redis backend across real processes
//! (`carboy-redis-child`), on a standalone server and on a cluster: 3
//! processes × 4 threads calling `get_or_create` on one expired key run
//! the creator exactly once (it holds an assertion flock while it runs)
//! and every other caller is served the stale value; without a value,
//! everyone waits for that one creator; a creator SIGKILLed while it holds
//! the lock delays the others by its lease only (stale values served
//! meanwhile); values and invalidations made in one process are seen by
//! another.

use std::process::Command;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use carboy::cache::{Cache, CacheManager, Invalidation, RegionSettings};
use carboy_tests::child_process::ChildProcess;
use carboy_tests::redis_server::{RedisCluster, RedisServer};

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-redis-child");
const PROCESSES: usize = 3;
const THREADS: usize = 4;
/// The creation lock's lease in these tests (`cache.lock_lease_ms`).
const LEASE_MS: u64 = 1_000;

fn manager(url: &str, prefix: &str) -> CacheManager {
    manager_on(url, prefix, Arc::new(carboy_redis::RedisFactory::new()))
}

fn manager_on(url: &str, prefix: &str, factory: Arc<carboy_redis::RedisFactory>) -> CacheManager {
    CacheManager::builder()
        .backend_factory("redis", factory)
        .option("url", url)
        .option("prefix", prefix)
        .option("lock_lease_ms", LEASE_MS.to_string())
        .expire(Duration::from_secs(60))
        .region("r", RegionSettings::new().expire(Duration::from_secs(60)))
        .build()
        .unwrap()
}

fn child_args<'a>(url: &'a str, prefix: &'a str, lease: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![url, prefix, lease];
    args.extend_from_slice(rest);
    args
}

/// Runs the child with `rest` to completion; its stdout, trimmed.
fn run(url: &str, prefix: &str, rest: &[&str]) -> String {
    let lease = LEASE_MS.to_string();
    let out = Command::new(CHILD)
        .args(child_args(url, prefix, &lease, rest))
        .output()
        .unwrap();
    carboy_tests::stdout_of_success(out, &format!("child {rest:?}"))
        .trim()
        .to_string()
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

/// Runs the dogpile children against `url`; lets the creator finish once
/// `ready(lines so far)` holds; returns every line and the creators'
/// count.
fn dogpile(url: &str, prefix: &str, ready: impl Fn(&[String]) -> bool) -> (Vec<String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let lease = LEASE_MS.to_string();
    let threads = THREADS.to_string();
    let (tx, rx) = mpsc::channel();
    let mut children: Vec<ChildProcess> = (0..PROCESSES)
        .map(|i| {
            let mut command = Command::new(CHILD);
            command.args(child_args(url, prefix, &lease, &["dogpile", &threads, d]));
            ChildProcess::start_sharing(command, &format!("dogpile child {i}"), i, &tx)
        })
        .collect();
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
    let creators = std::fs::read_to_string(dir.path().join("creators"))
        .unwrap_or_default()
        .lines()
        .count();
    (lines, creators)
}

fn expired_key_one_creator_others_get_stale(url: &str) {
    let cache = manager(url, "stale:").get_cache("dogpile").unwrap();
    cache.set_for("k", "old", Some(Duration::ZERO)).unwrap();
    let total = PROCESSES * THREADS;
    // The creator may finish only once every other caller has returned
    // the stale value: nobody waited for it.
    let (lines, creators) = dogpile(url, "stale:", |l| count(l, "got old") == total - 1);
    assert_eq!(count(&lines, "creating"), 1, "{lines:?}");
    assert_eq!(count(&lines, "got old"), total - 1, "{lines:?}");
    assert_eq!(count(&lines, "got new"), 1, "{lines:?}");
    assert_eq!(creators, 1);
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

fn missing_key_one_creator_everyone_waits(url: &str) {
    let cache = manager(url, "wait:").get_cache("dogpile").unwrap();
    let total = PROCESSES * THREADS;
    let (lines, creators) = dogpile(url, "wait:", |l| count(l, "calling") == total);
    assert_eq!(count(&lines, "creating"), 1, "{lines:?}");
    assert_eq!(count(&lines, "got new"), total, "{lines:?}");
    assert_eq!(creators, 1);
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
}

#[test]
fn dogpile_standalone() {
    let Some(server) = RedisServer::start("dogpile_standalone") else {
        return;
    };
    expired_key_one_creator_others_get_stale(&server.url());
    missing_key_one_creator_everyone_waits(&server.url());
}

#[test]
fn dogpile_cluster() {
    let Some(cluster) = RedisCluster::start("dogpile_cluster") else {
        return;
    };
    expired_key_one_creator_others_get_stale(&cluster.url());
    missing_key_one_creator_everyone_waits(&cluster.url());
}

#[test]
fn a_killed_creator_delays_the_others_by_its_lease_only() {
    let Some(server) = RedisServer::start("a_killed_creator_delays_the_others_by_its_lease_only")
    else {
        return;
    };
    let url = server.url();
    let cache = manager(&url, "kill:").get_cache("dogpile").unwrap();
    cache.set_for("k", "old", Some(Duration::ZERO)).unwrap();
    let lease = LEASE_MS.to_string();
    let mut holder = ChildProcess::run(CHILD, &child_args(&url, "kill:", &lease, &["hold"]));
    holder.expect_line("creating");
    let (status, _) = holder.kill();
    assert!(!status.success());
    // The dead creator's lock is in the server, with a lease.
    let pttl: i64 = server
        .cli(&["pttl", "kill:{dogpile}#lock:k"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1..=LEASE_MS as i64).contains(&pttl),
        "the lock of a killed holder has pttl {pttl}, not within its lease"
    );
    // Meanwhile a caller with a stale value is served it at once.
    assert_eq!(run(&url, "kill:", &["create", "1"]), "got old");
    // A caller that does not serve stale waits for the lease, then
    // creates, once.
    let started = Instant::now();
    let out = run(&url, "kill:", &["create", "0"]);
    let waited = started.elapsed();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "creating");
    assert!(lines[1].starts_with("got made by "), "{out}");
    assert!(
        waited < Duration::from_millis(LEASE_MS) * 20,
        "waited {waited:?} for a lock whose lease is {LEASE_MS} ms"
    );
    eprintln!("a killed creator's lock (lease {LEASE_MS} ms) was taken after {waited:?}");
    let value = cache.get::<String>("k").unwrap().unwrap();
    assert_eq!(format!("got {value}"), lines[1]);
}

fn get(cache: &Cache, key: &str) -> String {
    match cache.get_entry::<String>(key).unwrap() {
        Some(e) if e.stale => format!("stale {}", e.value),
        Some(e) => e.value,
        None => "none".into(),
    }
}

fn values_and_invalidations(url: &str) {
    let p = "inval:";
    let factory = Arc::new(carboy_redis::RedisFactory::new());
    let manager = manager_on(url, p, Arc::clone(&factory));
    // An invalidation made by a child is seen here once redis's message
    // about it has arrived; sync_invalidations waits for that.
    let run = |rest: &[&str]| {
        let out = run(url, p, rest);
        factory.sync_invalidations().unwrap();
        out
    };
    let users = manager.get_cache("users").unwrap();
    let regional = manager.region("r").unwrap().cache("pages").unwrap();

    users.set("alice", "admin").unwrap();
    assert_eq!(run(&["get", "users", "alice"]), "admin");
    run(&["set", "users", "bob", "editor"]);
    assert_eq!(get(&users, "bob"), "editor");

    run(&["invalidate-key", "users", "bob", "soft"]);
    assert_eq!(get(&users, "bob"), "stale editor");
    run(&["invalidate", "users", "soft"]);
    assert_eq!(get(&users, "alice"), "stale admin");
    run(&["invalidate", "users", "hard"]);
    assert_eq!(get(&users, "alice"), "none");
    assert_eq!(get(&users, "bob"), "none");
    users.set("alice", "admin again").unwrap();
    assert_eq!(run(&["get", "users", "alice"]), "admin again");

    regional.set("home", "<html>").unwrap();
    assert_eq!(run(&["region-get", "pages", "home"]), "<html>");
    run(&["invalidate-region", "soft"]);
    assert_eq!(get(&regional, "home"), "stale <html>");
    regional
        .get_or_insert_with("home", || "<html v2>".to_string())
        .unwrap();
    assert_eq!(run(&["region-get", "pages", "home"]), "<html v2>");
    run(&["invalidate-region", "hard"]);
    assert_eq!(get(&regional, "home"), "none");
    regional.set("home", "<html v3>").unwrap();
    regional.invalidate("home", Invalidation::Hard).unwrap();
    assert_eq!(run(&["region-get", "pages", "home"]), "none");
    assert_eq!(get(&users, "alice"), "admin again");
}

#[test]
fn invalidations_cross_processes_standalone() {
    let Some(server) = RedisServer::start("invalidations_cross_processes_standalone") else {
        return;
    };
    values_and_invalidations(&server.url());
}

#[test]
fn invalidations_cross_processes_cluster() {
    let Some(cluster) = RedisCluster::start("invalidations_cross_processes_cluster") else {
        return;
    };
    values_and_invalidations(&cluster.url());
}

/// The lease is extended while its holder lives: a lock held for many
/// leases is never taken by another caller, and is free at once when
/// dropped.
#[test]
fn a_held_lock_outlives_its_lease() {
    let Some(server) = RedisServer::start("a_held_lock_outlives_its_lease") else {
        return;
    };
    let m = CacheManager::builder()
        .backend_factory("redis", Arc::new(carboy_redis::RedisFactory::new()))
        .option("url", server.url())
        .option("lock_lease_ms", "300")
        .build()
        .unwrap();
    let c = m.get_cache("held").unwrap();
    let b = Arc::clone(c.backend());
    let held = b.lock_creation(b"k", 0, false).unwrap().expect("free");
    let other = Arc::clone(c.backend());
    // Five leases: renewed every 100 ms, so a renewal late by up to
    // 200 ms (a loaded machine) still keeps it.
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut tries = 0;
    while Instant::now() < until {
        assert!(
            other.lock_creation(b"k", 0, false).unwrap().is_none(),
            "another caller took a held lock after {tries} tries (lease 300 ms)"
        );
        tries += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    assert!(other.lock_creation(b"k", 0, false).unwrap().is_some());
}
