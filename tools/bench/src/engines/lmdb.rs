//! LMDB through heed.
//!
//! Non-durable: `MDB_NOSYNC` (commits are written to the file but not
//! flushed; survives the process being killed). Durable: LMDB's default
//! (`fdatasync` per commit). One unnamed database of raw bytes; a 64 GiB
//! map (address space only: the file grows as pages are used). A read
//! transaction per `get_many` call. Compaction: `mdb_env_copy2` with
//! `MDB_CP_COMPACT`, renamed over `data.mdb`, environment reopened.

use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, CompactionOption, Database, Env, EnvFlags, EnvOpenOptions, FlagSetMode};

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

const MAP_SIZE: usize = 64 << 30;

pub struct Lmdb {
    dir: PathBuf,
    env: Option<Env>,
    db: Database<'static, Bytes, Bytes>,
    durable: bool,
}

struct LmdbTxn<'a, 'e> {
    db: Database<'static, Bytes, Bytes>,
    txn: &'a mut heed::RwTxn<'e>,
}

impl Txn for LmdbTxn<'_, '_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put(self.txn, key, value)?)
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.db.delete(self.txn, key)?;
        Ok(())
    }
}

fn open_env(dir: &Path, durable: bool) -> Result<(Env, Database<'static, Bytes, Bytes>)> {
    // SAFETY (heed's contract): the environment is opened once per process
    // and its files are not modified by anything but LMDB meanwhile.
    let env = unsafe {
        let mut o = EnvOpenOptions::new();
        o.map_size(MAP_SIZE).max_readers(256);
        if !durable {
            o.flags(EnvFlags::NO_SYNC);
        }
        o.open(dir)?
    };
    let wtxn = env.write_txn()?;
    let db = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> std::result::Result<_, heed::Error> {
            Ok(CommitOrAbort::<_, ()>::Commit(
                dbo.create_database::<Bytes, Bytes>(wtxn, None)?,
            ))
        })?
        .unwrap_commit();
    Ok((env, db))
}

impl Lmdb {
    fn env(&self) -> &Env {
        self.env.as_ref().expect("environment open")
    }
}

impl Engine for Lmdb {
    const NAME: &'static str = "lmdb";
    const LABEL: &'static str = "LMDB";
    const SETTINGS: &'static str =
        "MDB_NOSYNC / default (fsync per commit); 64 GiB map; read txn per get batch";
    const MULTI_PROCESS: std::result::Result<(), &'static str> = Ok(());

    fn open(cfg: &Config) -> Result<Self> {
        let dir = cfg.dir.join("lmdb");
        std::fs::create_dir_all(&dir)?;
        let (env, db) = open_env(&dir, false)?;
        Ok(Lmdb {
            dir,
            env: Some(env),
            db,
            durable: false,
        })
    }

    fn set_durable(&mut self, durable: bool) -> Result<()> {
        let mode = if durable {
            FlagSetMode::Disable
        } else {
            FlagSetMode::Enable
        };
        // SAFETY (heed's contract): no transaction is open in this process.
        unsafe { self.env().set_flags(EnvFlags::NO_SYNC, mode)? };
        self.durable = durable;
        Ok(())
    }

    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let mut txn = self.env().write_txn()?;
        f(&mut LmdbTxn {
            db: self.db,
            txn: &mut txn,
        })?;
        txn.commit()?;
        Ok(())
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let mut t = Tally::default();
        let rtxn = self.env().read_txn()?;
        for _ in 0..count {
            let k = keys.next_key();
            if let Some(v) = self.db.get(&rtxn, &k)? {
                t.see(v);
            }
        }
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        let mut t = Tally::default();
        let rtxn = self.env().read_txn()?;
        for e in self.db.iter(&rtxn)? {
            t.see(e?.1);
        }
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        Ok(self.env().force_sync()?)
    }

    fn compact(&mut self) -> Result<Compaction> {
        let copy = self.dir.join("compact.mdb");
        let file = self.env().copy_to_path(&copy, CompactionOption::Enabled)?;
        file.sync_all()?;
        drop(file);
        let env = self.env.take().expect("environment open");
        env.prepare_for_closing().wait();
        std::fs::rename(&copy, self.dir.join("data.mdb"))?;
        let (env, db) = open_env(&self.dir, self.durable)?;
        self.env = Some(env);
        self.db = db;
        Ok(Compaction::Done)
    }
}
