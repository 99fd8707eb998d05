//! `carboy put FILE KEY VALUE`: set a key.

use std::ffi::OsString;
use std::path::PathBuf;

use carboy::Expiry;

use crate::cmd::Global;
use crate::failure::{Status, UsageError};
use crate::open::{self, Opening};
use crate::operand::{self, EncodingArgs, Source};
use crate::wait;

/// The arguments of `carboy put`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Set a key to a value (creates the file if missing)",
    long_about = "\
        Set KEY to VALUE as one commit, creating FILE if it does not exist.\n\n\
        The value is the VALUE argument, stdin (VALUE `-`), or the contents of --value-file, \
        byte for byte. Without --ttl or --expires-at the value never expires.",
    after_help = "\
Examples:
  carboy put users.carboy user:1 alice
  carboy put --ttl 3600 sessions.carboy token:9 xyz        (expires in an hour)
  carboy put users.carboy avatar:1 --value-file face.png
  curl -s https://example.com/ | carboy put pages.carboy home -
  carboy put --hex users.carboy 00ff 68656c6c6f            (binary key and value)"
)]
pub struct Args {
    /// The namespace's data file (created if missing).
    pub file: PathBuf,
    /// The key; `-` reads it from stdin, byte for byte.
    pub key: OsString,
    /// The value; `-` reads it from stdin, byte for byte.
    #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
    pub value: Option<OsString>,
    /// Read the value from this file, byte for byte.
    #[arg(long, value_name = "PATH")]
    pub value_file: Option<PathBuf>,
    /// The value expires this many seconds from now.
    #[arg(long, value_name = "SECONDS", conflicts_with = "expires_at")]
    pub ttl: Option<u64>,
    /// The value expires at this time, in milliseconds since the Unix epoch.
    #[arg(long, value_name = "UNIX_MS")]
    pub expires_at: Option<u64>,
    /// Return only once the commit is on the device (survives power loss).
    #[arg(long)]
    pub sync: bool,
    #[command(flatten)]
    pub encoding: EncodingArgs,
}

/// Runs `carboy put`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let encoding = args.encoding.encoding();
    let mut stdin_taken = false;
    let key = operand::read_key(Source::Arg(&args.key), encoding, &mut stdin_taken)?;
    let source = match (&args.value, &args.value_file) {
        (Some(v), _) => Source::Arg(v),
        (None, Some(path)) => Source::File(path),
        (None, None) => {
            return Err(UsageError("put needs a VALUE, `-` or --value-file PATH".into()).into());
        }
    };
    let value = operand::read(source, encoding, "VALUE", &mut stdin_taken)?;
    let now = crate::timestamp::now_ms();
    let expiry = match (args.ttl, args.expires_at) {
        (Some(0), _) => {
            return Err(UsageError(
                "--ttl 0 would store a value that has already expired; give 1 or more seconds"
                    .into(),
            )
            .into());
        }
        (Some(secs), _) => Expiry::AtUnixMs(now.saturating_add(secs.saturating_mul(1000))),
        (None, Some(at)) if at <= now => {
            return Err(UsageError(format!(
                "--expires-at {at} ({}) has passed: the value would read as absent",
                crate::timestamp::rfc3339(at)
            ))
            .into());
        }
        (None, Some(at)) => Expiry::AtUnixMs(at),
        (None, None) => Expiry::Never,
    };
    let store = open::or_create(&args.file, Opening::writing(global.wait, args.sync))?;
    let explain = |e| open::explain(&args.file, e);
    let mut txn =
        wait::for_lock(&args.file, global.wait, || store.transaction()).map_err(explain)?;
    txn.put_with_expiry(&key, &value, expiry).map_err(explain)?;
    txn.commit().map_err(explain)?;
    Ok(Status::Ok)
}
