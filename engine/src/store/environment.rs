//! Whether the files at a namespace's paths are still the ones this process
//! uses, and whether the data file is still as long as the store relies on.
//!
//! Another program may remove, rename or replace the lock file, the data
//! file or their directory, or truncate the data file, while stores have
//! them open. None of that can be prevented; it is detected with `stat` and
//! `fstat` calls, made only where a system call is made anyway:
//!
//! | when | lock path names our lock file | data path names our mapping | data file long enough |
//! |---|---|---|---|
//! | open (first handle of a process) | yes | opens the path | yes, before mapping |
//! | the writer lock taken afresh (not a lease) | yes | yes | yes |
//! | a snapshot taking the shared lock afresh | yes | no (reads go on) | yes |
//! | the lease thread, about once a second, while an idle lease is held | yes | yes | yes |
//! | a reader whose lock file generation changed (slow path) | no | opens the path | yes, before mapping |
//!
//! A commit under a lease and a point read make none of these calls.
//!
//! **Presence.** A process that finds the lock file missing and creates a
//! new one cannot see, by the lock alone, that another process still writes
//! through the old one. So every process marks, on the data file it uses,
//! the lock file it uses it through: an open-file-description byte-range
//! lock on one byte far past any data, at a *slot* derived from the lock
//! file's (device, inode). An opener (with the exclusive lock, before it
//! writes anything) looks for a mark at any other slot; finding one means
//! someone uses the data file through a lock file that is no longer at the
//! path, and the open fails with [`Error::LockFileReplaced`]. The marks die
//! with their descriptors, like `flock`, and a process takes its own back
//! when its last handle is dropped.
//!
//! **Truncation.** A writer that finds the data file shorter than its
//! committed end latches the store and raises the lock file's generation
//! word, as a compactor does before its rename. Every reader, in every
//! process, compares that word with its own before each read, so its next
//! read reopens the path, where the cut is seen before any byte of the
//! mapping is touched: readers get [`Error::FileTruncated`] instead of
//! SIGBUS from then on. Whoever next takes the lock with the file whole
//! again puts the word back (`adopt_current_file_locked`), as after a
//! compactor that died.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use carboy_format::header::{HEADER_SIZE, live};

use super::Shared;
use super::file_state::FileState;
use crate::error::{Error, Result};
use crate::file::{LockFile, PRESENCE_SLOTS};

/// The presence slot of the lock file with (device, inode) `key`.
pub(crate) fn presence_slot(key: (u64, u64)) -> u64 {
    // splitmix64 of the pair. Two lock files share a slot with odds of
    // 1 in 2^40; that would only hide a replaced lock file.
    let mut z = key.0.rotate_left(32).wrapping_add(0x9E37_79B9_7F4A_7C15) ^ key.1;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % PRESENCE_SLOTS
}

/// Marks this process present on `fs` through the lock file at `lock_path`
/// (slot `slot`), then fails if anyone uses `fs` through another lock file.
///
/// Where the filesystem has no byte-range locks, nothing can be told and
/// nothing is refused.
pub(crate) fn mark_and_check_presence(fs: &FileState, lock_path: &Path, slot: u64) -> Result<()> {
    if fs.map.mark_presence(slot).is_err() {
        return Ok(());
    }
    match fs.map.others_present(slot) {
        Ok(true) => Err(Error::LockFileReplaced {
            path: lock_path.to_path_buf(),
            detail: format!(
                "another process, or a handle of this process that is still open, uses the data \
                 file {} through a lock file that is no longer at this path",
                fs.path().display()
            ),
        }),
        Ok(false) | Err(_) => Ok(()),
    }
}

/// Fails unless `path` still names the lock file `lock` has open.
pub(crate) fn check_lock_file(lock: &LockFile, path: &Path) -> Result<()> {
    let held = lock
        .file()
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?;
    match replaced(&held, path)? {
        None => Ok(()),
        Some(detail) => Err(Error::LockFileReplaced {
            path: path.to_path_buf(),
            detail,
        }),
    }
}

/// Turns "no data file at the path", met while following the file the path
/// names, into [`Error::DataFileReplaced`]: the file was in use.
pub(crate) fn gone_is_replaced(e: Error, path: &Path) -> Error {
    match e {
        Error::NotFound { .. } => Error::DataFileReplaced {
            path: path.to_path_buf(),
            detail: missing(path),
        },
        e => e,
    }
}

/// Why `path` no longer names the open file whose `fstat` is `held`, or
/// `None` while it does.
fn replaced(held: &Metadata, path: &Path) -> Result<Option<String>> {
    let at_path = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(missing(path))),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if (at_path.dev(), at_path.ino()) != (held.dev(), held.ino()) {
        return Ok(Some(format!(
            "the path names another file now (device {}, inode {}; the one in use is device {}, \
             inode {}, with {} name(s) left)",
            at_path.dev(),
            at_path.ino(),
            held.dev(),
            held.ino(),
            held.nlink()
        )));
    }
    if held.nlink() == 0 {
        // The path names the file, yet it has no name: only a filesystem
        // that does not keep inode numbers stable would show this.
        return Ok(Some(missing(path)));
    }
    Ok(None)
}

/// What is at `path` when the file in use is no longer there.
fn missing(path: &Path) -> String {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(dir) if !dir.exists() => format!(
            "nothing is at this path any more: its directory {} was removed or renamed",
            dir.display()
        ),
        _ => "nothing is at this path any more: the file was removed or renamed".to_string(),
    }
}

impl Shared {
    /// With the writer lock just taken afresh (not a lease): checks that
    /// the lock file is still ours, then returns the file at the path as
    /// [`adopt_current_file_locked`](Shared::adopt_current_file_locked)
    /// does, after checking that it is still the file in use (or one a
    /// compaction put there) and as long as its committed log.
    pub(crate) fn adopt_checked(&self, current: &Arc<FileState>) -> Result<Arc<FileState>> {
        check_lock_file(&self.lock, &self.lock_path)?;
        if self.lock_generation() == current.header.generation {
            // No compaction announced, so `adopt` reads the header page of
            // the current file: make sure it is still there.
            let len = current.metadata()?.len();
            if len < HEADER_SIZE {
                return Err(self.truncated(current, len, HEADER_SIZE));
            }
        }
        let fs = self.adopt_current_file_locked(current).map_err(|e| {
            if matches!(e, Error::FileTruncated { .. }) {
                self.latch_err(e)
            } else {
                e
            }
        })?;
        self.check_data_file(&fs)?;
        Ok(fs)
    }

    /// With the exclusive lock held (afresh, or as a lease): fails unless
    /// the data path still names `fs` and the file is as long as its
    /// committed log. Space above the committed end that was cut is given
    /// up (`alloc_end` lowered): nothing committed was there.
    pub(crate) fn check_data_file(&self, fs: &FileState) -> Result<()> {
        let held = fs.metadata()?;
        if let Some(detail) = replaced(&held, &self.data_path)? {
            return Err(Error::DataFileReplaced {
                path: self.data_path.clone(),
                detail,
            });
        }
        let len = held.len();
        self.check_length(fs, len)?;
        if len < fs.load(live::ALLOC_END) {
            fs.store(live::ALLOC_END, len);
        }
        Ok(())
    }

    /// Fails (and latches) when the data file, `len` bytes long, is shorter
    /// than its header page or its committed log. Reads only the header
    /// page, and only once it is known to be there.
    pub(crate) fn check_length(&self, fs: &FileState, len: u64) -> Result<()> {
        if len < HEADER_SIZE {
            return Err(self.truncated(fs, len, HEADER_SIZE));
        }
        let committed = fs.commit_end();
        if len < committed {
            return Err(self.truncated(fs, len, committed));
        }
        Ok(())
    }

    /// With a lock held (shared or exclusive), after a snapshot took the
    /// shared lock afresh: the lock file must still be ours and the data
    /// file as long as its committed log. (A data file replaced meanwhile
    /// is not refused: the snapshot reads the file this process has, as
    /// point reads do.)
    pub(crate) fn check_for_snapshot(&self, fs: &FileState) -> Result<()> {
        check_lock_file(&self.lock, &self.lock_path)?;
        if self.lock_generation() != fs.header.generation {
            // The snapshot takes the writer path first, which checks.
            return Ok(());
        }
        self.check_length(fs, fs.metadata()?.len())
    }

    /// From the lease thread, while this process holds the lock as an idle
    /// lease: the checks a fresh acquisition makes. On a failure the lease
    /// is given up, so that the next write takes the lock afresh and
    /// reports the failure (truncation is latched here already).
    pub(crate) fn check_idle_lease(&self) {
        let Some(_w) = self.rw.try_write() else {
            return;
        };
        if !self.holds_lease() {
            return;
        }
        let fs = self.file.load_full();
        let ok = check_lock_file(&self.lock, &self.lock_path)
            .and_then(|()| {
                if self.lock_generation() != fs.header.generation {
                    // Nobody else can change the word while this process
                    // holds the lock; the next write's `adopt` sorts out
                    // whatever did.
                    return Ok(());
                }
                let len = fs.metadata()?.len();
                if len < HEADER_SIZE {
                    return Err(self.truncated(&fs, len, HEADER_SIZE));
                }
                self.check_data_file(&fs)
            })
            .is_ok();
        if !ok && self.held.swap(false, Ordering::AcqRel) {
            let _ = self.lock.unlock();
        }
    }

    /// Reports a data file cut to `len` bytes (below `expected`): latches
    /// the store, and raises the lock file's generation so that readers in
    /// every process reopen the path (and see the cut) before their next
    /// read touches the mapping.
    fn truncated(&self, fs: &FileState, len: u64, expected: u64) -> Error {
        self.lock.generation().store(
            fs.header.generation.wrapping_add(1).to_le(),
            Ordering::Release,
        );
        self.latch_err(Error::FileTruncated {
            path: self.data_path.clone(),
            len,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_slots_differ_by_inode_and_device_and_stay_in_range() {
        let mut seen = std::collections::HashSet::new();
        for dev in 0..4u64 {
            for ino in 0..1000u64 {
                let slot = presence_slot((dev, ino));
                assert!(slot < PRESENCE_SLOTS);
                assert!(seen.insert(slot), "slot {slot} for ({dev}, {ino}) repeats");
            }
        }
        assert_eq!(presence_slot((3, 7)), presence_slot((3, 7)));
    }

    #[test]
    fn presence_slot_is_the_function_format_md_gives() {
        // Values computed from the formula in FORMAT.md §8 ("presence"),
        // outside Rust: processes must agree on the slot of a lock file.
        assert_eq!(presence_slot((0x803, 1_234_567)), 196_790_580_314);
        assert_eq!(presence_slot((0, 0)), 246_878_686_639);
    }
}
