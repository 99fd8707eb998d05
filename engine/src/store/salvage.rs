//! Salvage: a clean file from every record of a damaged one that still
//! verifies.

use std::path::Path;

use carboy_format::header::HEADER_SIZE;
use carboy_format::record::{self, Kind};

use super::file_state::FileState;
use super::offsets::{NewestByKey, OffsetSet};
use super::open::{self, ReleaseBehind};
use super::walk::{Block, Walk, release_reads_behind};
use crate::error::{Error, Result};
use crate::options::Options;

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

/// Builds a clean file at `dst` from every record of `src` that still
/// verifies and belongs to a committed transaction; the newest record of
/// each key wins. `src` is only read (opened and mapped read-only: read
/// access is enough); `dst` must not exist.
///
/// Streams like compaction: one pass over `src` finds each key's newest
/// record (remembering offsets, not keys), a second copies them in log
/// order into the new file; the pages of `src` are released behind both.
pub fn salvage(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<SalvageReport> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    // Read-only, and mapped read-only: salvage needs only read access.
    let file = std::fs::File::open(src).map_err(|e| Error::io("open", src, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", src, e))?
        .len();
    let (fs, _) = FileState::from_file_read_only(file, src)?;
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
