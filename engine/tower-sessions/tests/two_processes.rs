//! tower-sessions' `SessionManagerLayer` over `CarboyStore` on the `file`
//! backend, in two real server processes on one data directory (this test
//! binary re-executes itself as each server), driven over loopback HTTP by
//! 8 clients alternating servers: what is guaranteed (sessions shared
//! between processes; exact counts for distinct sessions at once, and for
//! one session whose requests do not overlap) and, measured and printed,
//! what is not (one session's overlapping requests lose updates: the
//! layer loads before and saves after each request).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use carboy::cache::CacheManager;
use carboy_tower_sessions::CarboyStore;
use support::Client;

/// Set in a server process: the data directory.
const SERVE_ENV: &str = "CARBOY_TOWER_SESSIONS_SERVE";
const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: u64 = 25;

/// A server process: killed and reaped when dropped.
struct Server {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .env(SERVE_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a server process");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        // The ready line; EOF (an empty line) if the server died.
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("server's first line: {line:?}"));
        Server {
            child,
            _stdin: stdin,
            addr,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server process: the counter app over the carboy store on `dir`,
/// until its stdin closes (the test ended or died).
fn serve(dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let manager = CacheManager::builder()
            .backend("file")
            .data_dir(dir)
            .stale_for(Duration::ZERO)
            .build()
            .expect("a file cache manager");
        let store = CarboyStore::new(&manager, "sessions").expect("the sessions namespace");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        println!("listening on http://{addr}");
        std::io::stdout().flush().expect("flush stdout");
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        axum::serve(listener, support::router(store))
            .await
            .expect("serve");
    });
}

/// Two servers on one fresh data directory, and a runtime for the clients.
struct Setup {
    _dir: tempfile::TempDir,
    servers: [Server; 2],
    runtime: tokio::runtime::Runtime,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let servers = [Server::start(dir.path()), Server::start(dir.path())];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Setup {
            _dir: dir,
            servers,
            runtime,
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }
}

/// 8 clients at once, each with its own session, each request to the other
/// server than the last: every client counts 1, 2, …, 25, so every write
/// of one process was read by the other.
fn distinct_sessions_at_once_count_exactly_across_processes() {
    let setup = Setup::new();
    let addrs = setup.addrs();
    setup.runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let addrs = addrs.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&addrs).await?;
                for expected in 1..=REQUESTS_PER_CLIENT {
                    let got = client.count().await?;
                    if got != expected {
                        return Err(format!("client {c}: request {expected} answered {got}"));
                    }
                }
                Ok::<_, String>(client.cookie)
            }));
        }
        let mut cookies = Vec::new();
        for task in tasks {
            let cookie = task
                .await
                .expect("client task")
                .unwrap_or_else(|e| panic!("{e}"));
            cookies.push(cookie.expect("a session cookie"));
        }
        cookies.sort();
        cookies.dedup();
        assert_eq!(cookies.len(), CLIENTS, "each client has its own session");
    });
}

/// 8 clients share one session and take turns (each request waits for the
/// previous response), alternating servers: the counts are 1..=200 in
/// order.
fn one_session_in_turn_counts_exactly_across_processes() {
    let setup = Setup::new();
    let addrs = setup.addrs();
    setup.runtime.block_on(async {
        let mut first = Client::connect(&addrs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.count().await, Ok(1));
        let cookie = first.cookie.clone().expect("a session cookie");
        // The turn: whoever holds the lock has the only request in flight.
        let turn = Arc::new(tokio::sync::Mutex::new(Vec::<u64>::new()));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (addrs, cookie, turn) = (addrs.clone(), cookie.clone(), Arc::clone(&turn));
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&addrs).await?;
                client.cookie = Some(cookie);
                for _ in 0..REQUESTS_PER_CLIENT {
                    let mut seen = turn.lock().await;
                    seen.push(client.count().await?);
                }
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await
                .expect("client task")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let seen = turn.lock().await.clone();
        let total = CLIENTS as u64 * REQUESTS_PER_CLIENT;
        let expected: Vec<u64> = (2..=total + 1).collect();
        assert_eq!(seen, expected, "every request saw the one before it");
    });
}

/// 8 clients share one session and send at once, alternating servers. The
/// layer loads the record before the handler and saves it after: two
/// overlapping requests both read n and both write n + 1. Measured and
/// printed; asserted: every request answered, and the count is between 1
/// and the number of requests.
fn one_session_at_once_loses_updates_measured() {
    let setup = Setup::new();
    let addrs = setup.addrs();
    setup.runtime.block_on(async {
        let mut first = Client::connect(&addrs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.count().await, Ok(1));
        let cookie = first.cookie.clone().expect("a session cookie");
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (addrs, cookie) = (addrs.clone(), cookie.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&addrs).await?;
                client.cookie = Some(cookie);
                for _ in 0..REQUESTS_PER_CLIENT {
                    client.count().await?;
                }
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await
                .expect("client task")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let sent = 1 + CLIENTS as u64 * REQUESTS_PER_CLIENT;
        let counted = first.count().await.unwrap_or_else(|e| panic!("{e}")) - 1;
        println!(
            "  one session, {CLIENTS} clients at once, 2 processes: {sent} increments sent, \
             {counted} counted, {} lost",
            sent - counted.min(sent)
        );
        assert!(
            (1..=sent).contains(&counted),
            "the count {counted} is outside 1..={sent}"
        );
    });
}

fn main() {
    if let Ok(dir) = std::env::var(SERVE_ENV) {
        serve(&dir);
        return;
    }
    let tests: [(&str, fn()); 3] = [
        (
            "distinct_sessions_at_once_count_exactly_across_processes",
            distinct_sessions_at_once_count_exactly_across_processes,
        ),
        (
            "one_session_in_turn_counts_exactly_across_processes",
            one_session_in_turn_counts_exactly_across_processes,
        ),
        (
            "one_session_at_once_loses_updates_measured",
            one_session_at_once_loses_updates_measured,
        ),
    ];
    // Like libtest: plain arguments filter by name, flags are ignored.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures: {failed:?}");
        std::process::exit(101);
    }
    println!("\ntest result: ok");
}
