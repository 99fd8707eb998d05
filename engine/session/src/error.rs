//! [`SessionError`]: what can go wrong with a session, and what the client
//! sees when the middleware meets it.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// The error of a session operation.
///
/// Bad cookies are not errors: a tampered, truncated, garbled, unknown or
/// expired cookie gives a fresh session (and a log line). What remains are
/// settings, values that do not (de)serialize, a cookie session too large
/// for a cookie, and storage failures.
///
/// As an axum response ([`IntoResponse`]), which is also what the
/// middleware sends when its end-of-request save fails:
///
/// | error | status |
/// |---|---|
/// | [`CookieTooLarge`](SessionError::CookieTooLarge) | 507 Insufficient Storage (no `Set-Cookie`: the client keeps its previous cookie and state) |
/// | [`Store`](SessionError::Store) with [`carboy::ErrorKind::LockTimeout`] | 503 Service Unavailable, `Retry-After: 1` |
/// | [`Value`](SessionError::Value) | 500 (a handler stored or asked for a type that does not fit) |
/// | any other | 500 |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A setting is unknown or its value cannot be used.
    #[error("invalid session setting {setting} = {value:?}: {reason}")]
    Setting {
        /// The setting as written (`session.timeout`, …).
        setting: String,
        /// Its value.
        value: String,
        /// What is wrong, and what would be right.
        reason: String,
    },
    /// The session storage failed (I/O, a lock not granted within
    /// `cache.lock_timeout`, …).
    #[error("session storage: {0}")]
    Store(#[from] carboy::Error),
    /// A value could not be turned into JSON (insert) or read back as the
    /// type asked for (get).
    #[error("session value {key:?}: {reason}")]
    Value {
        /// The session key.
        key: String,
        /// What serde said.
        reason: String,
    },
    /// A stored session no longer decodes and `session.invalidate_corrupt`
    /// is off (with it on, the default, such a session is replaced by a
    /// fresh one).
    #[error(
        "stored session {}… is corrupt: {reason} (set session.invalidate_corrupt = true to start a fresh session instead)",
        id_prefix(id)
    )]
    Corrupt {
        /// The session id (messages show only its first characters: a
        /// log line must not hand out a live session id).
        id: String,
        /// What failed.
        reason: String,
    },
    /// A cookie session grew past what a browser keeps in one cookie: the
    /// whole `Set-Cookie` value would be `size` bytes, above `limit`.
    #[error(
        "the session cookie would be {size} bytes, above the {limit}-byte limit of a cookie; store less in a cookie session, or use a server-side session (session.type = file, memory, …)"
    )]
    CookieTooLarge {
        /// The size of the `Set-Cookie` value that was refused.
        size: usize,
        /// The limit (4096 bytes).
        limit: usize,
    },
    /// The session was used after its request had ended (a clone kept by
    /// a task that outlived the request).
    #[error("the session's request has ended; its changes can no longer be saved")]
    Finished,
    /// The operation needs server-side storage (`get_by_id`, `cleanup` on
    /// a cookie session).
    #[error(
        "{operation} needs server-side sessions; session.type = cookie keeps everything in the cookie"
    )]
    Unsupported {
        /// What was asked.
        operation: &'static str,
    },
}

impl SessionError {
    /// The HTTP status the middleware answers with when this error ends a
    /// request (see the table on [`SessionError`]).
    pub fn status(&self) -> StatusCode {
        match self {
            SessionError::CookieTooLarge { .. } => StatusCode::INSUFFICIENT_STORAGE,
            SessionError::Store(e) if e.kind() == carboy::ErrorKind::LockTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("session error: {self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// The first characters of a session id, for messages.
fn id_prefix(id: &str) -> &str {
    id.get(..6).unwrap_or(id)
}
