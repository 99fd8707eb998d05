//! Group commit between real processes: processes making `Durability::Sync`
//! commits at once keep every acknowledged commit and every increment of a
//! shared counter; one process's fsync covers the commits of others (shown
//! without any timing: one process is held inside its fsync while two
//! others commit, and the three commits then take exactly two fsyncs); and
//! the others go on committing when a process is killed anywhere in the
//! protocol, its fsync and the lock-file words included.
//!
//! `CARBOY_GC_KILLS` sets the number of kills of the last test (default 40).

use std::path::Path;
use std::time::{Duration, Instant};

use carboy::{Options, Store};
use carboy_tests::child_process::ChildProcess;
use carboy_tests::{assert_clean, decode_counter, group_plan, parse_versioned, show, splitmix};

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-test-child");

/// Longest the test waits for any one thing a child should do; only a
/// child that is stuck (the failure these tests look for) reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

/// The (commits, fsyncs) of a child's last line.
fn stats_of(lines: &[String], what: &str) -> (u64, u64) {
    lines
        .last()
        .and_then(|l| group_plan::parse_stats(l))
        .unwrap_or_else(|| panic!("{what} ended without its stats: {lines:?}"))
}

/// Creates the namespace, so that no child's open syncs for a creation.
fn create(path: &Path) -> Store {
    Options::new().open(path).unwrap()
}

#[test]
fn one_fsync_covers_the_commits_of_two_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.carboy");
    let p = path.to_str().unwrap();
    let store = create(&path);

    // A commits, becomes the leader and stops just before its fdatasync,
    // holding the sync lock.
    let mut a = ChildProcess::run(CHILD, &["sync-held", p, "a"]);
    assert_eq!(a.next_line().as_deref(), Some("syncing"), "{}", a.what());
    // B and C commit meanwhile. Once their keys are visible they are past
    // their commit points, waiting for a sync: A's end was taken before
    // them, and the sync lock is A's.
    let b = ChildProcess::run(CHILD, &["sync-put", p, "b"]);
    let c = ChildProcess::run(CHILD, &["sync-put", p, "c"]);
    let started = Instant::now();
    while !(store.contains(b"b").unwrap() && store.contains(b"c").unwrap()) {
        assert!(
            started.elapsed() < DEADLINE,
            "B and C did not commit while A held its sync"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // A syncs; then one of B and C syncs for both.
    a.say("go");
    let (a_commits, a_syncs) = stats_of(&a.finish(), "A");
    let (b_commits, b_syncs) = stats_of(&b.finish(), "B");
    let (c_commits, c_syncs) = stats_of(&c.finish(), "C");
    assert_eq!((a_commits, b_commits, c_commits), (1, 1, 1));
    assert_eq!(a_syncs, 1, "A's commit needed its own sync");
    assert_eq!(
        b_syncs + c_syncs,
        1,
        "B and C committed before anyone else could sync, so one sync covers both \
         (B made {b_syncs}, C {c_syncs})"
    );
    for key in [b"a", b"b", b"c"] {
        assert!(store.contains(key).unwrap(), "{} lost", show(key));
    }
    assert_clean(&store);
}

#[test]
fn concurrent_sync_commits_are_all_kept_and_share_fsyncs() {
    const CHILDREN: u32 = 4;
    const COMMITS: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.carboy");
    let p = path.to_str().unwrap();
    drop(create(&path));

    let mut children: Vec<ChildProcess> = (0..CHILDREN)
        .map(|c| {
            ChildProcess::run(
                CHILD,
                &["sync-commits", p, &c.to_string(), "1", &COMMITS.to_string()],
            )
        })
        .collect();
    for child in &mut children {
        child.say("go");
    }
    let (mut commits, mut syncs) = (0, 0);
    for (c, child) in children.into_iter().enumerate() {
        let what = child.what().to_string();
        let lines = child.finish();
        let acks: Vec<u64> = lines
            .iter()
            .filter_map(|l| group_plan::parse_ack(l))
            .collect();
        assert_eq!(
            acks,
            (1..=COMMITS).collect::<Vec<_>>(),
            "child {c} acknowledged"
        );
        let (n, s) = stats_of(&lines, &what);
        assert_eq!(n, COMMITS, "child {c}'s durable commits");
        assert!(s <= n, "child {c} made {s} fsyncs for {n} commits");
        commits += n;
        syncs += s;
    }
    eprintln!(
        "{commits} Sync commits from {CHILDREN} processes took {syncs} fsyncs ({:.2} commits per fsync)",
        commits as f64 / syncs.max(1) as f64
    );

    // Every acknowledged commit is there, and no increment was lost.
    let store = Options::new().create(false).open(&path).unwrap();
    let total = decode_counter(store.get(group_plan::COUNTER).unwrap().as_deref()).unwrap();
    assert_eq!(total, u64::from(CHILDREN) * COMMITS, "counter increments");
    for c in 0..CHILDREN {
        assert_eq!(
            store.get_owned(&group_plan::key(c)).unwrap(),
            Some(group_plan::value(c, COMMITS)),
            "child {c}'s last commit"
        );
    }
    assert_clean(&store);
}

fn kills() -> u64 {
    std::env::var("CARBOY_GC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn killed_sync_committers_do_not_stall_the_others() {
    const CHILDREN: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.carboy");
    let p = path.to_str().unwrap();
    drop(create(&path));
    let spawn = |c: u32, first: u64| {
        let mut child = ChildProcess::run(
            CHILD,
            &["sync-commits", p, &c.to_string(), &first.to_string(), "0"],
        );
        child.say("go");
        child
    };
    // Newest acknowledged version of each child's key.
    let mut acked = vec![0u64; CHILDREN as usize];
    let mut children: Vec<Option<ChildProcess>> =
        (0..CHILDREN).map(|c| Some(spawn(c, 1))).collect();
    let mut rng = 0x6C0_FFEE_u64;
    // Reads acknowledgements of child `c` until `more` new ones came.
    let await_acks = |child: &mut ChildProcess, acked: &mut u64, more: u64| {
        for _ in 0..more {
            let line = child
                .next_line()
                .unwrap_or_else(|| panic!("{} stopped", child.what()));
            *acked = group_plan::parse_ack(&line)
                .unwrap_or_else(|| panic!("{}: unexpected line {line:?}", child.what()));
        }
    };
    for round in 0..kills() {
        let victim = (splitmix(&mut rng) % u64::from(CHILDREN)) as usize;
        // Kill it at a random point: after 0 to 4 more acknowledgements,
        // and a random few hundred microseconds (into its next commit,
        // its fsync, or its wait for another's).
        let mut child = children[victim].take().expect("running");
        await_acks(&mut child, &mut acked[victim], splitmix(&mut rng) % 5);
        std::thread::sleep(Duration::from_micros(splitmix(&mut rng) % 800));
        for line in child.kill().1 {
            if let Some(v) = group_plan::parse_ack(&line) {
                acked[victim] = v;
            }
        }
        // The others go on: past what they had printed already, each
        // acknowledges two more commits.
        for (c, other) in children.iter_mut().enumerate() {
            if let Some(other) = other {
                for line in other.pending_lines() {
                    acked[c] = group_plan::parse_ack(&line)
                        .unwrap_or_else(|| panic!("{}: unexpected line {line:?}", other.what()));
                }
                await_acks(other, &mut acked[c], 2);
            }
        }
        children[victim] = Some(spawn(victim as u32, acked[victim] + 1));
        eprint!("{}", if round % 10 == 9 { "|" } else { "." });
    }
    for (c, child) in children.into_iter().enumerate() {
        for line in child.expect("running").kill().1 {
            if let Some(v) = group_plan::parse_ack(&line) {
                acked[c] = v;
            }
        }
    }
    let store = Options::new().create(false).open(&path).unwrap();
    assert_clean(&store);
    for (c, &version) in acked.iter().enumerate() {
        let value = store
            .get_owned(&group_plan::key(c as u32))
            .unwrap()
            .unwrap_or_else(|| panic!("child {c}'s key lost"));
        let (_, stored) = parse_versioned(&value).unwrap();
        assert!(
            stored >= version,
            "child {c}: version {version} acknowledged, {stored} stored"
        );
    }
}
