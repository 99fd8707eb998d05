//! `carboy import FILE < DUMP`: add the entries of an export to a file.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;

use anyhow::anyhow;
use carboy::Transaction;
use carboy_tools::export_format::{ParseError, Reader};

use crate::cmd::Global;
use crate::failure::{Status, UsageError, advise};
use crate::open::{self, Opening};
use crate::{progress, timestamp, wait};

/// The arguments of `carboy import`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Add the entries of an export to a file (creates it if missing)",
    long_about = "\
        Read a dump written by `carboy export` (from DUMP, or stdin) and put its entries \
        into FILE, creating FILE if it does not exist.\n\n\
        Entries are committed in transactions of --batch entries. A malformed line stops the \
        import with its line number (status 3): the batches before it stay committed, the \
        one in progress is discarded. Entries whose expiry has passed are skipped. Keys FILE \
        already holds get the dump's values; other keys are kept. tools/EXPORT.md specifies \
        the format.",
    after_help = "\
Examples:
  carboy import users.carboy < users.dump
  carboy import users.carboy users.dump
  gunzip -c users.dump.gz | carboy import --batch 0 users.carboy    (all or nothing)
  carboy export old.carboy | carboy import new.carboy               (copy a namespace)"
)]
pub struct Args {
    /// The namespace's data file (created if missing).
    pub file: PathBuf,
    /// The dump to read; stdin when absent or `-`.
    pub dump: Option<PathBuf>,
    /// Entries per transaction; 0 puts the whole dump in one transaction,
    /// so that a malformed dump imports nothing.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch: u64,
    /// Return only once every commit is on the device (survives power loss).
    #[arg(long)]
    pub sync: bool,
}

/// Runs `carboy import`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let file = &args.file;
    let (input, source): (Box<dyn BufRead>, String) = match &args.dump {
        Some(path) if path.as_os_str() != "-" => {
            let f = std::fs::File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    anyhow!("{}: no such dump file", path.display())
                }
                _ => anyhow!("{}: {e}", path.display()),
            })?;
            (
                Box::new(BufReader::with_capacity(1 << 20, f)),
                path.display().to_string(),
            )
        }
        _ if std::io::stdin().is_terminal() => {
            return Err(UsageError(
                "no dump to read: give DUMP, or redirect stdin (carboy import FILE < DUMP)".into(),
            )
            .into());
        }
        _ => (Box::new(std::io::stdin().lock()), "stdin".to_string()),
    };
    // Read the header (and first entry) before opening FILE, so that
    // input that is no dump at all creates no file.
    let mut reader = Reader::new(input);
    let first = reader.next();
    if let Some(Err(e)) = first {
        return Err(refused(&source, e, 0, 0));
    }
    let store = open::or_create(file, Opening::writing(global.wait, args.sync))?;
    let explain = |e| open::explain(file, e);
    let bar = progress::counter("importing", None, "entries");
    let now = timestamp::now_ms();
    let mut txn: Option<Transaction<'_>> = None;
    let (mut imported, mut in_batch, mut skipped, mut transactions) = (0u64, 0u64, 0u64, 0u64);
    for item in first.into_iter().chain(&mut reader) {
        let entry = match item {
            Ok(entry) => entry,
            Err(e) => {
                drop(txn.take());
                bar.finish_and_clear();
                return Err(refused(&source, e, imported, in_batch));
            }
        };
        bar.inc(1);
        if entry.expiry.is_expired_at(now) {
            skipped += 1;
            continue;
        }
        let t = match &mut txn {
            Some(t) => t,
            None => {
                let t =
                    wait::for_lock(file, global.wait, || store.transaction()).map_err(explain)?;
                txn.insert(t)
            }
        };
        t.put_with_expiry(&entry.key, &entry.value, entry.expiry)
            .map_err(explain)?;
        in_batch += 1;
        if in_batch == args.batch
            && let Some(t) = txn.take()
        {
            t.commit().map_err(explain)?;
            (imported, in_batch, transactions) = (imported + in_batch, 0, transactions + 1);
        }
    }
    if let Some(t) = txn.take() {
        t.commit().map_err(explain)?;
        (imported, transactions) = (imported + in_batch, transactions + 1);
    }
    bar.finish_and_clear();
    println!(
        "{}: imported {imported} entries from {source} in {transactions} transaction{}; \
         {skipped} already expired, skipped",
        file.display(),
        if transactions == 1 { "" } else { "s" }
    );
    Ok(Status::Ok)
}

/// The error for a dump refused at a line, saying what was imported.
fn refused(source: &str, e: ParseError, imported: u64, discarded: u64) -> anyhow::Error {
    let done = match (imported, discarded) {
        (0, 0) => "nothing was imported".to_string(),
        (n, 0) => format!("the {n} entries before it were imported"),
        (n, d) => format!(
            "the {n} entries of earlier batches were imported; the {d} of the batch in \
             progress were not"
        ),
    };
    advise(
        anyhow!("{source}: {e}"),
        format!(
            "{done}. Fix the line, or write the dump again with `carboy export`; \
             --batch 0 imports all or nothing"
        ),
    )
}
