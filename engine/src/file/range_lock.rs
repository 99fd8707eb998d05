//! Byte-range locks on an open file description: Linux's `F_OFD_SETLK`,
//! `F_OFD_SETLKW` and `F_OFD_GETLK` (Linux 3.15 and later). They back
//! [`crate::sync::StripeLocks`] (one exclusive byte per stripe) and the data
//! file's presence marks (shared bytes far past the data; see `presence.rs`).
//!
//! Unlike classic POSIX record locks (`F_SETLK`), which belong to a process
//! and vanish when *any* descriptor of the file is closed, these belong to
//! the open file description: two descriptions conflict even inside one
//! process, and a lock lasts until it is unlocked or the last descriptor of
//! its description is closed (the process exiting or being killed included).
//! The kernel does no deadlock detection for them.
//!
//! `rustix` 1.x does not wrap byte-range `fcntl` locks, so this calls
//! `libc::fcntl` directly; it is the only code in carboy that does.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// What one locking call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeLock {
    /// The byte is now locked by this description.
    Acquired,
    /// Another description holds a conflicting lock (non-blocking calls only).
    Busy,
}

/// Locks byte `offset` of `file` exclusively for `file`'s open file
/// description. With `wait`, blocks until it is free (`F_OFD_SETLKW`);
/// without, returns [`RangeLock::Busy`] at once if another description holds
/// it (`F_OFD_SETLK`). `file` must be open for writing. Interrupted calls
/// (`EINTR`) are retried.
pub(crate) fn lock_byte(file: &File, offset: u64, wait: bool) -> io::Result<RangeLock> {
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        match fcntl_lock(file, cmd, libc::F_WRLCK, (offset, 1)) {
            Ok(_) => return Ok(RangeLock::Acquired),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e)
                if !wait && matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) =>
            {
                return Ok(RangeLock::Busy);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Unlocks byte `offset` of `file` for `file`'s open file description (a
/// no-op if it holds no lock there).
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    unlock_range(file, (offset, 1))
}

/// Takes a shared lock on `range` (start, length) for `file`'s open file
/// description, without waiting; an error if a conflicting (exclusive)
/// lock is held.
pub(crate) fn share_range(file: &File, range: (u64, u64)) -> io::Result<()> {
    retry(|| fcntl_lock(file, libc::F_OFD_SETLK, libc::F_RDLCK, range)).map(|_| ())
}

/// Unlocks `range` (start, length) for `file`'s open file description (a
/// no-op where it holds no lock).
pub(crate) fn unlock_range(file: &File, range: (u64, u64)) -> io::Result<()> {
    retry(|| fcntl_lock(file, libc::F_OFD_SETLK, libc::F_UNLCK, range)).map(|_| ())
}

/// True when another open file description (in any process, this one
/// included) holds a lock in `range` (start, length) that an exclusive
/// lock would conflict with.
pub(crate) fn others_lock(file: &File, range: (u64, u64)) -> io::Result<bool> {
    retry(|| fcntl_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK, range))
}

/// `call`, again while it is interrupted (`EINTR`).
fn retry(mut call: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
    loop {
        match call() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// True when `e` says the kernel or filesystem lacks open file description
/// locks (old kernels answer `EINVAL` to an unknown command; some network
/// filesystems `ENOLCK`, `EOPNOTSUPP` or `ENOSYS`).
pub(crate) fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

/// One `fcntl(fd, cmd, &flock)` call on `range` (start, length). For
/// `F_OFD_GETLK`, returns whether another description holds a conflicting
/// lock; otherwise `false`.
fn fcntl_lock(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    range: (u64, u64),
) -> io::Result<bool> {
    let start = libc::off_t::try_from(range.0)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock offset out of range"))?;
    let len = libc::off_t::try_from(range.1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock length out of range"))?;
    let kind = libc::c_short::try_from(kind)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock type out of range"))?;
    let whence = libc::c_short::try_from(libc::SEEK_SET)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "SEEK_SET out of range"))?;
    // SAFETY: `libc::flock` is a plain C struct of integers (plus, on some
    // architectures, integer padding fields), for which all-zero bytes are a
    // valid value. Zero is also what the OFD commands require of `l_pid`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = whence;
    lock.l_start = start;
    lock.l_len = len;
    // SAFETY: the descriptor is valid for the whole call (borrowed from a
    // live `File`); `cmd` is one of the record-lock commands, whose third
    // argument the kernel reads (and for F_OFD_GETLK would write) as a
    // `struct flock`, and `&mut lock` points to one that lives across the
    // call. The call touches no other memory of this process.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock as *mut libc::flock) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(cmd == libc::F_OFD_GETLK && i32::from(lock.l_type) != libc::F_UNLCK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::test_signals::{handled, interrupt, serial, this_thread};
    use crate::sync::test_support::{until, wait_until_blocked_on};
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;

    fn open(path: &std::path::Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn two_descriptions_of_one_process_conflict_on_the_same_byte_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranges");
        let (a, b) = (open(&path), open(&path));
        assert_eq!(lock_byte(&a, 7, false).unwrap(), RangeLock::Acquired);
        assert_eq!(lock_byte(&b, 7, false).unwrap(), RangeLock::Busy);
        assert_eq!(lock_byte(&b, 8, false).unwrap(), RangeLock::Acquired);
        // Locking again through the same description is not a conflict.
        assert_eq!(lock_byte(&a, 7, false).unwrap(), RangeLock::Acquired);
        unlock_byte(&a, 7).unwrap();
        assert_eq!(lock_byte(&b, 7, false).unwrap(), RangeLock::Acquired);
        // Locks past the end of the file leave the file empty.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn closing_the_description_releases_its_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranges");
        let a = open(&path);
        let b = open(&path);
        assert_eq!(lock_byte(&a, 1023, true).unwrap(), RangeLock::Acquired);
        assert_eq!(lock_byte(&b, 1023, false).unwrap(), RangeLock::Busy);
        drop(a);
        assert_eq!(lock_byte(&b, 1023, false).unwrap(), RangeLock::Acquired);
    }

    #[test]
    fn a_read_only_description_cannot_take_a_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranges");
        drop(open(&path));
        let read_only = File::open(&path).unwrap();
        let err = lock_byte(&read_only, 0, false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
        assert!(!is_unsupported(&err));
    }

    #[test]
    fn a_blocking_lock_interrupted_by_a_signal_waits_on() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranges");
        let holder = open(&path);
        assert_eq!(lock_byte(&holder, 3, false).unwrap(), RangeLock::Acquired);
        let inode = std::fs::metadata(&path).unwrap().ino();
        let path = path.as_path();
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let waiter = s.spawn(move || {
                tx.send(this_thread()).unwrap();
                lock_byte(&open(path), 3, true)
            });
            let target = rx.recv().unwrap();
            wait_until_blocked_on(inode);
            let before = handled();
            // The handler has no SA_RESTART: fcntl returns EINTR, which
            // lock_byte must retry rather than report.
            interrupt(target);
            until("the waiter handled the signal", || handled() > before);
            unlock_byte(&holder, 3).unwrap();
            let got = waiter.join().unwrap();
            assert_eq!(got.unwrap(), RangeLock::Acquired);
        });
    }
}
