//! Opening: the lock file, the process-wide registry of open namespaces,
//! recovery on open, and moving to the file a compaction put in place.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use arc_swap::ArcSwap;
use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::lockfile;
use parking_lot::{Mutex, RwLock};

use super::file_state::{self, FileState};
use super::new_file::{create_file, remove_stale_temp_files};
use super::options::Options;
use super::{Shared, environment, open_checks, recovery};
use crate::error::{Error, Result};
use crate::file::LockFile;

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
    let reboot = open_checks::from_another_boot(&fs);
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
        if !opts.recover && open_checks::writer_died(&fs) {
            return Err(refuse("a writer died during a commit".into()));
        }
        recovery::recover_locked(&fs)?;
        if let Some(why) = open_checks::end_damage(&fs)? {
            if !opts.recover {
                return Err(refuse(why));
            }
            recovery::reindex(&fs, &why, true)?;
            repairs.push(format!("{why}: the index was rebuilt from the log"));
        } else if let Some(why) = open_checks::index_damage(&fs)? {
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
