//! Presence marks on a data file: shared byte-range locks of the open file
//! description (`F_OFD_SETLK`, see `range_lock.rs`), one byte each, far
//! past any data, that tell which lock file each process uses the data file
//! through (see `store/environment.rs`).
//!
//! No `unsafe` here: the locks go through `range_lock.rs`.

use std::io;

use super::MappedFile;
use super::range_lock;

impl MappedFile {
    /// Marks this open file as in use through the lock file numbered
    /// `slot` (below [`PRESENCE_SLOTS`]): a shared byte-range lock on one
    /// byte far past any data, held by this open file description until it
    /// is closed or [`clear_presence`](Self::clear_presence) is called.
    pub(crate) fn mark_presence(&self, slot: u64) -> io::Result<()> {
        range_lock::share_range(self.file(), presence_range(slot, 1))
    }

    /// Takes back [`mark_presence`](Self::mark_presence).
    pub(crate) fn clear_presence(&self, slot: u64) -> io::Result<()> {
        range_lock::unlock_range(self.file(), presence_range(slot, 1))
    }

    /// True when another open file description of this file (in any
    /// process, this one included) is marked present at a slot other than
    /// `slot`: someone uses the file through another lock file.
    pub(crate) fn others_present(&self, slot: u64) -> io::Result<bool> {
        let below = presence_range(0, slot);
        let above = presence_range(slot + 1, PRESENCE_SLOTS - slot - 1);
        for range in [below, above] {
            if range.1 > 0 && range_lock::others_lock(self.file(), range)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Number of presence slots: byte offsets `PRESENCE_BASE ..
/// PRESENCE_BASE + PRESENCE_SLOTS` of a data file (see `mark_presence`).
pub(crate) const PRESENCE_SLOTS: u64 = 1 << 40;

/// First byte offset of the presence slots: far past the largest data file
/// (`carboy_format::slot::MAX_OFFSET`, 8 TiB), so a presence lock never
/// covers data. Byte-range locks may lie
/// past the end of a file.
const PRESENCE_BASE: u64 = 1 << 62;

/// (start, length) of `len` presence slots from `slot`.
fn presence_range(slot: u64, len: u64) -> (u64, u64) {
    (PRESENCE_BASE + slot, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::path::Path;

    fn open_twice(path: &Path) -> MappedFile {
        let file = File::options().read(true).write(true).open(path).unwrap();
        MappedFile::map(file, path, 4096).unwrap()
    }

    #[test]
    fn presence_marks_tell_other_slots_apart_from_ones_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let (a, b, c) = (open_twice(&path), open_twice(&path), open_twice(&path));
        a.mark_presence(5).unwrap();
        // Another descriptor at the same slot is no stranger...
        b.mark_presence(5).unwrap();
        assert!(!a.others_present(5).unwrap());
        assert!(!b.others_present(5).unwrap());
        // ...one at another slot is, from both sides, at either end.
        c.mark_presence(PRESENCE_SLOTS - 1).unwrap();
        assert!(a.others_present(5).unwrap());
        assert!(c.others_present(PRESENCE_SLOTS - 1).unwrap());
        c.clear_presence(PRESENCE_SLOTS - 1).unwrap();
        assert!(!a.others_present(5).unwrap());
        c.mark_presence(0).unwrap();
        assert!(b.others_present(5).unwrap());
        // Closing a descriptor takes its mark back.
        drop(c);
        assert!(!b.others_present(5).unwrap());
        // The marks cover no data: an exclusive lock on every byte a file
        // can hold is still free.
        let lock = (0, carboy_format::slot::MAX_OFFSET);
        assert!(!range_lock::others_lock(a.file(), lock).unwrap());
    }
}
