//! Consistent reads: a shared flock (across processes) plus the in-process
//! read side of the store's lock, so that no commit lands while it lives.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{Kind, Record};
use carboy_format::slot;
use parking_lot::RwLockReadGuard;

use super::Store;
use super::file_state::{FileState, IndexView};
use super::index::{self, Probe};
use crate::error::{Error, Result};

/// A consistent, read-only view of a namespace.
///
/// Writers in every process wait while a snapshot lives, so keep it short.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
/// store.put(b"a", b"1")?;
/// store.put(b"b", b"2")?;
/// let snap = store.snapshot()?;
/// assert_eq!(snap.len()?, 2);
/// assert_eq!(snap.get(b"a")?, Some(&b"1"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Snapshot<'s> {
    store: &'s Store,
    _rw: RwLockReadGuard<'s, ()>,
    _held: super::reentry::Held,
    /// Whether this snapshot holds (a share of) the shared flock, rather
    /// than relying on the process's idle lease.
    counted: bool,
    pub(super) fs: Arc<FileState>,
    pub(super) idx: IndexView,
    pub(super) bound: u64,
    pub(super) now: u64,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.fs.path())
            .field("committed_end", &self.bound)
            .finish_non_exhaustive()
    }
}

/// One key and its value, copied out of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// When it expires.
    pub expiry: carboy_format::Expiry,
}

/// One key and its value, borrowed from a snapshot's mapped file: no copy.
/// [`Snapshot::iter`] yields them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// When it expires.
    pub expiry: carboy_format::Expiry,
}

impl From<EntryRef<'_>> for Entry {
    fn from(e: EntryRef<'_>) -> Entry {
        Entry {
            key: e.key.to_vec(),
            value: e.value.to_vec(),
            expiry: e.expiry,
        }
    }
}

impl<'s> Snapshot<'s> {
    pub(crate) fn new(store: &'s Store) -> Result<Snapshot<'s>> {
        let shared = &*store.shared;
        super::reentry::check(shared, false)?;
        loop {
            // Recursive only inside another snapshot of this thread (which
            // must not queue behind a waiting writer); otherwise queue, so
            // that a stream of snapshots cannot starve writers.
            let rw = if super::reentry::holds_read(shared) {
                shared.rw.read_recursive()
            } else {
                shared.rw.read()
            };
            // With an idle lease this process holds the exclusive lock,
            // which keeps every writer out just as well (and stays held
            // while `rw` is).
            let counted = !shared.holds_lease();
            let mut fresh = false;
            if counted {
                let mut holders = shared.shared_holders.lock();
                if *holders == 0 {
                    shared
                        .lock
                        .lock_shared()
                        .map_err(|e| Error::io("lock (shared)", &shared.lock_path, e))?;
                    fresh = true;
                }
                *holders += 1;
            }
            let mut snap = Snapshot {
                store,
                _rw: rw,
                _held: super::reentry::Held::new(shared, false),
                counted,
                fs: shared.file.load_full(),
                idx: super::file_state::IndexView { offset: 0, log2: 4 },
                bound: 0,
                now: store.clock().now_unix_ms(),
            };
            let fs = &snap.fs;
            if fresh {
                // Before the header page is read (dropping `snap` on an
                // error gives the shared lock back).
                shared.check_for_snapshot(fs)?;
            }
            let generation = u64::from_le(
                shared
                    .lock
                    .generation()
                    .load(std::sync::atomic::Ordering::Acquire),
            );
            let needs_writer = generation != fs.header.generation
                || fs.load(carboy_format::header::live::WRITE_PENDING) != 0
                || fs.load(carboy_format::header::live::INDEXED_END) != fs.commit_end();
            if needs_writer {
                // A compaction moved the file, or a writer died mid-commit:
                // let the writer path sort it out, then look again.
                drop(snap);
                drop(shared.write_lock()?);
                continue;
            }
            snap.bound = fs.commit_end();
            snap.idx = fs.index()?;
            return Ok(snap);
        }
    }

    /// The value of `key` in this snapshot, borrowed from the file.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        match index::probe(&self.fs, self.idx, self.fs.hash(key), key, Some(self.bound))? {
            Probe::Found { record, .. }
                if record.kind == Kind::Put && !record.expiry.is_expired_at(self.now) =>
            {
                Ok(Some(record.value))
            }
            _ => Ok(None),
        }
    }

    /// Every live entry, borrowed from the mapped file (nothing is copied),
    /// in no particular order. Each record is checked against its CRC
    /// before it is yielded; a damaged one is an `Err` item, and the
    /// iteration goes on after it.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = carboy::Store::open(dir.path().join("s.carboy"))?;
    /// store.put(b"a", b"1")?;
    /// store.put(b"b", b"22")?;
    /// let snap = store.snapshot()?;
    /// let mut bytes = 0;
    /// for entry in snap.iter() {
    ///     bytes += entry?.value.len();
    /// }
    /// assert_eq!(bytes, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Entries<'_> {
        Entries {
            snapshot: self,
            walk: Walk::default(),
        }
    }

    /// Number of live keys in this snapshot.
    pub fn len(&self) -> Result<u64> {
        let mut n = 0;
        for entry in self.iter() {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// True when the snapshot holds no live key.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Bytes of the log a walk covers with one pass over the index (its
/// bitmap is 1/64 of that: 8 MiB). Logs up to this long take one pass.
const WINDOW: u64 = 512 << 20;

/// A walk over a snapshot's live records in file order.
///
/// Slots come in hash order and records in log order, so reading records
/// slot by slot makes every record a cache miss of its own (and a TLB miss
/// in a large file). A walk instead marks, in a bitmap with one bit per 8
/// bytes of log, where the records that slots point to start, then reads
/// them in ascending offset: sequential reads, which the CPU prefetches.
/// A log longer than [`WINDOW`] is walked one window of offsets at a time,
/// each with a pass over the slots, so that the bitmap stays small.
///
/// A slot that points outside the committed log, or into its own index
/// block, is reported (an `Err` item) during the first pass, and skipped.
#[derive(Debug)]
struct Walk {
    /// Bytes of log per window: [`WINDOW`] (smaller in tests).
    window_len: u64,
    /// Start of the current window (0: not started; windows start at or
    /// after the header page).
    window: u64,
    /// The next slot to mark, while marking.
    bucket: u64,
    /// Record starts in the current window: bit `i` is offset
    /// `window + 8 i`.
    bits: Vec<u64>,
    /// Whether the current window is marked and being read.
    reading: bool,
    /// The bitmap word being read, and what is left of it.
    word: usize,
    rest: u64,
    /// Occupied slots seen by the first pass, checked against the count
    /// the header keeps when it ends: a zeroed slot would otherwise drop
    /// its key from the walk without a word.
    used: u64,
    /// And their wrapping sum, checked against `slot_sum` (FORMAT.md §4.4).
    sum: u64,
}

impl Default for Walk {
    fn default() -> Walk {
        Walk {
            window_len: WINDOW,
            window: 0,
            bucket: 0,
            bits: Vec::new(),
            reading: false,
            word: 0,
            rest: 0,
            used: 0,
            sum: 0,
        }
    }
}

impl Walk {
    /// The next live (put, unexpired) record of `snap`, its checks passed.
    #[inline]
    fn next<'a>(&mut self, snap: &'a Snapshot<'_>) -> Option<Result<Record<'a>>> {
        loop {
            if self.reading {
                // The records marked in this window, in ascending offset.
                while self.rest == 0 {
                    let Some(&w) = self.bits.get(self.word + 1) else {
                        break;
                    };
                    self.word += 1;
                    self.rest = w;
                }
                if self.rest != 0 {
                    let bit = self.word as u64 * 64 + u64::from(self.rest.trailing_zeros());
                    self.rest &= self.rest - 1;
                    match snap.fs.record(self.window + bit * 8, snap.bound) {
                        Ok(rec) if rec.kind == Kind::Put && !rec.expiry.is_expired_at(snap.now) => {
                            return Some(Ok(rec));
                        }
                        Ok(_) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
                let next = self.window.saturating_add(self.window_len);
                self.start_window(next, snap.bound);
            } else if self.window == 0 {
                self.start_window(HEADER_SIZE, snap.bound);
            }
            if self.window >= snap.bound {
                return None;
            }
            if let Err(e) = self.mark(snap) {
                return Some(Err(e));
            }
        }
    }

    /// Goes on marking the current window from slot `bucket`; stops at the
    /// end of the slots (and starts reading), or at a slot to report.
    #[inline(never)]
    fn mark(&mut self, snap: &Snapshot<'_>) -> Result<()> {
        let fs = &*snap.fs;
        let idx = snap.idx;
        let index_end = idx.offset + idx.len();
        let Some(slots) = fs.map.words(idx.slot_offset(0), idx.capacity(), index_end) else {
            self.window = snap.bound;
            return Err(fs.corruption(idx.offset, "index slots outside the file"));
        };
        let first_pass = self.window == HEADER_SIZE;
        let end = self.window.saturating_add(self.window_len).min(snap.bound);
        // Counted in locals (kept in registers), added to `self` on the
        // first pass only.
        let (mut used, mut sum) = (0u64, 0u64);
        while let Some(word) = slots.get(self.bucket as usize) {
            let bucket = self.bucket;
            self.bucket += 1;
            let s = u64::from_le(word.load(Ordering::Acquire));
            used += u64::from(s != slot::EMPTY);
            sum = sum.wrapping_add(s);
            if s == slot::EMPTY {
                continue;
            }
            let at = slot::offset(s);
            let outside = at < HEADER_SIZE || at >= snap.bound;
            if outside || (at >= idx.offset && at < index_end) {
                if first_pass {
                    self.used += used;
                    self.sum = self.sum.wrapping_add(sum);
                    let what = if outside {
                        "outside the committed log"
                    } else {
                        "into its own index"
                    };
                    return Err(fs.corruption(
                        idx.slot_offset(bucket),
                        format!("slot points {what} at {at}"),
                    ));
                }
                continue;
            }
            if at >= self.window && at < end {
                let bit = (at - self.window) / 8;
                if let Some(w) = self.bits.get_mut((bit / 64) as usize) {
                    *w |= 1 << (bit % 64);
                }
            }
        }
        if first_pass {
            self.used += used;
            self.sum = self.sum.wrapping_add(sum);
        }
        self.reading = true;
        self.word = 0;
        self.rest = self.bits.first().copied().unwrap_or(0);
        if first_pass {
            self.check_count(fs, idx.offset)?;
        }
        Ok(())
    }

    /// Compares the slots the first pass counted and summed with what the
    /// header keeps (kept out of [`mark`](Self::mark) and its loop).
    #[cold]
    #[inline(never)]
    fn check_count(&self, fs: &FileState, index_offset: u64) -> Result<()> {
        let said = fs.load(live::USED_SLOTS);
        let sum_said =
            (fs.load(live::SLOT_SUM_TXN) == fs.load(live::TXN_ID)).then(|| fs.load(live::SLOT_SUM));
        // (Under the shared lock the count is exact, unless a writer died
        // mid-commit: the next writer recounts.)
        if (self.used != said || sum_said.is_some_and(|s| s != self.sum))
            && fs.load(live::WRITE_PENDING) == 0
            && fs.load(live::INDEXED_END) == fs.commit_end()
        {
            return Err(fs.corruption(
                index_offset,
                format!(
                    "index damaged: {} of its slots are in use, the header counts {said}{}: \
                     entries may be missing; reopening the namespace rebuilds the index",
                    self.used,
                    if self.used == said {
                        ", and they do not add up to the sum it keeps"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Starts marking the window of offsets from `start` (below `bound`).
    fn start_window(&mut self, start: u64, bound: u64) {
        self.window = start;
        self.bucket = 0;
        self.reading = false;
        let len = bound.saturating_sub(start).min(self.window_len);
        let words = (len / 8).div_ceil(64) as usize;
        self.bits.clear();
        self.bits.resize(words, 0);
    }
}

/// The entries of a snapshot, borrowed: [`Snapshot::iter`].
pub struct Entries<'a> {
    snapshot: &'a Snapshot<'a>,
    walk: Walk,
}

impl std::fmt::Debug for Entries<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("window", &self.walk.window)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<EntryRef<'a>>;

    fn next(&mut self) -> Option<Result<EntryRef<'a>>> {
        let rec = self.walk.next(self.snapshot)?;
        Some(rec.map(|rec| EntryRef {
            key: rec.key,
            value: rec.value,
            expiry: rec.expiry,
        }))
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let shared = &*self.store.shared;
        let mut holders = shared.shared_holders.lock();
        *holders = holders.saturating_sub(1);
        if *holders == 0 {
            let _ = shared.lock.unlock();
        }
    }
}

impl<'s> IntoIterator for Snapshot<'s> {
    type Item = Result<Entry>;
    type IntoIter = Iter<'s>;
    fn into_iter(self) -> Iter<'s> {
        Iter {
            snapshot: self,
            walk: Walk::default(),
        }
    }
}

/// An iterator over a snapshot's live entries, copied out; it owns the
/// snapshot (and so its lock) until dropped. To read the entries without
/// copying them, borrow them from a [`Snapshot`] with [`Snapshot::iter`].
pub struct Iter<'s> {
    snapshot: Snapshot<'s>,
    walk: Walk,
}

impl std::fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("window", &self.walk.window)
            .finish_non_exhaustive()
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        let rec = self.walk.next(&self.snapshot)?;
        Some(rec.map(|rec| Entry {
            key: rec.key.to_vec(),
            value: rec.value.to_vec(),
            expiry: rec.expiry,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Clock, Expiry, MockClock, Options};

    type Contents = BTreeMap<Vec<u8>, (Vec<u8>, Expiry)>;

    /// Every record a walk with windows of `window_len` bytes yields.
    fn walk_all(snap: &Snapshot<'_>, window_len: u64) -> Vec<Result<Contents>> {
        let mut walk = Walk {
            window_len,
            ..Walk::default()
        };
        let mut out = vec![Ok(Contents::new())];
        while let Some(rec) = walk.next(snap) {
            match rec {
                Ok(rec) => {
                    let Some(Ok(map)) = out.last_mut() else {
                        unreachable!("the last item is a map")
                    };
                    let dup = map.insert(rec.key.to_vec(), (rec.value.to_vec(), rec.expiry));
                    assert!(dup.is_none(), "key {:?} yielded twice", rec.key);
                }
                Err(e) => {
                    out.push(Err(e));
                    out.push(Ok(Contents::new()));
                }
            }
        }
        out
    }

    /// A store of 3,000 keys with overwrites, deletes and expired values,
    /// whose log spans many 4 KiB windows.
    fn sample(dir: &std::path::Path, clock: &MockClock) -> (crate::Store, Contents) {
        let store = Options::new()
            .clock(std::sync::Arc::new(clock.clone()))
            .expected_keys(1)
            .open(dir.join("walk.carboy"))
            .unwrap();
        let now = clock.now_unix_ms();
        let mut want = Contents::new();
        for round in 0..3u64 {
            let mut txn = store.transaction().unwrap();
            for i in 0..1000u64 {
                let key = format!("key/{}", (i * 7 + round * 500) % 3000).into_bytes();
                let value = vec![(i % 251) as u8; (i % 90) as usize];
                let expiry = match i % 10 {
                    0 => Expiry::AtUnixMs(now - 1), // already expired
                    1 => Expiry::AtUnixMs(now + 60_000),
                    _ => Expiry::Never,
                };
                if i % 13 == 0 {
                    txn.delete(&key).unwrap();
                    want.remove(&key);
                    continue;
                }
                txn.put_with_expiry(&key, &value, expiry).unwrap();
                if expiry.is_expired_at(now) {
                    want.remove(&key);
                } else {
                    want.insert(key, (value, expiry));
                }
            }
            txn.commit().unwrap();
        }
        (store, want)
    }

    #[test]
    fn walks_in_small_windows_yield_what_one_window_does() {
        let dir = tempfile::tempdir().unwrap();
        let clock = MockClock::new(1_700_000_000_000);
        let (store, want) = sample(dir.path(), &clock);
        let snap = store.snapshot().unwrap();
        assert!(
            snap.bound - HEADER_SIZE > 16 * 4096,
            "the log spans many windows"
        );
        for window_len in [WINDOW, 4096, 4104, 65536] {
            let got = walk_all(&snap, window_len);
            assert_eq!(got.len(), 1, "window {window_len}: no error");
            let Some(Ok(got)) = got.into_iter().next() else {
                unreachable!()
            };
            assert_eq!(got, want, "window {window_len}");
        }
    }

    #[test]
    fn slots_pointing_outside_the_log_are_reported_once_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let clock = MockClock::new(1_700_000_000_000);
        let (store, mut want) = sample(dir.path(), &clock);
        let snap = store.snapshot().unwrap();
        // Damage two slots: one past the committed end, one into the index.
        let fs = &*snap.fs;
        let slots = fs
            .map
            .words(snap.idx.slot_offset(0), snap.idx.capacity(), snap.bound)
            .unwrap();
        let mut damaged = Vec::new();
        for target in [snap.bound + 8, snap.idx.offset] {
            let b = slots
                .iter()
                .position(|w| {
                    let s = u64::from_le(w.load(Ordering::Relaxed));
                    s != slot::EMPTY && !damaged.contains(&s)
                })
                .unwrap();
            let s = u64::from_le(slots[b].load(Ordering::Relaxed));
            let rec = fs.record(slot::offset(s), snap.bound).unwrap();
            if rec.kind == Kind::Put && !rec.expiry.is_expired_at(snap.now) {
                want.remove(rec.key);
            }
            let bad = (s & !((1 << slot::OFFSET_BITS) - 1)) | (target >> 3);
            slots[b].store(bad.to_le(), Ordering::Relaxed);
            damaged.push(bad);
        }
        for window_len in [WINDOW, 4096] {
            let got = walk_all(&snap, window_len);
            let errors: Vec<String> = got
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            // Each slot where it is met, then the sum of the slots at the
            // end of the first pass.
            assert_eq!(errors.len(), 3, "window {window_len}: {errors:?}");
            assert!(errors[2].contains("do not add up"), "{errors:?}");
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("outside the committed log"))
            );
            assert!(errors.iter().any(|e| e.contains("into its own index")));
            let mut all = Contents::new();
            for part in got.into_iter().flatten() {
                all.extend(part);
            }
            assert_eq!(all, want, "window {window_len}: the other entries");
        }
    }
}
