//! carboy: the store under test.
//!
//! Non-durable: `Durability::None` (a commit is in the page cache and
//! survives the process being killed). Durable: `Durability::Sync` (a
//! commit returns once a sync covering its log bytes returned: its own, or
//! one shared with the commits of other threads and processes made at the
//! same time). Opened with `expected_keys(n)`, carboy's sizing
//! hint (LMDB's `map_size`, SQLite's and redb's cache sizes are the peers'
//! equivalents). Point reads are one `get` per key (the batched
//! `get_many` has no equivalent in every peer, so the read rows do not use
//! it); the scan borrows its entries from a snapshot.

use carboy::{Durability, Options, Store};

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

pub struct Carboy {
    fast: Store,
    /// A second handle on the same file, with `Durability::Sync`.
    sync: Store,
    durable: bool,
}

struct CarboyTxn<'a, 's>(&'a mut carboy::Transaction<'s>);

impl Txn for CarboyTxn<'_, '_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.0.put(key, value)?)
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.0.delete(key)?;
        Ok(())
    }
}

impl Engine for Carboy {
    const NAME: &'static str = "carboy";
    const LABEL: &'static str = "carboy";
    const SETTINGS: &'static str = "Durability::None / Durability::Sync (a commit returns once its log bytes are synced, by `pwritev2(RWF_DSYNC)` of the log or `fdatasync`; concurrent commits share a sync); expected_keys(n)";
    const MULTI_PROCESS: std::result::Result<(), &'static str> = Ok(());

    fn open(cfg: &Config) -> Result<Self> {
        let path = cfg.dir.join("bench.carboy");
        let fast = Options::new()
            .durability(Durability::None)
            .expected_keys(cfg.n)
            .open(&path)?;
        let sync = Options::new().durability(Durability::Sync).open(&path)?;
        Ok(Carboy {
            fast,
            sync,
            durable: false,
        })
    }

    fn set_durable(&mut self, durable: bool) -> Result<()> {
        self.durable = durable;
        Ok(())
    }

    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let store = if self.durable { &self.sync } else { &self.fast };
        let mut txn = store.transaction()?;
        f(&mut CarboyTxn(&mut txn))?;
        txn.commit()?;
        Ok(())
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let mut t = Tally::default();
        for _ in 0..count {
            let k = keys.next_key();
            if let Some(v) = self.fast.get(&k)? {
                t.see(&v);
            }
        }
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        // Entries borrowed from the mapped file, as LMDB's and redb's
        // iterators lend theirs (`Store::iter` would copy each one out).
        let mut t = Tally::default();
        let snap = self.fast.snapshot()?;
        for e in snap.iter() {
            t.see(e?.value);
        }
        Ok(t)
    }

    fn durable_note(&self) -> Option<String> {
        let s = self.sync.sync_stats();
        (s.commits > 0).then(|| {
            format!(
                "{:.2} syncs per commit ({} for {})",
                s.fsyncs as f64 / s.commits as f64,
                s.fsyncs,
                s.commits
            )
        })
    }

    fn flush(&self) -> Result<()> {
        Ok(self.fast.sync()?)
    }

    fn compact(&mut self) -> Result<Compaction> {
        self.fast.compact()?;
        Ok(Compaction::Done)
    }
}
