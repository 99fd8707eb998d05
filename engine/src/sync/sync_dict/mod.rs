//! "Get it if it exists and is valid, else create it once": Beaker's
//! `util.SyncDict` and its weak-valued variant (`WeakValuedRegistry`).
//!
//! Both maps are one type, [`SyncDictOf`], over one algorithm
//! ([`core::Core`]), told apart by how a slot holds its value
//! ([`Holding`]): [`SyncDict`] keeps it ([`StrongValue`]), [`WeakSyncDict`]
//! keeps only a `Weak` ([`WeakValue`]). Under the map's mutex a caller
//! finds the key's slot either *ready* (a value), *being created* (a flight
//! that other callers wait on), or absent. A caller that finds it absent,
//! dead (weak) or invalid puts its own flight there and runs its creator
//! **without** the mutex; when the creator returns, the value goes in and
//! the flight's waiters wake and take it. A creator that fails or panics
//! removes its flight on the way out, so its waiters look again and one of
//! them runs its own creator: a key is never left wedged.

mod core;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use self::core::Core;

mod sealed {
    /// Only this module's holdings implement [`Holding`](super::Holding).
    pub trait Sealed {
        /// The name `Debug` prints.
        const NAME: &'static str;
    }
}

/// How a [`SyncDictOf`] holds its values: [`StrongValue`] (a
/// [`SyncDict`]) or [`WeakValue`] (a [`WeakSyncDict`]). Sealed: only these
/// two implement it.
pub trait Holding: sealed::Sealed + Sized {
    /// What callers get back: `V` for [`StrongValue`], `Arc<V>` for
    /// [`WeakValue`].
    type Value;
    /// What a creator makes (`V`).
    type Made;
    /// What [`SyncDictOf::insert`] returns: the value replaced (`Option<V>`)
    /// for [`StrongValue`], the `Arc` keeping the new value alive for
    /// [`WeakValue`].
    type Inserted;
    /// The value, if it is still there (a weak one may be gone).
    #[doc(hidden)]
    fn load(&self) -> Option<Self::Value>;
    /// Whether the value is still there, without taking it.
    #[doc(hidden)]
    fn is_live(&self) -> bool;
    /// Stores what a creator made; returns the stored holding and what to
    /// hand out.
    #[doc(hidden)]
    fn store(made: Self::Made) -> (Self, Self::Value);
    /// What `insert` returns, from the value it replaced and the new one.
    #[doc(hidden)]
    fn inserted(previous: Option<Self::Value>, value: Self::Value) -> Self::Inserted;
}

/// A value held by the map; callers get clones (the [`Holding`] of a
/// [`SyncDict`]).
pub struct StrongValue<V>(V);

impl<V> sealed::Sealed for StrongValue<V> {
    const NAME: &'static str = "SyncDict";
}

impl<V: Clone> Holding for StrongValue<V> {
    type Value = V;
    type Made = V;
    type Inserted = Option<V>;
    fn load(&self) -> Option<V> {
        Some(self.0.clone())
    }
    fn is_live(&self) -> bool {
        true
    }
    fn store(made: V) -> (Self, V) {
        (StrongValue(made.clone()), made)
    }
    fn inserted(previous: Option<V>, _value: V) -> Option<V> {
        previous
    }
}

/// A value held only by the callers' `Arc`s (the [`Holding`] of a
/// [`WeakSyncDict`]).
pub struct WeakValue<V>(Weak<V>);

impl<V> sealed::Sealed for WeakValue<V> {
    const NAME: &'static str = "WeakSyncDict";
}

impl<V> Holding for WeakValue<V> {
    type Value = Arc<V>;
    type Made = V;
    type Inserted = Arc<V>;
    fn load(&self) -> Option<Arc<V>> {
        self.0.upgrade()
    }
    fn is_live(&self) -> bool {
        self.0.strong_count() > 0
    }
    fn store(made: V) -> (Self, Arc<V>) {
        let value = Arc::new(made);
        (WeakValue(Arc::downgrade(&value)), value)
    }
    fn inserted(_previous: Option<Arc<V>>, value: Arc<V>) -> Arc<V> {
        value
    }
}

/// A thread-safe map that creates each missing value exactly once, however
/// many threads ask for it at the same moment (Beaker's `SyncDict`).
///
/// [`get_or_insert_with`](SyncDictOf::get_or_insert_with) returns the value
/// for a key if there is one; otherwise one caller runs its creator,
/// without any lock held, while the others asking for that key wait and
/// then get the same value. Keys do not wait for each other.
/// [`get_or_create`](SyncDictOf::get_or_create) takes a creator that may
/// fail. If the creator returns an error or panics, nothing is stored, the
/// waiters wake, and one of them runs its own creator: a key is never
/// wedged. The `_valid_` variants also treat a value that fails a
/// caller-supplied check as missing (expired, say), and replace it once.
///
/// Values are cloned out: hold cheap-to-clone values (`Arc<T>`, handles).
/// [`WeakSyncDict`] holds its values weakly instead. Both are a
/// [`SyncDictOf`], where their methods are documented.
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
///         s.spawn(|| assert_eq!(dict.get_or_insert_with("answer".to_string(), make), 42));
///     }
/// });
/// assert_eq!(calls.load(Ordering::SeqCst), 1); // created once for four threads
///
/// // A value that fails the check is replaced (once).
/// let v = dict.get_valid_or_insert_with("answer".to_string(), |v| *v > 100, || 101);
/// assert_eq!(v, 101);
/// assert_eq!(dict.remove("answer"), Some(101));
/// assert!(dict.is_empty());
/// ```
pub type SyncDict<K, V> = SyncDictOf<K, StrongValue<V>>;

/// A [`SyncDict`] whose values are held weakly (Beaker's
/// `WeakValuedRegistry`): callers get `Arc<V>`, and once every one of them
/// is dropped the value is gone and the next
/// [`get_or_insert_with`](SyncDictOf::get_or_insert_with) creates it again,
/// once.
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
/// let a = dict.get_or_insert_with("buf", || vec![1, 2]);
/// let b = dict.get_or_insert_with("buf", || vec![9]);
/// assert!(Arc::ptr_eq(&a, &b)); // shared while someone holds it
/// drop((a, b));
/// assert_eq!(dict.get("buf"), None); // gone with its last holder
/// assert_eq!(*dict.get_or_insert_with("buf", || vec![3]), vec![3]);
/// ```
pub type WeakSyncDict<K, V> = SyncDictOf<K, WeakValue<V>>;

/// The map behind [`SyncDict`] (`H` = [`StrongValue<V>`]: callers get `V`)
/// and [`WeakSyncDict`] (`H` = [`WeakValue<V>`]: callers get `Arc<V>`, and
/// a value lives only while someone holds one). Use it through those two
/// names; see them for the whole picture.
pub struct SyncDictOf<K, H> {
    core: Core<K, H>,
}

impl<K, H: sealed::Sealed> std::fmt::Debug for SyncDictOf<K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(H::NAME).finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, H: Holding> Default for SyncDictOf<K, H> {
    fn default() -> Self {
        SyncDictOf::new()
    }
}

impl<K: Eq + Hash + Clone, H: Holding> SyncDictOf<K, H> {
    /// An empty map.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict: carboy::sync::SyncDict<u32, String> = carboy::sync::SyncDict::new();
    /// assert!(dict.is_empty());
    /// let dict: carboy::sync::WeakSyncDict<u32, String> = carboy::sync::WeakSyncDict::new();
    /// assert!(dict.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        SyncDictOf { core: Core::new() }
    }

    /// The value for `key`, if one is there (for a [`WeakSyncDict`]: if
    /// someone still holds it); never waits for a creation in progress and
    /// never creates.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.get(&1), None::<u8>);
    /// dict.insert(1, 7u8);
    /// assert_eq!(dict.get(&1), Some(7));
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let held = dict.insert(1, "one");
    /// assert_eq!(dict.get(&1).as_deref(), Some(&"one"));
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<H::Value>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.core.get(key)
    }

    /// The value for `key` (for a [`WeakSyncDict`]: the live one); if there
    /// is none, `create` makes it, once, while other callers for `key` wait
    /// for it. For a creator that may fail, see
    /// [`get_or_create`](Self::get_or_create).
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.get_or_insert_with("k", || 1), 1);
    /// assert_eq!(dict.get_or_insert_with("k", || 2), 1); // already there
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.get_or_insert_with("k", || 1);
    /// assert_eq!(*dict.get_or_insert_with("k", || 2), 1);
    /// ```
    pub fn get_or_insert_with(&self, key: K, create: impl FnOnce() -> H::Made) -> H::Value {
        self.get_valid_or_insert_with(key, |_| true, create)
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with) with a creator
    /// that may fail: its error goes to its caller, nothing is stored, and
    /// the callers that were waiting for it look again, one of them running
    /// its own creator.
    ///
    /// # Errors
    ///
    /// Whatever `create` returned, when this call ran it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.get_or_create("k", || Err("backend down")), Err("backend down"));
    /// assert_eq!(dict.get_or_create("k", || Ok::<_, &str>(5)), Ok(5));
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let file = dict.get_or_create("k", || std::fs::read("/nonexistent/x"));
    /// assert!(file.is_err());
    /// ```
    pub fn get_or_create<E>(
        &self,
        key: K,
        create: impl FnOnce() -> Result<H::Made, E>,
    ) -> Result<H::Value, E> {
        self.get_valid_or_create(key, |_| true, create)
    }

    /// The value for `key` (for a [`WeakSyncDict`]: the live one) if there
    /// is one and `is_valid` accepts it; otherwise `create` makes a new
    /// one, once, as in [`get_or_insert_with`](Self::get_or_insert_with).
    /// `is_valid` runs without any lock held.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert("session", (1u32, "old"));
    /// let fresh = dict.get_valid_or_insert_with("session", |(version, _)| *version >= 2, || (2, "new"));
    /// assert_eq!(fresh, (2, "new"));
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let old = dict.get_or_insert_with("k", || 1);
    /// let new = dict.get_valid_or_insert_with("k", |v| **v > 1, || 2);
    /// assert_eq!((*old, *new), (1, 2));
    /// ```
    pub fn get_valid_or_insert_with(
        &self,
        key: K,
        is_valid: impl Fn(&H::Value) -> bool,
        create: impl FnOnce() -> H::Made,
    ) -> H::Value {
        match self.get_valid_or_create(key, is_valid, || Ok::<H::Made, Never>(create())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// [`get_valid_or_insert_with`](Self::get_valid_or_insert_with) with a creator
    /// that may fail, as in [`get_or_create`](Self::get_or_create).
    ///
    /// # Errors
    ///
    /// Whatever `create` returned, when this call ran it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// let v = dict.get_valid_or_create(1, |v: &u32| *v > 0, || Ok::<_, String>(3))?;
    /// assert_eq!(v, 3);
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.get_valid_or_create(1, |_| true, || Ok::<_, String>(3))?;
    /// assert_eq!(*v, 3);
    /// # Ok::<(), String>(())
    /// ```
    pub fn get_valid_or_create<E>(
        &self,
        key: K,
        is_valid: impl Fn(&H::Value) -> bool,
        create: impl FnOnce() -> Result<H::Made, E>,
    ) -> Result<H::Value, E> {
        self.core.get_or_try_create(key, is_valid, create)
    }

    /// Stores `value` under `key`. A [`SyncDict`] returns the value it
    /// replaces; a [`WeakSyncDict`] returns the new value as the `Arc` that
    /// keeps it alive (drop it and the entry is gone). A creation in
    /// progress for `key` is overridden: its waiters get `value`, and its
    /// result goes only to its own caller.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// assert_eq!(dict.insert("k", 1), None);
    /// assert_eq!(dict.insert("k", 2), Some(1));
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert("k", 5);
    /// assert_eq!(dict.get("k").as_deref(), Some(&5));
    /// drop(v);
    /// assert_eq!(dict.get("k"), None);
    /// ```
    pub fn insert(&self, key: K, value: H::Made) -> H::Inserted {
        let (previous, value) = self.core.insert(key, value);
        H::inserted(previous, value)
    }

    /// Removes the value for `key` and returns it (for a [`WeakSyncDict`]:
    /// if someone still holds it). A creation in progress for `key` is
    /// abandoned: its result goes only to its own caller, and its waiters
    /// create anew.
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert("k", 1);
    /// assert_eq!(dict.remove("k"), Some(1));
    /// assert_eq!(dict.remove("k"), None);
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert("k", 5);
    /// assert_eq!(dict.remove("k").as_deref(), Some(&5));
    /// assert_eq!(dict.get("k"), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<H::Value>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.core.remove(key)
    }

    /// True if a value is stored for `key` (for a [`WeakSyncDict`]: if
    /// someone holds it).
    ///
    /// # Examples
    ///
    /// ```
    /// let dict = carboy::sync::SyncDict::new();
    /// dict.insert(1, "one");
    /// assert!(dict.contains_key(&1) && !dict.contains_key(&2));
    ///
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
    ///
    /// let dict = carboy::sync::WeakSyncDict::new();
    /// let v = dict.insert(1, ());
    /// dict.clear();
    /// assert!(dict.is_empty());
    /// ```
    pub fn clear(&self) {
        self.core.clear();
    }

    /// Values stored (for a [`WeakSyncDict`]: that someone still holds);
    /// creations in progress are not counted. Counts them one by one:
    /// O(slots), and a weak value dropped meanwhile may still be counted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// True when no value is stored (for a [`WeakSyncDict`]: when nobody
    /// holds any value of the map).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The error of a creator that cannot fail.
enum Never {}
