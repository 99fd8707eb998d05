//! SQLite through rusqlite (bundled SQLite).
//!
//! `CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID`
//! (one B-tree, like the other engines), `journal_mode=WAL`,
//! `cache_size` 1 GiB, `mmap_size` 4 GiB (SQLite's fastest read setup),
//! `busy_timeout` 60 s. Non-durable: `synchronous=OFF` (survives the
//! process being killed). Durable: `synchronous=FULL` (the WAL is synced at
//! every commit). Writes: `BEGIN IMMEDIATE`, cached `INSERT OR REPLACE` /
//! `DELETE` statements, `COMMIT`, on one writer connection. Reads: a pool of
//! connections (rusqlite's `Connection` is `Send` but not `Sync`), one per
//! reading thread, a `BEGIN`/`COMMIT` read transaction per `get_many` call,
//! the value borrowed from SQLite (no copy). Compaction: `VACUUM`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::data::{KeyStream, Tally};
use crate::engine::{Compaction, Config, Engine, Result, Txn};

pub struct Sqlite {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

const PUT: &str = "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)";
const DEL: &str = "DELETE FROM kv WHERE k = ?1";
const GET: &str = "SELECT v FROM kv WHERE k = ?1";

fn connect(path: &PathBuf, synchronous: &str) -> Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(60))?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal_mode is {mode}, not wal").into());
    }
    c.execute_batch(&format!(
        "PRAGMA synchronous={synchronous};
         PRAGMA cache_size=-1048576;
         PRAGMA mmap_size=4294967296;
         CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;"
    ))?;
    Ok(c)
}

struct SqliteTxn<'a> {
    put: rusqlite::CachedStatement<'a>,
    del: rusqlite::CachedStatement<'a>,
}

impl Txn for SqliteTxn<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put.execute([key, value])?;
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.del.execute([key])?;
        Ok(())
    }
}

impl Sqlite {
    fn reader(&self) -> Result<Connection> {
        match self.readers.lock().unwrap().pop() {
            Some(c) => Ok(c),
            None => connect(&self.path, "OFF"),
        }
    }

    fn give_back(&self, c: Connection) {
        self.readers.lock().unwrap().push(c);
    }
}

impl Engine for Sqlite {
    const NAME: &'static str = "sqlite";
    const LABEL: &'static str = "SQLite";
    const SETTINGS: &'static str =
        "WAL; synchronous=OFF / FULL; WITHOUT ROWID; cache 1 GiB; mmap on";
    const MULTI_PROCESS: std::result::Result<(), &'static str> = Ok(());

    fn open(cfg: &Config) -> Result<Self> {
        let path = cfg.dir.join("bench.sqlite");
        let writer = connect(&path, "OFF")?;
        Ok(Sqlite {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn set_durable(&mut self, durable: bool) -> Result<()> {
        let mode = if durable { "FULL" } else { "OFF" };
        self.writer
            .lock()
            .unwrap()
            .execute_batch(&format!("PRAGMA synchronous={mode}"))?;
        Ok(())
    }

    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>,
    {
        let mut c = self.writer.lock().unwrap();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut t = SqliteTxn {
                put: tx.prepare_cached(PUT)?,
                del: tx.prepare_cached(DEL)?,
            };
            f(&mut t)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally> {
        let c = self.reader()?;
        let mut t = Tally::default();
        c.execute_batch("BEGIN")?;
        {
            let mut st = c.prepare_cached(GET)?;
            for _ in 0..count {
                let k = keys.next_key();
                let mut rows = st.query([&k[..]])?;
                if let Some(row) = rows.next()? {
                    t.see(row.get_ref(0)?.as_blob()?);
                }
            }
        }
        c.execute_batch("COMMIT")?;
        self.give_back(c);
        Ok(t)
    }

    fn scan(&self) -> Result<Tally> {
        let c = self.reader()?;
        let mut t = Tally::default();
        {
            let mut st = c.prepare("SELECT v FROM kv")?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                t.see(row.get_ref(0)?.as_blob()?);
            }
        }
        self.give_back(c);
        Ok(t)
    }

    fn flush(&self) -> Result<()> {
        // Back every commit into the database file and sync it.
        let c = self.writer.lock().unwrap();
        let mode: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        c.execute_batch("PRAGMA synchronous=FULL")?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        c.execute_batch(&format!("PRAGMA synchronous={mode}"))?;
        Ok(())
    }

    fn compact(&mut self) -> Result<Compaction> {
        self.readers.lock().unwrap().clear();
        let c = self.writer.lock().unwrap();
        c.execute_batch("VACUUM")?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(Compaction::Done)
    }
}
