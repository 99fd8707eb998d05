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

use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Commit, Kind};

use super::boot::boot_id;
use super::file_state::{FileState, IndexView};
use super::index::{self, Counters};
use super::new_file::{ReleaseBehind, STREAM_CHUNK};
use super::scan::{Scan, scan};
use super::set_aside::{SetAside, find_set_aside, write_set_aside};
use crate::error::{Error, Result};

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
    super::index::set_slot_sum(fs, sum, fs.load(live::TXN_ID));
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

pub(crate) fn file_len(fs: &FileState) -> Result<u64> {
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
    super::index::set_slot_sum(fs, counters.slot_sum, scan.last_txn);
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
