//! `carboy`: inspect, check, read, write, move and repair carboy namespace
//! files from the shell.
//!
//! Each subcommand is one file under `src/cmd/`; this file parses the
//! command line and turns the outcome into an exit status:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a problem was found (`check`, `header`, `stat`, `dump`, `keys`), or the key is absent (`get`, `del`) |
//! | 2 | usage error: a bad command line, key, value or option |
//! | 3 | the command could not do its work: an I/O error; a missing, foreign, damaged or locked file; a malformed dump given to `import` |
//!
//! `tools/README.md` lists the subcommands; `tools/EXPORT.md` specifies the
//! export format.

use std::process::ExitCode;

use clap::Parser;

mod cmd;
mod escape;
mod failure;
mod open;
mod operand;
mod progress;
mod raw;
mod timestamp;
mod wait;

use failure::Status;

/// The exit statuses, as `carboy --help` shows them.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  a problem was found (check, header, stat, dump, keys), or the key is
     absent (get, del)
  2  usage error: a bad command line, key, value or option
  3  the command could not do its work: an I/O error; a missing, foreign,
     damaged or locked file; a malformed dump given to import

Examples:
  carboy put users.carboy user:1 alice
  carboy get users.carboy user:1
  carboy check users.carboy
  carboy export users.carboy > users.dump
  carboy SUBCOMMAND --help        (every subcommand has its own examples)";

/// carboy: inspect, check, read, write, move and repair carboy namespace
/// files.
///
/// FILE is always the path of a namespace's data file (its lock file,
/// FILE.lock, sits beside it). Other processes may use the file meanwhile:
/// commands that need a lock wait for it (see --wait).
#[derive(Debug, Parser)]
#[command(name = "carboy", version, after_help = EXIT_STATUS, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,

    /// How long to wait for a lock that another process holds before giving
    /// up with status 3, in seconds (0 waits forever).
    #[arg(long, global = true, value_name = "SECONDS", default_value = "30")]
    wait: wait::Wait,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = cmd::Global { wait: cli.wait };
    match cli.command.run(&global) {
        Ok(status) => status.into(),
        Err(err) if failure::is_broken_pipe(&err) => Status::Ok.into(),
        Err(err) => {
            eprintln!("carboy: {}", failure::render(&err));
            if let Some(advice) = failure::advice(&err) {
                eprintln!("carboy: hint: {advice}");
            }
            failure::status_of(&err).into()
        }
    }
}
