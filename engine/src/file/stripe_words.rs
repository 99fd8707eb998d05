//! [`StripeWords`]: the mapped words of a stripe lock file
//! ([`crate::sync::StripeLocks`]) through which processes hand idle stripes
//! to each other: for each stripe, how many are waiting for it (`wanted`)
//! and which process holds it idle (`idle`, a process id, 0 for none), and
//! one `seq` word for the whole file that every waiter bumps, on which the
//! holders' lease threads sleep (a futex word).
//!
//! Layout (every word a little-endian `u32`, touched only through atomics
//! by every process): `seq` at offset 0; stripe `s`'s `wanted` at
//! `64 + 8 s` and `idle` at `64 + 8 s + 4`. The file is grown to hold them
//! (never shrunk); the stripes' byte-range locks are bytes `0..stripes` of
//! the same file, which locks do not care about.
//!
//! The words are hints, never trusted for exclusion (the byte-range locks
//! are the locks): a garbage `wanted` only stops leases on its stripe, a
//! garbage `idle` only makes a non-blocking try wait its bound before it
//! answers busy. Like every shared mapping of carboy (`file/mod.rs`), a
//! foreign process that truncates the file under a live mapping can make
//! an access fault; carboy never shrinks it.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use super::sys;

/// Offset of the first stripe's words.
const STRIPES_AT: usize = 64;
/// Bytes of words per stripe.
const PER_STRIPE: usize = 8;
/// The mapping's length is a multiple of this.
const PAGE: usize = 4096;

/// The mapped words of one stripe lock file (one inode).
pub(crate) struct StripeWords {
    map: MmapRaw,
    stripes: u32,
    /// Device and inode of the file mapped.
    id: (u64, u64),
}

impl std::fmt::Debug for StripeWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeWords")
            .field("stripes", &self.stripes)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Bytes of the mapping for `stripes` stripes.
fn mapped_len(stripes: u32) -> usize {
    (STRIPES_AT + PER_STRIPE * stripes as usize).div_ceil(PAGE) * PAGE
}

/// The device and inode of an open file.
pub(crate) fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

impl StripeWords {
    /// Maps the words of `file` (open for reading and writing), growing the
    /// file first if it is too short to hold them.
    pub(crate) fn map(file: &File, stripes: u32) -> io::Result<StripeWords> {
        let len = mapped_len(stripes);
        let meta = file.metadata()?;
        if meta.len() < len as u64 {
            // Growing only: another process may have grown it already, or
            // be mapping it now (the same length, or longer for more
            // stripes); extending never removes what a mapping covers.
            file.set_len(len as u64)?;
        }
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(StripeWords {
            map,
            stripes,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Device and inode of the mapped file.
    pub(crate) fn id(&self) -> (u64, u64) {
        self.id
    }

    /// The word at `offset`.
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= mapped_len(self.stripes),
            "stripe word {offset} out of bounds"
        );
        // SAFETY: `offset + 4` lies inside the mapping (asserted above),
        // which is `mapped_len(stripes)` bytes of a file at least that long
        // (grown before mapping, never shrunk by carboy) and lives as long
        // as `self`; the base is page-aligned and `offset` a multiple of 4,
        // so the pointer is aligned for `AtomicU32`. Every process touches
        // these words only through 4-byte atomics (module doc).
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u32>()) }
    }

    fn seq_word(&self) -> &AtomicU32 {
        self.word(0)
    }

    fn wanted_word(&self, stripe: u32) -> &AtomicU32 {
        self.word(STRIPES_AT + PER_STRIPE * stripe as usize)
    }

    fn idle_word(&self, stripe: u32) -> &AtomicU32 {
        self.word(STRIPES_AT + PER_STRIPE * stripe as usize + 4)
    }

    /// The `seq` word's value (raw: only compared and waited on).
    pub(crate) fn seq(&self) -> u32 {
        self.seq_word().load(Ordering::SeqCst)
    }

    /// Sleeps while `seq` still holds `seen`, at most `timeout`. Returns
    /// early when woken, interrupted or when it already differs.
    pub(crate) fn wait_seq(&self, seen: u32, timeout: Duration) {
        sys::futex_wait(self.seq_word(), seen, timeout);
    }

    /// Counts the caller as waiting for `stripe` and wakes every lease
    /// thread sleeping on `seq`, so that a holder keeping it idle gives it
    /// up. Pair with [`unannounce`](Self::unannounce).
    pub(crate) fn announce(&self, stripe: u32) {
        add(self.wanted_word(stripe), 1);
        add(self.seq_word(), 1);
        sys::futex_wake_all(self.seq_word());
    }

    /// Stops counting the caller as waiting for `stripe`.
    pub(crate) fn unannounce(&self, stripe: u32) {
        add(self.wanted_word(stripe), u32::MAX);
    }

    /// True while anyone counts itself as waiting for `stripe`.
    pub(crate) fn wanted(&self, stripe: u32) -> bool {
        self.wanted_word(stripe).load(Ordering::SeqCst) != 0
    }

    /// The process that says it holds `stripe` idle, 0 for none.
    pub(crate) fn idle_holder(&self, stripe: u32) -> u32 {
        u32::from_le(self.idle_word(stripe).load(Ordering::SeqCst))
    }

    /// Says that process `pid` (which holds the stripe's byte) now keeps
    /// `stripe` idle.
    pub(crate) fn set_idle(&self, stripe: u32, pid: u32) {
        self.idle_word(stripe).store(pid.to_le(), Ordering::SeqCst);
    }

    /// Says that `stripe` is no longer kept idle by `pid` (taken back into
    /// use, or given up), waking waiters on the word if anyone waits. A
    /// word that names another process is left alone.
    pub(crate) fn clear_idle(&self, stripe: u32, pid: u32) {
        let word = self.idle_word(stripe);
        let _ = word.compare_exchange(pid.to_le(), 0, Ordering::SeqCst, Ordering::SeqCst);
        if self.wanted(stripe) {
            sys::futex_wake_all(word);
        }
    }

    /// Clears what a holder that is gone left in `stripe`'s `idle` word;
    /// called by whoever just took the stripe's byte afresh (so nobody else
    /// holds it, idle or not).
    pub(crate) fn clear_stale(&self, stripe: u32) {
        let word = self.idle_word(stripe);
        if word.load(Ordering::SeqCst) != 0 {
            word.store(0, Ordering::SeqCst);
        }
    }

    /// Sleeps while `stripe`'s `idle` word still names `pid`, at most
    /// `timeout`.
    pub(crate) fn wait_idle(&self, stripe: u32, pid: u32, timeout: Duration) {
        sys::futex_wait(self.idle_word(stripe), pid.to_le(), timeout);
    }
}

/// Adds `delta` (wrapping) to a little-endian word.
fn add(word: &AtomicU32, delta: u32) {
    let _ = word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |raw| {
        Some(u32::from_le(raw).wrapping_add(delta).to_le())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new description of the file at `path`, made empty if missing.
    fn open(path: &std::path::Path) -> File {
        if !path.exists() {
            std::fs::write(path, b"").unwrap();
        }
        File::options().read(true).write(true).open(path).unwrap()
    }

    #[test]
    fn two_mappings_of_one_file_share_the_words_and_the_file_grows_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let a = StripeWords::map(&open(&path), 1024).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12288);
        let b = StripeWords::map(&open(&path), 1024).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(!b.wanted(1023));
        a.announce(1023);
        a.announce(1023);
        assert!(b.wanted(1023));
        assert!(!b.wanted(1022));
        b.unannounce(1023);
        assert!(a.wanted(1023));
        b.unannounce(1023);
        assert!(!a.wanted(1023));
        assert_eq!(a.seq(), 2u32.to_le());

        a.set_idle(5, 4242);
        assert_eq!(b.idle_holder(5), 4242);
        b.clear_idle(5, 7); // another process's word: left alone
        assert_eq!(a.idle_holder(5), 4242);
        b.clear_idle(5, 4242);
        assert_eq!(a.idle_holder(5), 0);
        a.set_idle(6, 9);
        b.clear_stale(6);
        assert_eq!(a.idle_holder(6), 0);
        // A longer file is mapped as it is, not shrunk.
        drop(StripeWords::map(&open(&path), 1).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12288);
    }

    #[test]
    fn waits_return_when_the_word_differs_or_the_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let w = StripeWords::map(&open(&dir.path().join("l")), 4).unwrap();
        let start = std::time::Instant::now();
        // Already different: returns at once.
        w.wait_seq(w.seq().wrapping_add(1), Duration::from_secs(5));
        w.set_idle(1, 3);
        w.wait_idle(1, 4, Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(4));
        // Unchanged: the timeout.
        w.wait_seq(w.seq(), Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
