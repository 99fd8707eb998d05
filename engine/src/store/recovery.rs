//! Recovery: reading the log back, finishing a dead writer's commit, and
//! rebuilding the index from scratch after an OS crash.
//!
//! Two situations, told apart by the live words:
//!
//! * **A writer process died** (same boot): the page cache holds every byte
//!   it wrote. `write_pending != 0` with `indexed_end == commit_end` means it
//!   died before its commit point: nothing to do but clear the flag.
//!   `indexed_end < commit_end` means it died while publishing: the records
//!   in between are committed, so [`replay`] publishes them again
//!   (publishing is idempotent) and recounts the counters.
//! * **The machine went down** (the boot id in the header differs from the
//!   running kernel's), or the live words are implausible: the index and
//!   live words may be torn. [`rebuild`] scans the log from the start,
//!   keeps every transaction whose records and commit marker verify, and
//!   builds a fresh index after the last one. Whatever verifying commits
//!   lie past the point where the log stops verifying are first copied to
//!   a *set-aside* file beside the data file ([`SetAside`]): recovery keeps
//!   a prefix of the log, and never destroys a commit that verifies.
//! * **The index disagrees with its own count** (slots zeroed or lost by
//!   damage from outside, in this boot): [`reindex`] builds a fresh index
//!   from the log, appended after it, when the whole committed log
//!   verifies; other processes keep reading meanwhile.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Commit, Kind, Prefix};

use super::file_state::{FileState, IndexView};
use super::index::{self, Counters};
use super::open::{ReleaseBehind, STREAM_CHUNK};
use super::walk::{Block, Walk};
use crate::error::{Error, Result};

/// What a scan of the log found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// End of the last valid transaction (and of any index blocks right
    /// after it): where new blocks may go.
    pub(crate) end: u64,
    /// Id of the last valid transaction.
    pub(crate) last_txn: u64,
    /// Number of records of every valid transaction.
    pub(crate) records: u64,
    /// Where and why the scan stopped, unless it reached `limit` or a run
    /// of zeros (a clean end).
    pub(crate) stopped: Option<(u64, String)>,
    /// Where it met a run of zeros, if it did: the end of the log, unless
    /// blocks that verify follow (zeroed damage).
    pub(crate) zeros_at: Option<u64>,
}

/// What failed to verify, without the path and advice an [`Error`] adds.
fn what(e: Error) -> String {
    match e {
        Error::Corruption { detail, .. } => detail,
        e => e.to_string(),
    }
}

/// Scans the log from its start up to `limit`, releasing the pages behind
/// it from this process's memory as it goes.
pub(crate) fn scan(fs: &FileState, limit: u64) -> Scan {
    let mut out = Scan {
        end: HEADER_SIZE,
        ..Scan::default()
    };
    let mut pos = HEADER_SIZE;
    let mut txn_start = pos;
    let mut pending = 0u64;
    let mut behind = ReleaseBehind::new(pos);
    let mut crc = crc32fast::Hasher::new();
    let stop = |at: u64, why: String, out: &mut Scan| {
        out.stopped = Some((at, why));
    };
    while pos + record::PREFIX_LEN as u64 <= limit {
        behind.reached(&fs.map, pos);
        let Some(head) = fs.map.bytes(pos, record::PREFIX_LEN as u64, limit) else {
            break;
        };
        if head.iter().all(|&b| b == 0) {
            out.zeros_at = Some(pos);
            break; // a clean end: never-written space (or zeroed damage)
        }
        let prefix = match Prefix::decode(head) {
            Ok(p) => p,
            Err(e) => {
                stop(pos, e.to_string(), &mut out);
                break;
            }
        };
        match prefix.kind {
            Kind::Index => {
                if pending > 0 {
                    stop(pos, "index block inside a transaction".into(), &mut out);
                    break;
                }
                match fs.index_at(pos, limit) {
                    Ok(view) => {
                        pos += view.len();
                        out.end = pos;
                        txn_start = pos;
                    }
                    Err(e) => {
                        stop(pos, what(e), &mut out);
                        break;
                    }
                }
            }
            Kind::Put | Kind::Delete => match fs.record(pos, limit) {
                Ok(rec) => {
                    crc.update(&prefix.crc.to_le_bytes());
                    pending += 1;
                    pos += rec.len;
                }
                Err(e) => {
                    stop(pos, what(e), &mut out);
                    break;
                }
            },
            Kind::Commit => {
                let marker = fs
                    .map
                    .bytes(pos, record::COMMIT_LEN, limit)
                    .ok_or_else(|| "commit marker runs past the end".to_string())
                    .and_then(|b| Commit::decode(b).map_err(|e| e.to_string()));
                let marker = match marker {
                    Ok(m) => m,
                    Err(e) => {
                        stop(pos, e, &mut out);
                        break;
                    }
                };
                let expected_crc = std::mem::take(&mut crc).finalize();
                if marker.txn_id != out.last_txn + 1
                    || marker.txn_start != txn_start
                    || u64::from(marker.records) != pending
                    || marker.records_crc != expected_crc
                {
                    stop(
                        pos,
                        format!(
                            "commit marker does not match its transaction (txn {} at {}, \
                             expected txn {} starting at {} with {} records)",
                            marker.txn_id,
                            marker.txn_start,
                            out.last_txn + 1,
                            txn_start,
                            pending
                        ),
                        &mut out,
                    );
                    break;
                }
                out.last_txn = marker.txn_id;
                out.records += std::mem::take(&mut pending);
                pos += record::COMMIT_LEN;
                out.end = pos;
                txn_start = pos;
            }
        }
    }
    behind.finish(&fs.map, pos);
    out
}

/// Committed data that recovery found past the end of the log it keeps,
/// and copied aside before reusing that space.
///
/// After a crash or power loss recovery keeps the longest prefix of the
/// log that verifies (FORMAT.md §6.3). When a damaged block ends that
/// prefix but commits that verify lie after it, those bytes are copied, at
/// their original offsets and after a copy of the header page, into a
/// sparse file beside the data file, named
/// `<data file>.set-aside-<offset>-<unix ms>`, before recovery zeroes
/// them. `carboy salvage SIDE NEW` reads every record of such a file that
/// still verifies; [`set_aside_files`](crate::set_aside_files) lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetAside {
    /// Where the kept log ends: the first byte set aside.
    pub offset: u64,
    /// How many bytes were set aside (up to the end of the last block
    /// that verifies).
    pub len: u64,
    /// Where the log stopped verifying, and why.
    pub damage: (u64, String),
    /// Commit markers that verify among the bytes set aside.
    pub commits: u64,
    /// Put and delete records that verify among them.
    pub records: u64,
    /// The file they were copied to (`None` in a plan not yet carried
    /// out, see [`inspect_recovery`](crate::inspect_recovery)).
    pub path: Option<PathBuf>,
}

/// Looks past the end of a scan for blocks that verify: commits that
/// recovery must not destroy.
pub(crate) fn find_set_aside(fs: &FileState, scan: &Scan, limit: u64) -> Option<SetAside> {
    // The committed end the header claims (after a crash, possibly stale):
    // records below it were committed even if their marker is damaged.
    let claimed = fs.commit_end();
    let (mut commits, mut records, mut claimed_records, mut end) = (0u64, 0u64, 0u64, scan.end);
    for block in Walk::new(fs, scan.end, limit, true) {
        match block {
            Block::Record(off, rec) => {
                records += 1;
                end = end.max(off + rec.len);
                if off + rec.len <= claimed {
                    claimed_records += 1;
                }
            }
            Block::Commit(off, _) => {
                commits += 1;
                end = end.max(off + record::COMMIT_LEN);
            }
            Block::Index(..) | Block::Damaged(..) => {}
        }
    }
    // Records with no commit marker after them, past the end the header
    // claims, are a torn transaction that never committed: nothing to keep.
    if commits == 0 && claimed_records == 0 {
        return None;
    }
    let damage = match (&scan.stopped, scan.zeros_at) {
        (Some(stopped), _) => stopped.clone(),
        (None, Some(at)) => (at, "zeroed bytes where the log goes on".to_string()),
        (None, None) => (scan.end, "the log ends early".to_string()),
    };
    Some(SetAside {
        offset: scan.end,
        len: end - scan.end,
        damage,
        commits,
        records,
        path: None,
    })
}

/// Copies the header page and the bytes of `aside` (at their offsets)
/// into a new sparse file beside the data file, and makes it durable.
fn write_set_aside(fs: &FileState, aside: &mut SetAside, limit: u64) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let data = fs.path();
    let mut name = data.as_os_str().to_owned();
    name.push(format!(".set-aside-{}-{now}", aside.offset));
    let path = PathBuf::from(name);
    let io = |op, e| Error::io(op, &path, e);
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io("create", e))?;
    let page = fs
        .map
        .bytes(0, HEADER_SIZE, limit)
        .ok_or_else(|| fs.corruption(0, "header page outside the file"))?;
    file.write_all_at(page, 0).map_err(|e| io("write", e))?;
    let end = aside.offset + aside.len;
    let mut at = aside.offset;
    while at < end {
        let step = (end - at).min(STREAM_CHUNK);
        let bytes = fs
            .map
            .bytes(at, step, limit)
            .ok_or_else(|| fs.corruption(at, "set-aside range outside the file"))?;
        file.write_all_at(bytes, at).map_err(|e| io("write", e))?;
        at += step;
    }
    file.sync_all().map_err(|e| io("fsync", e))?;
    super::open::sync_dir(&path)?;
    aside.path = Some(path);
    Ok(())
}

/// The set-aside files recovery left beside the data file at `data_path`
/// (see [`SetAside`]), oldest first. Each holds commits that verified but
/// lay past a damaged block when the log was recovered.
pub fn set_aside_files(data_path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let data_path = data_path.as_ref();
    let (Some(dir), Some(stem)) = (data_path.parent(), data_path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = stem.to_owned();
    prefix.push(".set-aside-");
    let prefix = prefix.as_encoded_bytes().to_vec();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(&prefix) {
            found.push(data_path.with_file_name(name));
        }
    }
    // Named ...-<offset>-<unix ms>: by time.
    found.sort_by_key(|p| {
        let name = p.to_string_lossy();
        let ms = name.rsplit('-').next().and_then(|t| t.parse::<u64>().ok());
        (ms, p.clone())
    });
    Ok(found)
}

/// Reads the running kernel's boot id, when the platform has one.
pub(crate) fn boot_id() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let lo = u64::from_str_radix(&hex[..16], 16).ok()?;
    let hi = u64::from_str_radix(&hex[16..], 16).ok()?;
    Some((lo, hi))
}

/// True when the file was last known good under another boot.
pub(crate) fn from_another_boot(fs: &FileState) -> bool {
    match boot_id() {
        Some((lo, hi)) => fs.load(live::BOOT_ID_LO) != lo || fs.load(live::BOOT_ID_HI) != hi,
        None => false,
    }
}

/// True when a writer died during a commit (in this boot): recovery
/// replays what it committed, or rebuilds.
pub(crate) fn writer_died(fs: &FileState) -> bool {
    fs.load(live::WRITE_PENDING) != 0 || fs.load(live::INDEXED_END) != fs.commit_end()
}

/// Checks `commit_end` against the log: the block that ends there (or
/// just before the current index block, when the last commit grew the
/// index) must be the commit marker of transaction `txn_id`. A
/// `commit_end` damaged to a lower, still plausible value would otherwise
/// hide committed transactions, and the next commit would write over
/// them. One 48-byte read. Called with the writer lock held, after
/// [`recover_locked`]. Returns what is wrong.
pub(crate) fn end_damage(fs: &FileState) -> Result<Option<String>> {
    let end = fs.commit_end();
    let txn = fs.load(live::TXN_ID);
    let idx = fs.index()?;
    let marker_end = if idx.offset + idx.len() == end {
        idx.offset
    } else {
        end
    };
    let found = marker_end
        .checked_sub(record::COMMIT_LEN)
        .filter(|&at| at >= HEADER_SIZE)
        .and_then(|at| fs.map.bytes(at, record::COMMIT_LEN, end))
        .and_then(|b| Commit::decode(b).ok());
    if let Some(c) = found
        && c.txn_id != txn
    {
        return Ok(Some(format!(
            "the committed end {end} follows the commit marker of txn {}, but the header's \
             last txn is {txn}",
            c.txn_id
        )));
    }
    // (A marker that does not verify there is damage to the log, which
    // `verify` reports; no reason to doubt the live words.)
    //
    // Above the committed end lie only blocks of transactions that never
    // committed (dropped, or cut short by an error before the commit
    // point): their markers, if any, carry the next id. A marker there that
    // verifies with an id already committed means the end was lowered.
    let file_len = file_len(fs)?;
    let mut pos = end;
    while let Ok(p) = fs.prefix(pos, file_len) {
        match p.kind {
            Kind::Commit => {
                let marker = fs
                    .map
                    .bytes(pos, record::COMMIT_LEN, file_len)
                    .and_then(|b| Commit::decode(b).ok());
                match marker {
                    Some(c) if c.txn_id <= txn && c.txn_id > 0 => {
                        return Ok(Some(format!(
                            "the commit marker of txn {} at {pos} lies above the committed \
                             end {end} (last txn {txn}): the end hides committed transactions",
                            c.txn_id
                        )));
                    }
                    _ => break,
                }
            }
            Kind::Put | Kind::Delete if fs.record(pos, file_len).is_ok() => {}
            Kind::Index if fs.index_at(pos, file_len).is_ok() => {}
            _ => break,
        }
        pos += p.block_len();
    }
    Ok(None)
}

/// Checks the current index against the count the header keeps: the
/// occupied slots must number `used_slots`, and each must point into the
/// committed log. One sequential read of the slots (8 bytes a slot, no
/// record is read): cheap enough for every open. Damage that zeroes slots
/// (their keys would read as absent) or fills them with garbage is found
/// here; a slot changed to point at another valid record is not (see
/// DESIGN.md, "Index damage"). Called with the writer lock held, after
/// [`recover_locked`], so the count is exact. Returns what is wrong.
pub(crate) fn index_damage(fs: &FileState) -> Result<Option<String>> {
    let idx = fs.index()?;
    let bound = fs.commit_end();
    let index_end = idx.offset + idx.len();
    let (mut used, mut outside, mut sum) = (0u64, 0u64, 0u64);
    // Branch-free: at half load, a branch on "occupied" mispredicts half
    // the time, which cost three times the memory reads (measured: 7 ms
    // against 2 ms for 2^21 slots).
    let span = bound.saturating_sub(HEADER_SIZE);
    let mut count = |s: u64| {
        sum = sum.wrapping_add(s);
        let occupied = u64::from(s != carboy_format::slot::EMPTY);
        used += occupied;
        let at = carboy_format::slot::offset(s);
        outside += occupied & u64::from(at.wrapping_sub(HEADER_SIZE) >= span);
    };
    if let Some(slots) = fs.map.words(idx.slot_offset(0), idx.capacity(), index_end) {
        slots
            .iter()
            .for_each(|w| count(u64::from_le(w.load(Ordering::Relaxed))));
    } else {
        // A read-only mapping (`inspect_recovery`): word by word.
        for b in 0..idx.capacity() {
            let at = idx.slot_offset(b);
            let s = fs
                .map
                .load_word(at, index_end)
                .ok_or_else(|| fs.corruption(at, "index slot outside the file"))?;
            count(s);
        }
    }
    let said = fs.load(live::USED_SLOTS);
    let txn = fs.load(live::TXN_ID);
    let sum_exact = fs.load(live::SLOT_SUM_TXN) == txn;
    let sum_said = fs.load(live::SLOT_SUM);
    Ok(if used != said {
        Some(format!(
            "index at {} damaged: {used} of its slots are in use, the header counts {said}",
            idx.offset
        ))
    } else if outside > 0 {
        Some(format!(
            "index at {} damaged: {outside} slots point outside the committed log",
            idx.offset
        ))
    } else if sum_exact && sum != sum_said {
        Some(format!(
            "index at {} damaged: its slots add up to {sum:#x}, the header says {sum_said:#x}",
            idx.offset
        ))
    } else {
        if !sum_exact {
            // Last written by a build that does not keep the sum (or never
            // summed): from now on it is kept. (A no-op on a read-only
            // mapping.)
            super::writer::set_slot_sum(fs, sum, txn);
        }
        None
    })
}

/// What opening a file would do to recover it, found without changing it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryPlan {
    /// Why the file needs recovery; `None` when an open would change
    /// nothing (the rest then describes the log as it is).
    pub reason: Option<String>,
    /// Whether recovery rebuilds the index from the log (after a reboot,
    /// implausible live words, a damaged index), rather than finishing a
    /// dead writer's commit.
    pub rebuilds: bool,
    /// Where the log that verifies ends: what a rebuild keeps.
    pub log_end: u64,
    /// The committed end the header claims.
    pub commit_end: u64,
    /// Where the header says the current index is.
    pub index_offset: u64,
    /// Whether the index disagrees with the count the header keeps (see
    /// [`Store::verify`](crate::Store::verify) for a full check).
    pub index_damaged: bool,
    /// Whether `commit_end` disagrees with the last commit marker and
    /// `txn_id` (a rebuild then finds the log's real end).
    pub end_damaged: bool,
    /// Transactions and records that verify up to `log_end`.
    pub transactions: u64,
    /// Put and delete records among them.
    pub records: u64,
    /// Where, below the end of the file, the log stopped verifying, and why
    /// (`None`: it ends in never-written space).
    pub damage: Option<(u64, String)>,
    /// Commits that verify past the damage, which a rebuild sets aside.
    pub set_aside: Option<SetAside>,
}

/// Says what opening the data file at `path` would do to recover it,
/// reading it only (no lock is taken and nothing is written). For
/// `carboy check`, which must not change what it checks.
pub fn inspect_recovery(path: impl AsRef<Path>) -> Result<RecoveryPlan> {
    let path = path.as_ref();
    let (fs, plausible) = FileState::open_read_only(path)?;
    let file_len = file_len(&fs)?;
    let reboot = from_another_boot(&fs);
    let died = plausible && writer_died(&fs);
    let trusted = plausible && !reboot && !died;
    let end = if trusted { end_damage(&fs)? } else { None };
    let index = if trusted && end.is_none() {
        index_damage(&fs)?
    } else {
        None
    };
    let end_damaged = end.is_some();
    let index_damaged = index.is_some();
    let reason = if !plausible {
        Some("its live words are implausible".to_string())
    } else if reboot {
        Some("it was last written before the machine rebooted: its index is not trusted".into())
    } else if died {
        Some("a writer died during a commit".into())
    } else {
        end.or(index)
    };
    let rebuilds = !plausible || reboot || (reason.is_some() && !died);
    let scan = scan(&fs, file_len);
    let set_aside = find_set_aside(&fs, &scan, file_len);
    Ok(RecoveryPlan {
        rebuilds,
        log_end: scan.end,
        commit_end: fs.commit_end(),
        index_offset: fs.load(live::INDEX_OFFSET),
        index_damaged,
        end_damaged,
        transactions: scan.last_txn,
        records: scan.records,
        damage: scan
            .stopped
            .clone()
            .or_else(|| set_aside.as_ref().map(|a| a.damage.clone())),
        set_aside,
        reason,
    })
}

/// Finishes what a dead writer left. Called with the writer lock held.
pub(crate) fn recover_locked(fs: &FileState) -> Result<()> {
    let pending = fs.load(live::WRITE_PENDING);
    let indexed = fs.load(live::INDEXED_END);
    let commit_end = fs.commit_end();
    if pending == 0 && indexed == commit_end {
        return Ok(());
    }
    if indexed > commit_end || indexed < HEADER_SIZE || replay(fs, indexed, commit_end).is_err() {
        rebuild(fs)?;
    }
    fs.store(live::WRITE_PENDING, 0);
    Ok(())
}

/// Publishes the committed records in `from..to` and recounts.
fn replay(fs: &FileState, from: u64, to: u64) -> Result<()> {
    let idx = fs.index()?;
    let mut offsets = Vec::new();
    let mut last_commit = None;
    let mut pos = from;
    while pos < to {
        let p = fs.prefix(pos, to)?;
        match p.kind {
            Kind::Put | Kind::Delete => offsets.push(pos),
            Kind::Commit => {
                let bytes = fs.block_bytes(pos, record::COMMIT_LEN, to)?;
                last_commit = Some(Commit::decode(bytes).map_err(|e| fs.corruption(pos, e))?);
            }
            Kind::Index => {}
        }
        pos += p.block_len();
    }
    let used = fs.load(live::USED_SLOTS);
    if index::needs_growth(idx, used, offsets.len() as u64) {
        return Err(fs.corruption(pos, "replay needs a larger index"));
    }
    let mut ignored = Counters::default();
    for off in offsets {
        index::publish(fs, idx, off, to, &mut ignored)?;
    }
    // The dead writer may have stopped between storing `commit_end` and
    // `txn_id`: the log, not the live word, says which transaction is last.
    if let Some(marker) = last_commit {
        fs.store(live::TXN_ID, marker.txn_id);
        fs.store(live::LAST_COMMIT_MS, marker.unix_ms);
    }
    recount(fs, idx, to)?;
    fs.store(live::INDEXED_END, to);
    Ok(())
}

/// Recomputes the counter live words from the index.
fn recount(fs: &FileState, idx: IndexView, bound: u64) -> Result<()> {
    let (mut live_keys, mut used, mut expiring, mut live_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut sum = 0u64;
    for entry in index::entries(fs, idx, bound) {
        let (s, rec) = entry?;
        used += 1;
        sum = sum.wrapping_add(s);
        if rec.kind == Kind::Put {
            live_keys += 1;
            live_bytes += rec.len;
            if rec.expiry != carboy_format::Expiry::Never {
                expiring += 1;
            }
        }
    }
    fs.store(live::LIVE_KEYS, live_keys);
    fs.store(live::USED_SLOTS, used);
    fs.store(live::EXPIRING_KEYS, expiring);
    let total = bound.saturating_sub(HEADER_SIZE);
    fs.store(
        live::DEAD_BYTES,
        total.saturating_sub(live_bytes + idx.len()),
    );
    // As of the last transaction in the log, which the caller has stored.
    super::writer::set_slot_sum(fs, sum, fs.load(live::TXN_ID));
    Ok(())
}

/// Publishes every record of the verified log `HEADER_SIZE..end` (what a
/// [`scan`] accepted) into the empty index `idx`, in log order, releasing
/// the pages behind. Returns the counters, complete since the index started
/// empty: what [`recount`] would find, with commit markers and old index
/// blocks counted as dead bytes, as `recount` counts them.
///
/// A key written again is compared with its older record, anywhere behind,
/// and reading that faults its page (and the cached pages around it) back
/// in; those stay resident. Releasing everything behind at each step would
/// drop them again, at the price of faulting them in once more for each
/// later comparison (measured: a third more CPU for a rebuild of a file
/// with many overwrites), for a peak near the file's size either way: only
/// the step's own pages are released.
fn publish_log(fs: &FileState, idx: IndexView, end: u64) -> Result<Counters> {
    let mut counters = Counters::default();
    let mut pos = HEADER_SIZE;
    let mut behind = ReleaseBehind::new(pos);
    while pos < end {
        let p = fs.prefix(pos, end)?;
        match p.kind {
            Kind::Put | Kind::Delete => {
                let rec = fs.record(pos, end)?;
                let hash = fs.hash(rec.key);
                index::publish_record(fs, idx, pos, &rec, hash, end, &mut counters)?;
            }
            Kind::Commit | Kind::Index => counters.dead_bytes += p.block_len() as i64,
        }
        pos += p.block_len();
        behind.reached(&fs.map, pos);
    }
    behind.finish(&fs.map, end);
    Ok(counters)
}

/// Rebuilds the index and every live word from the log. Called with the
/// writer lock held, when no reader can be using the file's index (after a
/// reboot), or when every reader will reach only blocks the scan keeps.
///
/// Keeps the longest prefix of the log that verifies. Commits that verify
/// past its end are first copied to a set-aside file (returned); if that
/// copy cannot be made durable, nothing is changed and the error returned.
pub(crate) fn rebuild(fs: &FileState) -> Result<Option<SetAside>> {
    let file_len = file_len(fs)?;
    let synced = fs.load(live::SYNCED_END);
    if synced > file_len {
        return Err(fs.corruption(
            file_len,
            format!(
                "file is {file_len} bytes long but its first {synced} bytes were made durable: it was truncated, and committed data is gone"
            ),
        ));
    }
    let scan = scan(fs, file_len);
    let stopped = scan.stopped.clone().or_else(|| {
        scan.zeros_at
            .map(|at| (at, "zeroed bytes inside the log".to_string()))
    });
    if let Some((at, why)) = &stopped
        && *at < synced
    {
        return Err(fs.corruption(
            *at,
            format!(
                "log damaged below its durable end {synced}: {why}; committed data would be \
                     lost by truncating here"
            ),
        ));
    }
    let mut aside = find_set_aside(fs, &scan, file_len);
    if let Some(aside) = &mut aside {
        write_set_aside(fs, aside, file_len)?;
    }
    index_after(fs, &scan, file_len, synced)?;
    Ok(aside)
}

/// Builds a fresh index from the log, appended after it, when the index
/// no longer matches its own count, or the committed end its log (damage
/// from outside). Called with the writer lock held, in the boot that wrote
/// the file: other processes may be reading, so nothing below `commit_end`
/// may change, and the whole committed log must verify; if it does not,
/// the file is refused. With `past_end`, the log is read on past
/// `commit_end` (which hides committed transactions), else up to it.
pub(crate) fn reindex(fs: &FileState, why: &str, past_end: bool) -> Result<()> {
    let commit_end = fs.commit_end();
    let file_len = file_len(fs)?;
    let scan = scan(fs, if past_end { file_len } else { commit_end });
    if scan.end < commit_end || (!past_end && scan.end != commit_end) {
        let (at, what) = scan
            .stopped
            .or_else(|| scan.zeros_at.map(|at| (at, "zeroed bytes".into())))
            .unwrap_or((scan.end, "the log ends early".into()));
        return Err(fs.corruption(
            at,
            format!(
                "{why}, and the log that would rebuild it is damaged too ({what}): nothing is \
                 rebuilt while other processes may be reading"
            ),
        ));
    }
    index_after(fs, &scan, file_len, fs.load(live::SYNCED_END))
}

fn file_len(fs: &FileState) -> Result<u64> {
    Ok(fs
        .map
        .file()
        .metadata()
        .map_err(|e| Error::io("stat", fs.path(), e))?
        .len())
}

/// Writes a fresh index block at the end of what `scan` kept, publishes
/// every kept record into it, zeroes everything after it, and sets every
/// live word.
fn index_after(fs: &FileState, scan: &Scan, file_len: u64, synced: u64) -> Result<()> {
    let log2 = index::log2_for(scan.records);
    let idx = IndexView {
        offset: scan.end,
        log2,
    };
    let end = idx.offset + idx.len();
    let alloc_end = fs
        .load(live::ALLOC_END)
        .clamp(scan.end, file_len.max(scan.end));
    let alloc_end = if end > file_len {
        let new_len = end.next_multiple_of(1 << 16);
        fs.map
            .allocate(file_len, new_len)
            .map_err(|e| Error::io("extend (fallocate)", fs.path(), e))?;
        new_len
    } else {
        alloc_end.max(end).min(file_len)
    };
    let header = record::encode_index_header(log2).map_err(|e| fs.corruption(idx.offset, e))?;
    fs.map
        .write(idx.offset, &header, alloc_end)
        .and_then(|()| {
            fs.map.zero(
                idx.offset + record::INDEX_HEADER_LEN as u64,
                idx.len() - record::INDEX_HEADER_LEN as u64,
                alloc_end,
            )
        })
        .map_err(|e| Error::io("write", fs.path(), e))?;
    let counters = publish_log(fs, idx, scan.end)?;
    // Zero whatever lies past the rebuilt log, and make that durable, so
    // that no stale transaction from before the crash can line up behind a
    // new one in a later scan (FORMAT.md, "Recovery"). In steps, releasing
    // each step's pages (dirty: the page cache keeps them, and the sync
    // below writes them).
    let stale_end = file_len.min(alloc_end);
    let mut at = end;
    while at < stale_end {
        let step = (stale_end - at).min(STREAM_CHUNK);
        fs.map
            .zero(at, step, alloc_end)
            .map_err(|e| Error::io("write", fs.path(), e))?;
        fs.map.release(at, at + step);
        at += step;
    }
    fs.map
        .sync()
        .map_err(|e| Error::io("fsync", fs.path(), e))?;
    fs.store(live::ALLOC_END, alloc_end);
    fs.store(live::COMMIT_END, end);
    fs.store(live::INDEX_OFFSET, idx.offset);
    fs.store(live::TXN_ID, scan.last_txn);
    fs.store(live::SYNCED_END, synced.min(scan.end));
    fs.store(live::LIVE_KEYS, counters.live_keys.max(0) as u64);
    fs.store(live::USED_SLOTS, counters.used_slots.max(0) as u64);
    fs.store(live::EXPIRING_KEYS, counters.expiring_keys.max(0) as u64);
    fs.store(live::DEAD_BYTES, counters.dead_bytes.max(0) as u64);
    super::writer::set_slot_sum(fs, counters.slot_sum, scan.last_txn);
    fs.store(live::INDEXED_END, end);
    fs.store(live::WRITE_PENDING, 0);
    if let Some((lo, hi)) = boot_id() {
        fs.store(live::BOOT_ID_LO, lo);
        fs.store(live::BOOT_ID_HI, hi);
    }
    std::sync::atomic::fence(Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use carboy_format::Expiry;

    #[test]
    fn rebuild_counts_what_recount_counts() {
        let dir = tempfile::tempdir().unwrap();
        // A small first index, so that the log holds old index blocks too.
        let store = Options::new()
            .expected_keys(1)
            .open(dir.path().join("counted.carboy"))
            .unwrap();
        for round in 0..3u32 {
            let mut txn = store.transaction().unwrap();
            for i in 0..300u32 {
                let key = format!("key/{i}");
                let value = format!("value {i} of round {round}").repeat(1 + i as usize % 3);
                if i % 7 == 0 {
                    let expiry = Expiry::AtUnixMs(u64::MAX - 1);
                    txn.put_with_expiry(key.as_bytes(), value.as_bytes(), expiry)
                        .unwrap();
                } else {
                    txn.put(key.as_bytes(), value.as_bytes()).unwrap();
                }
            }
            for i in (round..300).step_by(11) {
                txn.delete(format!("key/{i}").as_bytes()).unwrap();
            }
            txn.commit().unwrap();
        }
        store.delete(b"key/1").unwrap();
        store.put(b"key/2", b"once more").unwrap();
        let guard = store.shared.write_lock().unwrap();
        let fs = &guard.fs;
        let words = || {
            [
                live::LIVE_KEYS,
                live::USED_SLOTS,
                live::EXPIRING_KEYS,
                live::DEAD_BYTES,
            ]
            .map(|w| fs.load(w))
        };
        rebuild(fs).unwrap();
        let rebuilt = words();
        recount(fs, fs.index().unwrap(), fs.commit_end()).unwrap();
        assert_eq!(rebuilt, words());
        // Round 2 deleted 28 keys (2, 13, ... 299), then key/1 went and
        // key/2 came back.
        assert_eq!(rebuilt[0], 300 - 28 - 1 + 1);
        assert!(rebuilt[2] > 0 && rebuilt[3] > 0, "{rebuilt:?}");
    }
}
