//! `carboy keys FILE`: list the live keys.

use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::cmd::Global;
use crate::failure::Status;
use crate::open::{self, Opening};
use crate::operand::{Encoding, EncodingArgs};
use crate::{escape, wait};

/// The arguments of `carboy keys`.
#[derive(Debug, clap::Args)]
#[command(
    about = "List the live keys",
    long_about = "\
        List the live (present, unexpired) keys, one a line, in no particular order (--sort: \
        ascending bytes).\n\n\
        By default a key prints as text with anything unprintable escaped (`\\n`, `\\xff`, \
        `\\\\`); --hex, --base64 or --null print keys exactly. The listing is one consistent \
        snapshot: writers wait until it ends. A damaged record is reported on stderr and \
        skipped (exit status 1).",
    after_help = "\
Examples:
  carboy keys users.carboy
  carboy keys --prefix user: --sort users.carboy
  carboy keys --null users.carboy | xargs -0 -n1 carboy del users.carboy
  carboy keys --hex --prefix 00 users.carboy           (binary prefix)"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
    /// List only the keys that start with these bytes (spelled like KEY:
    /// text, or hex/base64 with --hex/--base64).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<OsString>,
    /// Print each key's raw bytes followed by a NUL byte (for xargs -0).
    #[arg(short = '0', long, conflicts_with_all = ["hex", "base64"])]
    pub null: bool,
    /// Sort the keys by their bytes.
    #[arg(long)]
    pub sort: bool,
    #[command(flatten)]
    pub encoding: EncodingArgs,
}

/// Runs `carboy keys`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let encoding = args.encoding.encoding();
    let prefix = match &args.prefix {
        Some(p) => {
            let prefix = encoding.decode(p, "PREFIX")?;
            crate::operand::check_prefix(&prefix)?;
            prefix
        }
        None => Vec::new(),
    };
    let store = open::existing(&args.file, Opening::reading(global.wait))?;
    let snapshot = wait::for_lock(&args.file, global.wait, || store.snapshot())
        .map_err(|e| open::explain(&args.file, e))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut status = Status::Ok;
    let mut sorted = Vec::new();
    for entry in snapshot {
        let key = match entry {
            Ok(e) => e.key,
            Err(e) => {
                eprintln!("carboy: skipped: {e}");
                status = Status::Problem;
                continue;
            }
        };
        if !key.starts_with(&prefix) {
            continue;
        }
        if args.sort {
            sorted.push(key);
        } else {
            print_key(&mut out, &key, encoding, args.null)?;
        }
    }
    sorted.sort_unstable();
    for key in &sorted {
        print_key(&mut out, key, encoding, args.null)?;
    }
    out.flush()?;
    Ok(status)
}

fn print_key(
    out: &mut impl Write,
    key: &[u8],
    encoding: Encoding,
    null: bool,
) -> std::io::Result<()> {
    if null {
        out.write_all(key)?;
        return out.write_all(b"\0");
    }
    match encoding.encode(key) {
        Some(text) => writeln!(out, "{text}"),
        None => writeln!(out, "{}", escape::bare(key)),
    }
}
