//! Opening a namespace file through the engine, with errors that say what
//! to do.
//!
//! Before the engine sees a path, carboy checks it the cheap way: that it
//! exists, is a file, and starts with a carboy header. The engine would
//! report the same problems, but only after creating `FILE.lock` beside
//! whatever the user named, which is unkind when it was `/etc/passwd`.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use carboy::{Durability, Options, Store};
use carboy_format::FormatError;
use carboy_format::header::{HEADER_SIZE, Header};
use carboy_format::lockfile;

use crate::failure::advise;
use crate::wait::{self, Wait};

/// How a command opens its file.
#[derive(Clone, Copy, Debug)]
pub struct Opening {
    /// How long to wait for another process's lock.
    pub wait: Wait,
    /// What a commit promises.
    pub durability: Durability,
}

impl Opening {
    /// For a command that only reads.
    pub fn reading(wait: Wait) -> Opening {
        Opening {
            wait,
            durability: Durability::None,
        }
    }

    /// For a command that writes: with `sync`, each commit returns only
    /// once it is on the device (it survives power loss).
    pub fn writing(wait: Wait, sync: bool) -> Opening {
        Opening {
            wait,
            durability: if sync {
                Durability::Sync
            } else {
                Durability::None
            },
        }
    }
}

/// Opens the existing data file at `path`.
pub fn existing(path: &Path, how: Opening) -> anyhow::Result<Store> {
    existing_unexplained(path, how)?.map_err(|e| explain(path, e))
}

/// [`existing`], returning the engine's error as it is (for a command
/// that reports corruption as a finding rather than a failure).
pub fn existing_unexplained(path: &Path, how: Opening) -> anyhow::Result<carboy::Result<Store>> {
    check_data_file(path)?;
    let opened = wait::for_lock(path, how.wait, || {
        Options::new()
            .create(false)
            .durability(how.durability)
            .open(path)
    });
    if let Ok(store) = &opened {
        warn_recovery(path, store);
    }
    Ok(opened)
}

/// Says on stderr what opening `path` repaired (an index rebuilt from the
/// log, commits set aside), and that set-aside files wait beside it (made
/// this time or earlier): the file's answers are those of the log it kept.
pub fn warn_recovery(path: &Path, store: &Store) {
    for repair in store.repairs() {
        eprintln!("carboy: warning: {}: {repair}", path.display());
    }
    warn_set_aside(path);
}

/// The set-aside files beside `path`, one warning each.
pub fn warn_set_aside(path: &Path) {
    for side in carboy::set_aside_files(path).unwrap_or_default() {
        eprintln!(
            "carboy: warning: {}: recovery set aside commits that followed damage in its log, \
             in {}; answers come from the log it kept. `carboy salvage {} NEW` reads them \
             back; remove the file once done",
            path.display(),
            side.display(),
            side.display()
        );
    }
}

/// Opens the data file at `path`, creating it when it does not exist.
pub fn or_create(path: &Path, how: Opening) -> anyhow::Result<Store> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(path);
            if !dir.is_dir() {
                return Err(advise(
                    anyhow!(
                        "{}: directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                    "create the directory first (mkdir -p), or check the path",
                ));
            }
        }
        _ => check_data_file(path)?,
    }
    let opened = wait::for_lock(path, how.wait, || {
        Options::new()
            .create(true)
            .durability(how.durability)
            .open(path)
    });
    if let Ok(store) = &opened {
        warn_recovery(path, store);
    }
    opened.map_err(|e| explain(path, e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that `path` exists, is a regular file, and starts with a valid
/// carboy header, without creating or changing anything.
pub fn check_data_file(path: &Path) -> anyhow::Result<()> {
    let (file, meta) = open_for_reading(path)?;
    let mut page = Vec::with_capacity(HEADER_SIZE as usize);
    file.take(HEADER_SIZE)
        .read_to_end(&mut page)
        .map_err(|e| missing_or_io(path, e))?;
    let header = Header::decode(&page);
    if let Err(e) = header {
        return Err(bad_header(path, &page, e));
    }
    if meta.len() < HEADER_SIZE {
        return Err(advise(
            anyhow!(
                "{}: {} bytes, shorter than a carboy header page ({HEADER_SIZE} bytes): the \
                 file was cut short",
                path.display(),
                meta.len()
            ),
            format!("`carboy header {}` shows what is left", path.display()),
        ));
    }
    Ok(())
}

/// Opens `path` read-only after checking that it is a regular file (or a
/// symbolic link to one), and returns it with its metadata. Anything else
/// is refused before it is opened: reading a FIFO blocks until a writer
/// comes, and opening a device can act on it. The open is non-blocking and
/// the opened file is checked again, so a FIFO put at the path meanwhile
/// is refused too rather than waited on.
pub fn open_for_reading(path: &Path) -> anyhow::Result<(File, std::fs::Metadata)> {
    let meta = std::fs::metadata(path).map_err(|e| missing_or_io(path, e))?;
    refuse_special(path, &meta)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| missing_or_io(path, e))?;
    let meta = file.metadata().map_err(|e| missing_or_io(path, e))?;
    refuse_special(path, &meta)?;
    Ok((file, meta))
}

/// An error unless `meta` is a regular file's.
fn refuse_special(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(());
    }
    if kind.is_dir() {
        return Err(advise(
            anyhow!("{}: is a directory, not a carboy data file", path.display()),
            "give the path of a namespace's data file (NAME.carboy) inside it",
        ));
    }
    let what = if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "something other than a regular file"
    };
    Err(advise(
        anyhow!("{}: is {what}, not a carboy data file", path.display()),
        "give the path of a namespace's data file (a regular file, such as NAME.carboy); \
         carboy does not read from pipes or devices",
    ))
}

/// Advice for a path that names no file.
const NO_SUCH_FILE: &str = "check the path; `carboy put` and `carboy import` create a new file";

/// Advice for a file carboy may not open.
const ACCESS_NEEDED: &str = "carboy needs read and write access to FILE and FILE.lock, even to \
     read (a reader may have to finish a crashed writer's commit); `carboy header`, \
     `carboy dump --all` and `carboy salvage` need only read access";

/// The error for a file that cannot be stat'ed or read.
pub fn missing_or_io(path: &Path, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            advise(anyhow!("{}: no such file", path.display()), NO_SUCH_FILE)
        }
        std::io::ErrorKind::PermissionDenied => {
            advise(anyhow!("{}: {e}", path.display()), ACCESS_NEEDED)
        }
        _ => anyhow!("{}: {e}", path.display()),
    }
}

fn bad_header(path: &Path, page: &[u8], e: FormatError) -> anyhow::Error {
    let show = path.display();
    match e {
        FormatError::BadMagic { .. } if page.starts_with(&lockfile::MAGIC) => {
            let data = path.to_string_lossy();
            let data = data.strip_suffix(".lock").unwrap_or(&data);
            advise(
                anyhow!("{show}: this is a carboy lock file, not a data file"),
                format!("pass the data file beside it: {data}"),
            )
        }
        FormatError::BadMagic { found, .. } => advise(
            anyhow!(
                "{show}: not a carboy data file (it starts with {found}; a carboy data file \
                 starts with {})",
                hex(&carboy_format::header::MAGIC)
            ),
            "check the path",
        ),
        FormatError::Truncated { .. } if page.is_empty() => advise(
            anyhow!("{show}: the file is empty, not a carboy data file"),
            "check the path",
        ),
        FormatError::Truncated { .. } if !carboy_format::header::MAGIC.starts_with(page) => advise(
            anyhow!(
                "{show}: not a carboy data file ({} bytes, starting with {})",
                page.len(),
                hex(page)
            ),
            "check the path",
        ),
        FormatError::Truncated { available, .. } => advise(
            anyhow!(
                "{show}: {available} bytes, shorter than a carboy header page ({HEADER_SIZE} \
                 bytes)"
            ),
            format!("the file was cut short; `carboy header {show}` shows what is left"),
        ),
        FormatError::UnsupportedVersion { .. } => anyhow!("{show}: {e}"),
        e => advise(
            anyhow!("{show}: the header is damaged: {e}"),
            format!(
                "`carboy header {show}` shows it field by field; without a valid header \
                 (it holds the hash key) the file cannot be opened or salvaged"
            ),
        ),
    }
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds advice to an engine error where carboy knows the fix.
pub fn explain(path: &Path, e: carboy::Error) -> anyhow::Error {
    let show = path.display();
    match &e {
        carboy::Error::NotFound { .. } => advise(anyhow!("{show}: no such file"), NO_SUCH_FILE),
        carboy::Error::PermissionDenied { .. } => advise(e, ACCESS_NEEDED),
        carboy::Error::Latched { .. } => advise(e, "run the command again"),
        _ => e.into(),
    }
}
