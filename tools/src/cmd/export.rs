//! `carboy export FILE > DUMP`: write every live entry in the portable
//! export format.

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;
use carboy_tools::export_format::Writer;

use crate::cmd::Global;
use crate::failure::{Status, advise};
use crate::open::{self, Opening};
use crate::{progress, wait};

/// The arguments of `carboy export`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Write every live entry to stdout in the portable export format",
    long_about = "\
        Write every live (present, unexpired) entry of FILE to stdout in the carboy export \
        format, for `carboy import`.\n\n\
        The format is text: a header line `carboy-export 1`, one line per entry (base64 key, \
        TAB, base64 value, TAB, expiry as Unix milliseconds or `-`), and a trailer `end \
        COUNT`. Keys, values and expiries round-trip exactly. tools/EXPORT.md specifies it. \
        The export is one consistent snapshot: writers of the namespace, in every process, \
        wait until it ends.",
    after_help = "\
Examples:
  carboy export users.carboy > users.dump
  carboy export --sort users.carboy | gzip > users.dump.gz
  carboy export old.carboy | carboy import new.carboy           (copy a namespace)
  ssh cache1 carboy export /var/cache/users.carboy | carboy import users.carboy"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
    /// Write the entries in ascending order of their key bytes (holds them
    /// all in memory first), so that dumps of equal contents are equal.
    #[arg(long)]
    pub sort: bool,
}

/// Runs `carboy export`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let file = &args.file;
    let store = open::existing(file, Opening::reading(global.wait))?;
    let snapshot = wait::for_lock(file, global.wait, || store.snapshot())
        .map_err(|e| open::explain(file, e))?;
    let bar = progress::counter("exporting", None, "entries");
    let mut out = Writer::new(BufWriter::new(std::io::stdout().lock()))?;
    let mut sorted = Vec::new();
    for entry in snapshot {
        let entry = entry.map_err(|e| {
            advise(
                open::explain(file, e),
                format!(
                    "the dump is incomplete (it has no end line, so import refuses it); \
                     `carboy salvage {} NEW` builds a clean file to export from",
                    file.display()
                ),
            )
        })?;
        if args.sort {
            sorted.push(entry);
        } else {
            out.entry(&entry.key, &entry.value, entry.expiry)
                .context("writing the dump")?;
        }
        bar.inc(1);
    }
    sorted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    for entry in &sorted {
        out.entry(&entry.key, &entry.value, entry.expiry)
            .context("writing the dump")?;
    }
    out.finish().context("writing the dump")?;
    bar.finish_and_clear();
    Ok(Status::Ok)
}
