//! The file layer's plain system calls, which touch no mapping: growing a
//! file with real blocks (`fallocate`), log-only syncs (`pwritev2` with
//! `RWF_DSYNC`), renaming a file into place, syncing a directory, and
//! waiting on and waking futex words shared between processes.
//!
//! No `unsafe` here: each call goes through `rustix` or `std`.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Extends `file` from `old_len` to `new_len` with allocated blocks.
pub(crate) fn allocate(file: &File, old_len: u64, new_len: u64) -> io::Result<()> {
    crate::faults::check(crate::faults::Op::Fallocate)?;
    match rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::empty(),
        old_len,
        new_len - old_len,
    ) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate: fall back to a sparse extension.
        // A full disk then surfaces at writeback, not here (documented).
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            file.set_len(new_len)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `data` at `offset` of `file` with `RWF_DSYNC` (see
/// [`MappedFile::sync_range`](super::MappedFile::sync_range)); `Ok(false)`
/// when this kernel or file system does not take the flag, before anything
/// was written.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn sync_range(file: &File, mut offset: u64, data: &[u8]) -> io::Result<bool> {
    use rustix::io::{Errno, ReadWriteFlags, pwritev2};
    let mut rest = data;
    let mut first = true;
    while !rest.is_empty() {
        match pwritev2(
            file,
            &[io::IoSlice::new(rest)],
            offset,
            ReadWriteFlags::DSYNC,
        ) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                rest = &rest[n..];
                offset += n as u64;
                first = false;
            }
            Err(Errno::INTR) => {}
            Err(Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) if first => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// No `RWF_DSYNC` here: the caller syncs the whole file.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn sync_range(_file: &File, _offset: u64, _data: &[u8]) -> io::Result<bool> {
    Ok(false)
}

/// Renames `from` to `to` (a new data file into place).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    crate::faults::check(crate::faults::Op::Rename)?;
    std::fs::rename(from, to)
}

/// Syncs directory `dir`, so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::faults::check(crate::faults::Op::Fsync)?;
    File::open(dir)?.sync_all()
}

/// The count that makes `FUTEX_WAKE` wake every waiter. The kernel reads
/// the count as a signed int: `u32::MAX` would be -1, which wakes one.
const WAKE_ALL: u32 = i32::MAX as u32;

/// Sleeps while `word` still holds the raw bits `expected`, at most
/// `timeout` (`FUTEX_WAIT`, shared between processes). Returns at once if
/// the word already differs; spurious wakes, interruptions and errors only
/// make the caller look again.
pub(super) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::thread::futex::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        Some(&ts),
    );
}

/// Wakes every thread, of any process, sleeping in [`futex_wait`] on `word`.
pub(super) fn futex_wake_all(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), WAKE_ALL);
}

/// This process's id, cached; a child made by `fork` finds the cache empty
/// (a handler registered with `pthread_atfork` clears it) and asks again.
static PID: AtomicU32 = AtomicU32::new(0);

/// Clears the cached id in a child just made by `fork` (async-signal-safe:
/// one atomic store).
extern "C" fn forget_pid() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// This process's id, without a system call once known. Unlike a bare
/// `getpid` cache, it is right in a child forked without exec, which
/// shares its parent's open file descriptions and must tell them apart.
pub(crate) fn current_pid() -> u32 {
    use std::sync::atomic::Ordering;
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: `forget_pid` is an `extern "C" fn()` that lives for the
        // whole program and only stores to an atomic, which is allowed in
        // a child after fork; the other two handlers are absent. The
        // registration cannot fail but for lack of memory, in which case
        // children of `fork` would keep the parent's id: the call's result
        // is checked and the cache is then not used.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
        if rc != 0 {
            NO_CACHE.store(true, Ordering::Relaxed);
        }
    });
    let pid = std::process::id();
    if !NO_CACHE.load(Ordering::Relaxed) {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

/// Set when the fork handler could not be registered: every
/// [`current_pid`] then asks the kernel.
static NO_CACHE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
