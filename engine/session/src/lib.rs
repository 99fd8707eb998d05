//! Beaker's sessions for tower and axum, on carboy's cache.
//!
//! * **Server-side sessions** ([`SessionType::Backend`]) live in any carboy
//!   cache backend (`file`, `memory`, `redis`, …) through the public cache
//!   API; the cookie carries only a 128-bit random id (signed with
//!   `session.secret` if set).
//! * **Cookie sessions** ([`SessionType::Cookie`]) keep everything in the
//!   cookie, signed (HMAC-SHA256) or encrypted and authenticated
//!   (AES-256-GCM), with key rotation.
//! * **A lazy handle** ([`Session`]): a request that never touches its
//!   session costs no storage access and sets no cookie; a touched one is
//!   saved at the end only if it changed or its access time is due.
//! * **No lost updates**: a server-side session is locked from its first
//!   touch to its save ([`carboy::cache::AsyncCache::lock_key`]), across
//!   threads and processes (engine/DESIGN.md, "Sessions: no lost updates").
//!   Cookie sessions cannot promise this: two requests that change one
//!   cookie session at once each send a cookie, and the browser keeps the
//!   last.
//! * **Middleware** ([`SessionLayer`]) and settings from Beaker-style maps
//!   ([`SessionConfig::from_settings`]) or setters.
//!
//! ```
//! use axum::{Router, routing::get};
//! use carboy_session::{Session, SessionConfig, SessionError};
//!
//! async fn count(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.get("count").await?.unwrap_or(0) + 1;
//!     session.insert("count", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let data_dir = dir.path().display().to_string();
//! let sessions = SessionConfig::from_settings([
//!     ("session.type", "file"),
//!     ("session.data_dir", data_dir.as_str()),
//!     ("session.timeout", "3600"),
//! ])?
//! .build()?;
//! let app: Router = Router::new().route("/count", get(count)).layer(sessions.layer());
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Bad cookies
//!
//! Every byte from a client is hostile. None of these is an error page:
//!
//! | the request's cookie | outcome |
//! |---|---|
//! | none | a fresh session; a cookie only once something is stored in it |
//! | garbled, truncated, tampered, signed by an unknown key | a fresh session with a new id, and a `warn` log line (target `carboy_session`) |
//! | a well-formed id the store does not hold | a fresh session with a **new** id: ids are never adopted (no session fixation) |
//! | timed out (`session.timeout`) | a fresh session; the stored data is removed |
//! | from before a logout (`delete`) | a fresh session (the data was removed) |
//! | from before a login (`regenerate_id`) | a fresh session (the old id's data was removed) |
//! | a cookie session, after logout | **its old state**: a cookie session cannot be revoked, only expire (`session.timeout`) |
//!
//! Session data is decoded with serde into plain data only (a postcard
//! record holding JSON, `serde_json::Value`s), never into anything
//! executable (unlike pickle, Beaker CVE-2013-7489). JSON, not postcard,
//! for the values: it describes itself, so a typed `get` of the wrong
//! type is an error rather than a misread, and the data stays readable
//! with `carboy dump`.
//!
//! ## A cookie session too large for a cookie
//!
//! [`Session::save`] returns [`SessionError::CookieTooLarge`] naming the
//! size, before any response is built: a handler that calls it can drop
//! data and answer as it likes. If the middleware's end-of-request save
//! meets it instead, the response becomes `507 Insufficient Storage` with
//! the error as its body and **no** `Set-Cookie`, so the client keeps its
//! previous cookie (and state).
//!
//! Logging is through `tracing`, as the rest of the tower/axum/hyper
//! stack.

pub mod b64;
mod config;
pub mod demo;
mod error;
mod id;
mod keys;
mod layer;
mod session;
mod sessions;

pub use config::{
    CookieExpires, DEFAULT_COOKIE_NAME, DEFAULT_NAMESPACE, SameSite, SessionConfig, SessionType,
};
pub use error::SessionError;
pub use id::SessionId;
pub use layer::{MissingSessionLayer, SessionLayer, SessionService};
pub use session::Session;
pub use sessions::{COOKIE_LIMIT, STORAGE_GRACE, SessionMap, Sessions};
