//! carboy: an embedded key-value store for caching.
//!
//! A *namespace* is one file in carboy's own hash-file format, memory-mapped
//! and shared by many threads and processes at once:
//!
//! * **Point reads take no lock and make no system call**: a keyed hash
//!   (SipHash-1-3, random key per file) picks a slot in an open-addressing
//!   index; the slot points at a record in the same file; the record's CRC is
//!   checked and its value is returned without copying ([`ValueRef`]).
//! * **Writers are serialized** across threads (an in-process lock) and
//!   processes (`flock` on a lock file beside the data file). A commit
//!   appends records and a commit marker, then publishes index slots; a
//!   process killed at any instant leaves a file the next writer finishes
//!   without manual repair.
//! * **Durability is a choice**: [`Durability::None`] survives process
//!   crashes, [`Durability::Sync`] survives power loss (one `fdatasync` per
//!   commit).
//! * **Bad input is an error, never a panic**: foreign, truncated and
//!   damaged files, oversized keys and values, invalid names.
//!
//! ```
//! use carboy::{Durability, Options};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Options::new()
//!     .durability(Durability::Sync)
//!     .open_namespace(dir.path(), "sessions")?;
//! store.put(b"user:1", b"alice")?;
//! store.put_for(b"token:9", b"xyz", Duration::from_secs(60))?;
//!
//! let mut txn = store.transaction()?;          // read-modify-write, atomically
//! let name = txn.get(b"user:1")?.unwrap().to_vec();
//! txn.put(b"owner", &name)?;
//! txn.commit()?;
//!
//! assert_eq!(store.get(b"owner")?.as_deref(), Some(&b"alice"[..]));
//! assert_eq!(store.len()?, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The file format is specified in `format/FORMAT.md`; the design and the
//! soundness argument for the shared mapping in `engine/DESIGN.md`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
mod clock;
mod error;
pub mod faults;
#[allow(unsafe_code)]
mod file;
pub mod name;
mod options;
mod store;
pub mod sync;

pub use carboy_format::Expiry;
pub use carboy_format::record::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use clock::{Clock, MockClock, SystemClock};
pub use error::{Error, Result};
pub use options::{Durability, Options};
pub use store::{
    CompactReport, Entry, Iter, Problem, SalvageReport, Snapshot, Stats, Store, Transaction,
    ValueRef, VerifyReport, salvage,
};

/// The README's Rust example, compiled and run as a doctest so that it
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExample;
