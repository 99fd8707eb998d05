//! `carboy salvage FILE OUT`: rebuild a clean file from a damaged one.

use std::path::PathBuf;

use anyhow::anyhow;

use crate::failure::{Status, UsageError, advise};
use crate::open;
use crate::progress;

/// The arguments of `carboy salvage`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Build a new, clean file from every record of a damaged one that still verifies",
    long_about = "\
        Build a new, clean file OUT from every record of FILE that still verifies and \
        belongs to a committed transaction (a commit marker that verifies follows it); the \
        newest such record of each key wins, and a key whose newest one is a delete stays \
        deleted.\n\n\
        The whole file after the header page is read, up to its length: after any damaged \
        range (flipped bytes, garbage, zeros) salvage resynchronizes and keeps every later \
        record that verifies. Zeros running to the end of the file are where the log ends, \
        not damage.\n\n\
        FILE is only read, without a lock: read access is enough (its header must be \
        intact: it holds the hash key). OUT must not exist. Prints how many keys were kept, \
        how many stay deleted, how many records were dropped for want of a commit marker, \
        and every damaged byte range skipped (offset and length). Check the result, then \
        move it into place while no process uses the namespace.",
    after_help = "\
Examples:
  carboy salvage users.carboy users.salvaged.carboy
  carboy check users.carboy || {
      carboy salvage users.carboy users.new && carboy check users.new &&
      mv users.new users.carboy
  }"
)]
pub struct Args {
    /// The damaged namespace data file (only read).
    pub file: PathBuf,
    /// The new file to write; it must not exist.
    pub out: PathBuf,
}

/// Runs `carboy salvage`.
pub fn run(args: Args) -> anyhow::Result<Status> {
    let (file, out) = (&args.file, &args.out);
    if out.exists() {
        return Err(advise(
            UsageError(format!("{}: already exists", out.display())),
            "salvage writes a new file: give a path that does not exist",
        ));
    }
    open::check_data_file(file)?;
    let spinner = progress::spinner(&format!("salvaging {}", file.display()));
    let salvaged = carboy::salvage(file, out);
    spinner.finish_and_clear();
    let report = salvaged.map_err(|e| open::explain(file, e))?;
    if !out.exists() {
        return Err(anyhow!("{}: salvage wrote no file", out.display()));
    }
    println!(
        "{}: {} keys from {} committed records of {}",
        out.display(),
        report.keys,
        report.records,
        file.display()
    );
    println!("  deleted keys (left out): {}", report.deleted_keys);
    println!(
        "  records without a commit marker (dropped): {}",
        report.uncommitted_records
    );
    println!("  damaged byte ranges skipped: {}", report.damaged.len());
    for (offset, len) in &report.damaged {
        println!("    offset {offset}: {len} bytes");
    }
    Ok(Status::Ok)
}
