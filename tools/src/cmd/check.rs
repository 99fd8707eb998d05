//! `carboy check FILE`: deep verification.

use std::path::PathBuf;

use crate::cmd::Global;
use crate::failure::Status;
use carboy::{Durability, Options};

use crate::open;
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
    open::check_data_file(file)?;
    let set_aside = carboy::set_aside_files(file).map_err(|e| open::explain(file, e))?;
    // Opened without recovering: a check never changes what it checks.
    let opened = wait::for_lock(file, global.wait, || {
        Options::new()
            .create(false)
            .recover(false)
            .durability(Durability::None)
            .open(file)
    });
    let store = match opened {
        Ok(store) => store,
        Err(carboy::Error::NeedsRecovery { reason, .. }) => {
            return check_unrecovered(file, &reason, &set_aside);
        }
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
    if report.is_clean() && set_aside.is_empty() {
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
    report_set_aside(&set_aside);
    let n = report.problems.len() + set_aside.len();
    eprintln!(
        "carboy: {}: {n} problem{} found; `carboy salvage {} NEW` builds a clean file from \
         every record that still verifies",
        file.display(),
        if n == 1 { "" } else { "s" },
        file.display()
    );
    Ok(Status::Problem)
}

/// Set-aside files are findings: commits an earlier recovery moved out.
fn report_set_aside(set_aside: &[PathBuf]) {
    for side in set_aside {
        println!(
            "{}: commits set aside by an earlier recovery (`carboy salvage {} NEW` reads \
             them back)",
            side.display(),
            side.display()
        );
    }
}

/// The check of a file that needs recovery: what recovery would keep and
/// set aside, from a read-only walk of its log. The index is not checked
/// (recovery rebuilds it).
fn check_unrecovered(
    file: &std::path::Path,
    reason: &str,
    set_aside: &[PathBuf],
) -> anyhow::Result<Status> {
    let spinner = progress::spinner(&format!("checking {}", file.display()));
    let plan = carboy::inspect_recovery(file);
    spinner.finish_and_clear();
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return corrupt_or_fail(file, e),
    };
    let mut problems = set_aside.len();
    if plan.end_damaged {
        problems += 1;
        println!(
            "offset {}: {reason}",
            carboy_format::header::live::COMMIT_END
        );
    }
    if plan.index_damaged {
        problems += 1;
        println!("offset {}: {reason}", plan.index_offset);
    }
    if let Some((at, why)) = &plan.damage {
        problems += 1;
        println!(
            "offset {at}: the log stops verifying here ({why}); recovery keeps the {} \
             transactions before offset {}",
            plan.transactions, plan.log_end
        );
    }
    if let Some(aside) = &plan.set_aside {
        problems += 1;
        println!(
            "offset {}: {} bytes past the damage hold {} commits ({} records) that verify: \
             recovery copies them to {}.set-aside-{}-<time> before reusing the space",
            aside.offset,
            aside.len,
            aside.commits,
            aside.records,
            file.display(),
            aside.offset
        );
    }
    report_set_aside(set_aside);
    eprintln!(
        "carboy: {}: needs recovery ({reason}); this check changed nothing. The next command \
         that opens it (`carboy stat {}`) recovers it{}",
        file.display(),
        file.display(),
        if plan.rebuilds {
            ", rebuilding its index from the log"
        } else {
            ""
        }
    );
    if problems == 0 {
        println!(
            "{}: the log verifies: {} records in {} transactions (index not checked: recovery \
             rebuilds it)",
            file.display(),
            plan.records,
            plan.transactions
        );
        return Ok(Status::Ok);
    }
    eprintln!(
        "carboy: {}: {problems} problem{} found; `carboy salvage {} NEW` builds a clean file \
         from every record that still verifies",
        file.display(),
        if problems == 1 { "" } else { "s" },
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
