//! The `file` backend ([`FileBackend`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{
    Backend, BackendConfig, BackendFactory, Capabilities, CreationGuard, Fetched, OpenOptions,
    OwnedCreation, OwnedCreationGuard, UpdateFn,
};
use crate::error::{Error, Result};
use crate::sync::{OwnedTry, StripeLocks};
use crate::{Durability, Expiry, Options, Store};

/// Stripes of a namespace's creation-lock file: two keys share a lock with
/// probability 1/1024, which only ever makes one wait for the other.
const STRIPES: u32 = 1024;

/// A cache namespace in a carboy namespace file.
///
/// The `file` backend: each cache namespace is one carboy namespace file
/// under `cache.data_dir`, shared by every thread and process that opens it.
///
/// Unlike Beaker's `file` backend (one pickle of the whole namespace,
/// re-read and rewritten on every operation), a get is a lock-free probe of
/// the mapped file and a set appends one record. Creation locks are
/// byte-range locks on **one** lock file per namespace,
/// `<lock_dir>/<namespace file>.create-lock`, striped by key hash
/// ([`StripeLocks`]): no file per key, nothing left to clean after a crash.
///
/// Settings: `cache.data_dir` (required), `cache.lock_dir` (default: the
/// data directory), `cache.durability` (`none`, the default, or `sync`:
/// every set survives power loss, at one sync each, shared by sets made
/// at the same time).
#[derive(Debug)]
pub struct FileBackend {
    store: Store,
    locks: StripeLocks,
}

impl FileBackend {
    /// Opens namespace `namespace` in `data_dir`, with its creation locks in
    /// `lock_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        lock_dir: &std::path::Path,
        namespace: &str,
        options: &Options,
    ) -> Result<FileBackend> {
        create_dir(data_dir)?;
        create_dir(lock_dir)?;
        let store = options.open_namespace(data_dir, namespace)?;
        let file = crate::name::file_name(namespace).map_err(|source| Error::InvalidName {
            name: namespace.to_string(),
            source,
        })?;
        let locks = StripeLocks::open(lock_dir.join(format!("{file}.create-lock")), STRIPES)?;
        Ok(FileBackend { store, locks })
    }

    /// The namespace's store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn create_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
}

impl Backend for FileBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Fetched<'_>>> {
        Ok(self.store.get(key)?.map(Fetched::Mapped))
    }

    fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        match ttl {
            Some(ttl) => self.store.put_for(key, value, ttl),
            None => self.store.put(key, value),
        }
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        self.store.delete(key)
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        self.store.contains(key)
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        self.store.keys()
    }

    fn clear(&self) -> Result<()> {
        self.store.clear()
    }

    fn update(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<()> {
        let mut txn = self.store.transaction()?;
        let current = txn.get_with_expiry(key)?;
        let existed = current.is_some();
        let expiry = current.map_or(Expiry::Never, |(_, e)| e);
        match f(current.map(|(v, _)| v)) {
            // The entry keeps its expiry (a soft-invalidated value still
            // goes when its TTL says).
            Some(v) => txn.put_with_expiry(key, &v, expiry)?,
            None if existed => {
                txn.delete(key)?;
            }
            // Nothing to remove: write nothing (dropping the transaction
            // commits nothing).
            None => return Ok(()),
        }
        txn.commit()
    }

    fn lock_creation(
        &self,
        _key: &[u8],
        hash: u64,
        wait: bool,
    ) -> Result<Option<CreationGuard<'_>>> {
        if wait {
            Ok(Some(CreationGuard::holding(self.locks.lock(hash)?)))
        } else {
            Ok(self.locks.try_lock(hash)?.map(CreationGuard::holding))
        }
    }

    fn try_lock_creation_owned(&self, _key: &[u8], hash: u64) -> Result<OwnedCreation> {
        // Never waits (an async task calls this on a runtime's worker).
        Ok(match self.locks.try_lock_owned_now(hash)? {
            OwnedTry::Held(stripe) => OwnedCreation::Held(OwnedCreationGuard::holding(stripe)),
            OwnedTry::Busy => OwnedCreation::Busy,
            OwnedTry::Leased => OwnedCreation::Leased,
        })
    }

    fn try_set_now(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let Some(mut txn) = self.store.try_transaction()? else {
            return Ok(false);
        };
        let expiry = match ttl {
            Some(ttl) => Expiry::AtUnixMs(
                self.store
                    .clock()
                    .now_unix_ms()
                    .saturating_add(ttl.as_millis().min(u128::from(u64::MAX)) as u64),
            ),
            None => Expiry::Never,
        };
        txn.put_with_expiry(key, value, expiry)?;
        txn.commit()?;
        Ok(true)
    }

    fn try_remove_now(&self, key: &[u8]) -> Result<Option<bool>> {
        let Some(mut txn) = self.store.try_transaction()? else {
            return Ok(None);
        };
        let existed = txn.delete(key)?;
        txn.commit()?;
        Ok(Some(existed))
    }

    fn change_stamp(&self) -> Result<u128> {
        self.store.change_stamp()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .list_keys(true)
            .atomic_update(true)
            .change_stamp(true)
            .creation_locks(true)
            // A namespace file keeps every entry until it is removed or
            // its TTL passes: every namespace is pinned.
            .never_evicts(true)
            .expires_by_clock(true)
    }
}

/// Opens [`FileBackend`]s: the built-in backend type `file`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileFactory;

impl FileFactory {
    fn dirs(config: &BackendConfig) -> Result<(PathBuf, PathBuf)> {
        let data = config
            .data_dir
            .clone()
            .ok_or_else(|| Error::InvalidSetting {
                setting: "cache.data_dir".into(),
                value: String::new(),
                reason: "the file backend needs a data directory (cache.data_dir)".into(),
            })?;
        let lock = config.lock_dir.clone().unwrap_or_else(|| data.clone());
        Ok((data, lock))
    }

    fn options(config: &BackendConfig) -> Result<Options> {
        let durability = match config.options.get("durability").map(|s| s.trim()) {
            None | Some("none") => Durability::None,
            Some("sync") => Durability::Sync,
            Some(other) => {
                return Err(Error::InvalidSetting {
                    setting: "cache.durability".into(),
                    value: other.to_string(),
                    reason: "expected none or sync".into(),
                });
            }
        };
        Ok(Options::new()
            .durability(durability)
            .clock(Arc::clone(&config.clock)))
    }
}

impl BackendFactory for FileFactory {
    fn open(
        &self,
        namespace: &str,
        config: &BackendConfig,
        _options: &OpenOptions,
    ) -> Result<Arc<dyn Backend>> {
        let (data, lock) = FileFactory::dirs(config)?;
        let options = FileFactory::options(config)?;
        Ok(Arc::new(FileBackend::open(
            &data, &lock, namespace, &options,
        )?))
    }

    fn options(&self) -> &'static [&'static str] {
        &["durability"]
    }

    fn check(&self, config: &BackendConfig) -> Result<()> {
        FileFactory::dirs(config)?;
        FileFactory::options(config)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryBackend;

    fn open(dir: &std::path::Path, durability: Durability) -> FileBackend {
        FileBackend::open(dir, dir, "ns", &Options::new().durability(durability)).unwrap()
    }

    #[test]
    fn an_owned_creation_lock_excludes_lock_creation_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path(), Durability::None);
        let OwnedCreation::Held(owned) = backend.try_lock_creation_owned(b"k", 42).unwrap() else {
            panic!("a free lock was not handed over");
        };
        // Not this thread's: its own try finds it busy, as another's would.
        assert!(backend.lock_creation(b"k", 42, false).unwrap().is_none());
        assert!(matches!(
            backend.try_lock_creation_owned(b"k", 42).unwrap(),
            OwnedCreation::Busy
        ));
        std::thread::spawn(move || drop(owned)).join().unwrap();
        let thread_held = backend.lock_creation(b"k", 42, false).unwrap().unwrap();
        assert!(matches!(
            backend.try_lock_creation_owned(b"k", 42).unwrap(),
            OwnedCreation::Busy
        ));
        drop(thread_held);
        // The default of a backend that offers none.
        let memory = MemoryBackend::new(Arc::new(crate::SystemClock));
        assert!(matches!(
            memory.try_lock_creation_owned(b"k", 42).unwrap(),
            OwnedCreation::NotOffered
        ));
    }

    #[test]
    fn writes_now_only_when_they_need_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path(), Durability::None);
        assert!(backend.try_set_now(b"k", b"1", None).unwrap());
        assert_eq!(backend.get(b"k").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(
            backend
                .try_set_now(b"t", b"x", Some(Duration::from_secs(60)))
                .unwrap()
        );
        assert!(backend.store.get(b"t").unwrap().unwrap().expiry() != Expiry::Never);
        // Another thread's transaction: would wait, nothing written.
        let txn = backend.store.transaction().unwrap();
        std::thread::scope(|s| {
            let r = s.spawn(|| {
                (
                    backend.try_set_now(b"k", b"2", None).unwrap(),
                    backend.try_remove_now(b"k").unwrap(),
                )
            });
            assert_eq!(r.join().unwrap(), (false, None));
        });
        drop(txn);
        assert_eq!(backend.get(b"k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(backend.try_remove_now(b"k").unwrap(), Some(true));
        assert_eq!(backend.try_remove_now(b"k").unwrap(), Some(false));
        // Sync durability: never on the caller (the fsync waits).
        let dir = tempfile::tempdir().unwrap();
        let synced = open(dir.path(), Durability::Sync);
        assert!(!synced.try_set_now(b"k", b"1", None).unwrap());
        assert_eq!(synced.try_remove_now(b"k").unwrap(), None);
        assert!(synced.get(b"k").unwrap().is_none());
        // memory: always at once.
        let memory = MemoryBackend::new(Arc::new(crate::SystemClock));
        assert!(memory.try_set_now(b"k", b"1", None).unwrap());
        assert_eq!(memory.try_remove_now(b"k").unwrap(), Some(true));
    }
}
