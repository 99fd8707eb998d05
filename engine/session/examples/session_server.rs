//! The session demo server: an axum app whose session counter is shared by
//! every process started on the same `--data-dir`, or on the same redis or
//! memcached server (`--url`).
//!
//! ```text
//! cargo run -p carboy-session --example session_server -- \
//!     --listen 127.0.0.1:0 --data-dir /tmp/sessions \
//!     [--type file|memory|cookie|redis|memcached] [--url URL] \
//!     [--secret S] [--timeout SECS]
//!
//! cargo run -p carboy-session --example session_server -- \
//!     --type redis --url redis://127.0.0.1:6379/0 --secret S
//! cargo run -p carboy-session --example session_server -- \
//!     --type memcached --url 127.0.0.1:11211 --secret S
//! ```
//!
//! Prints `listening on http://HOST:PORT` first, then serves `GET /count`,
//! `GET /health`, `POST /login`, `POST /logout` (see
//! `carboy_session::demo`).

use std::net::SocketAddr;
use std::path::PathBuf;

use carboy_session::demo::{self, DemoOptions};
use clap::Parser;

/// The session demo server.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Session storage directory (the file backend's data directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where sessions live.
    #[arg(
        long = "type",
        default_value = "file",
        value_parser = ["file", "memory", "cookie", "redis", "memcached"]
    )]
    session_type: String,
    /// The server of `--type redis` (`redis://HOST:PORT/DB`, or a
    /// cluster's nodes separated by commas) or `--type memcached`
    /// (`HOST:PORT`, several separated by `;`): `session.url`.
    #[arg(long)]
    url: Option<String>,
    /// Signs the session cookie (at least 16 bytes); required by --type cookie.
    #[arg(long)]
    secret: Option<String>,
    /// Idle seconds after which a session expires.
    #[arg(long)]
    timeout: Option<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // `session.type = redis` / `memcached` find these backends; the
    // library itself depends on neither.
    if let Err(e) = carboy_redis::register().and_then(|()| carboy_memcached::register()) {
        eprintln!("session_server: {e}");
        std::process::exit(1);
    }
    let options = DemoOptions {
        listen: args.listen,
        data_dir: args.data_dir,
        session_type: args.session_type,
        url: args.url,
        secret: args.secret,
        timeout: args.timeout,
    };
    if let Err(e) = demo::run(options).await {
        eprintln!("session_server: {e}");
        std::process::exit(1);
    }
}
