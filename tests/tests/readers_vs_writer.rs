//! Lock-free readers racing one writer in one process: no torn value, no
//! version going backwards, nothing stale once its commit has returned,
//! transactions seen whole through snapshots, and no spurious error while
//! the index grows or the file is replaced, nor a change in a value held
//! while a compaction streams through the file.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use carboy::{Options, Store};
use carboy_tests::{assert_clean, big_file, parse_versioned, show, versioned_value};

/// Longest a writer runs in one of these tests.
const WRITE_FOR: Duration = Duration::from_millis(1500);
const READERS: usize = 3;

fn key(i: u32) -> Vec<u8> {
    format!("key/{i}").into_bytes()
}

/// Parses a versioned value read for key number `i`, panicking if it is
/// torn or belongs to another key.
fn version_of(i: u32, bytes: &[u8]) -> u64 {
    let (id, version) =
        parse_versioned(bytes).unwrap_or_else(|e| panic!("get({}): {e}", show(&key(i))));
    assert_eq!(id, i, "get({}) returned another key's value", show(&key(i)));
    version
}

/// Runs `writer` on one thread and `reader` on [`READERS`] threads until
/// the writer returns; returns the number of reads each reader made.
fn race(
    writer: impl FnOnce() + Send,
    reader: impl Fn(usize, &AtomicBool) -> u64 + Sync,
) -> Vec<u64> {
    let done = AtomicBool::new(false);
    let start = Barrier::new(READERS + 1);
    thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (done, start, reader) = (&done, &start, &reader);
                s.spawn(move || {
                    start.wait();
                    reader(r, done)
                })
            })
            .collect();
        let writer = s.spawn(|| {
            start.wait();
            // Stop the readers even if the writer panics.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _stop = Stop(&done);
            writer();
        });
        let w = writer.join();
        let counts: Vec<u64> = readers
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        if let Err(p) = w {
            std::panic::resume_unwind(p);
        }
        counts
    })
}

#[test]
fn readers_see_whole_values_never_older_than_a_returned_commit() {
    const KEYS: u32 = 8;
    const MAX_COMMITS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("versions.carboy")).unwrap();
    // published[k] = newest version of key k whose commit has returned.
    let published: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let commits = AtomicU64::new(0);

    let reads = race(
        || {
            let deadline = Instant::now() + WRITE_FOR;
            for v in 1..=MAX_COMMITS {
                let k = (v % u64::from(KEYS)) as u32;
                store.put(&key(k), &versioned_value(k, v)).unwrap();
                published[k as usize].store(v, Ordering::SeqCst);
                commits.store(v, Ordering::SeqCst);
                if Instant::now() > deadline {
                    break;
                }
            }
        },
        |r, done| {
            let mut newest = vec![0u64; KEYS as usize];
            let mut reads = 0;
            let mut k = r as u32;
            while !done.load(Ordering::SeqCst) {
                k = (k + 1) % KEYS;
                // Loaded before the get: the get must not be older.
                let floor = published[k as usize].load(Ordering::SeqCst);
                let got = store.get(&key(k)).unwrap();
                let version = match got.as_deref() {
                    Some(v) => version_of(k, v),
                    None => 0,
                };
                assert!(
                    version >= floor,
                    "reader {r}: key {k} reads version {version} after the commit of \
                     version {floor} returned"
                );
                assert!(
                    version >= newest[k as usize],
                    "reader {r}: key {k} went back from version {} to {version}",
                    newest[k as usize]
                );
                newest[k as usize] = version;
                reads += 1;
            }
            reads
        },
    );

    let commits = commits.load(Ordering::SeqCst);
    assert!(commits >= 100, "the writer only committed {commits} times");
    assert!(
        reads.iter().all(|&n| n > 0),
        "a reader never read: {reads:?}"
    );
    for k in 0..KEYS {
        let v = version_of(k, &store.get(&key(k)).unwrap().unwrap());
        assert_eq!(v, published[k as usize].load(Ordering::SeqCst));
    }
    assert_clean(&store);
}

#[test]
fn snapshots_see_transactions_whole() {
    // Each commit sets every key of the group to the same version, the
    // values of different lengths so that a half-applied commit shows; now
    // and then the writer compacts the file.
    const GROUP: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("batches.carboy")).unwrap();
    let published = AtomicU64::new(0);

    let reads = race(
        || {
            let deadline = Instant::now() + WRITE_FOR;
            let mut v = 0;
            while Instant::now() < deadline {
                v += 1;
                let mut txn = store.transaction().unwrap();
                for k in 0..GROUP {
                    txn.put(&key(k), &versioned_value(k, v + u64::from(k) * 1_000_000))
                        .unwrap();
                }
                txn.commit().unwrap();
                published.store(v, Ordering::SeqCst);
                if v % 64 == 0 {
                    // Snapshots must follow the file to its replacement.
                    store.compact().unwrap();
                }
            }
            assert!(v >= 50, "the writer only committed {v} transactions");
        },
        |r, done| {
            let mut newest = 0;
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let floor = published.load(Ordering::SeqCst);
                let snap = store.snapshot().unwrap();
                let versions: Vec<u64> = (0..GROUP)
                    .map(|k| match snap.get(&key(k)).unwrap() {
                        Some(v) => version_of(k, v) - u64::from(k) * 1_000_000,
                        None => 0,
                    })
                    .collect();
                // The same view through the snapshot's iterator.
                let mut iterated = vec![0u64; GROUP as usize];
                for entry in snap {
                    let entry = entry.unwrap();
                    let k = (0..GROUP)
                        .find(|&k| key(k) == entry.key)
                        .unwrap_or_else(|| panic!("iter yields unknown key {}", show(&entry.key)));
                    iterated[k as usize] = version_of(k, &entry.value) - u64::from(k) * 1_000_000;
                }
                assert!(
                    versions.iter().all(|&v| v == versions[0]),
                    "reader {r}: a snapshot shows a transaction half applied: {versions:?}"
                );
                assert_eq!(versions, iterated, "reader {r}: get and iter disagree");
                assert!(
                    versions[0] >= floor,
                    "reader {r}: snapshot at version {} after version {floor} committed",
                    versions[0]
                );
                assert!(versions[0] >= newest, "reader {r}: snapshots went back");
                newest = versions[0];
                reads += 1;
            }
            reads
        },
    );
    assert!(
        reads.iter().all(|&n| n > 0),
        "a reader never read: {reads:?}"
    );
    assert_clean(&store);
}

#[test]
fn readers_get_no_error_while_the_index_grows_and_the_file_is_replaced() {
    // Each round clears the store (a new file with the smallest index) and
    // adds keys one commit at a time, so the index grows five times a
    // round, while readers look keys up without any lock.
    const KEYS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .expected_keys(1)
        .open(dir.path().join("growth.carboy"))
        .unwrap();
    // (round << 32) | keys of that round whose commit returned.
    let published = AtomicU64::new(0);
    let rounds = AtomicU64::new(0);

    let reads = race(
        || {
            let deadline = Instant::now() + WRITE_FOR;
            let mut round = 0u64;
            while Instant::now() < deadline {
                round += 1;
                // Announced before the clear: readers may see it take
                // effect before clear() returns.
                published.store(round << 32, Ordering::SeqCst);
                store.clear().unwrap();
                for i in 0..KEYS {
                    store.put(&key(i), &versioned_value(i, round)).unwrap();
                    published.store((round << 32) | u64::from(i + 1), Ordering::SeqCst);
                }
            }
            rounds.store(round, Ordering::SeqCst);
        },
        |r, done| {
            let mut reads = 0;
            let mut i = r as u32;
            while !done.load(Ordering::SeqCst) {
                i = (i * 7 + 3) % KEYS;
                let before = published.load(Ordering::SeqCst);
                let got = store
                    .get(&key(i))
                    .unwrap_or_else(|e| panic!("reader {r}: get({}) failed: {e}", show(&key(i))))
                    .map(|v| version_of(i, &v));
                let after = published.load(Ordering::SeqCst);
                let (round, written) = (before >> 32, (before & 0xffff_ffff) as u32);
                match got {
                    Some(version) => assert!(
                        version >= round || i >= written,
                        "reader {r}: key {i} reads round {version} in round {round}"
                    ),
                    None => assert!(
                        i >= written || after >> 32 > round,
                        "reader {r}: key {i} is missing though round {round} wrote it and no \
                         clear followed"
                    ),
                }
                reads += 1;
            }
            reads
        },
    );
    assert!(rounds.load(Ordering::SeqCst) >= 2, "too few rounds");
    assert!(
        reads.iter().all(|&n| n > 0),
        "a reader never read: {reads:?}"
    );
    assert_clean(&store);
}

#[test]
fn values_borrowed_before_a_compaction_stay_whole_after_it() {
    // A file of several MiB: compaction copies it in steps and drops each
    // step's pages of the old file from this process's memory, while the
    // readers keep values borrowed from those very pages and read on.
    let dir = tempfile::tempdir().unwrap();
    let store = big_file::create(&dir.path().join("big.carboy"));
    let compactions = AtomicU64::new(0);
    let reads = race(
        || {
            let deadline = Instant::now() + WRITE_FOR;
            let mut round = 0;
            while round < 2 || Instant::now() < deadline {
                round += 1;
                big_file::rewrite(&store, round, 7);
                let report = store.compact().unwrap();
                assert_eq!(report.keys, u64::from(big_file::KEYS));
                compactions.fetch_add(1, Ordering::SeqCst);
            }
        },
        |r, done| {
            // Up to 64 values held at once, each with a copy taken when
            // it was read, compared again after every read.
            let mut reader = big_file::Reader::new(&store);
            let mut i = r as u32;
            while !done.load(Ordering::SeqCst) {
                i = (i.wrapping_mul(7919) + 13) % big_file::KEYS;
                reader
                    .read(i)
                    .unwrap_or_else(|e| panic!("reader {r}, across compactions: {e}"));
            }
            reader.reads
        },
    );
    assert!(compactions.load(Ordering::SeqCst) >= 2);
    assert!(
        reads.iter().all(|&n| n > 0),
        "a reader never read: {reads:?}"
    );
    assert_clean(&store);
}
