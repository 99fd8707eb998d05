//! A namespace of several MiB: large enough that the passes over a whole
//! file (compaction, large transactions, verify, salvage, index rebuild)
//! work through it in many steps, releasing the pages behind each from the
//! process's memory (the engine's steps are 1 MiB), while readers run.
//!
//! Key `i` always holds a [`versioned_value`] of a version congruent to
//! `i` modulo 23, so its value's length never changes and a value of
//! another key or a torn one shows; versions only grow.

use carboy::Store;

use crate::{parse_versioned, show, versioned_value};

/// Keys in the file (about 7 MiB of records).
pub const KEYS: u32 = 40_000;

/// Key number `i`.
pub fn key(i: u32) -> Vec<u8> {
    format!("big/{i:06}").into_bytes()
}

/// The version key `i` gets in round `round` (round 0: the first).
pub fn version(i: u32, round: u64) -> u64 {
    u64::from(i % 23) + 23 * round
}

/// Opens a new store at `path`, sized for [`KEYS`], and [`fill`]s it.
pub fn create(path: &std::path::Path) -> Store {
    let store = carboy::Options::new()
        .expected_keys(KEYS.into())
        .open(path)
        .expect("open the big file");
    fill(&store);
    store
}

/// Writes every key at round 0, in one transaction.
pub fn fill(store: &Store) {
    let mut txn = store.transaction().expect("transaction");
    for i in 0..KEYS {
        txn.put(&key(i), &versioned_value(i, version(i, 0)))
            .expect("put");
    }
    txn.commit().expect("commit");
}

/// Rewrites every `every`-th key (from key `round % every`) at
/// `round`, in one transaction.
pub fn rewrite(store: &Store, round: u64, every: u32) {
    let mut txn = store.transaction().expect("transaction");
    let first = (round % u64::from(every)) as u32;
    for i in (first..KEYS).step_by(every as usize) {
        txn.put(&key(i), &versioned_value(i, version(i, round)))
            .expect("put");
    }
    txn.commit().expect("commit");
}

/// The version of a value read for key `i`, or why it is not a value
/// key `i` can hold.
pub fn check(i: u32, bytes: &[u8]) -> Result<u64, String> {
    let (id, version) = parse_versioned(bytes)?;
    if id != i || version % 23 != u64::from(i % 23) {
        return Err(format!(
            "key {} holds {} (key {id}, version {version})",
            show(&key(i)),
            show(bytes)
        ));
    }
    Ok(version)
}

/// A reader's checks over many reads: every value is one key `i` can
/// hold, no key's version goes back, and up to 64 values held at once
/// (borrowed from the mapping, each with a copy taken when read) never
/// change, even while compaction replaces the file under them.
pub struct Reader<'s> {
    store: &'s Store,
    newest: Vec<u64>,
    held: Vec<(u32, carboy::ValueRef<'s>, Vec<u8>)>,
    /// Reads made so far.
    pub reads: u64,
}

impl<'s> Reader<'s> {
    /// A reader of `store`, which holds a `big_file`.
    pub fn new(store: &'s Store) -> Reader<'s> {
        Reader {
            store,
            newest: vec![0; KEYS as usize],
            held: Vec::new(),
            reads: 0,
        }
    }

    /// Reads key `i` and checks everything above.
    pub fn read(&mut self, i: u32) -> Result<(), String> {
        let reads = self.reads;
        let value = self
            .store
            .get(&key(i))
            .map_err(|e| format!("read {reads}: get {i}: {e}"))?
            .ok_or_else(|| format!("read {reads}: key {i} is missing"))?;
        let version = check(i, &value).map_err(|e| format!("read {reads}: {e}"))?;
        let newest = &mut self.newest[i as usize];
        if version < *newest {
            return Err(format!(
                "read {reads}: key {i} went back from version {newest} to {version}"
            ));
        }
        *newest = version;
        let copy = value.to_vec();
        if self.held.len() < 64 {
            self.held.push((i, value, copy));
        } else {
            self.held[reads as usize % 64] = (i, value, copy);
        }
        if let Some((k, value, copy)) = self.held.iter().find(|(_, v, c)| **v != c[..]) {
            return Err(format!(
                "read {reads}: a value of key {k} it held changed: {} was {}",
                show(value),
                show(copy)
            ));
        }
        self.reads += 1;
        Ok(())
    }
}
