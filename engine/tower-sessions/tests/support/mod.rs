//! What `tests/two_processes.rs` and `benches/sessions.rs` share: the
//! counter app (`GET /count` increments the integer `count` of the
//! tower-sessions session and answers the new value) and a keep-alive
//! HTTP/1.1 client that keeps the session cookie.

#![allow(dead_code)] // each includer uses part of it

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

/// `GET /count`: the session's `count` plus one, stored and answered.
pub async fn count(session: Session) -> Result<String, StatusCode> {
    let n = session
        .get::<u64>("count")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0)
        + 1;
    session
        .insert("count", n)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(n.to_string())
}

/// The counter app over `store`, behind tower-sessions' layer (plain HTTP,
/// so the cookie is not `Secure`; sessions live an hour after last use).
pub fn router<S: SessionStore + Clone>(store: S) -> Router {
    let layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    Router::new().route("/count", get(count)).layer(layer)
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    host: String,
}

/// What one request got back.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `name=value` part of the `Set-Cookie` header, if any.
    pub set_cookie: Option<String>,
    /// The body.
    pub body: String,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay on {addr}: {e}"))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// `GET path` with `cookie` (a `name=value`), if any.
    pub async fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection to {}: {e}", self.host))?;
        let mut request = Request::get(path).header(header::HOST, &self.host);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {path} on {}: {e}", self.host))?;
        let status = response.status().as_u16();
        let set_cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body of GET {path} on {}: {e}", self.host))?
            .to_bytes();
        Ok(Reply {
            status,
            set_cookie,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A client with one connection per server, sending each request to the
/// next server in turn, and keeping its session cookie.
pub struct Client {
    conns: Vec<Conn>,
    next: usize,
    /// The session cookie (`name=value`), once a server set one.
    pub cookie: Option<String>,
}

impl Client {
    /// Connects to every server in `addrs`.
    pub async fn connect(addrs: &[SocketAddr]) -> Result<Client, String> {
        let mut conns = Vec::new();
        for &addr in addrs {
            conns.push(Conn::open(addr).await?);
        }
        Ok(Client {
            conns,
            next: 0,
            cookie: None,
        })
    }

    /// `GET /count` on the next server: the count it answered.
    pub async fn count(&mut self) -> Result<u64, String> {
        let i = self.next % self.conns.len();
        self.next += 1;
        let reply = self.conns[i].get("/count", self.cookie.as_deref()).await?;
        if reply.status != 200 {
            return Err(format!(
                "GET /count on server {i}: status {}, body {:?}",
                reply.status, reply.body
            ));
        }
        if let Some(cookie) = reply.set_cookie {
            self.cookie = Some(cookie);
        }
        reply
            .body
            .trim()
            .parse()
            .map_err(|e| format!("GET /count on server {i}: body {:?}: {e}", reply.body))
    }
}
