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
//!   builds a fresh index after the last one.

use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Commit, Kind, Prefix};

use super::file_state::{FileState, IndexView};
use super::index::{self, Counters};
use crate::error::{Error, Result};

/// What a scan of the log found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// End of the last valid transaction (and of any index blocks right
    /// after it): where new blocks may go.
    pub(crate) end: u64,
    /// Id of the last valid transaction.
    pub(crate) last_txn: u64,
    /// Offsets of the records of every valid transaction, in log order.
    pub(crate) records: Vec<u64>,
    /// Where and why the scan stopped, unless it reached `limit` or a run
    /// of zeros (a clean end).
    pub(crate) stopped: Option<(u64, String)>,
}

/// Scans the log from its start up to `limit`.
pub(crate) fn scan(fs: &FileState, limit: u64) -> Scan {
    let mut out = Scan {
        end: HEADER_SIZE,
        ..Scan::default()
    };
    let mut pos = HEADER_SIZE;
    let mut txn_start = pos;
    let mut pending: Vec<u64> = Vec::new();
    let mut crc = crc32fast::Hasher::new();
    let stop = |at: u64, why: String, out: &mut Scan| {
        out.stopped = Some((at, why));
    };
    while pos + record::PREFIX_LEN as u64 <= limit {
        let Some(head) = fs.map.bytes(pos, record::PREFIX_LEN as u64, limit) else {
            break;
        };
        if head.iter().all(|&b| b == 0) {
            break; // a clean end: never-written space
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
                if !pending.is_empty() {
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
                        stop(pos, e.to_string(), &mut out);
                        break;
                    }
                }
            }
            Kind::Put | Kind::Delete => match fs.record(pos, limit) {
                Ok(rec) => {
                    crc.update(&prefix.crc.to_le_bytes());
                    pending.push(pos);
                    pos += rec.len;
                }
                Err(e) => {
                    stop(pos, e.to_string(), &mut out);
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
                    || marker.records as usize != pending.len()
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
                            pending.len()
                        ),
                        &mut out,
                    );
                    break;
                }
                out.last_txn = marker.txn_id;
                out.records.append(&mut pending);
                pos += record::COMMIT_LEN;
                out.end = pos;
                txn_start = pos;
            }
        }
    }
    out
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
        let head = fs
            .map
            .bytes(pos, record::PREFIX_LEN as u64, to)
            .ok_or_else(|| fs.corruption(pos, "block runs past the committed end"))?;
        let p = Prefix::decode(head).map_err(|e| fs.corruption(pos, e))?;
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
    recount(fs, idx, to)?;
    // The dead writer may have stopped between storing `commit_end` and
    // `txn_id`: the log, not the live word, says which transaction is last.
    if let Some(marker) = last_commit {
        fs.store(live::TXN_ID, marker.txn_id);
        fs.store(live::LAST_COMMIT_MS, marker.unix_ms);
    }
    fs.store(live::INDEXED_END, to);
    Ok(())
}

/// Recomputes the counter live words from the index.
fn recount(fs: &FileState, idx: IndexView, bound: u64) -> Result<()> {
    let (mut live_keys, mut used, mut expiring, mut live_bytes) = (0u64, 0u64, 0u64, 0u64);
    for entry in index::entries(fs, idx, bound) {
        let (_, rec) = entry?;
        used += 1;
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
    Ok(())
}

/// Rebuilds the index and every live word from the log. Called with the
/// writer lock held, when no reader can be using the file's index (after a
/// reboot), or when every reader will reach only blocks the scan keeps.
pub(crate) fn rebuild(fs: &FileState) -> Result<()> {
    let file_len = fs
        .map
        .file()
        .metadata()
        .map_err(|e| Error::io("stat", fs.path(), e))?
        .len();
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
    if let Some((at, why)) = &scan.stopped
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
    let log2 = index::log2_for(scan.records.len() as u64);
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
    let mut ignored = Counters::default();
    for &off in &scan.records {
        index::publish(fs, idx, off, idx.offset, &mut ignored)?;
    }
    // Zero whatever lies past the rebuilt log, and make that durable, so
    // that no stale transaction from before the crash can line up behind a
    // new one in a later scan (FORMAT.md, "Recovery").
    let stale = file_len.min(alloc_end).saturating_sub(end);
    if stale > 0 {
        fs.map
            .zero(end, stale, alloc_end)
            .map_err(|e| Error::io("write", fs.path(), e))?;
    }
    fs.map
        .sync()
        .map_err(|e| Error::io("fsync", fs.path(), e))?;
    fs.store(live::ALLOC_END, alloc_end);
    fs.store(live::COMMIT_END, end);
    fs.store(live::INDEX_OFFSET, idx.offset);
    fs.store(live::TXN_ID, scan.last_txn);
    fs.store(live::SYNCED_END, synced.min(scan.end));
    recount(fs, idx, end)?;
    fs.store(live::INDEXED_END, end);
    fs.store(live::WRITE_PENDING, 0);
    if let Some((lo, hi)) = boot_id() {
        fs.store(live::BOOT_ID_LO, lo);
        fs.store(live::BOOT_ID_HI, hi);
    }
    std::sync::atomic::fence(Ordering::SeqCst);
    Ok(())
}
