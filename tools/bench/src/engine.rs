//! The one small trait every engine implements.

use std::path::PathBuf;

use crate::data::{KeyStream, Tally};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// How an engine is opened.
#[derive(Clone, Debug)]
pub struct Config {
    /// An empty (or previously prepared) directory that belongs to this
    /// engine alone.
    pub dir: PathBuf,
    /// How many keys the run loads (a sizing hint, where the engine takes one).
    pub n: u64,
    /// Several processes will open this database at once (the multi-process
    /// rows): engines that need a special mode for that switch to it.
    pub multi_process: bool,
}

/// The writes of one transaction.
pub trait Txn {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&mut self, key: &[u8]) -> Result<()>;
}

/// What compaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compaction {
    Done,
    /// The engine has no compaction to call.
    NotAvailable,
}

/// One storage engine under test.
///
/// Every engine starts non-durable (the equivalent of carboy's
/// `Durability::None`: a commit is in the OS page cache, or as close to that
/// as the engine gets) and switches with [`Engine::set_durable`].
pub trait Engine: Sized + Send + Sync {
    /// The name used on the command line (`--engine`).
    const NAME: &'static str;
    /// The column heading in the table.
    const LABEL: &'static str;
    /// Non-durable / durable settings and anything else that matters, in
    /// one line for the report.
    const SETTINGS: &'static str;
    /// Whether several processes may open one database for reading and
    /// writing at once; `Err(reason)` when not.
    const MULTI_PROCESS: std::result::Result<(), &'static str>;
    /// Whether the engine keeps its data in files at all.
    const ON_DISK: bool = true;
    /// Why the engine's "durable" commit is not really power-loss durable,
    /// if it is not: its durable rows are then shown but not counted as
    /// the best peer.
    const DURABLE_CAVEAT: Option<&'static str> = None;

    fn open(cfg: &Config) -> Result<Self>;

    /// Switches commits between non-durable (`false`) and durable (`true`:
    /// the commit survives power loss once it returns).
    fn set_durable(&mut self, durable: bool) -> Result<()>;

    /// Runs `f` inside one write transaction and commits it.
    fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&mut dyn Txn) -> Result<()>;

    /// `count` random point reads of keys from `keys`, under one read
    /// transaction where the engine has them.
    fn get_many(&self, keys: &mut KeyStream, count: u64) -> Result<Tally>;

    /// Every live entry once, in any order.
    fn scan(&self) -> Result<Tally>;

    /// Makes everything written so far durable and settled on disk (so
    /// that the directory's size means something). Not timed.
    fn flush(&self) -> Result<()>;

    /// Compacts the database, where the engine can.
    fn compact(&mut self) -> Result<Compaction>;

    /// What the engine can tell about its durable commits so far in this
    /// process (carboy: how many syncs they took), for the report.
    fn durable_note(&self) -> Option<String> {
        None
    }
}
