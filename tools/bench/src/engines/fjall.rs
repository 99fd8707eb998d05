//! fjall 3 (an LSM tree), plain (non-transactional) `Database` + `Keyspace`.
//!
//! Non-durable: every write is appended to the journal and handed to the
//! OS (`PersistMode::Buffer`, fjall's default; survives the process being
//! killed). Durable: `PersistMode::SyncData` (`fdatasync`) per commit. Block
//! cache 1 GiB, default compression (lz4; the values are incompressible).
//! A single write is `Keyspace::insert`/`remove`; several are one
//! `WriteBatch` (atomic). Flush: the memtable is rotated into a table and
//! the journal synced. Compaction: `major_compact`. fjall takes an exclusive
//! lock on its directory.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

pub struct Fjall {
    db: Database,
    ks: Keyspace,
    durable: bool,
}

enum Pending {
    Empty,
    One(Vec<u8>, Option<Vec<u8>>),
    Many(fjall::OwnedWriteBatch),
}

struct FjallTxn<'a> {
    db: &'a Database,
    ks: &'a Keyspace,
    state: Pending,
}

impl FjallTxn<'_> {
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let state = std::mem::replace(&mut self.state, Pending::Empty);
        self.state = match state {
            Pending::Empty => Pending::One(key.to_vec(), value.map(<[u8]>::to_vec)),
            Pending::One(k0, v0) => {
                let mut b = self.db.batch();
                match v0 {
                    Some(v0) => b.insert(self.ks, k0, v0),
                    None => b.remove(self.ks, k0),
                }
                match value {
                    Some(v) => b.insert(self.ks, key, v),
                    None => b.remove(self.ks, key),
                }
                Pending::Many(b)
            }
            Pending::Many(mut b) => {
                match value {
                    Some(v) => b.insert(self.ks, key, v),
                    None => b.remove(self.ks, key),
                }
                Pending::Many(b)
            }
        };
    }
}

impl Txn for FjallTxn<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.push(key, Some(value));
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.push(key, None);
        Ok(())
    }
}

impl Engine for Fjall {
    const NAME: &'static str = "fjall";
    const LABEL: &'static str = "fjall";
    const SETTINGS: &'static str = "PersistMode::Buffer / SyncData per commit; cache 1 GiB";
    const MULTI_PROCESS: std::result::Result<(), &'static str> =
        Err("fjall locks its directory for one process");

    fn open(cfg: &Config) -> Result<Self> {
        let db = Database::builder(cfg.dir.join("fjall"))
            .cache_size(1 << 30)
            .open()?;
        let ks = db.keyspace("kv", KeyspaceCreateOptions::default)?;
        Ok(Fjall {
            db,
            ks,
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
        let mut t = FjallTxn {
            db: &self.db,
            ks: &self.ks,
            state: Pending::Empty,
        };
        f(&mut t)?;
        match t.state {
            Pending::Empty => {}
            Pending::One(k, Some(v)) => self.ks.insert(k, v)?,
            Pending::One(k, None) => self.ks.remove(k)?,
            Pending::Many(b) => b.commit()?,
        }
        if self.durable {
            self.db.persist(PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let mut t = Tally::default();
        for _ in 0..count {
            let k = keys.next_key();
            if let Some(v) = self.ks.get(k)? {
                t.see(&v);
            }
        }
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        let mut t = Tally::default();
        for g in self.ks.iter() {
            t.see(&g.value()?);
        }
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        self.ks.rotate_memtable_and_wait()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn compact(&mut self) -> Result<Compaction> {
        self.ks.rotate_memtable_and_wait()?;
        self.ks.major_compact()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(Compaction::Done)
    }
}
