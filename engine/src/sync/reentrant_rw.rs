//! An in-process read/write lock that each thread may take again while it
//! holds it: the core of [`NameRwLocks`](super::NameRwLocks) and
//! [`MutexLock`](super::MutexLock).
//!
//! Rules, per thread:
//!
//! * a read inside a read, a write inside a write, and a read inside a
//!   write are granted at once (counted, released in any order);
//! * a write inside a read is refused ([`Upgrade`]): other threads may read
//!   too, so the write would wait for the caller's own read forever;
//! * when a thread's writes are all released while it still reads, it just
//!   reads (a downgrade; other readers may come in);
//! * writers are preferred: a thread that holds nothing waits to read while
//!   a writer waits, but a thread that already reads reads again at once
//!   (waiting would deadlock it behind a writer that waits for it).
//!
//! This is Beaker's `ConditionSynchronizer` with its thread-local counts,
//! with the writer's wait in a loop (Beaker waits once, a race).

use std::collections::HashMap;
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};

/// The calling thread reads and asked to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upgrade;

#[derive(Debug, Default)]
struct State {
    /// The writing thread and how many write guards it holds.
    writer: Option<(ThreadId, u32)>,
    /// Read guards held, per thread (the writer's own reads included).
    readers: HashMap<ThreadId, u32>,
    /// Threads blocked in `write`.
    waiting_writers: u32,
}

impl State {
    fn can_read(&self, me: ThreadId) -> bool {
        match self.writer {
            Some((writer, _)) => writer == me,
            None => self.readers.contains_key(&me) || self.waiting_writers == 0,
        }
    }

    fn can_write(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty()
    }
}

/// A reentrant read/write lock with writer preference.
#[derive(Debug, Default)]
pub(crate) struct ReentrantRwLock {
    state: Mutex<State>,
    changed: Condvar,
}

impl ReentrantRwLock {
    /// Takes a read lock for thread `me`, waiting as the rules say.
    pub(crate) fn read(&self, me: ThreadId) {
        self.read_if(me, true);
    }

    /// Takes a read lock for thread `me` if that needs no wait; returns
    /// whether it was taken.
    pub(crate) fn try_read(&self, me: ThreadId) -> bool {
        self.read_if(me, false)
    }

    fn read_if(&self, me: ThreadId, wait: bool) -> bool {
        let mut state = self.state.lock();
        while !state.can_read(me) {
            if !wait {
                return false;
            }
            self.changed.wait(&mut state);
        }
        *state.readers.entry(me).or_insert(0) += 1;
        true
    }

    /// Takes the write lock for thread `me`, waiting while others hold it;
    /// [`Upgrade`] if `me` reads without writing.
    pub(crate) fn write(&self, me: ThreadId) -> Result<(), Upgrade> {
        self.write_if(me, true).map(|_| ())
    }

    /// Takes the write lock for thread `me` if that needs no wait; returns
    /// whether it was taken, or [`Upgrade`] if `me` reads without writing.
    pub(crate) fn try_write(&self, me: ThreadId) -> Result<bool, Upgrade> {
        self.write_if(me, false)
    }

    fn write_if(&self, me: ThreadId, wait: bool) -> Result<bool, Upgrade> {
        let mut state = self.state.lock();
        if let Some((writer, depth)) = &mut state.writer
            && *writer == me
        {
            *depth += 1;
            return Ok(true);
        }
        if state.readers.contains_key(&me) {
            return Err(Upgrade);
        }
        if !state.can_write() {
            if !wait {
                return Ok(false);
            }
            state.waiting_writers += 1;
            while !state.can_write() {
                self.changed.wait(&mut state);
            }
            state.waiting_writers -= 1;
        }
        state.writer = Some((me, 1));
        Ok(true)
    }

    /// Releases one read lock of thread `me`.
    pub(crate) fn release_read(&self, me: ThreadId) {
        let mut state = self.state.lock();
        if let Some(count) = state.readers.get_mut(&me) {
            *count -= 1;
            if *count == 0 {
                state.readers.remove(&me);
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Releases one write lock of thread `me`.
    pub(crate) fn release_write(&self, me: ThreadId) {
        let mut state = self.state.lock();
        if let Some((writer, depth)) = &mut state.writer
            && *writer == me
        {
            *depth -= 1;
            if *depth == 0 {
                state.writer = None;
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Threads blocked waiting to write (for tests that must know a writer
    /// waits before they go on).
    #[cfg(test)]
    pub(crate) fn waiting_writers(&self) -> u32 {
        self.state.lock().waiting_writers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use crate::sync::test_support::until;

    fn me() -> ThreadId {
        thread::current().id()
    }

    #[test]
    fn same_thread_nests_reads_writes_and_reads_inside_writes() {
        let lock = ReentrantRwLock::default();
        assert_eq!(lock.try_write(me()), Ok(true));
        assert_eq!(lock.try_write(me()), Ok(true));
        assert!(lock.try_read(me()));
        // Released out of order: the write first, while the read stays.
        lock.release_write(me());
        lock.release_write(me());
        // Now only reading: another thread may read but not write.
        let lock = Arc::new(lock);
        let other = Arc::clone(&lock);
        let (can_read, can_write) = thread::spawn(move || {
            let me = thread::current().id();
            let read = other.try_read(me);
            if read {
                other.release_read(me);
            }
            (read, other.try_write(me))
        })
        .join()
        .unwrap();
        assert!(can_read);
        assert_eq!(can_write, Ok(false));
        lock.release_read(me());
        assert_eq!(lock.try_write(me()), Ok(true));
    }

    #[test]
    fn a_write_inside_a_read_is_refused() {
        let lock = ReentrantRwLock::default();
        lock.read(me());
        assert_eq!(lock.write(me()), Err(Upgrade));
        assert_eq!(lock.try_write(me()), Err(Upgrade));
        lock.release_read(me());
        assert_eq!(lock.try_write(me()), Ok(true));
    }

    #[test]
    fn a_waiting_writer_holds_new_readers_back_but_not_nested_ones() {
        let lock = Arc::new(ReentrantRwLock::default());
        lock.read(me());
        let (tx, rx) = mpsc::channel();
        let writer = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let me = thread::current().id();
                assert_eq!(lock.write(me), Ok(()));
                tx.send(()).unwrap();
                lock.release_write(me);
            })
        };
        until("the writer waits", || lock.waiting_writers() == 1);
        // A fresh reader must wait behind the writer...
        let fresh = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || lock.try_read(thread::current().id()))
                .join()
                .unwrap()
        };
        assert!(!fresh);
        // ...but this thread, which already reads, reads again at once.
        assert!(lock.try_read(me()));
        assert!(rx.try_recv().is_err(), "the writer got in past two reads");
        lock.release_read(me());
        lock.release_read(me());
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the writer never got the lock");
        writer.join().unwrap();
    }
}
