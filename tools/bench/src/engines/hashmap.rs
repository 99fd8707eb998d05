//! The ceiling: std's `HashMap<Box<[u8]>, Box<[u8]>>` (SipHash-1-3, the
//! hash carboy uses too) behind an `RwLock`, sized for `n` keys up front.
//! The read lock is taken once per `get_many` call (like a read
//! transaction), the write lock once per commit. Nothing is on disk, so
//! durability, sizes and the multi-process rows do not apply.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

type Map = HashMap<Box<[u8]>, Box<[u8]>>;

pub struct Mem {
    map: RwLock<Map>,
}

struct MemTxn<'a>(&'a mut Map);

impl Txn for MemTxn<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.0.insert(key.into(), value.into());
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.0.remove(key);
        Ok(())
    }
}

impl Engine for Mem {
    const NAME: &'static str = "hashmap";
    const LABEL: &'static str = "HashMap (ceiling)";
    const SETTINGS: &'static str = "std HashMap under RwLock, SipHash-1-3; in memory only";
    const MULTI_PROCESS: std::result::Result<(), &'static str> = Err("in-process memory");
    const ON_DISK: bool = false;

    fn open(cfg: &Config) -> Result<Self> {
        Ok(Mem {
            map: RwLock::new(HashMap::with_capacity(cfg.n as usize)),
        })
    }

    fn set_durable(&mut self, _durable: bool) -> Result<()> {
        Ok(())
    }

    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let mut m = self.map.write().unwrap();
        f(&mut MemTxn(&mut m))
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let mut t = Tally::default();
        let m = self.map.read().unwrap();
        for _ in 0..count {
            let k = keys.next_key();
            if let Some(v) = m.get(&k[..]) {
                t.see(v);
            }
        }
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        let mut t = Tally::default();
        for v in self.map.read().unwrap().values() {
            t.see(v);
        }
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn compact(&mut self) -> Result<Compaction> {
        Ok(Compaction::NotAvailable)
    }
}
