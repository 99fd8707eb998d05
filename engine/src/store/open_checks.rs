//! The checks an open makes before trusting a file in this boot (a dead
//! writer, a committed end that hides commits, an index that disagrees with
//! its count or sum), and the read-only inspection `carboy check` builds on
//! them.

use std::path::Path;
use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Commit, Kind};

use super::boot::boot_id;
use super::file_state::FileState;
use super::recovery::file_len;
use super::scan::scan;
use super::set_aside::{SetAside, find_set_aside};
use crate::error::Result;

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
/// [`recover_locked`](super::recovery::recover_locked). Returns what is
/// wrong.
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

/// Checks the current index against the count and sum the header keeps:
/// the occupied slots must number `used_slots` and add up to `slot_sum`
/// (when it is exact, FORMAT.md §4.4), and each must point into the
/// committed log. One sequential read of the slots (8 bytes a slot, no
/// record is read): cheap enough for every open (DESIGN.md, "Index
/// damage"). Called with the writer lock held, after
/// [`recover_locked`](super::recovery::recover_locked), so the count is
/// exact. Returns what is wrong.
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
            super::index::set_slot_sum(fs, sum, txn);
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
