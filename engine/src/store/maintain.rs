//! Upkeep: statistics, compaction, deep verification and salvage.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Commit, Kind, Prefix};
use carboy_format::slot;

use super::Store;
use super::file_state::FileState;
use super::file_state::IndexView;
use super::index::{self, Probe};
use super::offsets::{NewestByKey, OffsetSet};
use super::open::{self, NewFile, ReleaseBehind, STREAM_CHUNK};
use crate::error::{Error, Result};
use crate::options::Options;

/// Figures about a namespace file, from its live words.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The data file.
    pub path: PathBuf,
    /// Format version of the file.
    pub format_version: u32,
    /// Compaction generation.
    pub generation: u64,
    /// Bytes allocated to the file.
    pub allocated_bytes: u64,
    /// End of the committed log.
    pub committed_bytes: u64,
    /// Keys whose newest record is a put (expired ones included until
    /// compaction drops them).
    pub stored_keys: u64,
    /// Of those, keys that carry an expiry.
    pub expiring_keys: u64,
    /// Occupied index slots (deleted keys keep theirs until the index is
    /// rebuilt).
    pub used_slots: u64,
    /// Index capacity in slots.
    pub index_capacity: u64,
    /// Bytes compaction would reclaim (approximate).
    pub dead_bytes: u64,
    /// Id of the last committed transaction.
    pub last_txn: u64,
    /// When it committed, Unix milliseconds.
    pub last_commit_unix_ms: u64,
}

/// What [`Store::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Committed bytes before.
    pub bytes_before: u64,
    /// Committed bytes after.
    pub bytes_after: u64,
    /// Keys kept.
    pub keys: u64,
    /// Expired keys dropped.
    pub expired_dropped: u64,
}

/// One problem found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset in the data file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offset {}: {}", self.offset, self.what)
    }
}

/// What [`Store::verify`] checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records (puts and deletes) that verified.
    pub records: u64,
    /// Committed transactions that verified.
    pub transactions: u64,
    /// Index slots checked.
    pub slots: u64,
    /// Live keys found.
    pub live_keys: u64,
    /// Every problem, with its offset.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`salvage`](crate::salvage) recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// Keys written to the new file.
    pub keys: u64,
    /// Records that verified and belonged to a committed transaction.
    pub records: u64,
    /// Records that verified but whose transaction's commit marker was not
    /// found (dropped: they may never have committed).
    pub uncommitted_records: u64,
    /// Damaged byte ranges skipped, as (offset, length).
    pub damaged: Vec<(u64, u64)>,
}

/// One block found by walking a log byte by byte where it is damaged.
enum Block<'a> {
    Record(u64, record::Record<'a>),
    Commit(u64, Commit),
    Index(u64, u64),
    Damaged(u64, u64),
}

/// Walks `from..limit`, yielding every block that verifies and every
/// damaged range between them (resynchronizing at 8-byte steps).
///
/// Every [`STREAM_CHUNK`] it releases the pages of `from` up to where it
/// is from this process's memory: not only the last step's, since the
/// caller reads records behind (an older record of the same key, to
/// compare keys), and each such read faults its page and the cached pages
/// around it back in.
struct Walk<'a> {
    fs: &'a FileState,
    from: u64,
    pos: u64,
    limit: u64,
    stop_at_zeros: bool,
    /// Start of the damaged range being crossed.
    bad_from: Option<u64>,
    /// The block that ended a damaged range, yielded right after it.
    queued: Option<Block<'a>>,
    released: u64,
    done: bool,
}

impl<'a> Walk<'a> {
    fn new(fs: &'a FileState, from: u64, limit: u64, stop_at_zeros: bool) -> Walk<'a> {
        Walk {
            fs,
            from,
            pos: from,
            limit,
            stop_at_zeros,
            bad_from: None,
            queued: None,
            released: from,
            done: false,
        }
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = Block<'a>;

    fn next(&mut self) -> Option<Block<'a>> {
        if let Some(block) = self.queued.take() {
            return Some(block);
        }
        if self.done {
            return None;
        }
        let fs = self.fs;
        let limit = self.limit;
        while self.pos + record::PREFIX_LEN as u64 <= limit {
            let pos = self.pos;
            if pos - self.released >= STREAM_CHUNK {
                fs.map.release(self.from, pos);
                self.released = pos;
            }
            let head = fs
                .map
                .bytes(pos, record::PREFIX_LEN as u64, limit)
                .unwrap_or(&[]);
            if self.stop_at_zeros && self.bad_from.is_none() && head.iter().all(|&b| b == 0) {
                break;
            }
            let found = Prefix::decode(head).ok().and_then(|p| match p.kind {
                Kind::Put | Kind::Delete => fs
                    .record(pos, limit)
                    .ok()
                    .map(|r| (Block::Record(pos, r), p.block_len())),
                Kind::Commit => fs
                    .map
                    .bytes(pos, record::COMMIT_LEN, limit)
                    .and_then(|b| Commit::decode(b).ok())
                    .map(|c| (Block::Commit(pos, c), record::COMMIT_LEN)),
                Kind::Index => fs
                    .index_at(pos, limit)
                    .ok()
                    .map(|v| (Block::Index(pos, v.len()), v.len())),
            });
            match found {
                Some((block, len)) => {
                    self.pos += len;
                    if let Some(start) = self.bad_from.take() {
                        self.queued = Some(block);
                        return Some(Block::Damaged(start, pos - start));
                    }
                    return Some(block);
                }
                None => {
                    self.bad_from.get_or_insert(pos);
                    self.pos += 8;
                }
            }
        }
        self.done = true;
        fs.map.release(self.from, self.pos.min(limit));
        self.bad_from
            .take()
            .map(|start| Block::Damaged(start, limit.max(self.pos) - start))
    }
}

/// Older records [`NewestByKey`] may read back (each faulting in up to
/// 64 KiB of cached pages) before the pages behind the walk are released.
/// Measured on a 193 MiB file with 300,000 overwrites: 256 keeps verify's
/// peak at 77 MiB for 1.1 s of CPU; never releasing them, 206 MiB and
/// 0.8 s (every release makes the later reads fault again).
const READS_PER_RELEASE: u64 = 256;

/// Releases `HEADER_SIZE..to` when `newest` read enough older records
/// back since the last time.
fn release_reads_behind(fs: &FileState, newest: &mut NewestByKey, to: u64) {
    if newest.take_reads(READS_PER_RELEASE) {
        fs.map.release(HEADER_SIZE, to);
    }
}

/// What [`copy_live`] copied.
#[derive(Default)]
struct Copied {
    keys: u64,
    expired_dropped: u64,
}

/// Copies every live, unexpired put of `old` (the newest record of each
/// key in the index `idx`, below `bound`) into `out`, in log order.
///
/// Streams: the index is read front to back into an [`OffsetSet`], then
/// the records are read front to back, and the pages of `old` behind each
/// pass are released from this process's memory as it goes
/// ([`MappedFile::release`](crate::file::MappedFile::release): other
/// threads and processes reading `old` meanwhile fault them back in, with
/// the same bytes). What this costs besides the new index is the set (at
/// most 1/64 of `bound`) and `out`'s buffer.
fn copy_live(
    old: &FileState,
    idx: IndexView,
    bound: u64,
    now: u64,
    out: &mut NewFile,
) -> Result<Copied> {
    let mut live = OffsetSet::new(HEADER_SIZE, bound);
    let mut behind = ReleaseBehind::new(idx.offset);
    for b in 0..idx.capacity() {
        let s = index::load_slot(old, idx, b)?;
        if s == slot::EMPTY {
            continue;
        }
        let offset = slot::offset(s);
        if !live.insert(offset) {
            return Err(old.corruption(
                idx.slot_offset(b),
                format!("slot points at {offset}, outside the committed log"),
            ));
        }
        let at = idx.slot_offset(b);
        behind.reached(&old.map, at);
    }
    behind.finish(&old.map, idx.offset + idx.len());
    let mut copied = Copied::default();
    let mut behind = ReleaseBehind::new(HEADER_SIZE);
    for offset in live.iter() {
        let rec = old.record(offset, bound)?;
        if rec.kind == Kind::Put {
            if rec.expiry.is_expired_at(now) {
                copied.expired_dropped += 1;
            } else {
                out.append(old.block_bytes(offset, rec.len, bound)?)?;
                copied.keys += 1;
            }
        }
        behind.reached(&old.map, offset);
    }
    behind.finish(&old.map, bound);
    Ok(copied)
}

impl Store {
    /// Figures about the file, read from its live words (no scan).
    pub fn stats(&self) -> Result<Stats> {
        let fs = self.shared.current_file()?;
        let idx = fs.index()?;
        Ok(Stats {
            path: fs.path().to_path_buf(),
            format_version: fs.header.version,
            generation: fs.header.generation,
            allocated_bytes: fs.load(live::ALLOC_END),
            committed_bytes: fs.commit_end(),
            stored_keys: fs.load(live::LIVE_KEYS),
            expiring_keys: fs.load(live::EXPIRING_KEYS),
            used_slots: fs.load(live::USED_SLOTS),
            index_capacity: idx.capacity(),
            dead_bytes: fs.load(live::DEAD_BYTES),
            last_txn: fs.load(live::TXN_ID),
            last_commit_unix_ms: fs.load(live::LAST_COMMIT_MS),
        })
    }

    /// Rewrites the file with only its live, unexpired entries and renames
    /// it into place. Other processes keep reading the old file until their
    /// next operation, then move to the new one; writers wait meanwhile.
    pub fn compact(&self) -> Result<CompactReport> {
        self.rewrite(true)
    }

    /// Removes every entry (by compacting to an empty file).
    pub fn clear(&self) -> Result<()> {
        self.rewrite(false).map(|_| ())
    }

    fn rewrite(&self, keep: bool) -> Result<CompactReport> {
        let guard = self.shared.write_lock()?;
        let old = Arc::clone(&guard.fs);
        let bound = old.commit_end();
        let idx = old.index()?;
        let generation = old.header.generation + 1;
        let path = self.shared.data_path.clone();
        let tmp = open::temp_path(&path, "compact")?;
        let opts = Options::new()
            .clock(Arc::clone(&self.clock))
            .expected_keys(0);
        let built =
            NewFile::create(&tmp, &old.header.name, generation, &opts).and_then(|mut out| {
                let copied = if keep {
                    copy_live(&old, idx, bound, self.clock().now_unix_ms(), &mut out)?
                } else {
                    Copied::default()
                };
                out.finish()?;
                Ok(copied)
            });
        let copied = match built {
            Ok(copied) => copied,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // Announce the new generation, then move the file into place.
        self.shared
            .lock
            .generation()
            .store(generation.to_le(), Ordering::Release);
        if let Err(e) = crate::file::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            self.shared
                .lock
                .generation()
                .store(old.header.generation.to_le(), Ordering::Release);
            return Err(Error::io("rename", &tmp, e));
        }
        // After the rename, a failed directory sync leaves it unknown
        // whether the new file survives power loss: latch.
        open::sync_dir(&path).map_err(|e| self.shared.latch_err(e))?;
        old.store(live::SUPERSEDED, 1);
        let (fresh, _) = FileState::open(&path, true)?;
        let bytes_after = fresh.commit_end();
        self.shared.install(Arc::new(fresh));
        self.shared.checked_gen.store(generation, Ordering::Release);
        drop(guard);
        Ok(CompactReport {
            bytes_before: bound,
            bytes_after,
            keys: copied.keys,
            expired_dropped: copied.expired_dropped,
        })
    }

    /// Checks every byte carboy can check: every record's and commit
    /// marker's CRC, the transaction chain, every index slot (it must point
    /// at the newest record of its key, reachable by a probe), and the
    /// counters. Holds a shared lock while it runs.
    pub fn verify(&self) -> Result<VerifyReport> {
        let snap = self.snapshot()?;
        let fs = &snap.fs;
        let bound = snap.bound;
        let mut report = VerifyReport::default();
        let problem = |report: &mut VerifyReport, offset: u64, what: String| {
            report.problems.push(Problem { offset, what });
        };

        // 1. The log: every block, the transaction chain, newest record per
        //    key. A transaction's records count once its marker is seen.
        let hint = fs.load(live::USED_SLOTS).min(snap.idx.capacity());
        let mut newest = NewestByKey::with_capacity(hint as usize);
        let mut pending: Vec<(u64, u64)> = Vec::new();
        let mut txn_start = HEADER_SIZE;
        let mut last_txn = 0;
        for block in Walk::new(fs, HEADER_SIZE, bound, false) {
            match block {
                Block::Record(off, rec) => pending.push((off, fs.hash(rec.key))),
                Block::Commit(off, c) => {
                    if c.txn_id != last_txn + 1 || c.txn_start != txn_start {
                        problem(
                            &mut report,
                            off,
                            format!(
                                "commit marker of txn {} (start {}) breaks the chain: expected \
                                 txn {} starting at {}",
                                c.txn_id,
                                c.txn_start,
                                last_txn + 1,
                                txn_start
                            ),
                        );
                    } else if c.records as usize != pending.len() {
                        problem(
                            &mut report,
                            off,
                            format!(
                                "commit marker counts {} records, {} verified",
                                c.records,
                                pending.len()
                            ),
                        );
                    }
                    last_txn = c.txn_id;
                    report.transactions += 1;
                    for (o, hash) in pending.drain(..) {
                        report.records += 1;
                        newest.insert(fs, bound, hash, o)?;
                    }
                    release_reads_behind(fs, &mut newest, off);
                    txn_start = off + record::COMMIT_LEN;
                }
                Block::Index(off, len) => txn_start = off + len,
                Block::Damaged(off, len) => {
                    problem(
                        &mut report,
                        off,
                        format!("{len} bytes that are no valid block"),
                    );
                    pending.clear();
                }
            }
        }
        if !pending.is_empty() {
            problem(
                &mut report,
                pending[0].0,
                format!(
                    "{} records below the committed end have no commit marker",
                    pending.len()
                ),
            );
        }
        drop(pending);
        if last_txn != fs.load(live::TXN_ID) {
            problem(
                &mut report,
                live::TXN_ID as u64,
                format!(
                    "last txn id is {}, the log ends with txn {last_txn}",
                    fs.load(live::TXN_ID)
                ),
            );
        }

        // 2. Each key's newest record, in log order: its key's probe must
        //    find a slot pointing at it (a deleted key may have no slot:
        //    growing the index drops them).
        let idx = snap.idx;
        let mut order = OffsetSet::new(HEADER_SIZE, bound);
        for offset in newest.offsets() {
            order.insert(offset);
        }
        drop(newest);
        // The slots (by their offset) a key's probe found: their records
        // are accounted for.
        let mut seen = OffsetSet::new(idx.slot_offset(0), idx.slot_offset(idx.capacity()));
        let (mut in_log, mut indexed, mut live_keys) = (0u64, 0u64, 0u64);
        let mut count = |rec: &record::Record<'_>| {
            if rec.kind == Kind::Put {
                indexed += 1;
                if !rec.expiry.is_expired_at(snap.now) {
                    live_keys += 1;
                }
            }
        };
        let mut behind = ReleaseBehind::new(HEADER_SIZE);
        for newest_at in order.iter() {
            let rec = fs.record(newest_at, bound)?;
            if rec.kind == Kind::Put {
                in_log += 1;
            }
            let hash = fs.hash(rec.key);
            match index::probe(fs, idx, hash, rec.key, Some(bound)) {
                Ok(Probe::Found {
                    bucket,
                    offset,
                    record: found,
                    ..
                }) => {
                    seen.insert(idx.slot_offset(bucket));
                    count(&found);
                    if offset != newest_at {
                        problem(
                            &mut report,
                            idx.slot_offset(bucket),
                            format!(
                                "slot points at {offset}, the key's newest record is at \
                                 {newest_at}"
                            ),
                        );
                    }
                }
                Ok(Probe::Vacant { .. }) if rec.kind == Kind::Delete => {}
                Ok(Probe::Vacant { .. }) | Ok(Probe::Full) => problem(
                    &mut report,
                    newest_at,
                    "no slot points at this record, the newest of its key".into(),
                ),
                Err(e) => problem(
                    &mut report,
                    newest_at,
                    format!("the probe for the key of this record fails: {e}"),
                ),
            }
            behind.reached(&fs.map, newest_at);
        }
        behind.finish(&fs.map, idx.offset);
        drop(order);

        // 3. The index: every slot no key's probe found is wrong; the
        //    counters must match what the slots hold.
        let mut used = 0u64;
        for b in 0..idx.capacity() {
            let s = index::load_slot(fs, idx, b)?;
            report.slots += 1;
            if s == slot::EMPTY {
                continue;
            }
            used += 1;
            let at = idx.slot_offset(b);
            if seen.contains(at) {
                continue;
            }
            let offset = slot::offset(s);
            let rec = match fs.record(offset, bound) {
                Ok(r) => r,
                Err(e) => {
                    problem(&mut report, at, format!("slot points at a bad record: {e}"));
                    continue;
                }
            };
            count(&rec);
            let hash = fs.hash(rec.key);
            if slot::slot_tag(s) != slot::tag(hash) {
                problem(
                    &mut report,
                    at,
                    "slot tag does not match its key's hash".into(),
                );
                continue;
            }
            match index::probe(fs, idx, hash, rec.key, Some(bound)) {
                Ok(Probe::Found { offset: o, .. }) if o == offset => problem(
                    &mut report,
                    at,
                    format!(
                        "slot points at {offset}, not the newest record of its key in a \
                         committed transaction"
                    ),
                ),
                _ => problem(
                    &mut report,
                    at,
                    "slot is not reachable by its key's probe".into(),
                ),
            }
        }
        report.live_keys = live_keys;
        if in_log != indexed {
            problem(
                &mut report,
                idx.offset,
                format!("the log holds {in_log} keys, the index {indexed}"),
            );
        }
        if fs.load(live::LIVE_KEYS) != indexed {
            problem(
                &mut report,
                live::LIVE_KEYS as u64,
                format!(
                    "live_keys says {}, the index holds {indexed}",
                    fs.load(live::LIVE_KEYS)
                ),
            );
        }
        if fs.load(live::USED_SLOTS) != used {
            problem(
                &mut report,
                live::USED_SLOTS as u64,
                format!(
                    "used_slots says {}, {used} are used",
                    fs.load(live::USED_SLOTS)
                ),
            );
        }
        Ok(report)
    }
}

/// Builds a clean file at `dst` from every record of `src` that still
/// verifies and belongs to a committed transaction; the newest record of
/// each key wins. `src` is only read; `dst` must not exist.
///
/// Streams like compaction: one pass over `src` finds each key's newest
/// record (remembering offsets, not keys), a second copies them in log
/// order into the new file; the pages of `src` are released behind both.
pub fn salvage(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<SalvageReport> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(src)
        .map_err(|e| Error::io("open", src, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", src, e))?
        .len();
    let (fs, _) = FileState::from_file(file, src, false)?;
    let mut report = SalvageReport::default();
    // (offset, key hash) of the records of the transaction being read.
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut newest = NewestByKey::with_capacity(0);
    for block in Walk::new(&fs, HEADER_SIZE, len, true) {
        match block {
            Block::Record(off, rec) => pending.push((off, fs.hash(rec.key))),
            Block::Commit(_, c) => {
                for (off, hash) in pending.drain(..) {
                    if off < c.txn_start {
                        report.uncommitted_records += 1;
                        continue;
                    }
                    report.records += 1;
                    newest.insert(&fs, len, hash, off)?;
                }
                release_reads_behind(&fs, &mut newest, c.txn_start);
            }
            Block::Index(..) => {}
            Block::Damaged(off, n) => report.damaged.push((off, n)),
        }
    }
    report.uncommitted_records += pending.len() as u64;
    drop(pending);
    let mut order = OffsetSet::new(HEADER_SIZE, len);
    for offset in newest.offsets() {
        order.insert(offset);
    }
    drop(newest);
    // (A salvaged file's index is sized for the records it gets.)
    let opts = Options::new().expected_keys(0);
    if dst.exists() {
        return Err(Error::io(
            "create",
            dst,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "salvage target exists"),
        ));
    }
    let mut block = Vec::new();
    report.keys = open::create_file_with(dst, &fs.header.name, 0, &opts, |out| {
        let mut kept = 0;
        let mut behind = ReleaseBehind::new(HEADER_SIZE);
        for offset in order.iter() {
            let rec = fs.record(offset, len)?;
            if rec.kind == Kind::Put {
                // Re-encoded: the padding after a record is not covered by
                // its CRC, so the copy gets clean padding.
                let n = record::put_len(rec.key.len(), rec.value.len(), rec.expiry).unwrap_or(0);
                block.clear();
                block.resize(n as usize, 0);
                record::encode_put(&mut block, rec.key, rec.value, rec.expiry)
                    .map_err(|e| Error::corruption(src, offset, e))?;
                out.append(&block)?;
                kept += 1;
            }
            behind.reached(&fs.map, offset);
        }
        behind.finish(&fs.map, len);
        Ok(kept)
    })?;
    Ok(report)
}
