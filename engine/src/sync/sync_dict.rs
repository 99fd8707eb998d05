//! "Get it if it exists and is valid, else create it once": Beaker's
//! `util.SyncDict` and its weak-valued variant (`WeakValuedRegistry`).
//!
//! Both maps share one algorithm ([`Core`]): under the map's mutex a caller
//! finds the key's slot either *ready* (a value), *being created* (a
//! [`Flight`] that other callers wait on), or absent. A caller that finds it
//! absent, dead (weak) or invalid puts its own flight there and runs its
//! creator **without** the mutex; when the creator returns, the value goes
//! in and the flight's waiters wake and take it. A creator that fails or
//! panics removes its flight on the way out, so its waiters look again and
//! one of them runs its own creator: a key is never left wedged.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};

/// How a map keeps its values.
trait Cell: Sized {
    /// What callers get back.
    type Value;
    /// What a creator makes.
    type Made;
    /// The value, if it is still there (a weak one may be gone).
    fn load(&self) -> Option<Self::Value>;
    /// Whether the value is still there, without taking it.
    fn is_live(&self) -> bool;
    /// Stores what a creator made; returns the stored cell and what to hand out.
    fn store(made: Self::Made) -> (Self, Self::Value);
}

/// A value held by the map; callers get clones.
struct Strong<V>(V);

impl<V: Clone> Cell for Strong<V> {
    type Value = V;
    type Made = V;
    fn load(&self) -> Option<V> {
        Some(self.0.clone())
    }
    fn is_live(&self) -> bool {
        true
    }
    fn store(made: V) -> (Self, V) {
        (Strong(made.clone()), made)
    }
}

/// A value held only by the callers' `Arc`s.
struct WeakCell<V>(Weak<V>);

impl<V> Cell for WeakCell<V> {
    type Value = Arc<V>;
    type Made = V;
    fn load(&self) -> Option<Arc<V>> {
        self.0.upgrade()
    }
    fn is_live(&self) -> bool {
        self.0.strong_count() > 0
    }
    fn store(made: V) -> (Self, Arc<V>) {
        let value = Arc::new(made);
        (WeakCell(Arc::downgrade(&value)), value)
    }
}

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
const MIN_SWEEP: usize = 16;

/// The algorithm shared by [`SyncDict`] and [`WeakSyncDict`].
struct Core<K, C> {
    map: Mutex<Map<K, C>>,
}

impl<K: Eq + Hash + Clone, C: Cell> Core<K, C> {
    fn new() -> Self {
        Core {
            map: Mutex::new(Map {
                slots: HashMap::new(),
                next_generation: 0,
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<C::Value>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.lock().slots.get(key) {
            Some(Slot::Ready { cell, .. }) => cell.load(),
            _ => None,
        }
    }

    fn get_or_try_create<E>(
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

    fn insert(&self, key: K, made: C::Made) -> (Option<C::Value>, C::Value) {
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

    fn remove<Q>(&self, key: &Q) -> Option<C::Value>
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

    fn clear(&self) {
        let old = std::mem::take(&mut self.map.lock().slots);
        for slot in old.into_values() {
            if let Slot::Creating(flight) = slot {
                flight.end();
            }
        }
    }

    fn len(&self) -> usize {
        self.map
            .lock()
            .slots
            .values()
            .filter(|slot| matches!(slot, Slot::Ready { cell, .. } if cell.is_live()))
            .count()
    }

    #[cfg(test)]
    fn waiters<Q>(&self, key: &Q) -> usize
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
    fn slot_count(&self) -> usize {
        self.map.lock().slots.len()
    }
}

impl<K: Eq + Hash, C: Cell> Map<K, C> {
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
struct Pending<'a, K: Eq + Hash + Clone, C: Cell> {
    core: &'a Core<K, C>,
    key: &'a K,
    flight: &'a Arc<Flight>,
}

impl<K: Eq + Hash + Clone, C: Cell> Pending<'_, K, C> {
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

impl<K: Eq + Hash + Clone, C: Cell> Drop for Pending<'_, K, C> {
    fn drop(&mut self) {
        let mut map = self.core.map.lock();
        if self.is_ours(&map) {
            map.slots.remove(self.key);
        }
        drop(map);
        self.flight.end();
    }
}

/// A thread-safe map that creates each missing value exactly once, however
/// many threads ask for it at the same moment (Beaker's `SyncDict`).
///
/// [`get_or_create`](Self::get_or_create) returns the value for a key if
/// there is one; otherwise one caller runs its creator, without any lock
/// held, while the others asking for that key wait and then get the same
/// value. Keys do not wait for each other. If the creator returns an error
/// or panics, nothing is stored, the waiters wake, and one of them runs its
/// own creator: a key is never wedged. The `_valid_` variants also treat a
/// value that fails a caller-supplied check as missing (expired, say), and
/// replace it once.
///
/// Values are cloned out: hold cheap-to-clone values (`Arc<T>`, handles).
/// [`WeakSyncDict`] holds its values weakly instead.
///
/// # Panics
///
/// A creator that asks for its own key (on its own thread) would wait for
/// itself forever; the inner call panics instead.
///
/// # Examples
///
/// ```
/// use carboy::sync::SyncDict;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// let dict: SyncDict<String, u64> = SyncDict::new();
/// let calls = AtomicU32::new(0);
/// let make = || { calls.fetch_add(1, Ordering::SeqCst); 42 };
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| assert_eq!(dict.get_or_create("answer".to_string(), make), 42));
///     }
/// });
/// assert_eq!(calls.load(Ordering::SeqCst), 1); // created once for four threads
///
/// // A value that fails the check is replaced (once).
/// let v = dict.get_valid_or_create("answer".to_string(), |v| *v > 100, || 101);
/// assert_eq!(v, 101);
/// assert_eq!(dict.remove("answer"), Some(101));
/// assert!(dict.is_empty());
/// ```
pub struct SyncDict<K, V> {
    core: Core<K, Strong<V>>,
}

impl<K, V> std::fmt::Debug for SyncDict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncDict").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Default for SyncDict<K, V> {
    fn default() -> Self {
        SyncDict::new()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SyncDict<K, V> {
    /// An empty map.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict: carboy::sync::SyncDict<u32, String> = carboy::sync::SyncDict::new();
    /// assert!(dict.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        SyncDict { core: Core::new() }
    }

    /// The value for `key`, if one is there; never waits for a creation in
    /// progress and never creates.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.get(&1), None::<u8>);
    /// dict.insert(1, 7u8);
    /// assert_eq!(dict.get(&1), Some(7));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.core.get(key)
    }

    /// The value for `key`; if there is none, `create` makes it, once,
    /// while other callers for `key` wait for it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.get_or_create("k", || 1), 1);
    /// assert_eq!(dict.get_or_create("k", || 2), 1); // already there
    /// ```
    pub fn get_or_create(&self, key: K, create: impl FnOnce() -> V) -> V {
        match self.get_valid_or_try_create(key, |_| true, || Ok::<V, Never>(create())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_create`](Self::get_or_create) with a creator that may
    /// fail: its error goes to its caller, nothing is stored, and the next
    /// caller (a waiter, say) runs its own creator.
    ///
    /// # Errors
    ///
    /// Whatever `create` returned, when this call ran it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.get_or_try_create("k", || Err("backend down")), Err("backend down"));
    /// assert_eq!(dict.get_or_try_create("k", || Ok::<_, &str>(5)), Ok(5));
    /// ```
    pub fn get_or_try_create<E>(
        &self,
        key: K,
        create: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        self.get_valid_or_try_create(key, |_| true, create)
    }

    /// The value for `key` if there is one and `is_valid` accepts it;
    /// otherwise `create` makes a new one, once, as in
    /// [`get_or_create`](Self::get_or_create). `is_valid` runs without any
    /// lock held.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert("session", (1u32, "old"));
    /// let fresh = dict.get_valid_or_create("session", |(version, _)| *version >= 2, || (2, "new"));
    /// assert_eq!(fresh, (2, "new"));
    /// ```
    pub fn get_valid_or_create(
        &self,
        key: K,
        is_valid: impl Fn(&V) -> bool,
        create: impl FnOnce() -> V,
    ) -> V {
        match self.get_valid_or_try_create(key, is_valid, || Ok::<V, Never>(create())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// [`get_valid_or_create`](Self::get_valid_or_create) with a creator
    /// that may fail, as in [`get_or_try_create`](Self::get_or_try_create).
    ///
    /// # Errors
    ///
    /// Whatever `create` returned, when this call ran it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// let v = dict.get_valid_or_try_create(1, |v: &u32| *v > 0, || Ok::<_, String>(3))?;
    /// assert_eq!(v, 3);
    /// # Ok::<(), String>(())
    /// ```
    pub fn get_valid_or_try_create<E>(
        &self,
        key: K,
        is_valid: impl Fn(&V) -> bool,
        create: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        self.core.get_or_try_create(key, is_valid, create)
    }

    /// Stores `value` under `key`, returning the value it replaces. A
    /// creation in progress for `key` is overridden: its waiters get
    /// `value`, and its result goes only to its own caller.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.insert("k", 1), None);
    /// assert_eq!(dict.insert("k", 2), Some(1));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.core.insert(key, value).0
    }

    /// Removes the value for `key` and returns it. A creation in progress
    /// for `key` is abandoned: its result goes only to its own caller, and
    /// its waiters create anew.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert("k", 1);
    /// assert_eq!(dict.remove("k"), Some(1));
    /// assert_eq!(dict.remove("k"), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.core.remove(key)
    }

    /// True if a value is stored for `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert(1, "one");
    /// assert!(dict.contains_key(&1) && !dict.contains_key(&2));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Removes every value; creations in progress are abandoned as in
    /// [`remove`](Self::remove).
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert(1, "one");
    /// dict.clear();
    /// assert!(dict.is_empty());
    /// ```
    pub fn clear(&self) {
        self.core.clear();
    }

    /// Values stored (creations in progress are not counted).
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert(1, "one");
    /// assert_eq!(dict.len(), 1);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// True when no value is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(carboy::sync::SyncDict::<u8, u8>::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The error of a creator that cannot fail.
enum Never {}

/// A [`SyncDict`] whose values are held weakly (Beaker's
/// `WeakValuedRegistry`): callers get `Arc<V>`, and once every one of them
/// is dropped the value is gone and the next
/// [`get_or_create`](Self::get_or_create) creates it again, once.
///
/// Slots of dead values are swept out whenever the map has doubled since
/// the last sweep, so the map holds O(live values) slots.
///
/// # Panics
///
/// As for [`SyncDict`]: a creator that asks for its own key panics.
///
/// # Examples
///
/// ```
/// use carboy::sync::WeakSyncDict;
/// use std::sync::Arc;
///
/// let dict: WeakSyncDict<&str, Vec<u8>> = WeakSyncDict::new();
/// let a = dict.get_or_create("buf", || vec![1, 2]);
/// let b = dict.get_or_create("buf", || vec![9]);
/// assert!(Arc::ptr_eq(&a, &b)); // shared while someone holds it
/// drop((a, b));
/// assert_eq!(dict.get("buf"), None); // gone with its last holder
/// assert_eq!(*dict.get_or_create("buf", || vec![3]), vec![3]);
/// ```
pub struct WeakSyncDict<K, V> {
    core: Core<K, WeakCell<V>>,
}

impl<K, V> std::fmt::Debug for WeakSyncDict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakSyncDict").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> Default for WeakSyncDict<K, V> {
    fn default() -> Self {
        WeakSyncDict::new()
    }
}

impl<K: Eq + Hash + Clone, V> WeakSyncDict<K, V> {
    /// An empty map.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict: carboy::sync::WeakSyncDict<u32, String> = carboy::sync::WeakSyncDict::new();
    /// assert!(dict.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        WeakSyncDict { core: Core::new() }
    }

    /// The value for `key`, if someone still holds it; never waits and
    /// never creates.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let held = dict.insert(1, "one");
    /// assert_eq!(dict.get(&1).as_deref(), Some(&"one"));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.core.get(key)
    }

    /// The live value for `key`; if there is none, `create` makes it, once,
    /// while other callers for `key` wait for it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.get_or_create("k", || 1);
    /// assert_eq!(*dict.get_or_create("k", || 2), 1);
    /// ```
    pub fn get_or_create(&self, key: K, create: impl FnOnce() -> V) -> Arc<V> {
        match self.get_valid_or_try_create(key, |_| true, || Ok::<V, Never>(create())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_create`](Self::get_or_create) with a creator that may
    /// fail: its error goes to its caller and the next caller creates.
    ///
    /// # Errors
    ///
    /// Whatever `create` returned, when this call ran it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let file = dict.get_or_try_create("k", || std::fs::read("/nonexistent/x"));
    /// assert!(file.is_err());
    /// ```
    pub fn get_or_try_create<E>(
        &self,
        key: K,
        create: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        self.get_valid_or_try_create(key, |_| true, create)
    }

    /// The live value for `key` if `is_valid` accepts it; otherwise a new
    /// one from `create`, made once.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let old = dict.get_or_create("k", || 1);
    /// let new = dict.get_valid_or_create("k", |v| **v > 1, || 2);
    /// assert_eq!((*old, *new), (1, 2));
    /// ```
    pub fn get_valid_or_create(
        &self,
        key: K,
        is_valid: impl Fn(&Arc<V>) -> bool,
        create: impl FnOnce() -> V,
    ) -> Arc<V> {
        match self.get_valid_or_try_create(key, is_valid, || Ok::<V, Never>(create())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// [`get_valid_or_create`](Self::get_valid_or_create) with a creator
    /// that may fail.
    ///
    /// # Errors
    ///
    /// Whatever `create` returned, when this call ran it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.get_valid_or_try_create(1, |_| true, || Ok::<_, String>(3))?;
    /// assert_eq!(*v, 3);
    /// # Ok::<(), String>(())
    /// ```
    pub fn get_valid_or_try_create<E>(
        &self,
        key: K,
        is_valid: impl Fn(&Arc<V>) -> bool,
        create: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        self.core.get_or_try_create(key, is_valid, create)
    }

    /// Stores `value` under `key` and returns it as the `Arc` that keeps it
    /// alive (drop it and the entry is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert("k", 5);
    /// assert_eq!(dict.get("k").as_deref(), Some(&5));
    /// drop(v);
    /// assert_eq!(dict.get("k"), None);
    /// ```
    pub fn insert(&self, key: K, value: V) -> Arc<V> {
        self.core.insert(key, value).1
    }

    /// Forgets `key`, returning its value if someone still holds it. A
    /// creation in progress is abandoned as in [`SyncDict::remove`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert("k", 5);
    /// assert_eq!(dict.remove("k").as_deref(), Some(&5));
    /// assert_eq!(dict.get("k"), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.core.remove(key)
    }

    /// True if someone holds a value for `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert(1, ());
    /// assert!(dict.contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Forgets every key.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert(1, ());
    /// dict.clear();
    /// assert!(dict.is_empty());
    /// ```
    pub fn clear(&self) {
        self.core.clear();
    }

    /// Values someone still holds. Counts them one by one: O(slots), and a
    /// value dropped meanwhile may still be counted.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert(1, ());
    /// assert_eq!(dict.len(), 1);
    /// drop(v);
    /// assert_eq!(dict.len(), 0);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// True when nobody holds any value of the map.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(carboy::sync::WeakSyncDict::<u8, u8>::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Barrier;
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;
    use std::thread;

    use crate::sync::test_support::until;

    #[test]
    fn many_threads_one_creation_and_the_others_wait_for_it() {
        const THREADS: usize = 8;
        let dict: SyncDict<&str, Arc<String>> = SyncDict::new();
        let calls = AtomicU32::new(0);
        let start = Barrier::new(THREADS);
        let values: Vec<Arc<String>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        dict.get_or_create("k", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Hold the creation open until every other
                            // thread is waiting on it.
                            until("the others wait", || dict.core.waiters("k") == THREADS - 1);
                            Arc::new("made once".to_string())
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
        assert_eq!(dict.len(), 1);
    }

    #[test]
    fn exactly_once_per_key_under_contention_over_many_keys() {
        const THREADS: usize = 4;
        const KEYS: u32 = 300;
        let dict: SyncDict<u32, u32> = SyncDict::new();
        let calls: Vec<AtomicU32> = (0..KEYS).map(|_| AtomicU32::new(0)).collect();
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (dict, calls, start) = (&dict, &calls, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..KEYS {
                        // Threads walk the keys in different orders.
                        let key = if t % 2 == 0 { i } else { KEYS - 1 - i };
                        let got = dict.get_or_create(key, || {
                            calls[key as usize].fetch_add(1, Ordering::SeqCst);
                            thread::yield_now();
                            key * 10
                        });
                        assert_eq!(got, key * 10);
                    }
                });
            }
        });
        for (key, n) in calls.iter().enumerate() {
            assert_eq!(
                n.load(Ordering::SeqCst),
                1,
                "key {key} created more than once"
            );
        }
        assert_eq!(dict.len(), KEYS as usize);
    }

    #[test]
    fn a_panicking_creator_does_not_wedge_the_key() {
        let dict: SyncDict<&str, u32> = SyncDict::new();
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let calls = AtomicU32::new(0);
        thread::scope(|s| {
            let dict_ref = &dict;
            let panicker = s.spawn(move || {
                dict_ref.get_or_create("k", || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    panic!("creator failed on purpose");
                })
            });
            started_rx.recv().unwrap();
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        dict.get_or_create("k", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            7
                        })
                    })
                })
                .collect();
            until("three waiters", || dict.core.waiters("k") == 3);
            go_tx.send(()).unwrap();
            assert!(panicker.join().is_err(), "the creator was meant to panic");
            for w in waiters {
                assert_eq!(w.join().unwrap(), 7);
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one waiter takes over");
        assert_eq!(dict.get("k"), Some(7));
    }

    #[test]
    fn a_failing_creator_stores_nothing_and_the_next_caller_creates() {
        let dict: SyncDict<&str, u32> = SyncDict::new();
        assert_eq!(dict.get_or_try_create("k", || Err("nope")), Err("nope"));
        assert_eq!(dict.get("k"), None);
        assert_eq!(dict.core.slot_count(), 0, "the failed flight stayed");
        assert_eq!(dict.get_or_try_create("k", || Ok::<_, &str>(3)), Ok(3));
        assert_eq!(dict.get_or_try_create("k", || Err("unused")), Ok(3));
    }

    #[test]
    fn a_panic_caught_on_the_same_thread_leaves_the_key_free() {
        let dict: SyncDict<u8, u8> = SyncDict::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            dict.get_or_create(1, || panic!("boom"));
        }));
        assert!(result.is_err());
        assert_eq!(dict.get_or_create(1, || 9), 9);
    }

    #[test]
    fn invalid_values_are_replaced_once() {
        let dict: SyncDict<&str, u32> = SyncDict::new();
        dict.insert("k", 1);
        let calls = AtomicU32::new(0);
        let start = Barrier::new(4);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    start.wait();
                    let v = dict.get_valid_or_create(
                        "k",
                        |v| *v >= 2,
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            thread::yield_now();
                            2
                        },
                    );
                    assert_eq!(v, 2);
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A valid value is returned without calling the creator.
        assert_eq!(dict.get_valid_or_create("k", |v| *v >= 2, || 99), 2);
    }

    #[test]
    #[should_panic(expected = "asked for the same key again")]
    fn recursive_creation_of_the_same_key_panics_instead_of_hanging() {
        let dict: SyncDict<u8, u8> = SyncDict::new();
        dict.get_or_create(1, || dict.get_or_create(1, || 2));
    }

    #[test]
    fn a_creator_may_create_other_keys() {
        let dict: SyncDict<u8, u8> = SyncDict::new();
        let v = dict.get_or_create(1, || dict.get_or_create(2, || 20) + 1);
        assert_eq!((v, dict.get(&2)), (21, Some(20)));
    }

    #[test]
    fn remove_during_creation_abandons_it_and_waiters_create_anew() {
        let dict: SyncDict<&str, u32> = SyncDict::new();
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        thread::scope(|s| {
            let dict_ref = &dict;
            let first = s.spawn(move || {
                dict_ref.get_or_create("k", || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    1
                })
            });
            started_rx.recv().unwrap();
            assert_eq!(dict.remove("k"), None);
            // The abandoned creator still answers its own caller...
            go_tx.send(()).unwrap();
            assert_eq!(first.join().unwrap(), 1);
        });
        // ...but stored nothing.
        assert_eq!(dict.get("k"), None);
        assert_eq!(dict.get_or_create("k", || 2), 2);
    }

    #[test]
    fn insert_remove_clear_len() {
        let dict: SyncDict<String, u32> = SyncDict::new();
        assert_eq!(dict.insert("a".into(), 1), None);
        assert_eq!(dict.insert("a".into(), 2), Some(1));
        dict.insert("b".into(), 3);
        assert_eq!(dict.len(), 2);
        assert!(dict.contains_key("a"));
        assert_eq!(dict.remove("a"), Some(2));
        assert!(!dict.contains_key("a"));
        dict.clear();
        assert!(dict.is_empty());
    }

    #[test]
    fn weak_values_live_while_held_and_are_recreated_after() {
        let dict: WeakSyncDict<&str, String> = WeakSyncDict::new();
        let calls = AtomicU32::new(0);
        let make = || {
            calls.fetch_add(1, Ordering::SeqCst);
            "v".to_string()
        };
        let a = dict.get_or_create("k", make);
        let b = dict.get_or_create("k", make);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        drop(a);
        assert!(dict.get("k").is_some(), "b still holds it");
        drop(b);
        assert_eq!(dict.get("k"), None);
        assert_eq!(dict.len(), 0);
        let _c = dict.get_or_create("k", make);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn weak_map_sweeps_dead_slots() {
        let dict: WeakSyncDict<u32, u32> = WeakSyncDict::new();
        for i in 0..10_000 {
            drop(dict.get_or_create(i, || i));
        }
        let kept: Vec<_> = (0..10)
            .map(|i| dict.get_or_create(1_000_000 + i, || i))
            .collect();
        assert!(
            dict.core.slot_count() <= 2 * MIN_SWEEP + kept.len() * 2,
            "{} slots for {} live values",
            dict.core.slot_count(),
            kept.len()
        );
        assert_eq!(dict.len(), kept.len());
    }

    #[test]
    fn weak_exactly_once_under_contention() {
        const THREADS: usize = 6;
        let dict: WeakSyncDict<&str, u32> = WeakSyncDict::new();
        let calls = AtomicU32::new(0);
        let start = Barrier::new(THREADS);
        let values: Vec<Arc<u32>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        dict.get_or_create("k", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            until("the others wait", || dict.core.waiters("k") == THREADS - 1);
                            5
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    }
}
