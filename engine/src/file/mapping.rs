//! The memory mapping of a data file, [`MappedFile`]: the address-space
//! reservation and its growth, checked reads, atomics on live words,
//! in-place writes, releasing pages, whole-file and ranged syncs, and
//! read-only mappings.
//!
//! Every `unsafe` block here relies on the soundness argument for the
//! shared mapping at the top of `file/mod.rs` (and `engine/DESIGN.md`,
//! "Soundness of the shared mapping").

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::Mutex;

use super::sys;

/// Smallest address-space reservation for a data file (1 GiB). Reserving
/// costs only virtual addresses: the mapping is file-backed and created with
/// `MAP_NORESERVE`, so no memory is committed until pages are touched.
const MIN_RESERVATION: u64 = 1 << 30;

/// A data file mapped into memory with room to grow.
pub(crate) struct MappedFile {
    file: File,
    path: PathBuf,
    /// Base of the newest mapping.
    base: AtomicPtr<u8>,
    /// Length of the newest mapping. Stored after `base` (Release), loaded
    /// before it (Acquire), so a reader that sees a length sees a base at
    /// least as new, and every mapping is at least as long as the previous.
    reserved: AtomicUsize,
    /// Every mapping ever made of this file, kept until drop so that no
    /// pointer handed out for `&self` dangles.
    maps: Mutex<Vec<MmapRaw>>,
    /// Set once the system refused a ranged sync of this file
    /// ([`sync_range`](Self::sync_range)): later syncs go straight to
    /// `fdatasync`.
    no_ranged_sync: AtomicBool,
    /// False for a mapping made by [`map_read_only`](Self::map_read_only):
    /// its pages are mapped `PROT_READ`, and nothing may write to them.
    writable: bool,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("reserved", &self.reserved.load(Ordering::Relaxed))
            .finish()
    }
}

impl MappedFile {
    /// Maps `file`, whose length is at least `len` bytes and at least a
    /// header page (checked by the caller with `fstat` before any byte of
    /// it is touched).
    pub(crate) fn map(file: File, path: &Path, len: u64) -> io::Result<MappedFile> {
        Self::map_as(file, path, len, true)
    }

    /// [`map`](Self::map) for a file opened only for reading: the mapping
    /// is read-only (`PROT_READ`), so it needs no write access to the file.
    /// Every writing method of the result fails or does nothing (see the
    /// `file` module docs): it serves [`bytes`](Self::bytes), [`load`](Self::load)
    /// and [`release`](Self::release).
    pub(crate) fn map_read_only(file: File, path: &Path, len: u64) -> io::Result<MappedFile> {
        Self::map_as(file, path, len, false)
    }

    fn map_as(file: File, path: &Path, len: u64, writable: bool) -> io::Result<MappedFile> {
        let reserve = reservation_for(len)?;
        let map = map_raw(&file, reserve, writable)?;
        let base = map.as_mut_ptr();
        Ok(MappedFile {
            file,
            path: path.to_path_buf(),
            base: AtomicPtr::new(base),
            reserved: AtomicUsize::new(reserve),
            maps: Mutex::new(vec![map]),
            no_ranged_sync: AtomicBool::new(false),
            writable,
        })
    }

    /// The error of a write through a read-only mapping.
    #[cold]
    fn read_only_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the file is mapped read-only",
        )
    }

    /// The open file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The path the file was opened at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the mapping covers `end` bytes, remapping into a larger
    /// reservation when it does not. Old mappings stay alive.
    #[cold]
    fn ensure_mapped(&self, end: u64) -> io::Result<()> {
        if end <= self.reserved.load(Ordering::Acquire) as u64 {
            return Ok(());
        }
        let mut maps = self.maps.lock();
        let current = self.reserved.load(Ordering::Acquire);
        if end <= current as u64 {
            return Ok(());
        }
        let reserve = reservation_for(end)?.max(current.saturating_mul(2));
        let map = map_raw(&self.file, reserve, self.writable)?;
        self.base.store(map.as_mut_ptr(), Ordering::Release);
        self.reserved.store(reserve, Ordering::Release);
        maps.push(map);
        Ok(())
    }

    /// The base pointer of a mapping at least `end` bytes long.
    #[inline]
    fn base_for(&self, end: u64) -> io::Result<*mut u8> {
        let reserved = self.reserved.load(Ordering::Acquire);
        if end > reserved as u64 {
            self.ensure_mapped(end)?;
        }
        Ok(self.base.load(Ordering::Acquire))
    }

    /// The 8-byte word at `offset` as an atomic.
    ///
    /// `offset` must be a multiple of 8 and `offset + 8` must not exceed
    /// `file_len`, a length the file is known to have (the header page, the
    /// committed end, or the allocated end). Returns `None` otherwise, and
    /// for a read-only mapping, where storing to the atomic would fault.
    #[inline]
    pub(crate) fn word(&self, offset: u64, file_len: u64) -> Option<&AtomicU64> {
        if !self.writable || !offset.is_multiple_of(8) || offset.checked_add(8)? > file_len {
            return None;
        }
        let base = self.base_for(offset + 8).ok()?;
        // SAFETY: the mapping starting at `base` is at least `offset + 8`
        // bytes long (base_for) and stays mapped for as long as `self` (old
        // mappings are kept in `maps` until drop), and it is writable
        // (checked above), so storing to the atomic cannot fault. The file
        // is at least `offset + 8` bytes long (caller's contract), so the
        // page is backed.
        // `base` is page-aligned and `offset` is a multiple of 8, so the
        // pointer is aligned for AtomicU64, which has the size and layout of
        // u64. Every process accesses these words only through 8-byte atomic
        // operations (DESIGN.md), so no non-atomic access races with them.
        Some(unsafe { AtomicU64::from_ptr(base.add(offset as usize).cast::<u64>()) })
    }

    /// Loads the little-endian 8-byte word at `offset` (a slot, say) on
    /// any mapping, read-only ones included: a `Relaxed` load followed by
    /// an `Acquire` fence. Same contract as [`word`](Self::word); `None`
    /// where `word` would refuse for any reason but the mapping's mode.
    pub(crate) fn load_word(&self, offset: u64, file_len: u64) -> Option<u64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > file_len {
            return None;
        }
        let base = self.base_for(offset + 8).ok()?;
        // SAFETY: as in `word`: the mapping at `base` covers `offset + 8`
        // bytes and lives as long as `self`, the file is that long (caller's
        // contract), and the pointer is 8-aligned. The word is only loaded,
        // with `Relaxed` ordering, which read-only memory allows; every
        // process accesses such words only through 8-byte atomics.
        let word = unsafe { AtomicU64::from_ptr(base.add(offset as usize).cast::<u64>()) };
        let value = word.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        Some(u64::from_le(value))
    }

    /// The 8-byte word at `offset` in the header page, as an atomic.
    ///
    /// Every mapping covers the header page (a reservation is at least
    /// [`MIN_RESERVATION`] long and the file at least a header page long,
    /// checked before mapping), so no mapping needs to be looked up: this is
    /// one load of `base` and the word's own.
    #[inline]
    fn header_word(&self, offset: usize) -> Option<&AtomicU64> {
        if !offset.is_multiple_of(8) || offset + 8 > carboy_format::header::HEADER_SIZE as usize {
            return None;
        }
        let base = self.base.load(Ordering::Acquire);
        // SAFETY: `base` is the start of a mapping at least MIN_RESERVATION
        // bytes long, kept alive until `self` is dropped, and the file is at
        // least HEADER_SIZE bytes long (checked by the caller of `map`), so
        // `offset + 8 <= HEADER_SIZE` is mapped and backed. It is 8-aligned
        // (page-aligned base, 8-aligned offset), and every process accesses
        // live words only through 8-byte atomics (DESIGN.md). On a
        // read-only mapping the callers (`load`, `store`) only load, with
        // `Relaxed` ordering, which read-only memory allows.
        Some(unsafe { AtomicU64::from_ptr(base.add(offset).cast::<u64>()) })
    }

    /// Loads the little-endian live word at `offset` in the header page.
    #[inline]
    pub(crate) fn load(&self, offset: usize) -> u64 {
        let Some(w) = self.header_word(offset) else {
            return 0;
        };
        if self.writable {
            return u64::from_le(w.load(Ordering::Acquire));
        }
        // A read-only mapping: only a `Relaxed` load of at most 8 bytes is
        // allowed on read-only memory (std::sync::atomic, "Atomic accesses
        // to read-only memory"); the fence gives it `Acquire` ordering.
        let value = w.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        u64::from_le(value)
    }

    /// Stores the little-endian live word at `offset` in the header page.
    /// Does nothing on a read-only mapping.
    #[inline]
    pub(crate) fn store(&self, offset: usize, value: u64) {
        if !self.writable {
            return;
        }
        if let Some(w) = self.header_word(offset) {
            w.store(value.to_le(), Ordering::Release);
        }
    }

    /// The `count` 8-byte words from `offset` (an index block's slots) as
    /// atomics. Same contract as [`word`](Self::word): `offset` a multiple
    /// of 8, the words below `file_len`; `None` on a read-only mapping.
    #[inline]
    pub(crate) fn words(&self, offset: u64, count: u64, file_len: u64) -> Option<&[AtomicU64]> {
        let end = count.checked_mul(8)?.checked_add(offset)?;
        if !self.writable || !offset.is_multiple_of(8) || end > file_len {
            return None;
        }
        let base = self.base_for(end).ok()?;
        // SAFETY: as for `word`, for each of the `count` words: the range
        // `offset..end` is mapped writable (checked above; base_for) for as
        // long as `self` lives,
        // backed by the file (below `file_len`), 8-aligned, and only ever
        // accessed through 8-byte atomics by every process. `count` words
        // fit in the address space since `end` does.
        Some(unsafe {
            std::slice::from_raw_parts(
                base.add(offset as usize).cast::<AtomicU64>(),
                count as usize,
            )
        })
    }

    /// Asks the CPU to start loading the cache line that holds `offset`
    /// into its caches, without waiting for it. A hint only: nothing is
    /// read into the program, so any offset is allowed.
    #[inline]
    pub(crate) fn prefetch(&self, offset: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self
                .base
                .load(Ordering::Relaxed)
                .wrapping_add(offset as usize);
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has,
            // and reads nothing into the program: a prefetch of any
            // address, mapped or not, never faults (Intel SDM, PREFETCHh).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.cast::<i8>(),
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Borrows `len` bytes at `offset`, which must lie below `bound`, a
    /// length the file is known to have.
    ///
    /// Callers pass the committed end as `bound`: bytes below it are never
    /// written again while the file is live (except index slots, which are
    /// never borrowed as bytes by well-formed slots; see DESIGN.md).
    #[inline]
    pub(crate) fn bytes(&self, offset: u64, len: u64, bound: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > bound {
            return None;
        }
        let base = self.base_for(end).ok()?;
        // SAFETY: `offset + len <= bound <= file length` (caller's contract),
        // and the mapping at `base` covers `end` bytes and lives as long as
        // `self`. The range lies below the committed end, which no writer
        // (in this or any process; all writers are carboy) writes again
        // while the file is live, so the bytes do not change for the
        // lifetime of the borrow.
        Some(unsafe { std::slice::from_raw_parts(base.add(offset as usize), len as usize) })
    }

    /// Copies `data` to `offset`. Writer only.
    ///
    /// The caller holds the exclusive lock and `offset` is at or above the
    /// committed end and `offset + data.len()` at or below the allocated
    /// end: no reader can reach these bytes yet.
    pub(crate) fn write(&self, offset: u64, data: &[u8], alloc_end: u64) -> io::Result<()> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= alloc_end)
            .ok_or_else(|| io::Error::other("write past the allocated end of the file"))?;
        let base = self.base_for(end)?;
        // SAFETY: the destination range lies within the mapping (base_for),
        // which is writable (checked above), and within the file's
        // allocated length, so the pages are backed.
        // It is above the committed end, so no reader holds a reference to
        // it (slots are published only after the bytes are written), and
        // the exclusive lock keeps other writers out. `data` is a separate
        // allocation or an immutable range below the committed end, never
        // overlapping the destination.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(offset as usize), data.len());
        }
        Ok(())
    }

    /// Lets `fill` write `len` bytes at `offset` in place. Same contract as
    /// [`write`](Self::write): the range is unpublished and the caller holds
    /// the exclusive lock.
    pub(crate) fn fill<R>(
        &self,
        offset: u64,
        len: u64,
        alloc_end: u64,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> io::Result<R> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= alloc_end)
            .ok_or_else(|| io::Error::other("write past the allocated end of the file"))?;
        let base = self.base_for(end)?;
        // SAFETY: the range is mapped writable (checked above; base_for),
        // backed by the file (below the allocated end), above the committed
        // end so that no reader
        // holds a reference into it, and the exclusive lock gives the
        // caller sole access: a unique `&mut` over it aliases nothing for
        // the duration of `fill`.
        let slice =
            unsafe { std::slice::from_raw_parts_mut(base.add(offset as usize), len as usize) };
        Ok(fill(slice))
    }

    /// Fills `len` bytes at `offset` with zeros. Same contract as [`write`](Self::write).
    pub(crate) fn zero(&self, offset: u64, len: u64, alloc_end: u64) -> io::Result<()> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= alloc_end)
            .ok_or_else(|| io::Error::other("zeroing past the allocated end of the file"))?;
        let base = self.base_for(end)?;
        // SAFETY: as for `write`: the range is mapped writable, backed by
        // the file, above the committed end and written only by the lock
        // holder.
        unsafe {
            std::ptr::write_bytes(base.add(offset as usize), 0, len as usize);
        }
        Ok(())
    }

    /// Takes the pages of `from..to` out of this process's resident set:
    /// every page from the one holding `from` up to, not including, the one
    /// holding `to` (so that consecutive calls `a..b`, `b..c` leave no page
    /// out), in every mapping this `MappedFile` has made of the file.
    ///
    /// The bytes do not change, for anyone: `MADV_DONTNEED` on a shared
    /// file mapping only removes this process's page-table entries. The
    /// pages stay in the page cache (a dirty one stays dirty and is written
    /// back as usual), and the next access, by any thread, faults the same
    /// page back in. Other processes' mappings are untouched. So any
    /// range of the file may be released at any time, even one that readers
    /// are borrowing or a writer has just written (DESIGN.md, "Soundness of
    /// the shared mapping"); it only costs a fault on the next access.
    ///
    /// Used where a pass streams through a file that it will not read again
    /// soon (compaction, bulk writes, scans), so that the process's memory
    /// stays near its working set rather than growing to the file's size.
    /// Best effort: a failing `madvise` leaves the pages resident.
    pub(crate) fn release(&self, from: u64, to: u64) {
        let page = rustix::param::page_size() as u64;
        let start = from - from % page;
        let end = to - to % page;
        if end <= start {
            return;
        }
        let maps = self.maps.lock();
        for map in maps.iter() {
            let stop = end.min(map.len() as u64);
            if stop <= start {
                continue;
            }
            // SAFETY: `start..stop` lies inside this mapping (`stop` is
            // clamped to its length, `start < stop`), which stays mapped
            // while `maps` holds it, and `start` is page-aligned (the
            // mapping's base is). MADV_DONTNEED on a MAP_SHARED file
            // mapping drops page-table entries only: every later access
            // faults in the page-cache page for the same file offset, which
            // holds the file's current bytes, including what was written
            // through this mapping before the call (the kernel moves a
            // page-table entry's dirty bit to the page as it drops it;
            // `tests::released_pages_keep_their_data` checks it). No byte
            // any reference or atomic can observe changes, so no borrow
            // handed out by this type is invalidated.
            let _ = unsafe {
                rustix::mm::madvise(
                    map.as_mut_ptr().add(start as usize).cast(),
                    (stop - start) as usize,
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
        }
    }

    /// Extends the file to `new_len` bytes with real blocks (fallocate), so
    /// that a full disk is an error here rather than a SIGBUS later.
    pub(crate) fn allocate(&self, old_len: u64, new_len: u64) -> io::Result<()> {
        if new_len <= old_len {
            return Ok(());
        }
        if !self.writable {
            return Err(self.read_only_error());
        }
        sys::allocate(&self.file, old_len, new_len)?;
        self.ensure_mapped(new_len)
    }

    /// Flushes the file's data and length to the device (`fdatasync`).
    pub(crate) fn sync(&self) -> io::Result<()> {
        crate::faults::check(crate::faults::Op::Fsync)?;
        self.file.sync_data()?;
        crate::faults::synced();
        Ok(())
    }

    /// Makes bytes `start..end` of the file durable, with the file's length,
    /// without writing the file's other dirty pages. Returns `Ok(false)`,
    /// having made nothing durable, where the system cannot (the caller
    /// then calls [`sync`](Self::sync)).
    ///
    /// `fdatasync` writes every dirty page of the file: for a commit, the
    /// index pages its slots landed on, scattered over the index, besides
    /// the log pages it appended; and the more commits one call covers,
    /// the more scattered pages it writes. Recovery after a power loss
    /// reads only the log (FORMAT.md §6.3: it does not trust the index or
    /// the live words), so a commit is durable once its log bytes are.
    /// This rewrites those bytes, unchanged, with one `pwritev2` flagged
    /// `RWF_DSYNC`, which returns once the written range (and the length
    /// needed to read it) is on stable storage, exactly as `fdatasync`
    /// would have put it there, and flushes the device's cache the same
    /// way.
    ///
    /// The caller guarantees that nobody writes the range meanwhile: it
    /// lies below the committed end and holds no index block (whose slots
    /// change in place), so the bytes written are the bytes already there.
    pub(crate) fn sync_range(&self, start: u64, end: u64) -> io::Result<bool> {
        crate::faults::check(crate::faults::Op::Fsync)?;
        let Some(bytes) = self.bytes(start, end.saturating_sub(start), end) else {
            return Ok(false);
        };
        if self.no_ranged_sync.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // Straight from the mapping: the kernel copies each page onto
        // itself (it faults the source in first and copies with page
        // faults disabled, so a source page that is the destination works).
        if !sys::sync_range(&self.file, start, bytes)? {
            self.no_ranged_sync.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        crate::faults::synced_range(start, end);
        Ok(true)
    }

    /// Raises the little-endian live word at `offset` in the header page to
    /// `value` unless it is already at least `value` or `value` exceeds
    /// the word at `ceiling` (compare-and-swap: concurrent raises from any
    /// process keep the largest). Returns the word's value afterwards.
    pub(crate) fn raise(&self, offset: usize, value: u64, ceiling: usize) -> u64 {
        let header = carboy_format::header::HEADER_SIZE;
        let Some(w) = self.word(offset as u64, header) else {
            // Misplaced, or a read-only mapping: nothing is raised.
            return self.load(offset);
        };
        let mut current = w.load(Ordering::Acquire);
        loop {
            let now = u64::from_le(current);
            if now >= value || value > self.load(ceiling) {
                return now;
            }
            match w.compare_exchange_weak(
                current,
                value.to_le(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return value,
                Err(seen) => current = seen,
            }
        }
    }
}

fn reservation_for(len: u64) -> io::Result<usize> {
    let want = len
        .checked_mul(2)
        .and_then(u64::checked_next_power_of_two)
        .unwrap_or(u64::MAX)
        .max(MIN_RESERVATION);
    usize::try_from(want).map_err(|_| io::Error::other("file too large to map"))
}

fn map_raw(file: &File, len: usize, writable: bool) -> io::Result<MmapRaw> {
    // A shared, file-backed mapping (read-write, or read-only for a file
    // opened only for reading) that may extend past the end of the file;
    // pages past the end are never touched (see the `file` module docs).
    let mut options = MmapOptions::new();
    options.len(len).no_reserve_swap();
    if writable {
        options.map_raw(file)
    } else {
        options.map_raw_read_only(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the page holding `addr` is present in this process's page
    /// tables (bit 63 of its `/proc/self/pagemap` entry).
    fn resident(addr: *const u8) -> bool {
        use std::os::unix::fs::FileExt;
        let page = rustix::param::page_size() as u64;
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let mut entry = [0u8; 8];
        pagemap
            .read_exact_at(&mut entry, addr as u64 / page * 8)
            .unwrap();
        u64::from_le_bytes(entry) >> 63 == 1
    }

    #[test]
    fn released_pages_keep_their_data() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let page = rustix::param::page_size() as u64;
        let len = 64 * page;
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        sys::allocate(&file, 0, len).unwrap();
        let map = MappedFile::map(file, &path, len).unwrap();
        let pattern: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8 + 1).collect();
        // Written through the mapping and never synced: every page is dirty.
        map.write(0, &pattern, len).unwrap();
        // An atomic word too, stored the way live words are.
        const WORD: u64 = 0x0123_4567_89ab_cdef;
        let at = 8 * page;
        map.word(at, len)
            .unwrap()
            .store(WORD.to_le(), Ordering::Release);
        let mut expected = pattern.clone();
        expected[at as usize..at as usize + 8].copy_from_slice(&WORD.to_le_bytes());
        let base = map.bytes(0, len, len).unwrap().as_ptr();
        let pages = |from: u64, to: u64| {
            (from..to).map(|p| resident(base.wrapping_add((p * page) as usize)))
        };
        assert!(pages(0, 64).all(|r| r), "the written pages are resident");

        // Pages 1..63: from inside page 1 to inside page 63.
        map.release(page + 100, 63 * page + 100);
        assert!(resident(base), "page 0 is below the range");
        assert!(pages(1, 63).all(|r| !r), "pages 1..63 were released");
        assert!(
            resident(base.wrapping_add((63 * page) as usize)),
            "page 63 holds the end"
        );

        // The page cache still has every byte, dirty.
        let mut back = vec![0u8; len as usize];
        map.file().read_exact_at(&mut back, 0).unwrap();
        assert!(
            back == expected,
            "the page cache lost bytes of released pages"
        );
        // Written back to the disk: once synced and dropped from the page
        // cache, the file read from the device holds them too (a page whose
        // dirty bit was lost with its page-table entry would read as zeros).
        map.sync().unwrap();
        rustix::fs::fadvise(map.file(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut again = vec![0u8; len as usize];
        map.file().read_exact_at(&mut again, 0).unwrap();
        assert!(
            again == expected,
            "the file lost bytes written before the release"
        );
        // Through the mapping: faulted back in, the same bytes and word.
        assert!(map.bytes(0, len, len).unwrap() == &expected[..]);
        assert!(pages(1, 63).all(|r| r), "read pages come back");
        let word = map.word(at, len).unwrap().load(Ordering::Acquire);
        assert_eq!(u64::from_le(word), WORD);
    }
}
