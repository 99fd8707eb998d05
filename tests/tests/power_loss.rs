//! Power loss: crash images built from a file captured at a sync point plus
//! a random subset of the 4 KiB pages changed since (some of them torn, half
//! old and half new) always open, hold everything committed before the sync
//! point, and hold exactly the state after some prefix of the later
//! transactions: never half a transaction, never a value nobody wrote.
//!
//! The writes after the sync point go through a `Durability::None` handle:
//! they model commits whose `fdatasync` had not returned when the power
//! went. Each image is opened with `rebuild_index(true)`, which is what the
//! first open after a reboot does. `CARBOY_IMAGES` sets the number of images
//! per test (default 300; two tests, so 600 per run).

use std::collections::BTreeMap;
use std::path::Path;

use carboy::{Durability, Options, Store};
use carboy_tests::{assert_clean, contents, splitmix, versioned_value};

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
        std::fs::write(&image_path, &image).unwrap();
        let case = format!("image {n} (seed {seed}, {durability:?})");
        let store = Options::new()
            .rebuild_index(true)
            .open(&image_path)
            .unwrap_or_else(|e| panic!("{case}: does not open: {e}"));
        assert_clean(&store);
        let got = plain(&store);
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
