//! Group commit: how a `Durability::Sync` commit becomes durable, sharing
//! `fdatasync` calls between the threads and processes committing at once.
//!
//! A Sync commit publishes under the writer lock like any other commit
//! (`writer.rs`), gives the lock up (or hands it to a waiting process), and
//! only then calls [`Shared::make_durable`], holding no lock. That returns
//! once the data file's `synced_end` covers the commit's end. A sync
//! makes the log durable from `synced_end` to an end loaded before it
//! (only those log bytes when it can, [`sync_log`]; else `fdatasync`), so
//! it covers every commit whose bytes were written before that end was
//! loaded, whoever made the call. In each round one thread, of all
//! processes, syncs (the *leader*); the others sleep until it is done and
//! look again:
//!
//! * in this process the leader holds `leading` (tried, never waited for);
//! * between processes it holds the *sync lock*, an open-file-description
//!   lock on one byte of the lock file (FORMAT.md §8), tried too; it dies
//!   with its holder;
//! * the others sleep on the lock file's `sync_seq` futex word, which the
//!   leader raises once it is done, waking them; a timeout covers a leader
//!   killed before it could.
//!
//! Before it loads the end it syncs to, the leader may *gather*: if the
//! previous sync covered more commits than have arrived since, it sleeps
//! on `sync_commits` until as many have, for at most half as long as the
//! previous sync took. Without that, committers released by one sync
//! arrive just after the next one started, and each of them commits only
//! once per two syncs.
//!
//! Correctness rests on `synced_end` alone (raised only as FORMAT.md §6.2
//! rule 4 says); the lock-file words decide only who syncs and who sleeps.
//! A failed sync latches the store and fails every commit of this process
//! whose transaction began before the failure and is not yet known
//! durable: Linux may report a writeback error only once per open file,
//! and the threads of a process share one, so a later sync of this process
//! succeeding would say nothing about the pages that failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carboy_format::header::live;
use carboy_format::lockfile;
use carboy_format::record::Kind;
use parking_lot::{Mutex, MutexGuard};

use super::Shared;
use super::file_state::FileState;
use crate::error::{Error, Result};

/// Longest a committer sleeps on `sync_seq` before it looks again. A
/// finished sync wakes it at once; this bounds only the wait after a
/// leader of another process was killed before it could.
const STALL_POLL: Duration = Duration::from_millis(10);

/// Longest a leader gathers, whatever the previous sync took.
const GATHER_MAX: Duration = Duration::from_millis(5);

/// Largest log range a commit syncs by itself ([`sync_log`]); a longer
/// one, rewritten through the page cache, gains nothing over
/// `fdatasync`, which writes its pages anyway.
const RANGED_SYNC_MAX: u64 = 1 << 20;

/// Makes the log durable up to `target` (a transaction boundary at or
/// below the committed end). Only the log bytes above `synced_end` need
/// to reach the disk (recovery reads the log alone), so when those hold
/// no index block and are few, only they are written
/// ([`MappedFile::sync_range`](crate::file::MappedFile::sync_range)):
/// the index pages the commits dirtied, scattered over the file, stay in
/// memory, and a sync covering four commits writes about as much as one
/// covering one. Otherwise, or where the system cannot sync a range,
/// `fdatasync`.
fn sync_log(fs: &FileState, target: u64) -> std::io::Result<()> {
    let from = fs.load(live::SYNCED_END);
    if from < target
        && target - from <= RANGED_SYNC_MAX
        && log_only(fs, from, target)
        && fs.map.sync_range(from, target)?
    {
        return Ok(());
    }
    fs.map.sync()
}

/// True when `from..to` is a run of whole put, delete and commit blocks:
/// bytes that never change again once committed. An index block (its
/// slots change in place), or anything that does not parse, is false.
fn log_only(fs: &FileState, from: u64, to: u64) -> bool {
    let mut at = from;
    if at < carboy_format::header::HEADER_SIZE {
        return false;
    }
    while at < to {
        match fs.prefix(at, to).ok().filter(|p| p.kind != Kind::Index) {
            Some(p) => match at.checked_add(p.block_len()) {
                Some(next) => at = next,
                None => return false,
            },
            None => return false,
        }
    }
    at == to
}

/// This process's side of group commit for one namespace.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    /// Held (only ever tried) by the thread of this process that leads.
    leading: Mutex<()>,
    /// Syncs of this process that failed, ever. A transaction notes it at
    /// its start; if it moved by the time the commit would be reported
    /// durable, the commit fails instead.
    failures: AtomicU64,
    /// Sync commits of this process that returned durable.
    commits: AtomicU64,
    /// `fdatasync` calls this process made for commits and [`Store::sync`].
    ///
    /// [`Store::sync`]: crate::Store::sync
    fsyncs: AtomicU64,
}

impl GroupCommit {
    /// The count a transaction notes when it begins.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Counts a Sync commit that returned durable.
    pub(crate) fn count_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// What group commit did in this process so far.
    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            commits: self.commits.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
        }
    }
}

/// How many `Durability::Sync` commits this process made durable, and how
/// many `fdatasync` calls that took ([`Store::sync_stats`]).
///
/// Commits from several threads or processes at once share syncs (group
/// commit), so `fsyncs` may be well below `commits`; one commit never
/// costs more than one.
///
/// ```
/// use carboy::{Durability, Options};
///
/// let dir = tempfile::tempdir()?;
/// let store = Options::new()
///     .durability(Durability::Sync)
///     .open(dir.path().join("ledger.carboy"))?;
/// store.put(b"a", b"1")?;
/// let stats = store.sync_stats();
/// assert_eq!(stats.commits, 1);
/// assert!(stats.fsyncs <= 1); // 0 if another thread's sync covered it
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`Store::sync_stats`]: crate::Store::sync_stats
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// `Durability::Sync` commits of this process, on this namespace, that
    /// returned durable.
    pub commits: u64,
    /// Syncs this process made for them (and for
    /// [`Store::sync`](crate::Store::sync)): `fdatasync` calls, and
    /// log-only syncs (a `pwritev2(RWF_DSYNC)` of the log bytes appended
    /// since the last sync, which is what most Sync commits make).
    pub fsyncs: u64,
}

impl Shared {
    /// After a commit (or [`Store::sync`](crate::Store::sync)) published
    /// everything below `end` in `fs`, holding no lock now: returns once
    /// `end` is durable, syncing if no other thread or process is about to.
    ///
    /// `failures` is [`GroupCommit::failures`] from before the bytes were
    /// written: a failed sync since then fails this call.
    pub(crate) fn make_durable(&self, fs: &FileState, end: u64, failures: u64) -> Result<()> {
        let seq = self.lock.sync_word(lockfile::OFF_SYNC_SEQ);
        loop {
            // Read the round before looking, so that a sync finishing in
            // between changes the word and the wait below returns at once.
            let round = seq.load();
            if fs.load(live::SYNCED_END) >= end {
                return Ok(());
            }
            if let Some(lead) = self.group.leading.try_lock() {
                // A failed sync is counted before `leading` is released.
                if self.group.failures() != failures {
                    return Err(self.failed_meanwhile());
                }
                match self.lock.try_sync_lock() {
                    Ok(true) => return self.lead(lead, fs, end, true),
                    Ok(false) => {} // another process syncs: wait for it
                    // The lock only saves syncs; without it (a filesystem
                    // without byte-range locks), sync alone.
                    Err(_) => return self.lead(lead, fs, end, false),
                }
            } else if self.group.failures() != failures {
                return Err(self.failed_meanwhile());
            }
            let waiters = self.lock.sync_word(lockfile::OFF_SYNC_WAITERS);
            waiters.add(1);
            seq.wait(round, STALL_POLL);
            waiters.add(u32::MAX);
        }
    }

    /// The leader's round: holding `leading` (and the sync lock if
    /// `locked`), syncs unless someone's sync covered `end` meanwhile, then
    /// gives both up *before* it raises `sync_seq`, so that a woken thread
    /// that still needs a sync can lead the next round at once.
    fn lead(&self, lead: MutexGuard<'_, ()>, fs: &FileState, end: u64, locked: bool) -> Result<()> {
        let result = if fs.load(live::SYNCED_END) >= end {
            Ok(())
        } else {
            self.sync_group(fs)
        };
        if locked {
            // Failing to unlock cannot lose anything; the descriptor's
            // close gives the lock up at the latest.
            let _ = self.lock.sync_unlock();
        }
        drop(lead);
        let seq = self.lock.sync_word(lockfile::OFF_SYNC_SEQ);
        seq.add(1);
        if self.lock.sync_word(lockfile::OFF_SYNC_WAITERS).load() != 0 {
            seq.wake_all();
        }
        result
    }

    /// Gathers, then syncs `fs` up to its committed end and raises
    /// `synced_end` to it.
    fn sync_group(&self, fs: &FileState) -> Result<()> {
        self.gather();
        let commits = self.lock.sync_word(lockfile::OFF_SYNC_COMMITS);
        let at_target = commits.load();
        // Loaded before the call: every byte below it is written already,
        // so the sync covers it (FORMAT.md §6.2 rule 4).
        let target = fs.commit_end();
        let started = Instant::now();
        self.group.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sync_log(fs, target) {
            self.group.failures.fetch_add(1, Ordering::SeqCst);
            return Err(self.latch("fsync", e));
        }
        let took = started.elapsed();
        fs.map.raise(live::SYNCED_END, target, live::COMMIT_END);
        // What the next leader gathers by: how many commits this sync
        // covered, and how many came in its window (those, and those that
        // arrived while it ran): in a steady load, every committer.
        let covered = self.lock.sync_word(lockfile::OFF_SYNC_COVERED);
        let before = covered.load();
        covered.store(at_target);
        let word = |offset| self.lock.sync_word(offset);
        word(lockfile::OFF_SYNC_GROUP).store(at_target.wrapping_sub(before));
        word(lockfile::OFF_SYNC_ACTIVE).store(commits.load().wrapping_sub(before));
        word(lockfile::OFF_SYNC_MICROS).store(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        Ok(())
    }

    /// When the last sync was shared, waits (a bounded time: half as long
    /// as that sync took, at most [`GATHER_MAX`]) until as many Sync
    /// commits have arrived since it as arrived in its window. Committers
    /// released by one sync thus make the next one, instead of arriving
    /// just after it started.
    fn gather(&self) {
        let word = |offset| self.lock.sync_word(offset);
        if word(lockfile::OFF_SYNC_GROUP).load() <= 1 {
            return;
        }
        let want = word(lockfile::OFF_SYNC_ACTIVE).load();
        let covered = word(lockfile::OFF_SYNC_COVERED).load();
        let commits = word(lockfile::OFF_SYNC_COMMITS);
        let arrived = |now: u32| now.wrapping_sub(covered) >= want;
        if arrived(commits.load()) {
            return;
        }
        let micros = u64::from(word(lockfile::OFF_SYNC_MICROS).load());
        let deadline = Instant::now() + Duration::from_micros(micros / 2).min(GATHER_MAX);
        let gathering = word(lockfile::OFF_GATHERING);
        gathering.store(1);
        loop {
            let now = commits.load();
            let left = deadline.saturating_duration_since(Instant::now());
            if arrived(now) || left.is_zero() {
                break;
            }
            commits.wait(now, left);
        }
        gathering.store(0);
    }

    /// True when the last sync covered several commits: other threads or
    /// processes are committing too.
    pub(crate) fn syncs_shared(&self) -> bool {
        self.lock.sync_word(lockfile::OFF_SYNC_GROUP).load() > 1
    }

    /// After a Sync commit's commit point, under the writer lock: counts it
    /// for gathering leaders, and wakes one that waits.
    pub(crate) fn note_sync_commit(&self) {
        let commits = self.lock.sync_word(lockfile::OFF_SYNC_COMMITS);
        commits.add(1);
        if self.lock.sync_word(lockfile::OFF_GATHERING).load() != 0 {
            commits.wake_all();
        }
    }

    /// The error for a commit whose bytes another thread's failed sync may
    /// have covered.
    fn failed_meanwhile(&self) -> Error {
        let cause = self
            .latched
            .lock()
            .clone()
            .unwrap_or_else(|| "an fsync of another thread failed".into());
        Error::Latched {
            path: self.data_path.clone(),
            cause,
        }
    }
}
