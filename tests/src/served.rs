//! The `serve` mode of the child binary, and how a test talks to it: one
//! command per line, one reply per line, so that parent and child take
//! turns without sleeping.
//!
//! | command | reply |
//! |---|---|
//! | `put <key> <value>` | `ok ()` |
//! | `get <key>` | `ok <value>` or `none` |
//! | `snapshot` | `ok <live keys in a snapshot>` |
//! | `compact` | `ok <keys kept>` |
//! | `recover` | `ok <whether a latch was cleared>` |
//! | `verify` | `ok <number of problems>` |
//! | `open` | drops the store and opens it again: `ready` |
//! | `cd <dir>` | changes the working directory: `ok ()` |
//! | `put-until-error <key> <ms>` | puts every 20 ms until one fails: its error and `(after <n> puts)`; `ok <n>` if none failed within `<ms>` |
//! | `quit` | (exits) |
//!
//! A failed call replies `err <Variant> <message>` (see [`error_kind`]).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use carboy::Error;

use crate::child_process::ChildProcess;

/// How long a reply may take before the test gives up on the child.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The reply line for the result of a call.
pub fn reply<T: Debug>(result: Result<T, Error>) -> String {
    match result {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {} {e}", error_kind(&e)),
    }
}

/// The name of `e`'s kind ([`Error::kind`]), as the child reports it
/// over its line protocol.
pub fn error_kind(e: &Error) -> String {
    format!("{:?}", e.kind())
}

/// A child process running `carboy-test-child serve <path>`; killed
/// when dropped.
pub struct Served {
    process: ChildProcess,
}

impl Served {
    /// Starts `command` (the child binary, without arguments) serving
    /// `path`. Returns it and its first line: `ready`, or the error of
    /// the open.
    pub fn start(mut command: Command, path: &Path, name: &str) -> (Served, String) {
        command.arg("serve").arg(path).stderr(Stdio::inherit());
        let mut process = ChildProcess::start(command, name).with_timeout(REPLY_TIMEOUT);
        let first = process.reply("(start)");
        (Served { process }, first)
    }

    /// Sends `command`, returns the reply.
    pub fn ask(&mut self, command: &str) -> String {
        self.process.say(command);
        self.process.reply(command)
    }

    /// Sends `quit` and waits for the child to exit successfully.
    pub fn quit(mut self) {
        let _ = self.process.try_say("quit");
        self.process.finish();
    }
}

/// A reply split into its variant and message: `("ok", rest)`,
/// `("none", "")`, `("ready", "")` or `(variant, message)` for errors.
pub fn parse(reply: &str) -> (&str, &str) {
    match reply.strip_prefix("err ") {
        Some(rest) => rest.split_once(' ').unwrap_or((rest, "")),
        None => reply.split_once(' ').unwrap_or((reply, "")),
    }
}

/// Runs the child as a user without privileges, so that permission
/// checks apply: as uid and gid 65534 ("nobody") when this process is
/// root (which bypasses them), else as this user. The child binary is
/// copied into a directory of its own that everyone can enter, since
/// the build directory may not be.
pub struct Unprivileged {
    ids: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Unprivileged {
    /// The user 65534 when running as root.
    pub const NOBODY: u32 = 65534;

    /// Prepares to run the child binary at `child_bin`.
    pub fn new(child_bin: &Path) -> Unprivileged {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("temp dir");
        let root = std::fs::metadata(dir.path()).expect("stat temp dir").uid() == 0;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let bin = dir.path().join("carboy-test-child");
        std::fs::copy(child_bin, &bin).expect("copy the child binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the child binary");
        // A process another test thread forked while the copy's file
        // was open for writing holds that descriptor until it execs,
        // and exec of the copy fails meanwhile (ETXTBSY). Once one exec
        // succeeds, no such descriptor is left, and none can appear.
        for attempt in 0.. {
            match Command::new(&bin)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            {
                Ok(mut child) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 500 => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("run the copy of the child binary: {e}"),
            }
        }
        Unprivileged {
            ids: root.then_some((Self::NOBODY, Self::NOBODY)),
            _dir: dir,
            bin,
        }
    }

    /// Whether the child drops root privileges.
    pub fn drops_root(&self) -> bool {
        self.ids.is_some()
    }

    /// A command running the child as the unprivileged user.
    pub fn command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.bin);
        command.current_dir("/");
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Makes `path` (and, for a directory, nothing below it) belong to
    /// the child's user, with permission bits `mode`.
    pub fn give(&self, path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
}
