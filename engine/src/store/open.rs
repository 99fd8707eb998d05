//! Opening: the lock file, creating a data file atomically, the
//! process-wide registry of open namespaces, and moving to the file a
//! compaction put in place.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use arc_swap::ArcSwap;
use carboy_format::header::{HEADER_SIZE, Header, live};
use carboy_format::record::{self, Commit};
use carboy_format::{FORMAT_VERSION, lockfile};
use parking_lot::{Mutex, RwLock};

use super::file_state::{self, FileState, IndexView};
use super::index::{self, Counters};
use super::{Shared, environment, recovery};
use crate::error::{Error, Result};
use crate::file::{LockFile, MappedFile};
use crate::options::Options;

/// Every namespace this process has open, by the (device, inode) of its
/// lock file: threads share one handle per file, because flock belongs to
/// the open file description.
type Registry = HashMap<(u64, u64), Weak<Shared>>;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The lock file's path for a data file: the data file's name plus `.lock`.
pub(crate) fn lock_path_for(data: &Path) -> PathBuf {
    let mut name = data
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    data.with_file_name(name)
}

/// Opens the shared state of the namespace at `data_path`. Also returns
/// whether this call made it (opening the data file with `opts`), rather
/// than finding it open in this process.
pub(crate) fn open_shared(
    data_path: &Path,
    name: Option<&str>,
    opts: &Options,
) -> Result<(Arc<Shared>, bool)> {
    if data_path.file_name().is_none() {
        return Err(Error::InvalidOption {
            name: "path",
            reason: format!("{} does not name a file", data_path.display()),
        });
    }
    // The files are looked up by path again later (after a compaction, and
    // to check that they are still there): a relative path is made
    // absolute now, so that a later change of working directory does not
    // make them look removed.
    let data_path =
        &std::path::absolute(data_path).map_err(|e| Error::io("make absolute", data_path, e))?;
    let lock_path = lock_path_for(data_path);
    let (lock, key, initialized) = open_lock_file(&lock_path, data_path, opts.create)?;
    let mut registry = REGISTRY.lock();
    if let Some(shared) = registry.get(&key).and_then(Weak::upgrade) {
        check_name(&shared.file.load(), name)?;
        return Ok((shared, false));
    }
    registry.retain(|_, w| w.strong_count() > 0);

    // Create the data file if needed, under the exclusive lock so that two
    // processes never both create it.
    lock.lock_exclusive()
        .map_err(|e| Error::io("lock", &lock_path, e))?;
    let slot = environment::presence_slot(key);
    let mut repairs = Vec::new();
    let opened = environment::check_lock_file(&lock, &lock_path).and_then(|()| {
        let at = DataAt {
            lock: &lock,
            lock_path: &lock_path,
            slot,
            data_path,
            new_lock_file: initialized,
        };
        open_data_locked(&at, name, opts, &mut repairs)
    });
    let _ = lock.unlock();
    let fs = opened?;
    let generation = fs.header.generation;
    let shared = Arc::new_cyclic(|me| Shared {
        lock,
        lock_path,
        lock_slot: slot,
        data_path: data_path.to_path_buf(),
        file: ArcSwap::from_pointee(fs),
        rw: RwLock::new(()),
        shared_holders: Mutex::new(0),
        latched: Mutex::new(None),
        checked_gen: AtomicU64::new(generation),
        reload: Mutex::new(()),
        presence: Mutex::new(()),
        held: std::sync::atomic::AtomicBool::new(false),
        lease_thread: Mutex::new(false),
        me: me.clone(),
        handles: std::sync::atomic::AtomicUsize::new(0),
        group: Default::default(),
        repairs: Mutex::new(repairs),
    });
    registry.insert(key, Arc::downgrade(&shared));
    Ok((shared, true))
}

/// Where a namespace's data file is, and the lock file it is used through.
struct DataAt<'a> {
    lock: &'a LockFile,
    lock_path: &'a Path,
    /// The lock file's presence slot (`environment::presence_slot`).
    slot: u64,
    data_path: &'a Path,
    /// Whether this open initialized the lock file: no data file can have
    /// been used through it yet.
    new_lock_file: bool,
}

/// With the exclusive lock held: opens the data file at the path (creating
/// it if it is missing and `opts` allow), after making sure no other
/// process uses it through another lock file, and finishes whatever a dead
/// writer left.
fn open_data_locked(
    at: &DataAt<'_>,
    name: Option<&str>,
    opts: &Options,
    repairs: &mut Vec<String>,
) -> Result<FileState> {
    let data_path = at.data_path;
    remove_stale_temp_files(data_path);
    let exists = data_path
        .try_exists()
        .map_err(|e| Error::io("stat", data_path, e))?;
    if !exists {
        if !opts.create {
            return Err(Error::NotFound {
                path: data_path.to_path_buf(),
            });
        }
        // A lock file that was in use names the generation of the data file
        // last at the path; processes may still have that file mapped. The
        // new file takes the next generation, so that they move to it as
        // after a compaction rather than keep using a file that is gone.
        let generation = if at.new_lock_file {
            0
        } else {
            u64::from_le(at.lock.generation().load(Ordering::Acquire)).wrapping_add(1)
        };
        create_file(
            data_path,
            name.unwrap_or_default().as_bytes(),
            generation,
            opts,
        )?;
    }
    let (fs, plausible) = FileState::open(data_path, !opts.rebuild_index)?;
    // Before anything is written to it: nobody may be using this file
    // through a lock file other than ours (one that was removed or
    // replaced), or two writers could run at once.
    environment::mark_and_check_presence(&fs, at.lock_path, at.slot)?;
    check_name(&fs, name)?;
    let refuse = |reason: String| Error::NeedsRecovery {
        path: data_path.to_path_buf(),
        reason,
    };
    let reboot = recovery::from_another_boot(&fs);
    if !plausible || opts.rebuild_index || reboot {
        if !opts.recover {
            return Err(refuse(
                if !plausible {
                    "its live words are implausible"
                } else if reboot {
                    "it was last written before the machine rebooted"
                } else {
                    "an index rebuild was asked for"
                }
                .into(),
            ));
        }
        let aside = recovery::rebuild(&fs)?;
        if !plausible {
            repairs
                .push("its live words were implausible: the index was rebuilt from the log".into());
        }
        if let Some(aside) = aside {
            repairs.push(format!(
                "recovery kept the log up to offset {} and set aside {} bytes holding {} \
                 commits that verify past damage at offset {} ({}) in {}",
                aside.offset,
                aside.len,
                aside.commits,
                aside.damage.0,
                aside.damage.1,
                aside
                    .path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
        }
    } else {
        if !opts.recover && recovery::writer_died(&fs) {
            return Err(refuse("a writer died during a commit".into()));
        }
        recovery::recover_locked(&fs)?;
        if let Some(why) = recovery::end_damage(&fs)? {
            if !opts.recover {
                return Err(refuse(why));
            }
            recovery::reindex(&fs, &why, true)?;
            repairs.push(format!("{why}: the index was rebuilt from the log"));
        } else if let Some(why) = recovery::index_damage(&fs)? {
            if !opts.recover {
                return Err(refuse(why));
            }
            recovery::reindex(&fs, &why, false)?;
            repairs.push(format!("{why}: the index was rebuilt from the log"));
        }
    }
    // The lock file may be new (or was recreated): make its generation
    // name the file at the path.
    at.lock
        .generation()
        .store(fs.header.generation.to_le(), Ordering::Release);
    Ok(fs)
}

impl Shared {
    /// Called when a handle opens while no other handle of this process is
    /// open (a first open, or a reopen after every handle was dropped,
    /// while a lease thread kept this state alive). Does what a new open
    /// would where this state may be stale: if the file at the path is no
    /// longer the one in use (removed or replaced meanwhile), is no longer
    /// whole, or `opts` ask for an index rebuild (unless `just_opened`:
    /// this open made the state, and did all of it), opens the path again
    /// under the lock. Then marks this process present on the file,
    /// failing if another process uses it through another lock file.
    pub(crate) fn enter(
        &self,
        name: Option<&str>,
        opts: &Options,
        just_opened: bool,
    ) -> Result<()> {
        let _one = self.presence.lock();
        let current = self.file.load_full();
        let at_path = std::fs::metadata(&self.data_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let whole = || -> Result<bool> {
            let len = current.metadata()?.len();
            Ok(len >= HEADER_SIZE && len >= current.commit_end())
        };
        let rebuild = opts.rebuild_index && !just_opened;
        if at_path == Some(current.dev_ino) && !rebuild && whole()? {
            return environment::mark_and_check_presence(&current, &self.lock_path, self.lock_slot);
        }
        let _rw = self.rw.write();
        self.acquire_exclusive()?;
        let reopened = environment::check_lock_file(&self.lock, &self.lock_path).and_then(|()| {
            let at = DataAt {
                lock: &self.lock,
                lock_path: &self.lock_path,
                slot: self.lock_slot,
                data_path: &self.data_path,
                new_lock_file: false,
            };
            open_data_locked(&at, name, opts, &mut self.repairs.lock())
        });
        match reopened {
            Ok(fs) => {
                let generation = fs.header.generation;
                self.file.store(Arc::new(fs));
                self.checked_gen.store(generation, Ordering::Release);
                self.release_exclusive();
                Ok(())
            }
            Err(e) => {
                let _ = self.lock.unlock();
                Err(e)
            }
        }
    }

    /// Called when the last handle of this process was dropped: takes back
    /// this process's presence on the data file (a lease thread may keep
    /// the shared state alive a moment longer, and must not make a new
    /// open think the file is still in use).
    pub(crate) fn leave(&self) {
        let _one = self.presence.lock();
        if self.handles.load(Ordering::Acquire) == 0 {
            let _ = self.file.load().map.clear_presence(self.lock_slot);
        }
    }

    /// Makes `fs` the file in use (after a compaction replaced the path),
    /// marking this process present on it.
    pub(crate) fn install(&self, fs: Arc<FileState>) {
        let _ = fs.map.mark_presence(self.lock_slot);
        self.file.store(fs);
    }
}

fn check_name(fs: &FileState, name: Option<&str>) -> Result<()> {
    if let Some(name) = name
        && fs.header.name != name.as_bytes()
    {
        return Err(Error::NameMismatch {
            path: fs.path().to_path_buf(),
            expected: name.to_string(),
            found: String::from_utf8_lossy(&fs.header.name).into_owned(),
        });
    }
    Ok(())
}

/// Opens (creating and initializing if needed) the lock file. Returns it,
/// its (device, inode), and whether this call initialized it.
fn open_lock_file(
    lock_path: &Path,
    data_path: &Path,
    create: bool,
) -> Result<(LockFile, (u64, u64), bool)> {
    // A FIFO, socket or device at the path is refused, and the opens are
    // non-blocking so that one put there meanwhile cannot block them.
    file_state::refuse_special(lock_path)?;
    let mut oo = File::options();
    oo.read(true).write(true);
    let open = |oo: &std::fs::OpenOptions| file_state::open_nonblocking(oo, lock_path);
    let file = match open(&oo) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create && !data_path.exists() {
                return Err(Error::NotFound {
                    path: data_path.to_path_buf(),
                });
            }
            match open(oo.clone().create_new(true)) {
                Ok(file) => file,
                // Another process created it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    open(&oo).map_err(|e| Error::io("open lock file", lock_path, e))?
                }
                Err(e) => return Err(Error::io("create lock file", lock_path, e)),
            }
        }
        Err(e) => return Err(Error::io("open lock file", lock_path, e)),
    };
    let file = file_state::settle_regular(file, lock_path)?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("stat", lock_path, e))?;
    let mut initialized = false;
    if meta.len() < lockfile::SIZE {
        file.lock().map_err(|e| Error::io("lock", lock_path, e))?;
        let result = (|| {
            let len = file.metadata()?.len();
            if len < lockfile::SIZE {
                let mut head = vec![0u8; len as usize];
                file.read_exact_at(&mut head, 0)?;
                if head.iter().any(|&b| b != 0) {
                    return Err(std::io::Error::other(
                        "not a carboy lock file (short and not empty); remove it if no carboy \
                         process uses this namespace",
                    ));
                }
                crate::file::allocate(&file, len, lockfile::SIZE)?;
                file.write_all_at(&lockfile::encode(), 0)?;
                initialized = true;
            }
            Ok(())
        })();
        let _ = file.unlock();
        result.map_err(|e| Error::io("initialize lock file", lock_path, e))?;
    }
    let mut head = [0u8; 16];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io("read", lock_path, e))?;
    if !lockfile::decode(&head).map_err(|source| Error::NotCarboy {
        path: lock_path.to_path_buf(),
        source,
    })? {
        // Zeros: a lock file whose creator died before writing its magic.
        file.write_all_at(&lockfile::encode(), 0)
            .map_err(|e| Error::io("initialize lock file", lock_path, e))?;
        initialized = true;
    }
    let key = (meta.dev(), meta.ino());
    let lock = LockFile::map(file).map_err(|e| Error::io("mmap", lock_path, e))?;
    Ok((lock, key, initialized))
}

fn random_bytes() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        op: "read random bytes",
        path: PathBuf::from("getrandom"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

/// A temporary path beside `path`, unique to this process and call.
pub(crate) fn temp_path(path: &Path, what: &str) -> Result<PathBuf> {
    let tag = u64::from_le_bytes(random_bytes()?[..8].try_into().unwrap_or_default());
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{what}-{}-{tag:016x}", std::process::id()));
    Ok(path.with_file_name(name))
}

/// Removes temporary files that a process killed while creating or
/// compacting `path` left beside it. Called with the exclusive lock held:
/// only a lock holder makes such files, so any that exist are stale.
fn remove_stale_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.new-"), format!(".{name}.compact-")];
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let stale = prefixes.iter().any(|p| {
            file.strip_prefix(p.as_str()).is_some_and(|rest| {
                // "<pid>-<16 hex digits>", as temp_path makes them.
                rest.split_once('-').is_some_and(|(pid, tag)| {
                    pid.bytes().all(|b| b.is_ascii_digit())
                        && tag.len() == 16
                        && tag.bytes().all(|b| b.is_ascii_hexdigit())
                })
            })
        });
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Syncs the directory holding `path`, so a rename into it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::file::sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates a data file at `path`, atomically: [`NewFile`] builds it beside
/// `path`, `fill` appends its records, and it is renamed into place. The
/// caller holds the exclusive lock (or owns `path` otherwise).
pub(crate) fn create_file_with<T>(
    path: &Path,
    name: &[u8],
    generation: u64,
    opts: &Options,
    fill: impl FnOnce(&mut NewFile) -> Result<T>,
) -> Result<T> {
    let tmp = temp_path(path, "new")?;
    let result = NewFile::create(&tmp, name, generation, opts)
        .and_then(|mut out| {
            let filled = fill(&mut out)?;
            out.finish()?;
            Ok(filled)
        })
        .and_then(|filled| {
            crate::file::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
            sync_dir(path)?;
            Ok(filled)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn create_file(path: &Path, name: &[u8], generation: u64, opts: &Options) -> Result<()> {
    create_file_with(path, name, generation, opts, |_| Ok(()))
}

/// How many bytes [`NewFile`] gathers before it writes them, and how far
/// a streaming pass gets ahead of the pages it releases
/// ([`MappedFile::release`]): the memory a pass over a file of any size
/// costs, besides the structures it needs.
pub(crate) const STREAM_CHUNK: u64 = 1 << 20;

/// The pages a streaming pass over a mapping has left behind, released
/// ([`MappedFile::release`]) a [`STREAM_CHUNK`] at a time.
pub(crate) struct ReleaseBehind {
    released: u64,
}

impl ReleaseBehind {
    /// A pass that starts at `from`.
    pub(crate) fn new(from: u64) -> ReleaseBehind {
        ReleaseBehind { released: from }
    }

    /// The pass has reached `pos` of `map`: releases what lies behind it
    /// once that is a chunk.
    pub(crate) fn reached(&mut self, map: &MappedFile, pos: u64) {
        if pos - self.released >= STREAM_CHUNK {
            map.release(self.released, pos);
            self.released = pos;
        }
    }

    /// The pass ended at `end`: releases the rest.
    pub(crate) fn finish(self, map: &MappedFile, end: u64) {
        map.release(self.released, end);
    }
}

/// A data file being built, streaming: the header page, then put records
/// (position-independent, copied verbatim) appended in order with
/// `pwrite` as one transaction, then, in [`finish`](Self::finish), its
/// commit marker and a fresh index sized for the records.
///
/// The records never go through a mapping while they are written, so
/// building a file costs this process [`STREAM_CHUNK`] bytes of buffer,
/// not the file's size; only the index is built in a mapping (its slots
/// are written at random), and `finish` drops the record pages it reads
/// back to index them as it goes. A write that fails (a full disk) is an
/// error from `pwrite`, never a SIGBUS. The file is not visible to anyone
/// until the caller renames it into place; on an error the caller removes
/// it.
pub(crate) struct NewFile {
    file: File,
    path: PathBuf,
    header: Header,
    expected_keys: u64,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Bytes not yet written, which belong at `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    /// Where the next record goes.
    end: u64,
    records: u64,
    records_crc: crc32fast::Hasher,
}

impl NewFile {
    /// Creates the file at `path` (which must not exist) with a fresh
    /// header: new hash key and file id, `generation`, `name`.
    pub(crate) fn create(
        path: &Path,
        name: &[u8],
        generation: u64,
        opts: &Options,
    ) -> Result<NewFile> {
        let header = Header {
            version: FORMAT_VERSION,
            hash_key: random_bytes()?,
            file_id: random_bytes()?,
            generation,
            created_ms: opts.clock.now_unix_ms(),
            name: name.to_vec(),
        };
        let head = header.encode().map_err(|e| Error::InvalidOption {
            name: "namespace name",
            reason: e.to_string(),
        })?;
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        let mut buf = Vec::with_capacity(STREAM_CHUNK as usize);
        buf.extend_from_slice(&head);
        // The live words and the rest of the header page start zeroed.
        buf.resize(HEADER_SIZE as usize, 0);
        Ok(NewFile {
            file,
            path: path.to_path_buf(),
            header,
            expected_keys: opts.expected_keys,
            clock: std::sync::Arc::clone(&opts.clock),
            buf,
            buf_at: 0,
            end: HEADER_SIZE,
            records: 0,
            records_crc: crc32fast::Hasher::new(),
        })
    }

    /// Appends one put record (a whole, verified block, copied verbatim).
    pub(crate) fn append(&mut self, block: &[u8]) -> Result<()> {
        let crc = block
            .get(..4)
            .ok_or_else(|| Error::corruption(&self.path, self.end, "record block too short"))?;
        self.records_crc.update(crc);
        self.push(block)?;
        self.records += 1;
        Ok(())
    }

    /// Queues `bytes` for the end of the file, writing out what is queued
    /// when the buffer is full (and large blocks directly).
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > STREAM_CHUNK as usize {
            self.flush()?;
        }
        if bytes.len() >= STREAM_CHUNK as usize {
            self.file
                .write_all_at(bytes, self.end)
                .map_err(|e| Error::io("write", &self.path, e))?;
            self.buf_at = self.end + bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.buf_at)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.buf_at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the commit marker and the index, publishes every record in
    /// the index, sets the live words and syncs the file.
    pub(crate) fn finish(mut self) -> Result<()> {
        let path = self.path.clone();
        let now = self.clock.now_unix_ms();
        let records_end = self.end;
        let marker_len = if self.records == 0 {
            0
        } else {
            let marker = Commit {
                txn_id: 1,
                txn_start: HEADER_SIZE,
                unix_ms: now,
                records: u32::try_from(self.records).map_err(|_| {
                    Error::corruption(&path, records_end, "more than 2^32 records in one file")
                })?,
                records_crc: self.records_crc.clone().finalize(),
            };
            let mut buf = [0u8; record::COMMIT_LEN as usize];
            marker
                .encode(&mut buf)
                .map_err(|e| Error::corruption(&path, records_end, e))?;
            self.push(&buf)?;
            record::COMMIT_LEN
        };
        // A new file's index is sized for the keys it is expected to get (at
        // most half full); a compacted one's for the keys it holds, as full as
        // the growth rule allows (3/4), since compaction is about size.
        let log2 = if self.records == 0 {
            index::log2_for(self.expected_keys)
        } else {
            index::log2_for_full(self.records)
        };
        let idx = IndexView {
            offset: self.end,
            log2,
        };
        let index_header = record::encode_index_header(log2)
            .map_err(|e| Error::corruption(&path, idx.offset, e))?;
        self.push(&index_header)?;
        self.flush()?;
        // The slots: allocated zeros (empty), filled through a mapping.
        let end = idx.offset + idx.len();
        let alloc_end = end.next_multiple_of(1 << 16);
        crate::file::allocate(&self.file, self.end, alloc_end)
            .map_err(|e| Error::io("extend (fallocate)", &path, e))?;
        let map = MappedFile::map(self.file, &path, alloc_end)
            .map_err(|e| Error::io("mmap", &path, e))?;
        let fs = FileState::new(map, self.header, (0, 0));
        // Every record, read back in log order (verified again: the bytes
        // went through the kernel since they were checked), with the pages
        // behind released.
        let mut counters = Counters::default();
        let mut pos = HEADER_SIZE;
        let mut behind = ReleaseBehind::new(HEADER_SIZE);
        while pos < records_end {
            let rec = fs.record(pos, records_end)?;
            index::publish_record(
                &fs,
                idx,
                pos,
                &rec,
                fs.hash(rec.key),
                idx.offset,
                &mut counters,
            )?;
            pos += rec.len;
            behind.reached(&fs.map, pos);
        }
        behind.finish(&fs.map, records_end);
        fs.store(live::INDEX_OFFSET, idx.offset);
        fs.store(live::COMMIT_END, end);
        fs.store(live::INDEXED_END, end);
        fs.store(live::TXN_ID, u64::from(marker_len > 0));
        fs.store(live::SYNCED_END, idx.offset);
        fs.store(live::ALLOC_END, alloc_end);
        fs.store(live::LAST_COMMIT_MS, now);
        fs.store(live::LIVE_KEYS, counters.live_keys.max(0) as u64);
        fs.store(live::USED_SLOTS, counters.used_slots.max(0) as u64);
        fs.store(live::EXPIRING_KEYS, counters.expiring_keys.max(0) as u64);
        fs.store(live::DEAD_BYTES, marker_len);
        super::writer::set_slot_sum(&fs, counters.slot_sum, u64::from(marker_len > 0));
        if let Some((lo, hi)) = recovery::boot_id() {
            fs.store(live::BOOT_ID_LO, lo);
            fs.store(live::BOOT_ID_HI, hi);
        }
        fs.map.sync().map_err(|e| Error::io("fsync", &path, e))?;
        Ok(())
    }
}

impl Shared {
    /// The lock file's generation word.
    pub(crate) fn lock_generation(&self) -> u64 {
        u64::from_le(self.lock.generation().load(Ordering::Acquire))
    }

    /// With the writer lock held: returns the file at the path, moving to
    /// it (and repairing the lock file's generation) when a compaction
    /// replaced `current`.
    pub(crate) fn adopt_current_file_locked(
        &self,
        current: &Arc<FileState>,
    ) -> Result<Arc<FileState>> {
        let lock_gen = self.lock_generation();
        if lock_gen == current.header.generation && current.load(live::SUPERSEDED) == 0 {
            return Ok(Arc::clone(current));
        }
        // The slow path: the lock file must still be ours (a compaction
        // through another lock file would be a second writer).
        environment::check_lock_file(&self.lock, &self.lock_path)?;
        let (fs, plausible) = FileState::open(&self.data_path, true)
            .map_err(|e| environment::gone_is_replaced(e, &self.data_path))?;
        if !plausible {
            recovery::rebuild(&fs)?;
        }
        let fs = if fs.dev_ino == current.dev_ino {
            Arc::clone(current)
        } else {
            let fs = Arc::new(fs);
            self.install(Arc::clone(&fs));
            fs
        };
        // A compactor that died between raising the generation and the
        // rename leaves the old file in place: put the word back. (So does
        // a writer that found the file truncated: see `environment.rs`.)
        self.lock
            .generation()
            .store(fs.header.generation.to_le(), Ordering::Release);
        self.checked_gen
            .store(fs.header.generation, Ordering::Release);
        Ok(fs)
    }

    /// The reader's check that it uses the current file: one atomic load
    /// of the lock file's generation word, compared with the last one this
    /// process reconciled. Mismatches take the slow path.
    pub(crate) fn current_file(&self) -> Result<arc_swap::Guard<Arc<FileState>>> {
        let lock_gen = self.lock_generation();
        if lock_gen != self.checked_gen.load(Ordering::Acquire) {
            self.reload(lock_gen)?;
        }
        Ok(self.file.load())
    }

    fn reload(&self, lock_gen: u64) -> Result<()> {
        let _one = self.reload.lock();
        if lock_gen == self.checked_gen.load(Ordering::Acquire) {
            return Ok(());
        }
        let current = self.file.load_full();
        // A file truncated below its committed end is refused here, before
        // any of its pages is touched.
        let (fs, plausible) = FileState::open(&self.data_path, true)?;
        if fs.header.generation == lock_gen && plausible {
            if fs.dev_ino != current.dev_ino {
                self.install(Arc::new(fs));
            }
            self.checked_gen.store(lock_gen, Ordering::Release);
            return Ok(());
        }
        // A compaction is between raising the generation and renaming, or
        // its process died there. Keep reading the file we have (nobody
        // writes it while a compactor holds the lock); if no writer holds
        // the lock, repair the word ourselves.
        if let Some(_w) = self.rw.try_write() {
            if self.holds_lease() {
                // We hold the lock already (idle lease): repair, keep it.
                self.adopt_current_file_locked(&current)?;
            } else if self
                .lock
                .try_lock_exclusive()
                .map_err(|e| Error::io("lock", &self.lock_path, e))?
            {
                let result = self.adopt_checked(&current);
                let _ = self.lock.unlock();
                result?;
            }
        }
        Ok(())
    }
}
