//! Peak memory: a pass over a whole file (a large transaction, compaction,
//! verify, salvage) streams through it, so the process's peak resident
//! memory (VmHWM, which counts the file's mapped pages too) grows by well
//! under the file's size. Each pass runs in a child process of its own.
//! And what a large transaction released from memory reads back right.

use std::path::Path;
use std::process::Command;

use carboy::Store;
use carboy_tests::big_file;

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-test-child");

/// Runs `carboy-test-child peak <args>` and returns how much its peak
/// memory grew during the pass.
fn growth(args: &[&str]) -> u64 {
    let out = Command::new(CHILD)
        .arg("peak")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {CHILD} peak {args:?}: {e}"));
    let stdout = carboy_tests::stdout_of_success(out, &format!("peak {args:?}"));
    let words: Vec<&str> = stdout.split_whitespace().collect();
    match words[..] {
        ["peak", peak, "before", before] => {
            let (peak, before): (u64, u64) = (peak.parse().unwrap(), before.parse().unwrap());
            peak - before
        }
        _ => panic!("peak {args:?} said {stdout:?}"),
    }
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

#[test]
fn passes_over_a_whole_file_stream() {
    let dir = tempfile::tempdir().unwrap();
    // A large transaction: its pages leave the process behind its cursor.
    let loaded = dir.path().join("loaded.carboy");
    let load = growth(&["load", loaded.to_str().unwrap()]);
    // A file with dead records too (a fifth of the keys rewritten thrice).
    let path = dir.path().join("big.carboy");
    {
        let store = big_file::create(&path);
        for round in 1..=3 {
            big_file::rewrite(&store, round, 5);
        }
    }
    let size = len(&path);
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(&path, &to).unwrap();
        to
    };
    let compacted = copy("compacted.carboy");
    let compact = growth(&["compact", compacted.to_str().unwrap()]);
    let verified = copy("verified.carboy");
    let verify = growth(&["verify", verified.to_str().unwrap()]);
    let salvaged = dir.path().join("salvaged.carboy");
    let salvage = growth(&[
        "salvage",
        path.to_str().unwrap(),
        salvaged.to_str().unwrap(),
    ]);
    let figures = format!(
        "file {}: load {} (its file {}), compact {}, verify {}, salvage {}",
        mib(size),
        mib(load),
        mib(len(&loaded)),
        mib(compact),
        mib(verify),
        mib(salvage)
    );
    // Before they streamed (measured on such a file): the load 1.55 times
    // its file, compaction 1.9 times the file, verify 2.4, salvage 3.4.
    // Now the load keeps only its key index, compaction the new index and
    // a few 1 MiB steps; verify and salvage also fault older records back
    // in at random to compare keys (released every 256 reads: up to
    // 16 MiB, the whole of a small file).
    assert!(load < len(&loaded), "{figures}");
    assert!(compact < size / 2, "{figures}");
    assert!(verify < size + (4 << 20), "{figures}");
    assert!(salvage < size + (4 << 20), "{figures}");
    // The passes did their work.
    assert_eq!(
        Store::open(&loaded).unwrap().len().unwrap(),
        u64::from(big_file::KEYS)
    );
    for p in [&compacted, &salvaged] {
        let store = Store::open(p).unwrap();
        assert_eq!(store.len().unwrap(), u64::from(big_file::KEYS));
        carboy_tests::assert_clean(&store);
    }
}

#[test]
fn a_large_transaction_reads_back_what_it_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("txn.carboy")).unwrap();
    let check = |got: Option<&[u8]>, i: u32, round: u64| {
        let got = got.unwrap_or_else(|| panic!("key {i} is missing"));
        assert_eq!(big_file::check(i, got), Ok(big_file::version(i, round)));
    };
    // Several MiB in one transaction: the pages of its first records left
    // the process long before the end; reading them faults them back in.
    {
        let mut txn = store.transaction().unwrap();
        for i in 0..big_file::KEYS {
            txn.put(
                &big_file::key(i),
                &carboy_tests::versioned_value(i, big_file::version(i, 0)),
            )
            .unwrap();
        }
        for i in (0..big_file::KEYS).step_by(97) {
            check(txn.get(&big_file::key(i)).unwrap(), i, 0);
        }
        // Dropped: discarded whole.
    }
    assert_eq!(store.len().unwrap(), 0);
    assert!(store.get(&big_file::key(0)).unwrap().is_none());
    big_file::fill(&store);
    // Every key again in one transaction: publishing compares each key
    // with its older record, in pages released long ago.
    big_file::rewrite(&store, 1, 1);
    for i in 0..big_file::KEYS {
        check(store.get(&big_file::key(i)).unwrap().as_deref(), i, 1);
    }
    carboy_tests::assert_clean(&store);
}
