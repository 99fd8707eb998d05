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

use super::backend::Backend;
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
    /// initial one (nothing invalidated), since a marker can only move
    /// values towards regeneration and losing it only re-serves values
    /// that were fresh before.
    pub(crate) fn decode(bytes: Option<&[u8]>) -> Marker {
        let Some(b) = bytes else {
            return Marker::default();
        };
        if b.len() != Marker::LEN || b[0] != Marker::VERSION {
            return Marker::default();
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        Marker {
            epoch: word(1),
            hard: word(9),
            soft: word(17),
        }
    }

    /// The marker after one more invalidation.
    pub(crate) fn bumped(mut self, hard: bool) -> Marker {
        self.epoch = self.epoch.saturating_add(1);
        if hard {
            self.hard = self.epoch;
        }
        self.soft = self.epoch;
        self
    }
}

/// One invalidation marker: a key in the backend's markers namespace
/// (`carboy:markers`, beside the data namespaces, so that marker keys never
/// share a key space with user keys), kept in memory while that
/// namespace's change stamp holds still.
pub(crate) struct MarkerSlot {
    backend: Arc<dyn Backend>,
    key: Vec<u8>,
    cached: ArcSwapOption<(u128, Marker)>,
}

impl MarkerSlot {
    /// The marker stored under `key` in the markers namespace `backend`.
    pub(crate) fn new(backend: Arc<dyn Backend>, key: Vec<u8>) -> MarkerSlot {
        MarkerSlot {
            backend,
            key,
            cached: ArcSwapOption::empty(),
        }
    }

    /// The current marker, from memory when nothing changed.
    pub(crate) fn current(&self) -> Result<Marker> {
        self.current_at(self.backend.change_stamp()?)
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
        let marker = match self.backend.get(&self.key) {
            Ok(v) => Marker::decode(v.as_deref()),
            Err(e) if e.is_corruption() => Marker::default(),
            Err(e) => return Err(e),
        };
        if let Some(stamp) = stamp {
            self.cached.store(Some(Arc::new((stamp, marker))));
        }
        Ok(marker)
    }

    /// Records one more invalidation, for every process.
    pub(crate) fn invalidate(&self, how: Invalidation) -> Result<()> {
        self.backend.update(&self.key, &mut |current| {
            Some(
                Marker::decode(current)
                    .bumped(how == Invalidation::Hard)
                    .encode(),
            )
        })?;
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
    let stamp = ns.backend.change_stamp()?;
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
}
