//! The lock file, [`LockFile`]: the `flock` that serializes writers (and
//! admits snapshots), and the mapped first page whose live words (the
//! generation, the lease's `wanted` word, the group-commit words as
//! [`SyncWord`]s) are shared between processes, some of them futex words.
//!
//! Every `unsafe` block here relies on the soundness argument for shared
//! mappings at the top of `file/mod.rs`: the page stays mapped while the
//! `LockFile` lives, and its live words are only touched through atomics.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use super::range_lock::{RangeLock, lock_byte, unlock_byte};
use super::sys;

/// The lock file: an exclusive `flock` for writers, a shared one for
/// snapshots, and a mapped first page holding the generation word.
pub(crate) struct LockFile {
    file: File,
    map: MmapRaw,
}

impl std::fmt::Debug for LockFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockFile").finish_non_exhaustive()
    }
}

impl LockFile {
    /// Maps the first page of an opened lock file that is at least
    /// [`carboy_format::lockfile::SIZE`] bytes long (checked by the caller).
    pub(crate) fn map(file: File) -> io::Result<LockFile> {
        let map = MmapOptions::new()
            .len(carboy_format::lockfile::SIZE as usize)
            .map_raw(&file)?;
        Ok(LockFile { file, map })
    }

    /// The open lock file (for `fstat`).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The generation live word.
    pub(crate) fn generation(&self) -> &AtomicU64 {
        // SAFETY: the mapping is SIZE (4096) bytes long, backed by a file of
        // at least that length (checked before mapping), lives as long as
        // `self`, and is page-aligned, so the word at OFF_GENERATION (64) is
        // in bounds and 8-aligned. It is only accessed atomically.
        unsafe {
            AtomicU64::from_ptr(
                self.map
                    .as_mut_ptr()
                    .add(carboy_format::lockfile::OFF_GENERATION)
                    .cast::<u64>(),
            )
        }
    }

    /// The `wanted` live word: processes waiting for the lock. A futex word.
    fn wanted(&self) -> &AtomicU32 {
        // SAFETY: as for `generation`: the word at OFF_WANTED (72) lies in
        // the 4096-byte mapping that lives as long as `self`, is 4-aligned,
        // and every process accesses it only through 4-byte atomics.
        unsafe {
            AtomicU32::from_ptr(
                self.map
                    .as_mut_ptr()
                    .add(carboy_format::lockfile::OFF_WANTED)
                    .cast::<u32>(),
            )
        }
    }

    /// The 4-byte live word at `offset` of the lock file's first page.
    fn word32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= carboy_format::lockfile::SIZE as usize,
            "lock file word {offset} out of bounds"
        );
        // SAFETY: as for `wanted`: `offset + 4` lies inside the 4096-byte
        // mapping that lives as long as `self` (asserted above), `offset`
        // is a multiple of 4 on a page-aligned base, so the pointer is
        // aligned for AtomicU32, and every process accesses the lock file's
        // live words only through 4-byte atomics (FORMAT.md §7).
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    /// A group-commit word of the lock file (`carboy_format::lockfile`'s
    /// `OFF_SYNC_*` and `OFF_GATHERING`), little-endian like every word.
    pub(crate) fn sync_word(&self, offset: usize) -> SyncWord<'_> {
        debug_assert!(
            (carboy_format::lockfile::OFF_SYNC_SEQ..carboy_format::lockfile::SYNC_WORDS_END)
                .contains(&offset)
        );
        SyncWord(self.word32(offset))
    }

    /// Tries to take the sync lock (`carboy_format::lockfile::SYNC_LOCK_BYTE`)
    /// without waiting: `Ok(true)` when this open file description now holds
    /// it, `Ok(false)` when another one does.
    pub(crate) fn try_sync_lock(&self) -> io::Result<bool> {
        lock_byte(&self.file, carboy_format::lockfile::SYNC_LOCK_BYTE, false)
            .map(|r| r == RangeLock::Acquired)
    }

    /// Gives the sync lock up.
    pub(crate) fn sync_unlock(&self) -> io::Result<()> {
        unlock_byte(&self.file, carboy_format::lockfile::SYNC_LOCK_BYTE)
    }

    /// True when another process is waiting for the lock.
    pub(crate) fn is_wanted(&self) -> bool {
        self.wanted().load(Ordering::Acquire) != 0
    }

    /// Wakes every thread (of any process) sleeping in
    /// [`wait_until_wanted`](Self::wait_until_wanted), so that it looks again.
    pub(crate) fn wake_lease_holders(&self) {
        sys::futex_wake_all(self.wanted());
    }

    /// Waits until another process wants the lock, or `timeout` passes.
    pub(crate) fn wait_until_wanted(&self, timeout: Duration) {
        // Returns at once if the word is already nonzero; spurious wakes
        // and errors only make the caller look again.
        sys::futex_wait(self.wanted(), 0, timeout);
    }

    /// Blocks until this process holds the exclusive lock, telling a
    /// process that keeps the lock between commits to give it up.
    pub(crate) fn lock_exclusive(&self) -> io::Result<()> {
        if self.try_lock_exclusive()? {
            return Ok(());
        }
        self.announce_and(|| self.file.lock())
    }

    /// Counts this process in `wanted` (waking lease holders) while `wait`
    /// blocks for the lock.
    fn announce_and(&self, wait: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        self.wanted().fetch_add(1, Ordering::AcqRel);
        sys::futex_wake_all(self.wanted());
        let result = wait();
        self.wanted().fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// Takes the exclusive lock if nobody holds any lock.
    pub(crate) fn try_lock_exclusive(&self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Blocks until this process holds a shared lock (announcing itself to
    /// a lease holder like [`lock_exclusive`](Self::lock_exclusive)).
    pub(crate) fn lock_shared(&self) -> io::Result<()> {
        match self.file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => self.announce_and(|| self.file.lock_shared()),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Releases whichever lock this process holds.
    pub(crate) fn unlock(&self) -> io::Result<()> {
        self.file.unlock()
    }
}

/// A 4-byte live word of the lock file: little-endian in the file, so a
/// big-endian host swaps its bytes (a futex compares the raw bits, which
/// `wait` passes swapped too).
#[derive(Clone, Copy)]
pub(crate) struct SyncWord<'a>(&'a AtomicU32);

impl SyncWord<'_> {
    /// The word's value.
    pub(crate) fn load(self) -> u32 {
        u32::from_le(self.0.load(Ordering::SeqCst))
    }

    /// Stores `value`.
    pub(crate) fn store(self, value: u32) {
        self.0.store(value.to_le(), Ordering::SeqCst);
    }

    /// Adds `delta` (wrapping) and returns the new value: one atomic add on
    /// a little-endian host, where the stored bytes are the native value.
    #[cfg(target_endian = "little")]
    pub(crate) fn add(self, delta: u32) -> u32 {
        self.0
            .fetch_add(delta, Ordering::SeqCst)
            .wrapping_add(delta)
    }

    /// Adds `delta` (wrapping) and returns the new value: a compare-and-swap
    /// loop on a big-endian host, which stores the word byte-swapped.
    #[cfg(target_endian = "big")]
    pub(crate) fn add(self, delta: u32) -> u32 {
        let mut current = self.0.load(Ordering::SeqCst);
        loop {
            let new = u32::from_le(current).wrapping_add(delta);
            match self.0.compare_exchange_weak(
                current,
                new.to_le(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return new,
                Err(seen) => current = seen,
            }
        }
    }

    /// Sleeps while the word still holds `expected`, at most `timeout`
    /// (`FUTEX_WAIT`, shared between processes). Returns early when woken,
    /// interrupted, or when the word already differs; the caller looks again.
    pub(crate) fn wait(self, expected: u32, timeout: Duration) {
        sys::futex_wait(self.0, expected.to_le(), timeout);
    }

    /// Wakes every thread, of any process, sleeping in [`wait`](Self::wait)
    /// on this word.
    pub(crate) fn wake_all(self) {
        sys::futex_wake_all(self.0);
    }
}
