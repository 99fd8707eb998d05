//! Which namespaces the current thread holds a lock on, so that a call that
//! would wait for the thread itself (a write inside an iteration, a
//! snapshot inside a transaction) is an error instead of a deadlock.

use std::cell::RefCell;

use super::Shared;
use crate::error::{Error, Result};

thread_local! {
    /// (address of the namespace's `Shared`, held for writing).
    static HELD: RefCell<Vec<(usize, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Marks a lock of the current thread on a namespace until dropped.
pub(crate) struct Held {
    key: (usize, bool),
}

impl Held {
    /// Records that this thread now holds `shared` (for writing or not).
    pub(crate) fn new(shared: &Shared, write: bool) -> Held {
        let key = (shared as *const Shared as usize, write);
        HELD.with(|h| h.borrow_mut().push(key));
        Held { key }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|k| *k == self.key) {
                h.remove(i);
            }
        });
    }
}

/// True when this thread already holds `shared` for reading (a snapshot
/// inside a snapshot must take the read lock recursively, without queueing
/// behind a waiting writer; a first one must queue, or writers starve).
pub(crate) fn holds_read(shared: &Shared) -> bool {
    let me = shared as *const Shared as usize;
    HELD.with(|h| h.borrow().iter().any(|(k, w)| *k == me && !*w))
}

/// Fails when taking a lock on `shared` (for writing, or for reading) would
/// wait for a lock this thread already holds.
pub(crate) fn check(shared: &Shared, write: bool) -> Result<()> {
    let me = shared as *const Shared as usize;
    let held = HELD.with(|h| {
        h.borrow()
            .iter()
            .find(|(k, w)| *k == me && (write || *w))
            .copied()
    });
    match held {
        None => Ok(()),
        Some((_, held_write)) => Err(Error::WouldDeadlock {
            path: shared.data_path.clone(),
            held: if held_write {
                "a transaction"
            } else {
                "a snapshot or iterator"
            },
            wanted: if write { "write" } else { "take a snapshot" },
        }),
    }
}
