//! Exit statuses, and how an error maps to one and is shown.

use std::fmt;
use std::process::ExitCode;

/// How `carboy` exits (documented in `carboy --help` and `tools/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 0: the command did what it was asked.
    Ok = 0,
    /// 1: the command ran and found a problem, or the key is absent.
    Problem = 1,
    /// 2: the command line is wrong.
    Usage = 2,
    /// 3: the command could not do its work (I/O; a missing, foreign,
    /// damaged or locked file; a malformed dump).
    Failure = 3,
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(s as u8)
    }
}

/// A mistake on the command line found after clap parsed it (status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A key that is not in the file (status 1).
#[derive(Debug)]
pub struct Absent(pub String);

impl fmt::Display for Absent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Absent {}

/// An error and what the user can do about it, shown as a second line.
#[derive(Debug)]
struct Advised {
    error: anyhow::Error,
    advice: String,
}

impl fmt::Display for Advised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Advised {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// `error`, with `advice` on what to do about it.
pub fn advise(error: impl Into<anyhow::Error>, advice: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Advised {
        error: error.into(),
        advice: advice.into(),
    })
}

/// The exit status an error maps to.
pub fn status_of(err: &anyhow::Error) -> Status {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return Status::Usage;
        }
        if cause.is::<Absent>() {
            return Status::Problem;
        }
        if let Some(e) = cause.downcast_ref::<carboy::Error>() {
            return match e {
                carboy::Error::KeyTooLong { .. }
                | carboy::Error::ValueTooLong { .. }
                | carboy::Error::InvalidOption { .. }
                | carboy::Error::InvalidName { .. } => Status::Usage,
                _ => Status::Failure,
            };
        }
    }
    Status::Failure
}

/// The advice attached to an error, if any.
pub fn advice(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|c| c.downcast_ref::<Advised>())
        .map(|a| a.advice.as_str())
}

/// The error and its causes on one line, leaving out a cause whose text
/// the message already holds (carboy's errors quote their I/O cause).
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// True when the error is a write to a closed pipe (`carboy keys f | head`):
/// the reader has what it wanted, so carboy stops quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_typed_cause() {
        let usage = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(status_of(&usage), Status::Usage);
        let absent = anyhow::Error::new(Absent("no key".into())).context("get");
        assert_eq!(status_of(&absent), Status::Problem);
        let io = anyhow::anyhow!("disk on fire");
        assert_eq!(status_of(&io), Status::Failure);
        let advised = advise(UsageError("bad key".into()), "use --hex");
        assert_eq!(status_of(&advised), Status::Usage);
        assert_eq!(advice(&advised), Some("use --hex"));
        assert_eq!(render(&advised), "bad key");
    }

    #[test]
    fn render_drops_causes_the_message_already_quotes() {
        let io = std::io::Error::other("Permission denied");
        let err = anyhow::Error::new(io).context("open x: Permission denied");
        assert_eq!(render(&err), "open x: Permission denied");
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render(&err), "outer: inner");
    }
}
