//! The demo app (`examples/session_server.rs`), as a library module so
//! that tests and benchmarks build the same router without a process.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /count` | increments the integer `count` in the session; body: the new count |
//! | `GET /health` | body `ok`; never touches the session (no storage access, no cookie) |
//! | `POST /login` | regenerates the session id, keeping the data; body: the count |
//! | `POST /logout` | deletes the session (stored data gone, an expiring cookie sent); body: `bye` |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::config::{SessionConfig, SessionType};
use crate::error::SessionError;
use crate::session::Session;
use crate::sessions::Sessions;

/// The demo app over `sessions`: the four routes above, wrapped in the
/// session layer.
pub fn router(sessions: Sessions) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/health", get(health))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(sessions.layer())
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("count").await?.unwrap_or(0) + 1;
    session.insert("count", n).await?;
    Ok(n.to_string())
}

async fn health() -> &'static str {
    "ok"
}

async fn login(session: Session) -> Result<String, SessionError> {
    session.regenerate_id().await?;
    let n: u64 = session.get("count").await?.unwrap_or(0);
    Ok(n.to_string())
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.delete().await?;
    Ok("bye")
}

/// The demo server's options (the example's command line).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// `session.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `file`, `memory`, `cookie`, or any registered backend (`redis`,
    /// `memcached`: the example registers both).
    pub session_type: String,
    /// `session.url`, handed to the backend as `cache.url`
    /// (`redis://127.0.0.1:6379/0`, `127.0.0.1:11211`).
    pub url: Option<String>,
    /// `session.secret` (and, for `cookie`, the validate key).
    pub secret: Option<String>,
    /// `session.timeout`, in seconds.
    pub timeout: Option<u64>,
}

impl DemoOptions {
    /// The session settings these options stand for.
    pub fn config(&self) -> SessionConfig {
        let mut config = SessionConfig::new().session_type(match self.session_type.as_str() {
            "cookie" => SessionType::Cookie,
            other => SessionType::Backend(other.to_string()),
        });
        if let Some(d) = &self.data_dir {
            config = config.data_dir(d);
        }
        if let Some(s) = &self.secret {
            config = config.secret([s.clone()]);
        }
        if let Some(u) = &self.url {
            // As `session.url` in a settings map: passed through to the
            // backend, and named so in its errors.
            config
                .cache_options
                .push(("url".into(), "session.url".into(), u.clone()));
        }
        config.timeout(self.timeout.map(Duration::from_secs))
    }
}

/// Runs the demo server until the process ends: binds, prints
/// `listening on http://HOST:PORT` as the first line on stdout, serves.
pub async fn run(options: DemoOptions) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let sessions = options.config().build()?;
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    axum::serve(listener, router(sessions)).await?;
    Ok(())
}
