//! The parts of the `carboy` command-line tool that other code may reuse.
//!
//! The tool itself is the binary `carboy` (`src/main.rs`, one file per
//! subcommand under `src/cmd/`). This library holds what is worth calling
//! without a process: the portable text format of `carboy export` and
//! `carboy import` ([`export_format`], specified in `tools/EXPORT.md`), a
//! pure parser that never panics on any input, so that a fuzz target can
//! drive it directly.
//!
//! ```
//! use carboy_tools::export_format::{Entry, Reader, Writer};
//! use carboy_format::Expiry;
//!
//! let mut dump = Vec::new();
//! let mut w = Writer::new(&mut dump)?;
//! w.entry(b"k\x00", b"\xff", Expiry::AtUnixMs(1_700_000_000_000))?;
//! w.finish()?;
//! assert_eq!(dump, b"carboy-export 1\nawA=\t/w==\t1700000000000\nend 1\n");
//!
//! let entries: Vec<Entry> = Reader::new(&dump[..]).collect::<Result<_, _>>()?;
//! assert_eq!(entries[0].key, b"k\x00");
//! assert_eq!(entries[0].expiry, Expiry::AtUnixMs(1_700_000_000_000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod export_format;
