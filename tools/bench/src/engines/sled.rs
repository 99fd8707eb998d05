//! sled 0.34 (the latest non-alpha release).
//!
//! Non-durable: sled's default (writes go to its in-memory log buffers,
//! flushed in the background every 500 ms; a killed process may lose the
//! last ones). Durable: `Db::flush` (which fsyncs) after every commit. Cache
//! 1 GiB. Caveat: on Linux sled's flush ends in `sync_file_range`, not
//! `fsync`/`fdatasync`, so its "durable" commits are not power-loss
//! durable; the report shows them but does not count sled as the best
//! durable peer. A single write is `insert`/`remove`; several are one `Batch`
//! (atomic). sled has no compaction call (its log is cleaned in the
//! background) and takes an exclusive lock on its directory.

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

pub struct Sled {
    db: sled::Db,
    durable: bool,
}

enum Pending {
    Empty,
    One(Vec<u8>, Option<Vec<u8>>),
    Many(sled::Batch),
}

struct SledTxn(Pending);

impl SledTxn {
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let state = std::mem::replace(&mut self.0, Pending::Empty);
        self.0 = match state {
            Pending::Empty => Pending::One(key.to_vec(), value.map(<[u8]>::to_vec)),
            Pending::One(k0, v0) => {
                let mut b = sled::Batch::default();
                match v0 {
                    Some(v0) => b.insert(k0, v0),
                    None => b.remove(k0),
                }
                match value {
                    Some(v) => b.insert(key, v),
                    None => b.remove(key),
                }
                Pending::Many(b)
            }
            Pending::Many(mut b) => {
                match value {
                    Some(v) => b.insert(key, v),
                    None => b.remove(key),
                }
                Pending::Many(b)
            }
        };
    }
}

impl Txn for SledTxn {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.push(key, Some(value));
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.push(key, None);
        Ok(())
    }
}

impl Engine for Sled {
    const NAME: &'static str = "sled";
    const LABEL: &'static str = "sled";
    const SETTINGS: &'static str = "default background flush (500 ms) / flush() per commit (which on Linux is sync_file_range, not fsync: not power-loss durable); cache 1 GiB";
    const MULTI_PROCESS: std::result::Result<(), &'static str> =
        Err("sled locks its directory for one process");
    const DURABLE_CAVEAT: Option<&'static str> = Some(
        "sled 0.34's flush() ends in sync_file_range(2) on Linux, which neither flushes the \
         device's write cache nor the file's metadata: not durable against power loss",
    );

    fn open(cfg: &Config) -> Result<Self> {
        let db = sled::Config::new()
            .path(cfg.dir.join("sled"))
            .cache_capacity(1 << 30)
            .open()?;
        Ok(Sled { db, durable: false })
    }

    fn set_durable(&mut self, durable: bool) -> Result<()> {
        self.durable = durable;
        Ok(())
    }

    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let mut t = SledTxn(Pending::Empty);
        f(&mut t)?;
        match t.0 {
            Pending::Empty => {}
            Pending::One(k, Some(v)) => {
                self.db.insert(k, v)?;
            }
            Pending::One(k, None) => {
                self.db.remove(k)?;
            }
            Pending::Many(b) => self.db.apply_batch(b)?,
        }
        if self.durable {
            self.db.flush()?;
        }
        Ok(())
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let mut t = Tally::default();
        for _ in 0..count {
            let k = keys.next_key();
            if let Some(v) = self.db.get(k)? {
                t.see(&v);
            }
        }
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        let mut t = Tally::default();
        for e in self.db.iter() {
            t.see(&e?.1);
        }
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn compact(&mut self) -> Result<Compaction> {
        Ok(Compaction::NotAvailable)
    }
}
