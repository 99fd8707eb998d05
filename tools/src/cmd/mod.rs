//! The subcommands, one file each: its arguments (with its `--help` text
//! and examples) and its `run`.

use clap::Subcommand;

use crate::failure::Status;
use crate::wait::Wait;

pub mod check;
pub mod compact;
pub mod del;
pub mod dump;
pub mod export;
pub mod get;
pub mod header;
pub mod import;
pub mod keys;
pub mod put;
pub mod salvage;
pub mod stat;

/// Options that apply to every subcommand.
#[derive(Clone, Copy, Debug)]
pub struct Global {
    /// How long to wait for another process's lock.
    pub wait: Wait,
}

/// A subcommand and its arguments (each `Args` carries its help text).
#[derive(Debug, Subcommand)]
pub enum Command {
    Stat(stat::Args),
    Dump(dump::Args),
    Header(header::Args),
    Check(check::Args),
    Get(get::Args),
    Put(put::Args),
    Del(del::Args),
    Keys(keys::Args),
    Compact(compact::Args),
    Export(export::Args),
    Import(import::Args),
    Salvage(salvage::Args),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self, global: &Global) -> anyhow::Result<Status> {
        match self {
            Command::Stat(args) => stat::run(args, global),
            Command::Dump(args) => dump::run(args, global),
            Command::Header(args) => header::run(args),
            Command::Check(args) => check::run(args, global),
            Command::Get(args) => get::run(args, global),
            Command::Put(args) => put::run(args, global),
            Command::Del(args) => del::run(args, global),
            Command::Keys(args) => keys::run(args, global),
            Command::Compact(args) => compact::run(args, global),
            Command::Export(args) => export::run(args, global),
            Command::Import(args) => import::run(args, global),
            Command::Salvage(args) => salvage::run(args),
        }
    }
}
