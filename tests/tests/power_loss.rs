//! Power loss: crash images built from a file captured at a sync point plus
//! a random subset of the 4 KiB pages changed since (some of them torn, half
//! old and half new) always open, hold everything committed before the sync
//! point, and hold exactly the state after some prefix of the later
//! transactions: never half a transaction, never a value nobody wrote.
//!
//! The writes after the sync point go through a `Durability::None` handle:
//! they model commits whose `fdatasync` had not returned when the power
//! went. Each image is opened with `rebuild_index(true)`, which is what the
//! first open after a reboot does.
//!
//! Group commit has a test of its own: threads make `Durability::Sync`
//! commits at once, publishing before their fsync and sharing fsyncs. The
//! storage seam copies the file as each fdatasync starts (all it will make
//! durable) and says when it returned; every crash image is the file at one
//! returned sync plus a random subset of the pages changed until the next
//! sync started, and must hold every commit acknowledged before the next
//! sync returned, and exactly the state after some prefix of the
//! transactions in commit order.
//!
//! `CARBOY_IMAGES` sets the number of images per test (default 300; three
//! tests, so 900 per run).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use carboy::faults::{self, Op};
use carboy::{Durability, Options, Store};
use carboy_tests::{
    assert_clean, contents, decode_counter, encode_counter, splitmix, versioned_value,
};

const PAGE: usize = 4096;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn images() -> u64 {
    std::env::var("CARBOY_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn plain(store: &Store) -> State {
    contents(store)
        .into_iter()
        .map(|(k, (v, _))| (k, v))
        .collect()
}

/// One transaction of the workload: `ops` puts and a delete of an older
/// key, over a key space that makes the index grow along the way.
fn transaction(store: &Store, model: &mut State, txn: u64, ops: u64) {
    let mut t = store.transaction().unwrap();
    for i in 0..ops {
        let id = (txn * 7 + i * 13) % 400;
        let key = format!("key/{id}").into_bytes();
        let value = versioned_value(id as u32, txn);
        t.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    let gone = format!("key/{}", (txn * 31) % 400).into_bytes();
    t.delete(&gone).unwrap();
    model.remove(&gone);
    // Every transaction also moves one marker key: a prefix of transactions
    // is visible through it.
    let marker = versioned_value(9999, txn);
    t.put(b"marker", &marker).unwrap();
    model.insert(b"marker".to_vec(), marker);
    t.commit().unwrap();
}

/// Builds a crash image of `after` relative to `before`.
fn crash_image(before: &[u8], after: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut image = after.to_vec();
    for (n, page) in image.chunks_mut(PAGE).enumerate() {
        let start = n * PAGE;
        let old: Vec<u8> = (start..start + page.len())
            .map(|i| before.get(i).copied().unwrap_or(0))
            .collect();
        if old == page {
            continue;
        }
        match splitmix(rng) % 4 {
            0 => {}                          // the new page reached the disk
            1 => page.copy_from_slice(&old), // it did not
            2 => {
                let half = page.len().min(PAGE / 2);
                page[half..].copy_from_slice(&old[half..]); // torn: first half new
            }
            _ => {
                let half = page.len().min(PAGE / 2);
                page[..half].copy_from_slice(&old[..half]); // torn: second half new
            }
        }
    }
    // The new length may not have reached the disk either.
    if splitmix(rng).is_multiple_of(4) && before.len() < image.len() {
        image.truncate(before.len());
    }
    image
}

/// Writes crash image `image` to `path` and opens it as the first open
/// after a reboot does (`rebuild_index`): it must open and verify clean.
/// Returns the store and its contents.
fn open_image(path: &Path, image: &[u8], case: &str) -> (Store, State) {
    std::fs::write(path, image).unwrap();
    let store = Options::new()
        .rebuild_index(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{case}: does not open: {e}"));
    assert_clean(&store);
    let got = plain(&store);
    (store, got)
}

fn run(durability: Durability, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("power.carboy");
    let mut model = State::new();
    let mut rng = seed;
    // Before the sync point: committed and durable.
    {
        let store = Options::new()
            .durability(durability)
            .expected_keys(8)
            .open(&path)
            .unwrap();
        for txn in 1..=30 {
            transaction(&store, &mut model, txn, 1 + txn % 9);
        }
        store.sync().unwrap();
        assert_eq!(plain(&store), model);
    }
    let at_sync = model.clone();
    let before = std::fs::read(&path).unwrap();
    // After the sync point: commits whose fsync never returned.
    let mut states = vec![at_sync.clone()];
    {
        let store = Options::new()
            .durability(Durability::None)
            .open(&path)
            .unwrap();
        for txn in 31..=45 {
            transaction(&store, &mut model, txn, 1 + (txn * 5) % 23);
            states.push(model.clone());
        }
    }
    let after = std::fs::read(&path).unwrap();
    assert_ne!(
        before, after,
        "the writes after the sync point changed nothing"
    );

    let mut seen_prefixes = std::collections::BTreeSet::new();
    for n in 0..images() {
        let image_path = dir.path().join(format!("image-{n}.carboy"));
        let image = crash_image(&before, &after, &mut rng);
        let case = format!("image {n} (seed {seed}, {durability:?})");
        let (store, got) = open_image(&image_path, &image, &case);
        let prefix = states.iter().position(|s| *s == got).unwrap_or_else(|| {
            let missing: Vec<_> = at_sync
                .keys()
                .filter(|k| !got.contains_key(*k))
                .take(3)
                .collect();
            panic!(
                "{case}: the contents are no prefix of the transactions (e.g. missing {missing:?})"
            )
        });
        seen_prefixes.insert(prefix);
        // It keeps working: a new commit lands and survives a reopen.
        store.put(b"after-crash", b"ok").unwrap();
        drop(store);
        let store = Store::open(&image_path).unwrap();
        assert_eq!(
            store.get_owned(b"after-crash").unwrap().as_deref(),
            Some(&b"ok"[..]),
            "{case}"
        );
        drop(store);
        remove(&image_path);
    }
    // The images really were different crashes.
    assert!(
        seen_prefixes.len() > 2,
        "only prefixes {seen_prefixes:?} were seen: the images are not exercising recovery"
    );
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    std::fs::remove_file(lock).unwrap();
}

#[test]
fn sync_commits_survive_power_loss() {
    run(Durability::Sync, 0x5EED_0001);
}

#[test]
fn unsynced_commits_are_lost_whole_or_kept_whole() {
    run(Durability::None, 0x5EED_0002);
}

/// What the storage seam and the committing threads saw, in order.
enum Event {
    /// Thread `thread` is about to call fdatasync; the file as it is now.
    SyncStarts { thread: u64, image: Vec<u8> },
    /// That thread's sync returned: an fdatasync (`range` is `None`), or
    /// one that made only the bytes of `range` durable (group commit syncs
    /// the log bytes it appended, not the index pages its slots dirtied).
    Synced {
        thread: u64,
        range: Option<std::ops::Range<usize>>,
    },
    /// The commit of transaction `seq` returned.
    Acked { seq: u64 },
}

/// Taken by the tests that install the (process-wide) fault hook.
static SEAM: Mutex<()> = Mutex::new(());

thread_local! {
    /// True in the threads of the group-commit test: the seam's hook is
    /// process-wide, and the other tests of this file sync too.
    static RECORDING: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The writes of one transaction of the group-commit test: key and new
/// value (`None`: deleted).
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

#[test]
fn group_commits_survive_power_loss() {
    const THREADS: u64 = 4;
    const TXNS: u64 = 12;
    let _seam = SEAM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.carboy");
    let store = Options::new()
        .durability(Durability::Sync)
        .expected_keys(8)
        .open(&path)
        .unwrap();
    for i in 0..5u32 {
        store.put(&i.to_le_bytes(), &versioned_value(i, 0)).unwrap();
    }
    store.sync().unwrap();
    let at_sync = plain(&store);
    // What the disk holds now: every later image starts from it.
    let synced_file = std::fs::read(&path).unwrap();

    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let seen = Arc::clone(&events);
    let file = path.clone();
    faults::set_hook(Some(Box::new(move |op| {
        let thread = RECORDING.with(Cell::get)?;
        let event = match op {
            Op::Fsync => Event::SyncStarts {
                thread,
                image: std::fs::read(&file).unwrap(),
            },
            Op::Synced => Event::Synced {
                thread,
                range: None,
            },
            Op::SyncedRange { start, end } => Event::Synced {
                thread,
                range: Some(start as usize..end as usize),
            },
            _ => return None,
        };
        seen.lock().unwrap().push(event);
        None
    })));
    // Transaction `seq` (its place in commit order, read under the writer
    // lock from the "seq" key it also moves) and its writes.
    let txns: Mutex<BTreeMap<u64, Writes>> = Mutex::default();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, events, txns) = (store.clone(), &events, &txns);
            s.spawn(move || {
                RECORDING.with(|r| r.set(Some(t)));
                for i in 0..TXNS {
                    let mut txn = store.transaction().unwrap();
                    let seq = decode_counter(txn.get(b"seq").unwrap()).unwrap() + 1;
                    let mut writes: Writes =
                        vec![(b"seq".to_vec(), Some(encode_counter(seq).to_vec()))];
                    let key = format!("t{t}/k{}", i % 4).into_bytes();
                    let value = versioned_value(t as u32, seq);
                    txn.put(&key, &value).unwrap();
                    writes.push((key, Some(value)));
                    if i % 3 == 2 {
                        let gone = format!("t{t}/k{}", (i + 2) % 4).into_bytes();
                        txn.delete(&gone).unwrap();
                        writes.push((gone, None));
                    }
                    txn.put(b"seq", &encode_counter(seq)).unwrap();
                    txns.lock().unwrap().insert(seq, writes);
                    txn.commit().unwrap();
                    events.lock().unwrap().push(Event::Acked { seq });
                }
                RECORDING.with(|r| r.set(None));
            });
        }
    });
    faults::set_hook(None);
    let last = std::fs::read(&path).unwrap();
    let stats = store.sync_stats();
    drop(store);

    // The state after each prefix of the transactions, in commit order.
    let txns = txns.into_inner().unwrap();
    assert_eq!(txns.len() as u64, THREADS * TXNS);
    let mut states = vec![at_sync.clone()];
    for (seq, writes) in &txns {
        assert_eq!(*seq, states.len() as u64, "transactions out of order");
        let mut next = states.last().unwrap().clone();
        for (key, value) in writes {
            match value {
                Some(v) => next.insert(key.clone(), v.clone()),
                None => next.remove(key),
            };
        }
        states.push(next);
    }

    // The durable points: what the disk is sure to hold once each sync
    // returned (a full sync: the file as it started; a ranged one: the
    // previous durable point with the range as it was when the sync
    // started); the pages that may have reached the disk besides (the file
    // as the next sync started); and the newest transaction acknowledged
    // before the next sync returned, which a crash at that point must keep.
    struct Durable {
        image: Vec<u8>,
        until: Option<Vec<u8>>,
        must_keep: u64,
    }
    let mut durable: Vec<Durable> = Vec::new();
    let mut starting: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut newest_ack = 0;
    let mut ranged = 0;
    let events = std::mem::take(&mut *events.lock().unwrap());
    for event in events {
        match event {
            Event::SyncStarts { thread, image } => {
                if let Some(d) = durable.last_mut().filter(|d| d.until.is_none()) {
                    d.until = Some(image.clone());
                }
                starting.insert(thread, image);
            }
            Event::Synced { thread, range } => {
                if let Some(d) = durable.last_mut() {
                    d.must_keep = newest_ack;
                }
                let started = starting
                    .remove(&thread)
                    .expect("a sync that returned had started");
                let image = match range {
                    None => started,
                    Some(range) => {
                        ranged += 1;
                        let mut image = durable
                            .last()
                            .map_or_else(|| synced_file.clone(), |d| d.image.clone());
                        image.resize(started.len(), 0);
                        image[range.clone()].copy_from_slice(&started[range]);
                        image
                    }
                };
                durable.push(Durable {
                    image,
                    until: None,
                    must_keep: 0,
                });
            }
            Event::Acked { seq } => {
                assert!(
                    !durable.is_empty(),
                    "transaction {seq} was acknowledged before any sync returned"
                );
                newest_ack = newest_ack.max(seq);
            }
        }
    }
    let end = durable.last_mut().expect("no sync at all");
    end.must_keep = newest_ack;
    assert_eq!(newest_ack, THREADS * TXNS);
    eprintln!(
        "{} Sync commits from {THREADS} threads, {} fsyncs ({ranged} of the log only)",
        stats.commits, stats.fsyncs
    );

    let mut rng = 0x5EED_0003_u64;
    let mut kept = BTreeSet::new();
    for n in 0..images() {
        let i = (splitmix(&mut rng) % durable.len() as u64) as usize;
        let d = &durable[i];
        let image = crash_image(&d.image, d.until.as_deref().unwrap_or(&last), &mut rng);
        let image_path = dir.path().join(format!("image-{n}.carboy"));
        let case = format!("image {n} (after sync {i} of {})", durable.len());
        let (store, got) = open_image(&image_path, &image, &case);
        let seq = decode_counter(got.get(&b"seq"[..]).map(Vec::as_slice)).unwrap();
        assert_eq!(
            got, states[seq as usize],
            "{case}: not the state after transaction {seq}"
        );
        assert!(
            seq >= d.must_keep,
            "{case}: transaction {} was acknowledged, the image keeps only up to {seq}",
            d.must_keep
        );
        kept.insert(seq);
        drop(store);
        remove(&image_path);
    }
    assert!(
        kept.len() > 2,
        "images kept only transactions up to {kept:?}: they are not exercising recovery"
    );
}

/// A `Durability::Sync` commit makes durable the log bytes it appended,
/// and nothing else: the ranged sync starts where the previous one ended
/// and covers exactly one put record and one commit marker. A commit that
/// grew the index (an index block appended, whose slots change in place)
/// syncs the whole file instead.
#[test]
fn a_sync_commit_syncs_only_the_log_bytes_it_appended() {
    use carboy_format::Expiry;
    use carboy_format::record::{COMMIT_LEN, put_len};

    let _seam = SEAM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new()
        .durability(Durability::Sync)
        .expected_keys(8)
        .open(dir.path().join("ranged.carboy"))
        .unwrap();
    let seen: Arc<Mutex<Vec<Op>>> = Arc::default();
    let log = Arc::clone(&seen);
    faults::set_hook(Some(Box::new(move |op| {
        RECORDING.with(Cell::get)?;
        if matches!(op, Op::Synced | Op::SyncedRange { .. }) {
            log.lock().unwrap().push(op);
        }
        None
    })));
    RECORDING.with(|r| r.set(Some(0)));
    let value = [7u8; 100];
    let mut ops_per_put = Vec::new();
    for i in 0..40u64 {
        let before = seen.lock().unwrap().len();
        store.put(&i.to_le_bytes(), &value).unwrap();
        ops_per_put.push(seen.lock().unwrap()[before..].to_vec());
    }
    RECORDING.with(|r| r.set(None));
    faults::set_hook(None);

    let one_commit = put_len(8, value.len(), Expiry::Never).unwrap() + COMMIT_LEN;
    let mut previous_end = None;
    let (mut ranged, mut whole) = (0, 0);
    for (i, ops) in ops_per_put.iter().enumerate() {
        assert_eq!(
            ops.len(),
            1,
            "put {i}: one sync per lone commit, saw {ops:?}"
        );
        match ops[0] {
            Op::SyncedRange { start, end } => {
                ranged += 1;
                assert_eq!(end - start, one_commit, "put {i}: synced {start}..{end}");
                if let Some(p) = previous_end {
                    assert_eq!(start, p, "put {i}: the range starts where the last ended");
                }
                previous_end = Some(end);
            }
            Op::Synced => {
                whole += 1;
                previous_end = None;
            }
            other => panic!("put {i}: unexpected {other:?}"),
        }
    }
    // 40 keys grow a table sized for 8 about twice: those commits (and
    // only those) sync the whole file.
    assert!(whole >= 1, "the index grew, yet every sync was ranged");
    assert!(whole <= 4, "{whole} whole-file syncs for 40 puts");
    assert!(ranged >= 36, "only {ranged} ranged syncs");
}
