//! `carboy get FILE KEY`: print a key's value.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use crate::cmd::Global;
use crate::escape;
use crate::failure::{Absent, Status};
use crate::open::{self, Opening};
use crate::operand::{self, EncodingArgs, Source};

/// The arguments of `carboy get`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print the value of a key",
    long_about = "\
        Print the value of KEY to stdout, byte for byte (no newline is added).\n\n\
        An absent or expired key prints nothing and exits with status 1.",
    after_help = "\
Examples:
  carboy get users.carboy user:1
  carboy get users.carboy user:1 > value.bin
  carboy get --hex users.carboy 00ff          (binary key; value printed as hex)
  printf 'key with\\nnewline' | carboy get users.carboy -
  if carboy get users.carboy lock:job >/dev/null 2>&1; then echo held; fi"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
    /// The key; `-` reads it from stdin, byte for byte.
    pub key: OsString,
    #[command(flatten)]
    pub encoding: EncodingArgs,
}

/// Runs `carboy get`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let encoding = args.encoding.encoding();
    let key = operand::read_key(Source::Arg(&args.key), encoding, &mut false)?;
    let store = open::existing(&args.file, Opening::reading(global.wait))?;
    let value = store
        .get(&key)
        .map_err(|e| open::explain(&args.file, e))?
        .ok_or_else(|| {
            Absent(format!(
                "{}: no key {}",
                args.file.display(),
                escape::shortened(&key)
            ))
        })?;
    let mut out = std::io::stdout().lock();
    match encoding.encode(&value) {
        // Control bytes could drive the terminal (clear it, retitle it):
        // show them escaped there; a pipe or file gets the exact bytes.
        None if out.is_terminal() && !printable(&value) => {
            writeln!(out, "{}", escape::bare(&value))?;
            eprintln!(
                "carboy: the value is not printable text: shown escaped; redirect stdout for \
                 the exact bytes, or use --hex"
            );
        }
        None => out.write_all(&value)?,
        Some(text) => writeln!(out, "{text}")?,
    }
    out.flush()?;
    Ok(Status::Ok)
}

/// True for UTF-8 text with no control characters but newlines and tabs.
fn printable(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|text| {
        text.chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t')
    })
}
