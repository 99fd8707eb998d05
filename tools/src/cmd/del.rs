//! `carboy del FILE KEY`: delete a key.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cmd::Global;
use crate::failure::{Absent, Status};
use crate::open::{self, Opening};
use crate::operand::{self, EncodingArgs, Source};
use crate::wait;

/// The arguments of `carboy del`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Delete a key",
    long_about = "\
        Delete KEY as one commit.\n\n\
        When KEY is absent (or expired) nothing is written and carboy exits with status 1, \
        unless --force is given.",
    after_help = "\
Examples:
  carboy del users.carboy user:1
  carboy del --force users.carboy user:1        (no error if it is absent)
  carboy del --base64 users.carboy AP8=         (binary key)"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
    /// The key; `-` reads it from stdin, byte for byte.
    pub key: OsString,
    /// An absent key is not an error (exit status 0).
    #[arg(short, long)]
    pub force: bool,
    /// Return only once the commit is on the device (survives power loss).
    #[arg(long)]
    pub sync: bool,
    #[command(flatten)]
    pub encoding: EncodingArgs,
}

/// Runs `carboy del`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let key = operand::read_key(Source::Arg(&args.key), args.encoding.encoding(), &mut false)?;
    let store = open::existing(&args.file, Opening::writing(global.wait, args.sync))?;
    let explain = |e| open::explain(&args.file, e);
    let mut txn =
        wait::for_lock(&args.file, global.wait, || store.transaction()).map_err(explain)?;
    let existed = txn.delete(&key).map_err(explain)?;
    if !existed {
        // Nothing to delete: write no delete record.
        drop(txn);
        if args.force {
            return Ok(Status::Ok);
        }
        return Err(Absent(format!(
            "{}: no key {} (nothing deleted; --force makes this not an error)",
            args.file.display(),
            crate::escape::shortened(&key)
        ))
        .into());
    }
    txn.commit().map_err(explain)?;
    Ok(Status::Ok)
}
