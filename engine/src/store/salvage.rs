//! Salvage: a clean file from every record of a damaged one that still
//! verifies.

use std::path::Path;

use carboy_format::header::HEADER_SIZE;
use carboy_format::record::{self, Kind};

use super::file_state::FileState;
use super::new_file::{self, ReleaseBehind};
use super::offsets::{NewestByKey, OffsetSet};
use super::options::Options;
use super::walk::{Block, Walk, release_reads_behind};
use crate::error::{Error, Result};

/// What [`salvage`](crate::salvage) recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// Keys written to the new file: those whose newest committed record
    /// is a put.
    pub keys: u64,
    /// Keys whose newest committed record is a delete: left out of the new
    /// file, so they stay deleted (older puts of them are not resurrected).
    pub deleted_keys: u64,
    /// Records (puts and deletes) that verified and belonged to a
    /// committed transaction.
    pub records: u64,
    /// Records that verified but whose transaction's commit marker was not
    /// found (dropped: they may never have committed).
    pub uncommitted_records: u64,
    /// Damaged byte ranges skipped, as (offset, length), in file order:
    /// bytes that are no block that verifies (flipped, garbage, or zeros
    /// followed by a block that verifies, such as a zeroed record or the
    /// hole of a sparse file), each up to the next block that verifies.
    /// Zeros that run to the end of the file are where the log ends, not
    /// damage.
    pub damaged: Vec<(u64, u64)>,
}

/// Builds a clean file at `dst` from every record of `src` that still
/// verifies and belongs to a committed transaction. `src` is only read (it
/// is opened read-only and mapped read-only, so read access is enough, and
/// no lock is taken); `dst` must not exist.
///
/// Walks the whole of `src` after its header page (up to the file's
/// length; the live words are not trusted), and resynchronizes, in 8-byte
/// steps, after every damaged range, whatever it holds: flipped bits,
/// garbage or zeros. So every block that verifies is seen, wherever it is
/// (a zero hole before the log bytes of a sparse file is only one damaged
/// range).
///
/// * A put or delete record counts as committed when a commit marker that
///   verifies follows it with `txn_start` at or before the record; the
///   others (a transaction whose marker is damaged or was never written)
///   are dropped and counted in
///   [`uncommitted_records`](SalvageReport::uncommitted_records).
/// * Of the committed records, the newest of each key in log order wins:
///   a put is copied (key, value and expiry), a delete leaves the key
///   absent ([`deleted_keys`](SalvageReport::deleted_keys)).
/// * Every damaged range is reported in [`damaged`](SalvageReport::damaged);
///   zeros running to the end of the file (the never-written, preallocated
///   tail) end the log and are not damage.
///
/// Streams like compaction: one pass over `src` finds each key's newest
/// record (remembering offsets, not keys), a second copies them in log
/// order into the new file; the pages of `src` are released behind both.
pub fn salvage(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<SalvageReport> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    if dst.exists() {
        return Err(Error::io(
            "create",
            dst,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "salvage target exists"),
        ));
    }
    // Read-only, and mapped read-only: salvage needs only read access.
    let file = super::file_state::open_for_reading(src)?;
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
    // Sized for the log, not the file: a file may be preallocated (or
    // sparse) far past its last record.
    let log_end = newest.offsets().max().map_or(HEADER_SIZE, |o| o + 8);
    let mut order = OffsetSet::new(HEADER_SIZE, log_end);
    for offset in newest.offsets() {
        order.insert(offset);
    }
    drop(newest);
    // (A salvaged file's index is sized for the records it gets.)
    let opts = Options::new().expected_keys(0);
    let mut block = Vec::new();
    let mut deleted_keys = 0;
    report.keys = new_file::create_file_with(dst, &fs.header.name, 0, &opts, |out| {
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
            } else {
                deleted_keys += 1;
            }
            behind.reached(&fs.map, offset);
        }
        behind.finish(&fs.map, len);
        Ok(kept)
    })?;
    report.deleted_keys = deleted_keys;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use carboy_format::header::{HEADER_SIZE, live};

    use super::salvage;
    use crate::store::Store;
    use crate::store::file_state::FileState;
    use crate::store::walk::{Block, Walk};

    /// A closed store at `path` holding k0..k9 (k3 deleted); its log's end.
    fn small_store(path: &Path) -> u64 {
        let store = Store::open(path).unwrap();
        for i in 0..10 {
            store
                .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
                .unwrap();
        }
        store.delete(b"k3").unwrap();
        drop(store);
        let mut word = [0u8; 8];
        std::fs::File::open(path)
            .unwrap()
            .read_exact_at(&mut word, live::COMMIT_END as u64)
            .unwrap();
        u64::from_le_bytes(word)
    }

    fn read_only(path: &Path) -> FileState {
        let file = std::fs::File::open(path).unwrap();
        FileState::from_file_read_only(file, path).unwrap().0
    }

    /// What a walk yields: damaged ranges as (offset, len), blocks as
    /// (offset, 0).
    fn walk(fs: &FileState, limit: u64, zero_tail_ends: bool) -> Vec<(u64, u64)> {
        Walk::new(fs, HEADER_SIZE, limit, zero_tail_ends)
            .map(|b| match b {
                Block::Damaged(off, n) => (off, n),
                Block::Record(off, _) | Block::Commit(off, _) | Block::Index(off, _) => (off, 0),
            })
            .collect()
    }

    /// A hole of 256 MiB before the log (the sparse set-aside shape, with
    /// the log moved up: records verify wherever they are) and 256 MiB of
    /// never-written zeros after it: the hole is one damaged range, the
    /// zeros after the log are its end, and every key comes back.
    #[test]
    fn salvage_crosses_a_large_hole_and_stops_at_a_large_zero_tail() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.carboy");
        let end = small_store(&src);
        let bytes = std::fs::read(&src).unwrap();
        const GAP: u64 = 256 << 20;
        let aside = dir.path().join("aside.carboy");
        let file = std::fs::File::create(&aside).unwrap();
        file.write_all_at(&bytes[..HEADER_SIZE as usize], 0)
            .unwrap();
        let log = &bytes[HEADER_SIZE as usize..end as usize];
        file.write_all_at(log, HEADER_SIZE + GAP).unwrap();
        file.set_len(HEADER_SIZE + GAP + log.len() as u64 + GAP)
            .unwrap();
        drop(file);

        let dst = dir.path().join("dst.carboy");
        let report = salvage(&aside, &dst).unwrap();
        assert_eq!(report.damaged, [(HEADER_SIZE, GAP)]);
        assert_eq!((report.keys, report.deleted_keys), (9, 1));
        assert_eq!(report.uncommitted_records, 0);
        let store = Store::open(&dst).unwrap();
        for i in 0..10 {
            let want = (i != 3).then(|| format!("v{i}").into_bytes());
            assert_eq!(store.get_owned(format!("k{i}").as_bytes()).unwrap(), want);
        }
        assert!(store.verify().unwrap().is_clean());
    }

    /// Zeros that reach the limit end a salvage walk cleanly but are
    /// damage to verification's; a few nonzero bytes after the last
    /// block, too short for a prefix, are damage to both.
    #[test]
    fn a_zero_tail_is_the_end_only_where_the_caller_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("walk.carboy");
        let end = small_store(&path);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len >= end + 64, "preallocated past the log");
        let fs = read_only(&path);
        let blocks = walk(&fs, len, true);
        assert!(blocks.iter().all(|&(_, n)| n == 0), "{blocks:?}");
        assert_eq!(blocks.len(), walk(&fs, end, false).len());
        let verifying = walk(&fs, len, false);
        assert_eq!(verifying.last(), Some(&(end, len - end)));
        drop(fs);

        // 8 nonzero bytes, then zeros to a limit 4 bytes later.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&[7; 8], end)
            .unwrap();
        let fs = read_only(&path);
        assert_eq!(walk(&fs, end + 12, true).last(), Some(&(end, 12)));
        assert_eq!(walk(&fs, end + 8, true).last(), Some(&(end, 8)));
        assert_eq!(walk(&fs, end + 24, true).last(), Some(&(end, 8)));
    }

    /// A read-only state serves reads and refuses every write.
    #[test]
    fn a_read_only_mapping_reads_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.carboy");
        let end = small_store(&path);
        let before = std::fs::read(&path).unwrap();
        let fs = read_only(&path);
        assert_eq!(fs.commit_end(), end);
        assert!(fs.index().is_ok());
        fs.store(live::COMMIT_END, 0);
        assert_eq!(
            fs.commit_end(),
            end,
            "a store to a read-only map does nothing"
        );
        assert!(fs.map.word(HEADER_SIZE, end).is_none());
        assert!(fs.map.write(end, b"12345678", end + 8).is_err());
        assert!(fs.map.zero(end, 8, end + 8).is_err());
        assert!(fs.map.fill(end, 8, end + 8, |_| ()).is_err());
        drop(fs);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
