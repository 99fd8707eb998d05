//! redb.
//!
//! Non-durable: `Durability::None` (redb: such commits become persistent
//! with the next `Immediate` commit; a crash rolls back to the last durable
//! one). Durable: `Durability::Immediate`. One table of `&[u8] -> &[u8]`,
//! the default 1 GiB cache. A read transaction per `get_many` call. The
//! multi-process rows open every process in `ConcurrencyMode::MultiWriter`
//! (redb 4.3 and later), where redb refuses non-durable commits ("not
//! supported when the database is shared with other processes"), so every
//! commit there is `Immediate`, the paced writer beside the readers
//! included; the single-process rows use the default `ExclusiveWriter`. Compaction: `Database::compact` until it reports
//! nothing left to do.

use redb::{
    ConcurrencyMode, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition,
};

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

pub struct Redb {
    db: Database,
    durable: bool,
    /// Opened for the multi-process rows: redb then refuses non-durable
    /// commits, so every commit is `Immediate`.
    shared: bool,
}

struct RedbTxn<'a, 't>(&'a mut redb::Table<'t, &'static [u8], &'static [u8]>);

impl Txn for RedbTxn<'_, '_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.0.insert(key, value)?;
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.0.remove(key)?;
        Ok(())
    }
}

impl Redb {
    fn commit_with<F>(&self, durability: Durability, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let mut w = self.db.begin_write()?;
        w.set_durability(durability)?;
        {
            let mut table = w.open_table(TABLE)?;
            f(&mut RedbTxn(&mut table))?;
        }
        w.commit()?;
        Ok(())
    }
}

impl Engine for Redb {
    const NAME: &'static str = "redb";
    const LABEL: &'static str = "redb";
    const SETTINGS: &'static str = "Durability::None / Durability::Immediate; 1 GiB cache; multi-process rows in MultiWriter mode, where redb allows only durable commits (so its writer there is durable)";
    const MULTI_PROCESS: std::result::Result<(), &'static str> = Ok(());

    fn open(cfg: &Config) -> Result<Self> {
        let mut b = Database::builder();
        b.set_cache_size(1 << 30);
        if cfg.multi_process {
            b.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        }
        let db = b.create(cfg.dir.join("bench.redb"))?;
        let me = Redb {
            db,
            durable: false,
            shared: cfg.multi_process,
        };
        // Create the table once (a durable, empty commit).
        me.commit_with(Durability::Immediate, |_| Ok(()))?;
        Ok(me)
    }

    fn set_durable(&mut self, durable: bool) -> Result<()> {
        self.durable = durable;
        Ok(())
    }

    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let d = if self.durable || self.shared {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.commit_with(d, f)
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let mut t = Tally::default();
        let r = self.db.begin_read()?;
        let table = r.open_table(TABLE)?;
        for _ in 0..count {
            let k = keys.next_key();
            if let Some(v) = table.get(&k[..])? {
                t.see(v.value());
            }
        }
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        let mut t = Tally::default();
        let r = self.db.begin_read()?;
        let table = r.open_table(TABLE)?;
        for e in table.iter()? {
            let (_k, v) = e?;
            t.see(v.value());
        }
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        self.commit_with(Durability::Immediate, |_| Ok(()))
    }

    fn compact(&mut self) -> Result<Compaction> {
        for _ in 0..20 {
            if !self.db.compact()? {
                break;
            }
        }
        Ok(Compaction::Done)
    }
}
