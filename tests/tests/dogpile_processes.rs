//! The cache layer across real processes (`carboy-cache-child`), on the
//! `file` backend: N threads in each of M processes calling
//! `get_or_create` on one expired key run the creator exactly once (the
//! creator holds an assertion flock while it runs, so a second one would
//! fail), and every other caller gets the stale value while it runs;
//! without a stale value everyone waits for that one creator; a value
//! cached by one process is read by another; invalidations (namespace and
//! region, hard and soft) made in one process are seen by the other.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use carboy::cache::{Cache, CacheManager, Invalidation, RegionSettings};
use carboy_tests::child_process::ChildProcess;

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-cache-child");
const PROCESSES: usize = 3;
const THREADS: usize = 4;

fn manager(dir: &Path) -> CacheManager {
    CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .expire(Duration::from_secs(60))
        .region("r", RegionSettings::new().expire(Duration::from_secs(60)))
        .build()
        .unwrap()
}

/// Runs `carboy-cache-child <args>` to completion; its stdout, trimmed.
fn run(args: &[&str]) -> String {
    let out = Command::new(CHILD).args(args).output().unwrap();
    carboy_tests::stdout_of_success(out, &format!("child {args:?}"))
        .trim()
        .to_string()
}

/// Starts the dogpile children; their stdout lines arrive on the channel
/// as (child index, line).
fn spawn_dogpile(
    data: &Path,
    serve_stale: bool,
) -> (Vec<ChildProcess>, mpsc::Receiver<(usize, String)>) {
    let (tx, rx) = mpsc::channel();
    let children = (0..PROCESSES)
        .map(|i| {
            let mut command = Command::new(CHILD);
            command.args([
                "dogpile",
                data.to_str().unwrap(),
                &THREADS.to_string(),
                if serve_stale { "1" } else { "0" },
            ]);
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = manager(&data).get_cache("dogpile").unwrap();
    // Stored already expired: a stale value for everyone to serve.
    cache.set_for("k", "old", Some(Duration::ZERO)).unwrap();
    let (children, rx) = spawn_dogpile(&data, true);
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = manager(&data).get_cache("dogpile").unwrap();
    let (children, rx) = spawn_dogpile(&data, false);
    let total = PROCESSES * THREADS;
    // Let the creator finish once every caller has started its call.
    let lines = drive(children, rx, |l| count(l, "calling") == total);
    assert_eq!(count(&lines, "creating"), 1, "{lines:?}");
    assert_eq!(count(&lines, "got new"), total, "{lines:?}");
    assert_eq!(creators(dir.path()), 1);
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("new"));
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let manager = manager(&data);
    let users = manager.get_cache("users").unwrap();
    let regional = manager.region("r").unwrap().cache("pages").unwrap();

    // Cached here, read there; cached there, read here.
    users.set("alice", "admin").unwrap();
    assert_eq!(run(&["get", d, "users", "alice"]), "admin");
    run(&["set", d, "users", "bob", "editor"]);
    assert_eq!(get(&users, "bob"), "editor");

    // A namespace invalidated there is invalidated here.
    run(&["invalidate", d, "users", "soft"]);
    assert_eq!(get(&users, "alice"), "stale admin");
    run(&["invalidate", d, "users", "hard"]);
    assert_eq!(get(&users, "alice"), "none");
    assert_eq!(get(&users, "bob"), "none");
    users.set("alice", "admin again").unwrap();
    assert_eq!(run(&["get", d, "users", "alice"]), "admin again");

    // And a region.
    regional.set("home", "<html>").unwrap();
    assert_eq!(run(&["region-get", d, "pages", "home"]), "<html>");
    run(&["invalidate-region", d, "soft"]);
    assert_eq!(get(&regional, "home"), "stale <html>");
    regional
        .get_or_insert_with("home", || "<html v2>".to_string())
        .unwrap();
    assert_eq!(run(&["region-get", d, "pages", "home"]), "<html v2>");
    run(&["invalidate-region", d, "hard"]);
    assert_eq!(get(&regional, "home"), "none");
    // Here to there as well.
    regional.set("home", "<html v3>").unwrap();
    regional.invalidate("home", Invalidation::Soft).unwrap();
    assert_eq!(run(&["region-get", d, "pages", "home"]), "stale <html v3>");
    // The namespace outside the region was not touched by the region's.
    assert_eq!(get(&users, "alice"), "admin again");
}
