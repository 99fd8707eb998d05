//! tower-sessions' `SessionManagerLayer` over `CarboyStore` on the `file`
//! backend, in two real server processes on one data directory (this test
//! binary re-executes itself as each server), driven over loopback HTTP by
//! 8 clients alternating servers: sessions shared between processes; exact
//! counts for distinct sessions at once, for one session whose requests
//! take turns, and, under `SessionLockLayer`, for 8 clients at once on one
//! session (the counter test); without that layer, measured and
//! printed, the updates one session's overlapping requests lose (the
//! layer loads before and saves after each request).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use carboy::cache::CacheManager;
use carboy_tower_sessions::{CarboyStore, SessionLockLayer, SessionLocks};
use support::Client;

/// Set in a server process: the data directory.
const SERVE_ENV: &str = "CARBOY_TOWER_SESSIONS_SERVE";
/// Set in a server process that serves under `SessionLockLayer`.
const LOCKS_ENV: &str = "CARBOY_TOWER_SESSIONS_LOCKS";
const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: u64 = 25;

/// A server process: killed and reaped when dropped.
struct Server {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &std::path::Path, locks: bool) -> Server {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        if locks {
            command.env(LOCKS_ENV, "1");
        }
        let mut child = command
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

/// The server process: the counter app over the carboy store on `dir`
/// (with `locks`, under `SessionLockLayer`), until its stdin closes (the
/// test ended or died).
fn serve(dir: &str, locks: bool) {
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
        let app = if locks {
            let path = std::path::Path::new(dir).join("sessions.request-lock");
            let locks = SessionLocks::open(path)
                .expect("the session lock file")
                .timeout(Duration::from_secs(10));
            support::router(store.with_session_locks(locks)).layer(SessionLockLayer::new())
        } else {
            support::router(store)
        };
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
        axum::serve(listener, app).await.expect("serve");
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
        Setup::with_locks(false)
    }

    /// Servers under `SessionLockLayer` (`locks`) or without.
    fn with_locks(locks: bool) -> Setup {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let servers = [
            Server::start(dir.path(), locks),
            Server::start(dir.path(), locks),
        ];
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

/// 8 clients share one session and send at once, alternating servers
/// (the first request made the session): the count after all of them, as
/// the servers stored it.
fn one_session_at_once(locks: bool) -> (u64, u64) {
    let setup = Setup::with_locks(locks);
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
                let mut seen = Vec::new();
                for _ in 0..REQUESTS_PER_CLIENT {
                    seen.push(client.count().await?);
                }
                Ok::<_, String>(seen)
            }));
        }
        let mut seen = Vec::new();
        for task in tasks {
            seen.extend(
                task.await
                    .expect("client task")
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let sent = 1 + CLIENTS as u64 * REQUESTS_PER_CLIENT;
        let counted = first.count().await.unwrap_or_else(|e| panic!("{e}")) - 1;
        if locks {
            // Serialised: each request saw a different count.
            seen.sort_unstable();
            let expected: Vec<u64> = (2..=sent).collect();
            assert_eq!(seen, expected, "each request read the one before it");
        }
        (sent, counted)
    })
}

/// The counter test: under `SessionLockLayer`, 8 clients at once on
/// one session across two processes count every request.
fn one_session_at_once_with_session_locks_counts_exactly() {
    let (sent, counted) = one_session_at_once(true);
    println!("  with SessionLockLayer: {sent} increments sent, {counted} counted");
    assert_eq!(counted, sent, "no update lost");
}

/// Without `SessionLockLayer`, tower-sessions' layer loads the record before
/// the handler and saves it after: two overlapping requests both read n and
/// both write n + 1. Measured and printed; asserted: every request answered
/// and the count is between 1 and the number of requests.
fn one_session_at_once_without_locks_loses_updates_measured() {
    let (sent, counted) = one_session_at_once(false);
    println!(
        "  without SessionLockLayer: {sent} increments sent, {counted} counted, {} lost",
        sent - counted.min(sent)
    );
    assert!(
        (1..=sent).contains(&counted),
        "the count {counted} is outside 1..={sent}"
    );
}

fn main() {
    if let Ok(dir) = std::env::var(SERVE_ENV) {
        serve(&dir, std::env::var_os(LOCKS_ENV).is_some());
        return;
    }
    let tests: [(&str, fn()); 4] = [
        (
            "distinct_sessions_at_once_count_exactly_across_processes",
            distinct_sessions_at_once_count_exactly_across_processes,
        ),
        (
            "one_session_in_turn_counts_exactly_across_processes",
            one_session_in_turn_counts_exactly_across_processes,
        ),
        (
            "one_session_at_once_with_session_locks_counts_exactly",
            one_session_at_once_with_session_locks_counts_exactly,
        ),
        (
            "one_session_at_once_without_locks_loses_updates_measured",
            one_session_at_once_without_locks_loses_updates_measured,
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
