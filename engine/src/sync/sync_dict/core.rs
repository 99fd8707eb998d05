//! The one algorithm behind [`SyncDict`](super::SyncDict) and
//! [`WeakSyncDict`](super::WeakSyncDict): slots that are ready, being
//! created (a [`Flight`] that waiters block on) or absent, under one mutex;
//! creators run unlocked, and a creation that fails or panics removes its
//! flight so that a waiter creates instead.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};

use super::Holding;

/// One creation in progress; waiters block on it until it ends, however it
/// ends.
struct Flight {
    creator: ThreadId,
    done: Mutex<bool>,
    ended: Condvar,
    waiters: AtomicUsize,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            creator: std::thread::current().id(),
            done: Mutex::new(false),
            ended: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut done = self.done.lock();
        while !*done {
            self.ended.wait(&mut done);
        }
        drop(done);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    fn end(&self) {
        *self.done.lock() = true;
        self.ended.notify_all();
    }
}

enum Slot<C> {
    Ready {
        cell: C,
        /// Tells this value apart from a later one under the same key.
        generation: u64,
    },
    Creating(Arc<Flight>),
}

struct Map<K, C> {
    slots: HashMap<K, Slot<C>>,
    next_generation: u64,
    /// Slot count at which dead weak values are swept out (amortized O(1)).
    sweep_at: usize,
}

/// Smallest slot count at which a sweep of dead weak values happens.
pub(super) const MIN_SWEEP: usize = 16;

/// The algorithm behind [`SyncDictOf`](super::SyncDictOf), for either way
/// of holding values.
pub(super) struct Core<K, C> {
    map: Mutex<Map<K, C>>,
}

impl<K: Eq + Hash + Clone, C: Holding> Core<K, C> {
    pub(super) fn new() -> Self {
        Core {
            map: Mutex::new(Map {
                slots: HashMap::new(),
                next_generation: 0,
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<C::Value>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.lock().slots.get(key) {
            Some(Slot::Ready { cell, .. }) => cell.load(),
            _ => None,
        }
    }

    pub(super) fn get_or_try_create<E>(
        &self,
        key: K,
        is_valid: impl Fn(&C::Value) -> bool,
        create: impl FnOnce() -> Result<C::Made, E>,
    ) -> Result<C::Value, E> {
        let flight = loop {
            let mut map = self.map.lock();
            match map.slots.get(&key) {
                Some(Slot::Creating(flight)) => {
                    assert!(
                        flight.creator != std::thread::current().id(),
                        "SyncDict: the creator of a key asked for the same key again; \
                         it would wait for itself forever"
                    );
                    let flight = Arc::clone(flight);
                    drop(map);
                    flight.wait();
                    continue;
                }
                Some(Slot::Ready { cell, generation }) => {
                    if let Some(value) = cell.load() {
                        let seen = *generation;
                        // The check is the caller's code: run it unlocked.
                        drop(map);
                        if is_valid(&value) {
                            return Ok(value);
                        }
                        drop(value);
                        map = self.map.lock();
                        let unchanged = matches!(
                            map.slots.get(&key),
                            Some(Slot::Ready { generation, .. }) if *generation == seen
                        );
                        if !unchanged {
                            // Replaced or removed meanwhile: look again.
                            continue;
                        }
                    }
                }
                None => {}
            }
            let flight = Arc::new(Flight::new());
            let old = map
                .slots
                .insert(key.clone(), Slot::Creating(Arc::clone(&flight)));
            drop(map);
            drop(old); // the dead or invalid value, dropped unlocked
            break flight;
        };

        let pending = Pending {
            core: self,
            key: &key,
            flight: &flight,
        };
        let made = create()?;
        let (cell, value) = C::store(made);
        pending.complete(cell);
        Ok(value)
    }

    pub(super) fn insert(&self, key: K, made: C::Made) -> (Option<C::Value>, C::Value) {
        let (cell, value) = C::store(made);
        let mut map = self.map.lock();
        let generation = map.bump();
        let old = map.slots.insert(key, Slot::Ready { cell, generation });
        map.sweep_if_due();
        drop(map);
        let previous = match old {
            Some(Slot::Ready { cell, .. }) => cell.load(),
            Some(Slot::Creating(flight)) => {
                // The creator will find its flight gone and not store; its
                // waiters take this value.
                flight.end();
                None
            }
            None => None,
        };
        (previous, value)
    }

    pub(super) fn remove<Q>(&self, key: &Q) -> Option<C::Value>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let old = self.map.lock().slots.remove(key);
        match old? {
            Slot::Ready { cell, .. } => cell.load(),
            Slot::Creating(flight) => {
                flight.end();
                None
            }
        }
    }

    pub(super) fn clear(&self) {
        let old = std::mem::take(&mut self.map.lock().slots);
        for slot in old.into_values() {
            if let Slot::Creating(flight) = slot {
                flight.end();
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map
            .lock()
            .slots
            .values()
            .filter(|slot| matches!(slot, Slot::Ready { cell, .. } if cell.is_live()))
            .count()
    }

    #[cfg(test)]
    pub(super) fn waiters<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.lock().slots.get(key) {
            Some(Slot::Creating(flight)) => flight.waiters.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    #[cfg(test)]
    pub(super) fn slot_count(&self) -> usize {
        self.map.lock().slots.len()
    }
}

impl<K: Eq + Hash, C: Holding> Map<K, C> {
    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Drops slots whose weak value is gone once the map has doubled since
    /// the last sweep, so that a weak map holds O(live values) slots.
    fn sweep_if_due(&mut self) {
        if self.slots.len() < self.sweep_at {
            return;
        }
        self.slots.retain(|_, slot| match slot {
            Slot::Ready { cell, .. } => cell.is_live(),
            Slot::Creating(_) => true,
        });
        self.sweep_at = (self.slots.len() * 2).max(MIN_SWEEP);
    }
}

/// A creation this thread runs. Dropped without [`complete`](Self::complete)
/// (the creator failed or panicked), it removes its flight so that the next
/// caller creates; either way it wakes the flight's waiters.
struct Pending<'a, K: Eq + Hash + Clone, C: Holding> {
    core: &'a Core<K, C>,
    key: &'a K,
    flight: &'a Arc<Flight>,
}

impl<K: Eq + Hash + Clone, C: Holding> Pending<'_, K, C> {
    fn complete(self, cell: C) {
        let mut map = self.core.map.lock();
        if self.is_ours(&map) {
            let generation = map.bump();
            map.slots
                .insert(self.key.clone(), Slot::Ready { cell, generation });
            map.sweep_if_due();
        }
        // Otherwise removed, cleared or overwritten while we created: the
        // value goes to our caller only.
        drop(map);
        // Drop runs next and, finding the slot no longer ours, only wakes.
    }

    fn is_ours(&self, map: &Map<K, C>) -> bool {
        matches!(map.slots.get(self.key), Some(Slot::Creating(f)) if Arc::ptr_eq(f, self.flight))
    }
}

impl<K: Eq + Hash + Clone, C: Holding> Drop for Pending<'_, K, C> {
    fn drop(&mut self) {
        let mut map = self.core.map.lock();
        if self.is_ours(&map) {
            map.slots.remove(self.key);
        }
        drop(map);
        self.flight.end();
    }
}
