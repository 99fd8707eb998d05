//! Errors: one enum, typed, carrying the path, offset and field involved.

use std::io;
use std::path::PathBuf;

use carboy_format::FormatError;

use crate::name::NameError;

/// A specialized `Result` for carboy operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in carboy: the store, the cache layer and
/// the locks.
///
/// Each variant's fields say what it carries: the file involved where
/// there is one (every store error about a file names it; corruption names
/// the byte offset too), the namespace, setting or lock otherwise. `Display`
/// says what happened and, where there is one, what to do about it. Match
/// on [`Error::kind`] to branch on the kind of failure without naming the
/// fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What carboy was doing ("open", "fallocate", "fsync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not a carboy data file of a version this build reads.
    #[error("{path}: {source}")]
    NotCarboy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: FormatError,
    },
    /// Bytes that carboy wrote no longer verify: the file is damaged.
    #[error(
        "{path}: corruption at offset {offset}: {detail} (run `carboy check` to see all damage, \
         `carboy salvage` to rebuild a clean file from what still verifies)"
    )]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What failed to verify.
        detail: String,
    },
    /// A key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("key is {len} bytes long; the limit is {max} bytes")]
    KeyTooLong {
        /// Length of the key given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    #[error("value is {len} bytes long; the limit is {max} bytes")]
    ValueTooLong {
        /// Length of the value given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A namespace name that cannot be used.
    #[error("invalid namespace name {name:?}: {source}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        #[source]
        source: NameError,
    },
    /// The file at a namespace's path belongs to another namespace (a
    /// hashed long name collided, or a file was copied by hand).
    #[error("{path} holds namespace {found:?}, not {expected:?}")]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// The namespace asked for.
        expected: String,
        /// The namespace recorded in the file's header.
        found: String,
    },
    /// An earlier write failed part way; the store refuses further writes
    /// until it is reopened, so that nothing builds on an unknown state.
    #[error(
        "{path}: store is read-only after an earlier write failure ({cause}); \
         reopen it to recover"
    )]
    Latched {
        /// The file.
        path: PathBuf,
        /// The failure that latched the store.
        cause: String,
    },
    /// The file would grow past what the format can address.
    #[error("{path}: file would grow to {wanted} bytes; the format addresses at most {max}")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The size it would need.
        wanted: u64,
        /// The limit.
        max: u64,
    },
    /// The calling thread holds a lock on this namespace that the call
    /// would have to wait for: for example a write while the thread
    /// iterates, or a snapshot inside a transaction.
    #[error(
        "{path}: this thread holds {held} of this namespace and cannot {wanted} until it \
         is dropped (collect keys first, or use the transaction's own methods)"
    )]
    WouldDeadlock {
        /// The data file.
        path: PathBuf,
        /// What the thread holds.
        held: &'static str,
        /// What it asked for.
        wanted: &'static str,
    },
    /// An option or argument with a value carboy cannot use.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The path of a namespace's data file or lock file names something
    /// other than a regular file (or a symbolic link to one): a FIFO, a
    /// socket, a device or a directory. carboy refuses it before reading
    /// from it, since reading a FIFO would block and reading a device could
    /// act on it.
    #[error(
        "{path}: is {kind}, not a regular file; a namespace's data file and lock file must be \
         regular files (move whatever is at this path away)"
    )]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead: "a FIFO", "a socket", "a character device",
        /// "a block device", "a directory" or "an unknown kind of file".
        kind: &'static str,
    },
    /// The file needs recovery (after a reboot, a writer's death, or damage
    /// to its index) and the open was told not to change it
    /// ([`Options::recover`](crate::Options::recover)).
    #[error(
        "{path}: needs recovery ({reason}); opening it without `recover(false)` recovers it \
         (`carboy check` shows what recovery would keep)"
    )]
    NeedsRecovery {
        /// The data file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data file does not exist and creation was not asked for.
    #[error("{path}: no such namespace file (open with create enabled to make one)")]
    NotFound {
        /// The path looked for.
        path: PathBuf,
    },
    /// A cache setting (from a settings map or the builder) that carboy
    /// cannot use.
    #[error("invalid cache setting {setting} = {value:?}: {reason}")]
    InvalidSetting {
        /// The setting's full name, as given (`cache.short_term.expire`).
        setting: String,
        /// The value given.
        value: String,
        /// What is wrong with it, and what would be accepted.
        reason: String,
    },
    /// A cache backend type name that nothing registered.
    #[error(
        "unknown cache backend type {name:?} (known: {known}); register it with \
         carboy::cache::register_backend, or give its factory to the manager with \
         CacheManagerBuilder::backend_factory"
    )]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The names that are registered, comma-separated.
        known: String,
    },
    /// A cache region that the manager's settings do not define.
    #[error("cache region {name:?} is not configured (configured: {known})")]
    UnknownRegion {
        /// The region asked for.
        name: String,
        /// The regions that are configured, comma-separated.
        known: String,
    },
    /// A cache namespace name or key that carboy reserves for itself.
    #[error("{what} {name:?} is reserved by carboy ({reason})")]
    Reserved {
        /// "namespace" or "key".
        what: &'static str,
        /// The name or key given (keys shown lossily as UTF-8).
        name: String,
        /// What is reserved.
        reason: &'static str,
    },
    /// A cache value could not be encoded by the cache's codec.
    #[error("cache namespace {namespace:?}: could not encode a value: {reason}")]
    Encode {
        /// The namespace.
        namespace: String,
        /// The codec's message.
        reason: String,
    },
    /// A user-registered cache backend failed.
    #[error("cache backend {backend:?}, namespace {namespace:?}: {source}")]
    Backend {
        /// The backend's type name.
        backend: String,
        /// The namespace.
        namespace: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A cache backend was asked for an optional operation that it does not
    /// offer (see [`Capabilities`](crate::cache::Capabilities)).
    #[error(
        "cache backend {backend} cannot {operation} (it does not declare this capability; \
         see carboy::cache::Capabilities for what the cache does without it)"
    )]
    Unsupported {
        /// The backend (its Rust type name, or its type name in settings).
        backend: String,
        /// What was asked ("list keys", "update atomically", …).
        operation: &'static str,
    },
    /// A cache caller waited `cache.lock_timeout` for a key's creation lock
    /// and did not get it (with `cache.on_lock_timeout = error`, the
    /// default): the creator did not run.
    #[error(
        "cache namespace {namespace}: waited {waited:?} for a key's creation lock \
         (cache.lock_timeout) while another caller held it; raise cache.lock_timeout, set \
         cache.on_lock_timeout = create to run the creator uncached instead, or look for \
         creators that create each other's keys in opposite orders"
    )]
    LockTimeout {
        /// The cache namespace.
        namespace: String,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// A thread that holds a read lock asked for the write lock of the same
    /// lock ([`sync`](crate::sync)): it would wait for itself forever.
    #[error(
        "{lock}: this thread holds the read lock and asked for the write lock, which would \
         wait for itself (drop the read guard first, or take the write lock from the start)"
    )]
    LockUpgrade {
        /// The lock: its name, or its lock file's path.
        lock: String,
    },
    /// Locking or unlocking one stripe of a [`StripeLocks`](crate::sync::StripeLocks)
    /// file failed.
    #[error("{op} stripe {stripe} of {path}: {source}")]
    StripeLock {
        /// What carboy was doing ("lock", "unlock", ...).
        op: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The stripe (the byte offset locked in the file).
        stripe: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused access to a namespace's file or
    /// directory (`EACCES` or `EPERM`).
    #[error(
        "{op} {path}: permission denied ({source}); carboy opens a namespace's data file and \
         lock file for reading and writing, even to read, and creates files in their \
         directory: give this user read and write permission on both files, and write and \
         search permission on the directory (carboy has no read-only mode)"
    )]
    PermissionDenied {
        /// What carboy was doing ("create lock file", "open", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel or the filesystem holding a lock file does not support the
    /// lock carboy needs.
    #[error(
        "{path}: {what} is not supported here ({source}); keep lock files on a local \
         filesystem (not NFS or Lustre) of Linux 3.15 or newer"
    )]
    LockUnsupported {
        /// The lock file.
        path: PathBuf,
        /// The kind of lock ("flock", "open file description byte-range lock").
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The lock file is no longer the one this process locks: it was
    /// removed or replaced while the namespace was open, or another process
    /// still uses the data file through a lock file that was removed.
    /// Writers would no longer exclude each other, so carboy refuses to
    /// write (and to take snapshots) through it. Not latched: the check is
    /// made again at every fresh lock acquisition.
    #[error(
        "{path}: lock file was removed or replaced while the namespace was open ({detail}); \
         writers would no longer exclude each other, so carboy refuses to write: close every \
         handle of this namespace in every process, then reopen it"
    )]
    LockFileReplaced {
        /// The lock file's path.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The data file at the namespace's path is no longer the file this
    /// process has mapped, and no compaction moved it: another program
    /// removed, renamed or replaced it. Reads go on from the old mapping;
    /// writes are refused, since nobody opening the path would see them.
    /// Not latched: the check is made again at every fresh lock acquisition.
    #[error(
        "{path}: data file was removed or replaced by another program while the namespace was \
         open ({detail}); writes would go to a file that is no longer at this path: put the \
         file back, or close every handle of this namespace in every process and reopen it"
    )]
    DataFileReplaced {
        /// The data file's path.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The data file is shorter than its committed log: another program
    /// truncated it. Nothing is read or written past its end; the store is
    /// latched until the file is whole again.
    #[error(
        "{path}: file is {len} bytes long, but its committed log ends at byte {expected}: \
         another program truncated it, and what was committed past byte {len} is gone from \
         the file. Put the missing bytes back and call `recover()` or reopen; or build a \
         clean file from what remains with `carboy salvage` (or open with \
         `Options::rebuild_index`)"
    )]
    FileTruncated {
        /// The data file.
        path: PathBuf,
        /// Its length now.
        len: u64,
        /// The length it must have at least: the committed end (or the
        /// header page, when even that is cut).
        expected: u64,
    },
    /// A [`Durability::Sync`](crate::Durability::Sync) commit was applied
    /// (every thread and process sees it, and it survives the process being
    /// killed), but the `fdatasync` that was to make it durable failed, or
    /// another thread's failed after the commit's bytes were written.
    /// Whether it survives a power loss is unknown. The store is latched:
    /// it refuses writes until [`Store::recover`](crate::Store::recover) or
    /// a reopen.
    #[error(
        "{path}: the commit was applied, but the fsync that was to make it durable failed \
         ({cause}): it is visible, and may not survive a power loss; the store refuses \
         writes until recover() or a reopen"
    )]
    CommitNotDurable {
        /// The data file.
        path: PathBuf,
        /// The failure.
        cause: String,
    },
}

/// The kind of an [`Error`], without its fields: what callers and tests
/// match on (like [`std::io::ErrorKind`]). One kind per variant, same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An operating-system call failed.
    Io,
    /// Not a carboy data file of a version this build reads.
    NotCarboy,
    /// Bytes carboy wrote no longer verify.
    Corruption,
    /// A key over the limit.
    KeyTooLong,
    /// A value over the limit.
    ValueTooLong,
    /// A namespace name that cannot be used.
    InvalidName,
    /// The file belongs to another namespace.
    NameMismatch,
    /// Writes refused after an earlier write failure.
    Latched,
    /// The file would grow past what the format addresses.
    FileTooLarge,
    /// The call would wait for a lock the calling thread holds.
    WouldDeadlock,
    /// An option with a value carboy cannot use.
    InvalidOption,
    /// A FIFO, socket, device or directory where a file belongs.
    NotRegularFile,
    /// The file needs recovery, and the open was told not to change it.
    NeedsRecovery,
    /// The data file does not exist.
    NotFound,
    /// A cache setting carboy cannot use.
    InvalidSetting,
    /// A cache backend type nothing registered.
    UnknownBackend,
    /// A cache region the settings do not define.
    UnknownRegion,
    /// A name or key carboy reserves.
    Reserved,
    /// A cache value the codec could not encode.
    Encode,
    /// A cache backend failed.
    Backend,
    /// A read lock holder asked for the write lock.
    LockUpgrade,
    /// Locking or unlocking a stripe failed.
    StripeLock,
    /// The system refused access.
    PermissionDenied,
    /// The lock carboy needs is not supported here.
    LockUnsupported,
    /// The lock file was removed or replaced.
    LockFileReplaced,
    /// The data file was removed or replaced by another program.
    DataFileReplaced,
    /// The data file was truncated below its committed log.
    FileTruncated,
    /// A Sync commit was applied but its sync failed.
    CommitNotDurable,
    /// A backend lacks an optional capability the call needs.
    Unsupported,
    /// A cache creation lock was not granted within `cache.lock_timeout`.
    LockTimeout,
}

impl Error {
    /// The kind of this error: a small `Copy` value to match on.
    ///
    /// ```
    /// use carboy::{ErrorKind, Options};
    /// let dir = tempfile::tempdir()?;
    /// let err = Options::new().create(false).open(dir.path().join("none.carboy")).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::NotCarboy { .. } => ErrorKind::NotCarboy,
            Error::Corruption { .. } => ErrorKind::Corruption,
            Error::KeyTooLong { .. } => ErrorKind::KeyTooLong,
            Error::ValueTooLong { .. } => ErrorKind::ValueTooLong,
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::NameMismatch { .. } => ErrorKind::NameMismatch,
            Error::Latched { .. } => ErrorKind::Latched,
            Error::FileTooLarge { .. } => ErrorKind::FileTooLarge,
            Error::WouldDeadlock { .. } => ErrorKind::WouldDeadlock,
            Error::InvalidOption { .. } => ErrorKind::InvalidOption,
            Error::NotRegularFile { .. } => ErrorKind::NotRegularFile,
            Error::NeedsRecovery { .. } => ErrorKind::NeedsRecovery,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::InvalidSetting { .. } => ErrorKind::InvalidSetting,
            Error::UnknownBackend { .. } => ErrorKind::UnknownBackend,
            Error::UnknownRegion { .. } => ErrorKind::UnknownRegion,
            Error::Reserved { .. } => ErrorKind::Reserved,
            Error::Encode { .. } => ErrorKind::Encode,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::LockUpgrade { .. } => ErrorKind::LockUpgrade,
            Error::StripeLock { .. } => ErrorKind::StripeLock,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::LockUnsupported { .. } => ErrorKind::LockUnsupported,
            Error::LockFileReplaced { .. } => ErrorKind::LockFileReplaced,
            Error::DataFileReplaced { .. } => ErrorKind::DataFileReplaced,
            Error::FileTruncated { .. } => ErrorKind::FileTruncated,
            Error::CommitNotDurable { .. } => ErrorKind::CommitNotDurable,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::LockTimeout { .. } => ErrorKind::LockTimeout,
        }
    }

    /// An I/O error of `op` on `path`; [`Error::PermissionDenied`] when the
    /// system refused access.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::PermissionDenied {
            return Error::PermissionDenied {
                op,
                path: path.into(),
                source,
            };
        }
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        detail: impl ToString,
    ) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            detail: detail.to_string(),
        }
    }

    /// True when bytes of the file are damaged or missing:
    /// [`Error::Corruption`] and [`Error::FileTruncated`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. } | Error::FileTruncated { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_variants() {
        let io = || io::Error::other("x");
        let cases = [
            (Error::io("open", "/p", io()), ErrorKind::Io),
            (
                Error::io(
                    "open",
                    "/p",
                    io::Error::from(io::ErrorKind::PermissionDenied),
                ),
                ErrorKind::PermissionDenied,
            ),
            (Error::corruption("/p", 8, "bad"), ErrorKind::Corruption),
            (Error::KeyTooLong { len: 9, max: 8 }, ErrorKind::KeyTooLong),
            (
                Error::NeedsRecovery {
                    path: "/p".into(),
                    reason: "r".into(),
                },
                ErrorKind::NeedsRecovery,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            // The kind's name is the variant's, as Debug spells both.
            let debug = format!("{err:?}");
            assert!(debug.starts_with(&format!("{kind:?}")), "{debug}");
        }
    }
}
