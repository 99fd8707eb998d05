//! Upkeep: statistics and compaction.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::Kind;
use carboy_format::slot;

use super::Store;
use super::file_state::FileState;
use super::file_state::IndexView;
use super::index;
use super::new_file::{self, NewFile, ReleaseBehind};
use super::offsets::OffsetSet;
use super::options::Options;
use super::{open_checks, recovery};
use crate::error::{Error, Result};

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
        if live.contains(offset) {
            return Err(old.corruption(
                idx.slot_offset(b),
                format!("two slots point at the record at {offset}: the index is damaged"),
            ));
        }
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
        // The live set comes from the index: it must agree with its count
        // (damage from outside since the open would otherwise drop keys).
        if let Some(why) = open_checks::index_damage(&old)? {
            recovery::reindex(&old, &why, false)?;
        }
        let bound = old.commit_end();
        let idx = old.index()?;
        let generation = old.header.generation + 1;
        let path = self.shared.data_path.clone();
        let tmp = new_file::temp_path(&path, "compact")?;
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
        new_file::sync_dir(&path).map_err(|e| self.shared.latch_err(e))?;
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
}
