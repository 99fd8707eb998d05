//! The file layer: memory mappings, file growth, locks and syncs.
//!
//! This is the only module of carboy that uses `unsafe`. Its surface is
//! small and every block states why it is sound; the argument for the shared
//! mapping as a whole is in `engine/DESIGN.md` ("Soundness of the shared
//! mapping"). In short:
//!
//! * A mapping is never unmapped while the [`MappedFile`] that made it lives,
//!   so every pointer handed out stays valid for `&self`'s lifetime; a
//!   mapping that grows is *replaced* by a larger one and the old one is kept.
//! * Words that change while the file is shared (live words in the header,
//!   index slots, the lock file's generation) are only touched through
//!   [`AtomicU64`](std::sync::atomic::AtomicU64), by every process.
//! * Bytes handed out as `&[u8]` lie below the committed end of the log,
//!   which no writer changes again while the file is live. Writers only
//!   write above it, under the exclusive lock, before publishing.
//!   [`MappedFile::sync_range`] rewrites committed records with the values
//!   they already hold (through `pwritev2`, never through the mapping),
//!   which no reader can observe.
//! * A mapping made by [`MappedFile::map_read_only`] (of a file opened
//!   read-only, for salvage) is mapped `PROT_READ`: nothing writes through
//!   it. Its writing methods return an error or do nothing, and
//!   [`MappedFile::word`] and [`MappedFile::words`], whose atomics a caller
//!   could store to, return `None`; live words are loaded with a `Relaxed`
//!   load and an `Acquire` fence, the one atomic access the language
//!   allows on read-only memory.
//! * [`MappedFile::release`] drops pages from this process's resident set
//!   (`MADV_DONTNEED`) without changing a byte anyone can observe: the page
//!   cache keeps them, dirty or not, and the next access faults them back.
//! * Nothing is read past the end the file is known to have (the committed
//!   end, or the allocated end for a writer), so a well-formed file never
//!   raises SIGBUS. The store checks the file's length against both when it
//!   takes the writer lock afresh (`store/environment.rs`); a foreign process
//!   that truncates the file after that check can still make a lock-free
//!   reader, or a writer holding a lease, fault. DESIGN.md ("Known limits")
//!   says exactly when.
//!
//! Besides the mapping, the data file carries *presence locks*: byte-range
//! locks of the open file description (`F_OFD_SETLK`), one byte each, far
//! past any data, that tell which lock file each process uses the data file
//! through (see `store/environment.rs`).
//!
//! The module's files, one concern each:
//!
//! * `mapping.rs`: [`MappedFile`], the mapping of a data file (reservation,
//!   growth, checked reads, atomics on live words, writes, release, syncs,
//!   read-only mappings).
//! * `presence.rs`: the data file's presence marks ([`PRESENCE_SLOTS`]).
//! * `lock_file.rs`: [`LockFile`], the lock file's `flock` and its mapped
//!   live words, futex words included.
//! * `sys.rs`: system calls that touch no mapping: `fallocate`
//!   ([`allocate`]), `pwritev2(RWF_DSYNC)`, [`rename`], [`sync_dir`], futex
//!   wait and wake.
//! * `stripe_words.rs`: [`StripeWords`], the mapped words of a stripe lock
//!   file through which processes hand idle stripes to each other.
//! * `range_lock.rs`: the one `fcntl` call behind
//!   [`crate::sync::StripeLocks`] and the presence marks: byte-range locks
//!   on open file descriptions.
//! * `test_signals.rs` (tests only): interrupting a thread blocked in a
//!   system call.

mod lock_file;
mod mapping;
mod presence;
mod range_lock;
mod stripe_words;
mod sys;
#[cfg(test)]
pub(crate) mod test_signals;

pub(crate) use lock_file::LockFile;
pub(crate) use mapping::MappedFile;
pub(crate) use presence::PRESENCE_SLOTS;
pub(crate) use range_lock::{
    RangeLock, is_unsupported as range_lock_unsupported, lock_byte, unlock_byte,
};
pub(crate) use stripe_words::{StripeWords, file_id};
pub(crate) use sys::{allocate, current_pid, rename, sync_dir};
