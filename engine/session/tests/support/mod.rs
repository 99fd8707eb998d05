//! Shared helpers of the session tests: a small HTTP client over loopback,
//! an in-process server, and demo-server child processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Every `Set-Cookie` header, whole.
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Answer {
    /// The `name=value` part of the only `Set-Cookie`, if there is one.
    pub fn cookie(&self) -> Option<String> {
        assert!(self.set_cookies.len() <= 1, "{:?}", self.set_cookies);
        self.set_cookies
            .first()
            .map(|c| c.split(';').next().unwrap_or_default().to_string())
    }
}

/// A keep-alive HTTP/1.1 client for plain http on loopback.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    pub fn new() -> Client {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `method url` with `cookie` (a `name=value`) if given.
    pub async fn send(&self, method: Method, url: &str, cookie: Option<&str>) -> Answer {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(c) = cookie {
            req = req.header(http::header::COOKIE, c);
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let res = self.inner.request(req).await.expect("HTTP request");
        let status = res.status();
        let set_cookies = res
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii Set-Cookie").to_string())
            .collect();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            set_cookies,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, url: &str, cookie: Option<&str>) -> Answer {
        self.send(Method::GET, url, cookie).await
    }

    pub async fn post(&self, url: &str, cookie: Option<&str>) -> Answer {
        self.send(Method::POST, url, cookie).await
    }
}

/// Serves `app` on a free loopback port of this process; returns its base
/// URL. The server runs until the runtime ends.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A demo-server child process, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The argument that makes this test binary a demo server.
pub const CHILD_FLAG: &str = "--demo-server-child";

/// Starts this test binary again as a demo server with `args` (the
/// example's flags), and waits for its `listening on` line.
pub fn spawn_demo(args: &[&str]) -> Server {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .arg(CHILD_FLAG)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn demo server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line was {line:?}"))
        .to_string();
    Server { child, url }
}

/// In a child started by [`spawn_demo`]: parses the example's flags and
/// serves until killed. Returns false when this process is not a child.
pub fn run_child_if_asked() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(CHILD_FLAG) {
        return false;
    }
    let mut options = carboy_session::demo::DemoOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: None,
        session_type: "file".into(),
        url: None,
        secret: None,
        timeout: None,
    };
    let mut it = args[2..].iter();
    while let Some(flag) = it.next() {
        let value = it.next().expect("flag value").clone();
        match flag.as_str() {
            "--listen" => options.listen = value.parse().expect("listen address"),
            "--data-dir" => options.data_dir = Some(value.into()),
            "--type" => options.session_type = value,
            "--url" => options.url = Some(value),
            "--secret" => options.secret = Some(value),
            "--timeout" => options.timeout = Some(value.parse().expect("timeout")),
            other => panic!("unknown flag {other}"),
        }
    }
    // As the example does: `--type redis|memcached` find their backends.
    carboy_redis::register().expect("register the redis backend");
    carboy_memcached::register().expect("register the memcached backend");
    if let Err(e) = runtime().block_on(carboy_session::demo::run(options)) {
        eprintln!("demo server: {e}");
        std::process::exit(1);
    }
    true
}

/// The runtime of a test or a demo child: two workers, timers and I/O.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

static SKIPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by a test that returns early because something it needs is not
/// there (after printing why): [`run_tests`] reports it as skipped.
pub fn mark_skipped() {
    SKIPPED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The main of a `harness = false` test binary: runs each named test,
/// catching its panic, prints `test NAME ... ok|skipped|FAILED` and a
/// summary, and exits with 1 if any failed.
pub fn run_tests(tests: &[(&str, fn())]) {
    use std::sync::atomic::Ordering;
    let (mut failed, mut skipped) = (0, 0);
    for (name, test) in tests {
        SKIPPED.store(false, Ordering::SeqCst);
        match std::panic::catch_unwind(test) {
            Ok(()) if SKIPPED.load(Ordering::SeqCst) => {
                println!("test {name} ... skipped");
                skipped += 1;
            }
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!(
        "{} passed, {skipped} skipped, {failed} failed",
        tests.len() - failed - skipped
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
