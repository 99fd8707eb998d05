//! A storage seam for tests: with the `fault-injection` feature, a process
//! can make carboy's `fallocate`, `fsync` and `rename` calls fail on demand,
//! to check what a failed write leaves behind, and can see when a sync of a
//! data file has returned ([`Op::Synced`], [`Op::SyncedRange`]), to know
//! what a power loss at that moment would keep. Without the feature the checks
//! compile to nothing.
//!
//! ```
//! # #[cfg(feature = "fault-injection")] {
//! use std::io;
//! carboy::faults::set_hook(Some(Box::new(|op| {
//!     (op == carboy::faults::Op::Fsync).then(|| io::Error::other("injected"))
//! })));
//! // ... every fsync now fails ...
//! carboy::faults::set_hook(None);
//! # }
//! ```

use std::io;

/// A storage operation that can be made to fail.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Extending a file with `fallocate`.
    Fallocate,
    /// `fdatasync` of a data file (or `fsync` of a directory).
    Fsync,
    /// Renaming a new data file into place.
    Rename,
    /// An `fdatasync` of a data file has just returned successfully. The
    /// hook is told after the fact, in the thread that made the call, and
    /// its answer is ignored: it cannot fail what already happened. (The
    /// same thread's [`Op::Fsync`] came just before the call.)
    Synced,
    /// A sync of a data file that made only bytes `start..end` durable has
    /// just returned successfully (told like [`Op::Synced`], in its place).
    /// Group commit makes a commit durable so: the file's other dirty
    /// pages (index slots, live words) may still be only in memory.
    SyncedRange {
        /// First byte made durable.
        start: u64,
        /// End of the range made durable (exclusive).
        end: u64,
    },
}

/// Decides, for each operation, whether it fails (and with what).
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub type Hook = Box<dyn Fn(Op) -> Option<io::Error> + Send + Sync>;

#[cfg(feature = "fault-injection")]
static HOOK: std::sync::RwLock<Option<Hook>> = std::sync::RwLock::new(None);

/// Installs (or, with `None`, removes) the process-wide fault hook.
#[cfg(feature = "fault-injection")]
pub fn set_hook(hook: Option<Hook>) {
    match HOOK.write() {
        Ok(mut h) => *h = hook,
        Err(poisoned) => *poisoned.into_inner() = hook,
    }
}

/// Fails with the hook's error when it says `op` should fail.
#[cfg(feature = "fault-injection")]
pub(crate) fn check(op: Op) -> io::Result<()> {
    let hook = match HOOK.read() {
        Ok(h) => h,
        Err(poisoned) => poisoned.into_inner(),
    };
    match hook.as_ref().and_then(|h| h(op)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Tells the hook that an `fdatasync` of a data file returned
/// ([`Op::Synced`]; its answer is ignored).
#[cfg(feature = "fault-injection")]
pub(crate) fn synced() {
    tell(Op::Synced);
}

/// Tells the hook that a sync of bytes `start..end` of a data file
/// returned ([`Op::SyncedRange`]; its answer is ignored).
#[cfg(feature = "fault-injection")]
pub(crate) fn synced_range(start: u64, end: u64) {
    tell(Op::SyncedRange { start, end });
}

/// Tells the hook about `op`, ignoring its answer.
#[cfg(feature = "fault-injection")]
fn tell(op: Op) {
    let _ = check(op);
}

/// Without the `fault-injection` feature nobody is told.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn synced() {}

/// Without the `fault-injection` feature nobody is told.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn synced_range(_start: u64, _end: u64) {}

/// Without the `fault-injection` feature nothing ever fails here.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn check(_op: Op) -> io::Result<()> {
    Ok(())
}
