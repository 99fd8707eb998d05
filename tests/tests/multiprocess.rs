//! Several real processes sharing one namespace file: no increment of a shared
//! counter is lost, every process's writes survive, what one process
//! wrote before exiting is what the next one reads, and reader processes
//! read right values while another compacts a file of several MiB.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carboy::{Options, Store};
use carboy_tests::{assert_clean, big_file, contents, decode_counter, plan, show, versioned_value};

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-test-child");

/// Longest a child may run before the test kills it and fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

fn spawn(args: &[&str], stdin: Stdio) -> Child {
    Command::new(CHILD)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {CHILD} {args:?}: {e}"))
}

/// Waits for `child` (killing it past the deadline) and asserts it
/// succeeded; returns its stdout.
fn finish(mut child: Child, what: &str) -> String {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output();
                panic!("{what} still running after {CHILD_DEADLINE:?}; killed it: {out:?}");
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("collecting the output of {what}: {e}"));
    carboy_tests::stdout_of_success(out, what)
}

#[test]
fn concurrent_processes_lose_no_update() {
    run_workers(4, 500, 0);
}

#[test]
fn concurrent_processes_lose_no_update_across_compactions() {
    // A fifth process replaces the file under the workers again and again.
    run_workers(4, 300, 40);
}

/// Runs `workers` worker processes of `ops` operations each (and a
/// compacting process if `compactions` > 0) on one new file, then checks
/// the file holds exactly what the work plan says.
fn run_workers(workers: u32, ops: u64, compactions: u64) {
    let dir = tempfile::tempdir().unwrap();
    // The children create the file themselves, all at once.
    let path = dir.path().join("shared.carboy");
    let path_arg = path.to_str().unwrap();

    let mut compactor = (compactions > 0).then(|| {
        spawn(
            &["compact", path_arg, &compactions.to_string()],
            Stdio::piped(),
        )
    });
    let mut children: Vec<Child> = (0..workers)
        .map(|c| {
            spawn(
                &[
                    "work",
                    path_arg,
                    &c.to_string(),
                    &workers.to_string(),
                    &ops.to_string(),
                ],
                Stdio::piped(),
            )
        })
        .collect();
    // Release them together.
    for child in children.iter_mut().chain(compactor.iter_mut()) {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    for (c, child) in children.into_iter().enumerate() {
        let out = finish(child, &format!("child {c}"));
        assert!(
            out.contains(&format!("{ops} ops")),
            "child {c} said {out:?}"
        );
    }
    if let Some(compactor) = compactor {
        let out = finish(compactor, "compacting process");
        assert!(
            out.contains(&format!("compacted {compactions} times")),
            "compactor said {out:?}"
        );
    }

    let store = Options::new().create(false).open(&path).unwrap();
    for c in 0..plan::COUNTERS {
        let key = plan::counter_key(c);
        let got = decode_counter(store.get(&key).unwrap().as_deref()).unwrap();
        assert_eq!(
            got,
            plan::counter_total(u64::from(workers), ops, c),
            "counter {c}: increments were lost or doubled"
        );
    }
    let mut expected_keys = plan::COUNTERS;
    for child in 0..workers {
        for (key, value) in plan::final_values(child, ops) {
            let got = store.get_owned(&key).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&value[..]),
                "child {child}'s key {} does not hold its final value",
                show(&key)
            );
            expected_keys += 1;
        }
        // The batch, whole, and only the last op's temp key.
        let last = versioned_value(child, ops - 1);
        for key in plan::batch_keys(child) {
            assert_eq!(
                store.get_owned(&key).unwrap().as_deref(),
                Some(&last[..]),
                "{}",
                show(&key)
            );
        }
        for op in ops.saturating_sub(4)..ops {
            let present = store
                .get_owned(&plan::temp_key(child, op))
                .unwrap()
                .is_some();
            assert_eq!(
                present,
                op == ops - 1,
                "child {child}'s temp key of op {op}"
            );
        }
        expected_keys += 3;
    }
    assert_eq!(store.len().unwrap(), expected_keys);
    assert_eq!(contents(&store).len() as u64, expected_keys);
    assert_clean(&store);
}

#[test]
fn reader_processes_read_right_values_while_a_large_file_is_compacted() {
    // This process rewrites part of the file and compacts it (streaming,
    // releasing the old file's pages from its own memory as it goes) until
    // both readers are done; they follow it from file to file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.carboy");
    let store = big_file::create(&path);
    let path_arg = path.to_str().unwrap();
    let mut readers: Vec<Child> = (0..2)
        .map(|_| spawn(&["read-big", path_arg, "1500"], Stdio::piped()))
        .collect();
    for reader in &mut readers {
        reader.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut round = 0;
    while round < 2 || readers.iter_mut().any(|r| r.try_wait().unwrap().is_none()) {
        round += 1;
        big_file::rewrite(&store, round, 5);
        assert_eq!(store.compact().unwrap().keys, u64::from(big_file::KEYS));
    }
    for (r, reader) in readers.into_iter().enumerate() {
        let out = finish(reader, &format!("reader {r}"));
        let reads: u64 = out
            .trim()
            .strip_suffix(" reads")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("reader {r} said {out:?}"));
        assert!(reads > 0, "reader {r} never read");
    }
    assert!(round >= 2);
    for i in 0..big_file::KEYS {
        let value = store.get_owned(&big_file::key(i)).unwrap().unwrap();
        let written = (1..=round)
            .rev()
            .find(|r| u64::from(i % 5) == r % 5)
            .unwrap_or(0);
        assert_eq!(
            big_file::check(i, &value),
            Ok(big_file::version(i, written))
        );
    }
    assert_clean(&store);
}

#[test]
fn a_later_process_reads_what_an_exited_one_wrote() {
    const N: u32 = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.carboy");
    let path_arg = path.to_str().unwrap();
    let n = N.to_string();

    let out = finish(
        spawn(&["write", path_arg, &n], Stdio::null()),
        "writer process",
    );
    assert!(out.contains("wrote 300"), "writer said {out:?}");
    let out = finish(
        spawn(&["read", path_arg, &n], Stdio::null()),
        "reader process",
    );
    assert!(out.contains("read 300"), "reader said {out:?}");

    // And this process agrees, after both have exited.
    check_handoff(&path, N);
}

#[test]
fn an_idle_writer_lets_other_processes_in() {
    // After a commit this process keeps the writer lock while nobody else
    // wants it (a lease). Other processes must still get it, without this
    // process doing anything: a child that opens, writes and exits, then
    // one that opens and reads, each within the deadline.
    const N: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lease.carboy");
    let path_arg = path.to_str().unwrap();
    let n = N.to_string();
    // The parent writes entries the children also write, so that the
    // reader child's exact count still holds.
    let entries = plan::handoff_entries(N);
    let store = Store::open(&path).unwrap();
    store.put(&entries[0].0, &entries[0].1).unwrap();

    let out = finish(
        spawn(&["write", path_arg, &n], Stdio::null()),
        "writer process",
    );
    assert!(out.contains("wrote 200"), "writer said {out:?}");
    store.put(&entries[1].0, &entries[1].1).unwrap();
    let out = finish(
        spawn(&["read", path_arg, &n], Stdio::null()),
        "reader process",
    );
    assert!(out.contains("read 200"), "reader said {out:?}");

    // This process sees the child's writes and can still write and iterate.
    for (key, value) in &entries {
        assert_eq!(store.get_owned(key).unwrap().as_deref(), Some(&value[..]));
    }
    store.put(b"parent", b"third").unwrap();
    assert_eq!(contents(&store).len() as u32, N + 1);
    assert_clean(&store);
}

#[test]
fn reader_process_detects_missing_writes() {
    // The reader child must fail when the file lacks what it expects:
    // otherwise the test above could pass with a reader that checks nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.carboy");
    let path_arg = path.to_str().unwrap();
    finish(
        spawn(&["write", path_arg, "10"], Stdio::null()),
        "writer process",
    );
    let out = spawn(&["read", path_arg, "11"], Stdio::null())
        .wait_with_output()
        .unwrap();
    assert!(
        !out.status.success(),
        "reader accepted a file missing a key: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("handoff/10"));
}

fn check_handoff(path: &Path, n: u32) {
    let store = Store::open(path).unwrap();
    let all = contents(&store);
    assert_eq!(all.len() as u64, u64::from(n));
    for (key, value) in plan::handoff_entries(n) {
        assert_eq!(
            all.get(&key).map(|(v, _)| v.as_slice()),
            Some(&value[..]),
            "{}",
            show(&key)
        );
    }
    assert_clean(&store);
}
