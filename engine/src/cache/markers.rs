//! Invalidation markers: how a namespace or a region is invalidated as a
//! whole, in every process that shares the backend.
//!
//! Every backend configuration has a markers namespace (`carboy:markers`)
//! holding one [`Marker`] per namespace (`ns:<name>`) and per region
//! (`region:<name>`). A creation records the epochs it began under in the
//! value's envelope; a value whose recorded epoch is below a marker's
//! `hard` is a miss, below its `soft` stale. [`MarkerSlot`] keeps a marker
//! in memory while the markers namespace's change stamp holds still.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::backend::{Backend, Capabilities};
use crate::clock::Clock;
use crate::error::Result;

/// How hard an invalidation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Values become misses: the next caller regenerates, and everyone
    /// else waits for it.
    Hard,
    /// Values become stale: one caller regenerates while the others keep
    /// getting the old value (unless the cache never serves stale values).
    Soft,
}

/// The stored form of an invalidation marker: the current epoch, and the
/// epochs below which values are misses (hard) or stale (soft).
///
/// | offset | width | field |
/// |---:|---:|---|
/// | 0 | 1 | version (1) |
/// | 1 | 8 | `epoch` |
/// | 9 | 8 | `hard` |
/// | 17 | 8 | `soft` |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marker {
    pub epoch: u64,
    pub hard: u64,
    pub soft: u64,
}

impl Marker {
    const VERSION: u8 = 1;
    const LEN: usize = 25;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Marker::LEN);
        out.push(Marker::VERSION);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.hard.to_le_bytes());
        out.extend_from_slice(&self.soft.to_le_bytes());
        out
    }

    /// The marker in `bytes`; a missing or unreadable marker is the
    /// initial one (nothing invalidated). Right only where markers are
    /// never lost: see [`MarkerSlot`] for a backend that may evict them.
    #[cfg(test)]
    pub(crate) fn decode(bytes: Option<&[u8]>) -> Marker {
        Marker::read(bytes).unwrap_or_default()
    }

    /// The marker in `bytes`, or `None` when there is none or it is
    /// unreadable.
    pub(crate) fn read(bytes: Option<&[u8]>) -> Option<Marker> {
        let b = bytes?;
        if b.len() != Marker::LEN || b[0] != Marker::VERSION {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        Some(Marker {
            epoch: word(1),
            hard: word(9),
            soft: word(17),
        })
    }

    /// A marker written at `now_ms` in place of one that was lost: every
    /// value created under an earlier epoch is a miss.
    pub(crate) fn restarted(now_ms: u64) -> Marker {
        Marker {
            epoch: now_ms,
            hard: now_ms,
            soft: now_ms,
        }
    }

    /// The marker after one more invalidation at `now_ms` (Unix ms): the
    /// epoch moves to at least `now_ms`, so that epochs follow the clock
    /// and a marker [`restarted`](Marker::restarted) after a loss starts
    /// above every epoch the lost one handed out before (see
    /// [`MarkerSlot`]).
    pub(crate) fn bumped_at(mut self, hard: bool, now_ms: u64) -> Marker {
        self.epoch = self.epoch.saturating_add(1).max(now_ms);
        if hard {
            self.hard = self.epoch;
        }
        self.soft = self.epoch;
        self
    }

    /// The marker after one more invalidation, the clock aside.
    #[cfg(test)]
    pub(crate) fn bumped(self, hard: bool) -> Marker {
        self.bumped_at(hard, 0)
    }
}

/// One invalidation marker: a key in the backend's markers namespace
/// (`carboy:markers`, beside the data namespaces, so that marker keys never
/// share a key space with user keys), kept in memory while that
/// namespace's change stamp holds still (read on every access when the
/// backend has no change stamp).
///
/// **A backend that may evict markers** (it opened the markers namespace
/// without [`Capabilities::never_evicts`]): a missing marker is taken as
/// lost, not as "never invalidated". The slot writes the marker when it is
/// opened, before any value is created under it, and whenever it finds it
/// missing again it writes a [restarted](Marker::restarted) one whose
/// epochs are the current time. Since every invalidation moves the epoch
/// to at least the time it was made, the values created before the loss
/// recorded smaller epochs and read as misses: a lost marker costs a
/// regeneration, never a stale value served as fresh. The limits of this
/// (clocks, bursts of invalidations within a millisecond) are in
/// engine/DESIGN.md, "Invalidation markers on a backend that evicts".
pub(crate) struct MarkerSlot {
    backend: Arc<dyn Backend>,
    key: Vec<u8>,
    /// The markers namespace's capabilities, read once.
    caps: Capabilities,
    clock: Arc<dyn Clock>,
    cached: ArcSwapOption<(u128, Marker)>,
}

impl MarkerSlot {
    /// The marker stored under `key` in the markers namespace `backend`;
    /// written at once when the backend may lose it (see above).
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        key: Vec<u8>,
        clock: Arc<dyn Clock>,
    ) -> Result<MarkerSlot> {
        let slot = MarkerSlot {
            caps: backend.capabilities(),
            backend,
            key,
            clock,
            cached: ArcSwapOption::empty(),
        };
        if !slot.caps.never_evicts {
            slot.current()?;
        }
        Ok(slot)
    }

    /// The marker's key in the markers namespace.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// The markers namespace.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// True when the markers namespace has a change stamp (the marker is
    /// then kept in memory between changes).
    pub(crate) fn has_stamp(&self) -> bool {
        self.caps.change_stamp
    }

    /// The marker from bytes fetched alongside a value
    /// ([`Backend::get_with`]), read as [`current`](Self::current) reads
    /// them: a missing one is "never invalidated" where markers are never
    /// evicted, and lost (restarted) elsewhere.
    pub(crate) fn read_fetched(&self, fetched: Option<&[u8]>) -> Result<Marker> {
        match Marker::read(fetched) {
            Some(m) => Ok(m),
            None if self.caps.never_evicts => Ok(Marker::default()),
            None => self.restart(),
        }
    }

    /// The markers namespace's change stamp, if it has one.
    fn stamp(&self) -> Result<Option<u128>> {
        if self.caps.change_stamp {
            self.backend.change_stamp().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The current marker, from memory when nothing changed.
    pub(crate) fn current(&self) -> Result<Marker> {
        self.current_at(self.stamp()?)
    }

    /// The current marker, given the markers namespace's change stamp read
    /// just before.
    fn current_at(&self, stamp: Option<u128>) -> Result<Marker> {
        // The stamp is read before the marker: if it still matches later,
        // the marker read after it is still current. Data writes do not
        // move it: markers have a namespace of their own.
        if let Some(stamp) = stamp
            && let Some(c) = &*self.cached.load()
            && c.0 == stamp
        {
            return Ok(c.1);
        }
        let stored = match self.backend.get(&self.key) {
            Ok(v) => Marker::read(v.as_deref()),
            Err(e) if e.is_corruption() => None,
            Err(e) => return Err(e),
        };
        let marker = match stored {
            Some(m) => m,
            // Markers are never lost here: none means never invalidated.
            None if self.caps.never_evicts => Marker::default(),
            None => self.restart()?,
        };
        if let Some(stamp) = stamp {
            self.cached.store(Some(Arc::new((stamp, marker))));
        }
        Ok(marker)
    }

    /// Writes a [restarted](Marker::restarted) marker in place of a lost
    /// one (unless another process wrote one first) and returns the marker
    /// now stored.
    fn restart(&self) -> Result<Marker> {
        let restarted = Marker::restarted(self.clock.now_unix_ms());
        if !self.caps.atomic_update {
            // Two processes restarting at once: the later write wins, and
            // values created under the earlier one read as misses once.
            self.backend.set(&self.key, &restarted.encode(), None)?;
            return Ok(restarted);
        }
        let mut kept = restarted;
        self.backend.update(&self.key, &mut |current| {
            kept = Marker::read(current).unwrap_or(restarted);
            Some(kept.encode())
        })?;
        Ok(kept)
    }

    /// Records one more invalidation, for every process.
    ///
    /// Without an atomic update the marker is read and written back, and
    /// the invalidation is made hard whatever `how` says: of two
    /// invalidations at once only one write stays, and a hard one is the
    /// one that can be lost without serving a value it invalidated (both
    /// raise `hard` to at least their own time).
    pub(crate) fn invalidate(&self, how: Invalidation) -> Result<()> {
        let now = self.clock.now_unix_ms();
        let may_lose = !self.caps.never_evicts;
        let base = |current: Option<&[u8]>| match Marker::read(current) {
            Some(m) => m,
            None if may_lose => Marker::restarted(now),
            None => Marker::default(),
        };
        if self.caps.atomic_update {
            let hard = how == Invalidation::Hard;
            self.backend.update(&self.key, &mut |current| {
                Some(base(current).bumped_at(hard, now).encode())
            })?;
        } else {
            let current = match self.backend.get(&self.key) {
                Ok(v) => v.map(|v| v.to_vec()),
                Err(e) if e.is_corruption() => None,
                Err(e) => return Err(e),
            };
            let next = base(current.as_deref()).bumped_at(true, now);
            self.backend.set(&self.key, &next.encode(), None)?;
        }
        self.cached.store(None);
        Ok(())
    }
}

/// The markers of a namespace and of its region (the initial marker
/// when it has none).
pub(crate) fn current_pair(
    ns: &MarkerSlot,
    region: Option<&MarkerSlot>,
) -> Result<(Marker, Marker)> {
    let stamp = ns.stamp()?;
    let region = match region {
        // Usually both markers live in one markers namespace: one
        // stamp read serves both.
        Some(r) if Arc::ptr_eq(&r.backend, &ns.backend) => r.current_at(stamp)?,
        Some(r) => r.current()?,
        None => Marker::default(),
    };
    Ok((ns.current_at(stamp)?, region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_bumps_and_decodes() {
        let m = Marker::default().bumped(false);
        assert_eq!((m.epoch, m.hard, m.soft), (1, 0, 1));
        let m = m.bumped(true);
        assert_eq!((m.epoch, m.hard, m.soft), (2, 2, 2));
        assert_eq!(Marker::decode(Some(&m.encode())), m);
        assert_eq!(Marker::decode(None), Marker::default());
        assert_eq!(Marker::decode(Some(b"junk")), Marker::default());
    }

    /// A memory namespace that declares it may evict (and whose "eviction"
    /// the test performs by hand), with or without an atomic update.
    #[derive(Debug)]
    struct Evicting(crate::cache::MemoryBackend, bool);

    impl Backend for Evicting {
        fn get(&self, key: &[u8]) -> Result<Option<crate::cache::Fetched<'_>>> {
            self.0.get(key)
        }
        fn set(&self, key: &[u8], value: &[u8], ttl: Option<std::time::Duration>) -> Result<()> {
            self.0.set(key, value, ttl)
        }
        fn remove(&self, key: &[u8]) -> Result<bool> {
            self.0.remove(key)
        }
        fn update(&self, key: &[u8], f: &mut crate::cache::UpdateFn<'_>) -> Result<()> {
            if self.1 {
                self.0.update(key, f)
            } else {
                Err(crate::cache::unsupported::<Self>("update atomically"))
            }
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::NONE.atomic_update(self.1)
        }
    }

    #[test]
    fn epochs_follow_the_clock() {
        let m = Marker::default().bumped_at(true, 1_000);
        assert_eq!((m.epoch, m.hard, m.soft), (1_000, 1_000, 1_000));
        // Two in one millisecond still move the epoch.
        let m = m.bumped_at(false, 1_000);
        assert_eq!((m.epoch, m.hard, m.soft), (1_001, 1_000, 1_001));
        // A clock gone back never moves it back.
        let m = m.bumped_at(true, 5);
        assert_eq!((m.epoch, m.hard, m.soft), (1_002, 1_002, 1_002));
    }

    /// A marker lost after an invalidation errs toward a miss: the values
    /// it had invalidated do not come back fresh.
    #[test]
    fn a_lost_marker_is_restarted_and_invalidated_values_stay_misses() {
        use super::super::envelope::Meta;
        use super::super::policy::{Standing, standing};
        for atomic in [true, false] {
            let clock = crate::MockClock::new(1_700_000_000_000);
            let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
            let backend = Arc::new(Evicting(
                crate::cache::MemoryBackend::new(Arc::clone(&clock_arc)),
                atomic,
            ));
            let slot = MarkerSlot::open(backend.clone(), b"ns:x".to_vec(), Arc::clone(&clock_arc))
                .unwrap();
            // Written at open, before any value is created under it.
            assert!(backend.get(b"ns:x").unwrap().is_some(), "atomic: {atomic}");
            let meta_under = |m: Marker| Meta {
                created_ms: clock.now_unix_ms(),
                ttl_ms: None,
                stale: false,
                ns_epoch: m.epoch,
                region_epoch: 0,
            };
            let judge = |meta: &Meta, m: Marker| standing(meta, (m, Marker::default()), || 0);
            let before = meta_under(slot.current().unwrap());
            assert_eq!(judge(&before, slot.current().unwrap()), Standing::Fresh);
            clock.advance(std::time::Duration::from_millis(5));
            slot.invalidate(Invalidation::Hard).unwrap();
            assert_eq!(judge(&before, slot.current().unwrap()), Standing::Miss);
            // Evicted; a while later someone reads.
            backend.0.remove(b"ns:x").unwrap();
            clock.advance(std::time::Duration::from_millis(5));
            let after_loss = slot.current().unwrap();
            assert_eq!(
                judge(&before, after_loss),
                Standing::Miss,
                "atomic: {atomic}: an invalidated value came back"
            );
            assert!(
                backend.get(b"ns:x").unwrap().is_some(),
                "restarted and stored"
            );
            // Values created under the restarted marker are fresh.
            let new = meta_under(after_loss);
            assert_eq!(judge(&new, slot.current().unwrap()), Standing::Fresh);
            // Without an atomic update a soft invalidation is made hard.
            clock.advance(std::time::Duration::from_millis(5));
            slot.invalidate(Invalidation::Soft).unwrap();
            let want = if atomic {
                Standing::Stale
            } else {
                Standing::Miss
            };
            assert_eq!(
                judge(&new, slot.current().unwrap()),
                want,
                "atomic: {atomic}"
            );
        }
    }
}
