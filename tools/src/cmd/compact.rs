//! `carboy compact FILE`: reclaim the space of overwritten, deleted and
//! expired entries.

use std::path::{Path, PathBuf};

use crate::cmd::Global;
use crate::failure::Status;
use crate::open::{self, Opening};
use crate::{progress, wait};

/// The arguments of `carboy compact`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Rewrite the file with only its live entries, reclaiming space",
    long_about = "\
        Rewrite FILE with only its live, unexpired entries and rename the new file into \
        place.\n\n\
        Other processes may keep using the namespace: readers move to the new file at their \
        next operation; writers wait until the compaction ends. Prints the committed bytes \
        and the file size before and after.",
    after_help = "\
Examples:
  carboy compact users.carboy
  carboy stat users.carboy | grep dead && carboy compact users.carboy"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
}

/// Runs `carboy compact`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let file = &args.file;
    let store = open::existing(file, Opening::writing(global.wait, false))?;
    let explain = |e| open::explain(file, e);
    let size_before = file_size(file)?;
    // Wait for other processes' locks here, where the watchdog can see it.
    drop(wait::for_lock(file, global.wait, || store.transaction()).map_err(explain)?);
    let spinner = progress::spinner(&format!("compacting {}", file.display()));
    let compacted = store.compact();
    spinner.finish_and_clear();
    let report = compacted.map_err(explain)?;
    let size_after = file_size(file)?;
    let saved = report.bytes_before.saturating_sub(report.bytes_after);
    let percent = if report.bytes_before == 0 {
        0.0
    } else {
        saved as f64 * 100.0 / report.bytes_before as f64
    };
    println!("{}: compacted", file.display());
    println!(
        "  committed bytes  {} -> {} ({percent:.1}% less)",
        report.bytes_before, report.bytes_after
    );
    println!("  file size        {size_before} -> {size_after}");
    println!("  keys kept        {}", report.keys);
    println!("  expired dropped  {}", report.expired_dropped);
    Ok(Status::Ok)
}

fn file_size(file: &Path) -> anyhow::Result<u64> {
    std::fs::metadata(file)
        .map(|m| m.len())
        .map_err(|e| open::missing_or_io(file, e))
}
