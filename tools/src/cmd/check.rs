//! `carboy check FILE`: deep verification.

use std::path::PathBuf;

use crate::cmd::Global;
use crate::failure::Status;
use crate::open::{self, Opening};
use crate::{progress, wait};

/// The arguments of `carboy check`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Verify every record, commit marker and index slot",
    long_about = "\
        Verify every record's and commit marker's CRC, the chain of transactions, every \
        index slot (it must point at its key's newest record, reachable by a probe) and the \
        counters.\n\n\
        Exit status 0 when the file is clean; 1 with each problem on stdout as `offset N: \
        what` otherwise. Other processes may keep reading meanwhile; writers wait until the \
        check ends.",
    after_help = "\
Examples:
  carboy check users.carboy
  carboy check users.carboy || carboy salvage users.carboy users.clean.carboy
  for f in /var/cache/app/*.carboy; do carboy check \"$f\" >/dev/null || echo \"$f\"; done"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
}

/// Runs `carboy check`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let file = &args.file;
    let store = match open::existing_unexplained(file, Opening::reading(global.wait))? {
        Ok(store) => store,
        Err(e) => return corrupt_or_fail(file, e),
    };
    // Wait for other processes' locks here, where the watchdog can see it,
    // rather than inside the verification.
    if let Err(e) = wait::for_lock(file, global.wait, || store.snapshot().map(drop)) {
        return corrupt_or_fail(file, e);
    }
    let spinner = progress::spinner(&format!("checking {}", file.display()));
    let verified = store.verify();
    spinner.finish_and_clear();
    let report = match verified {
        Ok(report) => report,
        Err(e) => return corrupt_or_fail(file, e),
    };
    if report.is_clean() {
        println!(
            "{}: clean: {} records in {} transactions, {} index slots, {} live keys",
            file.display(),
            report.records,
            report.transactions,
            report.slots,
            report.live_keys
        );
        return Ok(Status::Ok);
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    let n = report.problems.len();
    eprintln!(
        "carboy: {}: {n} problem{} found; `carboy salvage {} NEW` builds a clean file from \
         every record that still verifies",
        file.display(),
        if n == 1 { "" } else { "s" },
        file.display()
    );
    Ok(Status::Problem)
}

/// Damage the engine found while opening or verifying is a finding (status
/// 1, `offset N: what`); anything else is a failure.
fn corrupt_or_fail(file: &std::path::Path, e: carboy::Error) -> anyhow::Result<Status> {
    if let carboy::Error::Corruption { offset, detail, .. } = &e {
        println!("offset {offset}: {detail}");
        eprintln!(
            "carboy: {}: damaged beyond what a check can walk; `carboy salvage {} NEW` builds \
             a clean file from every record that still verifies",
            file.display(),
            file.display()
        );
        return Ok(Status::Problem);
    }
    Err(open::explain(file, e))
}
