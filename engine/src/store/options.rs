//! How a store is opened: [`Options`] and [`Durability`].

use std::path::Path;
use std::sync::Arc;

use super::Store;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// What a commit promises once it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// The commit is in the OS page cache: it survives the process
    /// crashing (or being killed) at any instant, and every other process
    /// sees it at once. An OS crash or power loss may lose recent commits
    /// but never corrupts the file: the next open rebuilds the index from
    /// the records that verify.
    #[default]
    None,
    /// The commit returns once an `fdatasync` covered it: it survives power
    /// loss. Sync commits made at once by several threads or processes
    /// share one `fdatasync` (group commit). The price: other threads and
    /// processes read a Sync commit from the moment it is applied, a sync's
    /// time before it is durable; a power loss then takes it back (with
    /// every commit after it: the log is always kept as a prefix). If the
    /// sync fails, the commit stays applied and `commit` returns
    /// [`Error::CommitNotDurable`](crate::Error::CommitNotDurable).
    Sync,
}

/// Options for opening a namespace file.
///
/// ## Defaults
///
/// | option | default |
/// |---|---|
/// | [`durability`](Options::durability) | [`Durability::None`] |
/// | [`create`](Options::create) | `true` |
/// | [`expected_keys`](Options::expected_keys) | 1,024 |
/// | [`clock`](Options::clock) | [`SystemClock`] |
/// | [`rebuild_index`](Options::rebuild_index) | `false` |
///
/// ```
/// use carboy::{Durability, Options};
///
/// let dir = tempfile::tempdir()?;
/// let store = Options::new()
///     .durability(Durability::Sync)
///     .expected_keys(10_000)
///     .open(dir.path().join("users.carboy"))?;
/// store.put(b"alice", b"admin")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) create: bool,
    pub(crate) expected_keys: u64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rebuild_index: bool,
    pub(crate) recover: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::None,
            create: true,
            expected_keys: 1024,
            clock: Arc::new(SystemClock),
            rebuild_index: false,
            recover: true,
        }
    }
}

impl Options {
    /// Options with the documented defaults.
    pub fn new() -> Options {
        Options::default()
    }

    /// What a commit promises once it returns.
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Whether a missing file is created (`true`) or reported as
    /// [`Error::NotFound`] (`false`).
    pub fn create(mut self, create: bool) -> Options {
        self.create = create;
        self
    }

    /// How many keys a newly created file's index is sized for. The index
    /// grows as needed; this only saves the first few doublings.
    pub fn expected_keys(mut self, keys: u64) -> Options {
        self.expected_keys = keys;
        self
    }

    /// The clock used to check and stamp expiry. Tests inject a
    /// [`MockClock`](crate::MockClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Options {
        self.clock = clock;
        self
    }

    /// Rebuild the index from the log on open, verifying every record, as
    /// carboy does by itself after an OS crash or reboot. Useful to recover
    /// a file copied from a crashed machine.
    pub fn rebuild_index(mut self, rebuild: bool) -> Options {
        self.rebuild_index = rebuild;
        self
    }

    /// Whether opening may change the file to recover it (`true`, the
    /// default): finish a dead writer's commit, rebuild the index after a
    /// reboot or when it is damaged, setting aside what verifies past a
    /// damaged block ([`SetAside`](crate::SetAside)). With `false`, a file
    /// that needs any of that is not changed and the open fails with
    /// [`Error::NeedsRecovery`]; [`inspect_recovery`](crate::inspect_recovery)
    /// then says what recovery would do. For tools that only look.
    pub fn recover(mut self, recover: bool) -> Options {
        self.recover = recover;
        self
    }

    /// Opens (or creates) the namespace file at `path`. Its lock file is
    /// `path` with `.lock` appended.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path.as_ref(), None, self)
    }

    /// Opens (or creates) namespace `name` in the data directory `dir`.
    /// Any string is a valid name (except the empty one and names over
    /// 1,024 bytes); see [`name::file_name`](crate::name::file_name) for how
    /// it maps to a file name that stays inside `dir`.
    pub fn open_namespace(&self, dir: impl AsRef<Path>, name: &str) -> Result<Store> {
        let file = crate::name::file_name(name).map_err(|source| Error::InvalidName {
            name: name.to_string(),
            source,
        })?;
        Store::open_with(&dir.as_ref().join(file), Some(name), self)
    }
}
