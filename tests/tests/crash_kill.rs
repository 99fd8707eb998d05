//! A writer process killed with SIGKILL at random points never costs an
//! acknowledged commit, never leaves half a transaction, and never leaves a
//! file the next opener cannot use (`verify` is clean after every kill).
//!
//! The child acknowledges a commit on stdout only after `commit` returned;
//! the parent kills it after a random number of acknowledgements (sometimes
//! none: a kill during open or recovery), then opens the file itself and
//! checks everything acknowledged so far. Every other round the child
//! commits with `Durability::Sync`, so that kills also land after a commit
//! point and before or inside its fsync (group commit gives the writer
//! lock up first), and leave the lock file's group-commit words as a
//! killed syncer left them for the next child. `CARBOY_KILLS` sets the
//! number of kills (default 1000), `CARBOY_KILL_SEED` the seed of the kill
//! points.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use carboy::Store;
use carboy_tests::kill_loop::{self, BATCH};
use carboy_tests::{assert_clean, parse_versioned, show, splitmix};

fn kills() -> u64 {
    std::env::var("CARBOY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn version_of(store: &Store, key: &[u8]) -> Option<u64> {
    let value = store
        .get_owned(key)
        .unwrap_or_else(|e| panic!("get {}: {e}", show(key)))?;
    let (_, version) = parse_versioned(&value).unwrap_or_else(|e| panic!("{}: {e}", show(key)));
    Some(version)
}

#[test]
fn killed_writers_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.carboy");
    let mut rng = std::env::var("CARBOY_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xC0FF_EE00_2026_u64);
    let mut next_version = 1u64;
    let mut last_acked: Option<u64> = None;
    // Newest acknowledged version of each single key.
    let mut acked_single: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut total_acks = 0u64;
    for round in 0..kills() {
        let durability = if round % 2 == 1 { "sync" } else { "none" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_carboy-test-child"))
            .arg("commit-forever")
            .arg(&path)
            .arg(next_version.to_string())
            .arg(durability)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wait_for = splitmix(&mut rng) % 12;
        let mut acks = Vec::new();
        while (acks.len() as u64) < wait_for {
            match lines.next() {
                Some(Ok(line)) => acks.push(line.parse::<u64>().unwrap()),
                _ => panic!("round {round}: the writer stopped before it was killed"),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Acknowledgements already written before the kill count too.
        acks.extend(
            lines
                .map_while(Result::ok)
                .filter_map(|l| l.parse::<u64>().ok()),
        );
        for &v in &acks {
            acked_single.insert(kill_loop::single(v), v);
            last_acked = Some(v);
        }
        total_acks += acks.len() as u64;

        let store = Store::open(&path)
            .unwrap_or_else(|e| panic!("round {round}: reopening after the kill: {e}"));
        assert_clean(&store);
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["killed.carboy", "killed.carboy.lock"],
            "round {round}: a killed compaction left files behind"
        );
        let batch: Vec<Option<u64>> = BATCH.iter().map(|k| version_of(&store, k)).collect();
        assert!(
            batch.iter().all(|v| *v == batch[0]),
            "round {round}: half a transaction survived: {batch:?}"
        );
        if let Some(acked) = last_acked {
            let v = batch[0].unwrap_or_else(|| panic!("round {round}: commit {acked} lost"));
            assert!(
                v >= acked,
                "round {round}: commit {acked} acknowledged, file holds {v}"
            );
        }
        for (key, &acked) in &acked_single {
            let v = version_of(&store, key)
                .unwrap_or_else(|| panic!("round {round}: {} lost", show(key)));
            assert!(
                v >= acked,
                "round {round}: {} at {v}, {acked} acknowledged",
                show(key)
            );
        }
        next_version = batch[0].map_or(next_version, |v| v + 1).max(next_version);
    }
    assert!(
        total_acks >= kills(),
        "the writers acknowledged only {total_acks} commits in {} rounds",
        kills()
    );
}
