//! The backend's errors: a failed exchange with one server, carried as
//! the source of a [`carboy::Error::Backend`].

use std::fmt;
use std::time::Duration;

/// What went wrong with a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// No answer within `cache.timeout` (a stopped or overloaded server, or
    /// a network that drops packets).
    Timeout,
    /// The connection could not be made or broke (a server that is down or
    /// restarting).
    Connection,
    /// The request was sent but its answer was lost: it may or may not
    /// have been applied.
    Ambiguous,
    /// The server answered with an error (`SERVER_ERROR`, out of memory, …).
    Server,
    /// The server refused the command or answered something that is not
    /// memcached's protocol.
    Protocol,
    /// `update` kept losing its compare-and-swap to other writers.
    Contention,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Timeout => "timed out",
            FailureKind::Connection => "connection failed",
            FailureKind::Ambiguous => "sent, but the answer was lost",
            FailureKind::Server => "server error",
            FailureKind::Protocol => "protocol error",
            FailureKind::Contention => "too much contention",
        })
    }
}

/// One failed operation on one memcached server. The cache returns it as
/// the source of [`carboy::Error::Backend`] (backend `memcached`, with
/// the namespace); downcast the source to read the fields.
///
/// ```
/// # fn show(err: &carboy::Error) {
/// use carboy_memcached::ServerError;
/// if let carboy::Error::Backend { source, .. } = err
///     && let Some(e) = source.downcast_ref::<ServerError>()
/// {
///     eprintln!("memcached {} failed on {}: {}", e.server, e.operation, e.kind);
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "memcached server {server}: {operation} {kind} ({detail}){hint}",
    hint = hint(*kind, *timeout)
)]
#[non_exhaustive]
pub struct ServerError {
    /// The server's address, as `cache.url` gives it.
    pub server: String,
    /// What the backend was doing: `get`, `set`, `remove`, `update`,
    /// `lock`, …
    pub operation: &'static str,
    /// What went wrong.
    pub kind: FailureKind,
    /// The client's message.
    pub detail: String,
    /// The configured `cache.timeout`.
    pub timeout: Duration,
}

fn hint(kind: FailureKind, timeout: Duration) -> String {
    match kind {
        FailureKind::Timeout => format!(
            "; no answer within cache.timeout = {:?}: is the server stopped or overloaded?",
            timeout
        ),
        FailureKind::Connection => {
            "; is the server running and reachable? carboy reconnects by itself once it is".into()
        }
        _ => String::new(),
    }
}
