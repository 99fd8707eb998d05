//! The writer lock's lease: a process keeps the exclusive `flock` between
//! commits while no other process wants it, so that a commit after the
//! first costs no system call for locking.
//!
//! Every process that finds the lock taken counts itself in the lock file's
//! `wanted` word and wakes futex waiters on it before it blocks (see
//! `LockFile::lock_exclusive`). A lease holder gives the lock up:
//!
//! * at the end of a commit, if `wanted` is nonzero (the busy case), or
//! * from its lease thread, which sleeps on the `wanted` futex while the
//!   process holds the lock idle (the idle case), and also gives it up when
//!   the last `Store` handle of the namespace in this process is dropped
//!   (the drop wakes it).
//!
//! All changes of `held` happen under the in-process write lock (`rw`), so
//! while anyone holds `rw` (read or write) it does not change.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::error::{Error, Result};

/// How long the lease thread sleeps between looks when nothing wakes it.
/// Waiters and the last handle's drop wake it at once; this only bounds
/// the cost of a wake that never comes (one look a second per namespace
/// holding a lease).
const LEASE_POLL: Duration = Duration::from_secs(1);

impl Shared {
    /// With `rw` held for writing: makes sure this process holds the
    /// exclusive flock, taking over an idle lease if it has one. Returns
    /// `true` when the lock was taken afresh (a system call), `false` when
    /// an idle lease was taken over (none).
    pub(crate) fn acquire_exclusive(&self) -> Result<bool> {
        if self.take_idle_lease() {
            return Ok(false);
        }
        self.lock
            .lock_exclusive()
            .map_err(|e| Error::io("lock", &self.lock_path, e))?;
        Ok(true)
    }

    /// With `rw` held for writing: takes over this process's idle lease
    /// if it has one (no system call); false if it has none.
    pub(crate) fn take_idle_lease(&self) -> bool {
        self.held.swap(false, Ordering::AcqRel)
    }

    /// With `rw` held for writing, at the end of a write: gives the flock
    /// up if another process wants it, or keeps it as an idle lease.
    pub(crate) fn release_exclusive(&self) {
        if self.lock.is_wanted() {
            // Unlocking cannot meaningfully fail; if it did, closing the
            // descriptor (at the latest) releases the lock.
            let _ = self.lock.unlock();
            return;
        }
        self.held.store(true, Ordering::Release);
        self.start_lease_thread();
    }

    /// True while this process holds the exclusive flock as an idle lease
    /// (stable while `rw` is held).
    pub(crate) fn holds_lease(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    fn start_lease_thread(&self) {
        let mut running = self.lease_thread.lock();
        if *running {
            return;
        }
        let weak = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("carboy-lease".into())
            .spawn(move || lease_thread(weak));
        if spawned.is_ok() {
            *running = true;
        } else {
            // No thread, no idle lease: give the lock up now.
            self.held.store(false, Ordering::Release);
            let _ = self.lock.unlock();
        }
    }
}

/// Gives the lease up when another process wants the lock or when the
/// namespace is closed in this process; exits then. At each look while the
/// lease is idle, checks the files as a fresh acquisition would
/// (`environment.rs`), giving the lease up if one was removed, replaced or
/// truncated, so that the next write takes the lock afresh and says so.
fn lease_thread(weak: std::sync::Weak<Shared>) {
    // The files are checked from the second look on: a thread is started
    // at the end of a commit, and checking at once would only compete with
    // the next commit for the lock.
    let mut waited = false;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let closing = shared.handles.load(Ordering::Acquire) == 0;
        if shared.holds_lease() && (closing || shared.lock.is_wanted()) {
            let _rw = shared.rw.write();
            if shared.held.swap(false, Ordering::AcqRel) {
                let _ = shared.lock.unlock();
            }
        } else if waited && shared.holds_lease() {
            shared.check_idle_lease();
        }
        if closing || !shared.holds_lease() {
            // Nothing to guard: let the next commit start a new thread.
            *shared.lease_thread.lock() = false;
            // A commit may have kept a lease after the look above and seen
            // the thread still running: look once more before leaving.
            if shared.holds_lease() && !closing {
                *shared.lease_thread.lock() = true;
                continue;
            }
            return;
        }
        shared.lock.wait_until_wanted(LEASE_POLL);
        waited = true;
    }
}
