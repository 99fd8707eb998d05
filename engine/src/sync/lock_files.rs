//! What [`FileLock`](super::FileLock) and [`StripeLocks`](super::StripeLocks)
//! share: opening a lock file (making its directory again if a cleaner
//! removed it), locking it and checking that the locked descriptor is
//! still the file at the path, and the key of the per-process registry of
//! open lock files.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How many times an acquisition starts over because the lock file was
/// removed or replaced while it waited, before giving up.
const MAX_REOPENS: u32 = 64;

/// Opens (creating if needed) the lock file at `path` for reading and
/// writing, with a new open file description. A missing directory is
/// created (a temp cleaner may have removed it).
pub(super) fn open_lock_file(path: &Path) -> Result<File> {
    let open = || {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    match open() {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("create lock directory", dir, e))?;
            }
            open().map_err(|e| Error::io("open lock file", path, e))
        }
        Err(e) => Err(Error::io("open lock file", path, e)),
    }
}

/// Opens the lock file at `path` afresh and takes `lock` on it (which
/// returns `Ok(false)` when the lock is busy and it did not wait), starting
/// over when the file at the path was removed or replaced while it waited
/// (a lock on a file nobody else opens excludes nobody). After
/// [`MAX_REOPENS`] such starts it gives up with `gave_up(cause)`.
pub(super) fn lock_current(
    path: &Path,
    mut lock: impl FnMut(&File) -> Result<bool>,
    gave_up: impl FnOnce(io::Error) -> Error,
) -> Result<Option<File>> {
    for _ in 0..MAX_REOPENS {
        let file = open_lock_file(path)?;
        if !lock(&file)? {
            return Ok(None);
        }
        if still_at(&file, path)? {
            return Ok(Some(file));
        }
        // Removed or replaced while we waited: closing releases it.
    }
    Err(gave_up(io::Error::other(format!(
        "the lock file was removed or replaced {MAX_REOPENS} times while locking it"
    ))))
}

/// True if `file` is still the file found at `path` (same device and
/// inode); false if the path is gone or names another file now.
pub(super) fn still_at(file: &File, path: &Path) -> Result<bool> {
    let held = file
        .metadata()
        .map_err(|e| Error::io("stat lock file", path, e))?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat lock file", path, e)),
    }
}

/// The key under which a process keeps one shared state per lock file: the
/// absolute path, spelled as given (symbolic links are not resolved).
pub(super) fn registry_key(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io("resolve lock file path", path, e))
}
