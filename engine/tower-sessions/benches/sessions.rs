//! Requests per second of an axum handler that increments a session
//! counter (`GET /count`), driven over loopback keep-alive HTTP/1.1
//! connections by this benchmark itself, one session per connection, for
//! each session store; one table, ratios to tower-sessions' `MemoryStore`
//! from the same run.
//!
//! ```text
//! cargo bench -p carboy-tower-sessions --bench sessions
//! ```
//!
//! Each row is measured beside a fresh baseline server in the same
//! process: both are up at once, with their clients connected, and they
//! are loaded in turns of 100 ms (baseline, row, row, baseline, ...), so
//! that the noise of a shared machine (another guest's burst, frequency
//! changes) falls on both alike; the ratio is taken over the whole run,
//! and its spread over each fifth of it.
//!
//! Settings (environment): `SESSIONS_BENCH_CONNECTIONS` per server
//! (default 16), `SESSIONS_BENCH_MS` measured per server (default 4000),
//! `SESSIONS_BENCH_SLICE_MS` a turn (default 100),
//! `SESSIONS_BENCH_WARMUP_MS` before measuring, per server (default 300),
//! `SESSIONS_BENCH_ONLY` (`|`-separated parts: only the baseline and the
//! rows whose name holds one, e.g. `SessionLayer, file|cookie`).
//!
//! Rows: tower-sessions' layer over its `MemoryStore` (the baseline) and
//! over carboy's `CarboyStore`; carboy-session's own layer (the demo
//! server's router) on `file`, `memory` and cookie sessions. To add a row,
//! hand [`drive`] an `axum::Router` that serves `GET /count` (see `rows`
//! in `main`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use carboy::cache::CacheManager;
use carboy_session::{SessionConfig, SessionType};
use carboy_tower_sessions::{CarboyStore, SessionLockLayer, SessionLocks};
use support::Client;
use tower_sessions::MemoryStore;

/// How [`drive`] loads a pair of servers.
#[derive(Clone, Copy, Debug)]
struct Workload {
    /// Keep-alive connections per server, each with its own session, each
    /// sending its next request when the previous response arrived.
    connections: usize,
    /// Requests sent to each server before counting starts.
    warmup: Duration,
    /// How long each server's requests are counted, in all.
    measure: Duration,
    /// How long one server is loaded before the other takes its turn.
    slice: Duration,
}

/// Requests per second of a pair of servers loaded in turns.
struct PairRun {
    /// Requests per second of each server over all its slices.
    rps: [f64; 2],
    /// The second server's requests/s over the first's, in each of
    /// [`GROUPS`] consecutive groups of slices: the spread of the ratio.
    group_ratios: Vec<f64>,
    /// Process CPU time (user + system, clients included) per request of
    /// each server, in microseconds.
    cpu_us: [f64; 2],
}

/// Groups of consecutive slices whose ratios show the spread.
const GROUPS: usize = 5;

/// Process CPU time so far (user + system, every thread), from
/// `/proc/self/stat`, in clock ticks of 10 ms.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which ends at the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

/// Serves both apps on loopback ports at once, with `connections`
/// keep-alive clients each, and loads them in turns of `slice` (first,
/// second, second, first, first, ...: each turn's neighbour is the other
/// server), so that whatever the machine does meanwhile falls on both
/// alike. Every connection sends `GET /count` back to back with its
/// session cookie while its server has the turn, and checks that its count
/// goes up by one each time.
async fn drive(apps: [Router; 2], workload: Workload) -> Result<PairRun, String> {
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for app in apps {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        addrs.push(listener.local_addr().map_err(|e| e.to_string())?);
        servers.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    // The server whose turn it is (0 or 1); 2 stops every client.
    let (turn_tx, turn_rx) = tokio::sync::watch::channel(0usize);
    let counted: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut tasks = Vec::new();
    for (server, &addr) in addrs.iter().enumerate() {
        for c in 0..workload.connections {
            let mut turn = turn_rx.clone();
            let counted = Arc::clone(&counted);
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&[addr]).await?;
                let mut expected = 1;
                loop {
                    let now = *turn.borrow_and_update();
                    if now == 2 {
                        return Ok::<_, String>(());
                    }
                    if now != server {
                        turn.changed().await.map_err(|e| e.to_string())?;
                        continue;
                    }
                    let got = client.count().await?;
                    if got != expected {
                        return Err(format!(
                            "server {server}, connection {c}: count {got}, expected {expected}"
                        ));
                    }
                    expected += 1;
                    counted[server].fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    // Warm both up (sessions made, files grown), then measure in turns.
    for server in [0, 1] {
        turn_tx.send_replace(server);
        tokio::time::sleep(workload.warmup).await;
    }
    let turns = (workload.measure.as_nanos() / workload.slice.as_nanos().max(1)).max(2) as usize;
    let turns = turns.div_ceil(GROUPS) * GROUPS;
    let mut requests = [[0u64; 2]; GROUPS];
    let mut time = [[Duration::ZERO; 2]; GROUPS];
    let mut cpu = [0u64; 2];
    for t in 0..2 * turns {
        // 0, 1, 1, 0, 0, 1, 1, 0, ...
        let server = t.div_ceil(2) % 2;
        let group = t * GROUPS / (2 * turns);
        turn_tx.send_replace(server);
        let (before, ticks, start) = (
            counted[server].load(Ordering::Relaxed),
            cpu_ticks(),
            Instant::now(),
        );
        tokio::time::sleep(workload.slice).await;
        requests[group][server] += counted[server].load(Ordering::Relaxed) - before;
        time[group][server] += start.elapsed();
        cpu[server] += cpu_ticks().saturating_sub(ticks);
    }
    turn_tx.send_replace(2);
    for task in tasks {
        task.await.map_err(|e| format!("client task: {e}"))??;
    }
    for server in servers {
        server.abort();
    }
    let rate = |r: u64, t: Duration| r as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE);
    let total = |s: usize| {
        let r: u64 = requests.iter().map(|g| g[s]).sum();
        let t: Duration = time.iter().map(|g| g[s]).sum();
        (r, rate(r, t))
    };
    let ((r0, rps0), (r1, rps1)) = (total(0), total(1));
    let tick_us = 10_000.0;
    Ok(PairRun {
        rps: [rps0, rps1],
        group_ratios: requests
            .iter()
            .zip(&time)
            .map(|(r, t)| rate(r[1], t[1]) / rate(r[0], t[0]))
            .collect(),
        cpu_us: [
            cpu[0] as f64 * tick_us / r0.max(1) as f64,
            cpu[1] as f64 * tick_us / r1.max(1) as f64,
        ],
    })
}

/// A file cache manager on a fresh directory (kept until the returned
/// guard drops), with records stored with a TTL at their expiry.
fn file_manager() -> (tempfile::TempDir, CacheManager) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let manager = CacheManager::builder()
        .backend("file")
        .data_dir(dir.path())
        .stale_for(Duration::ZERO)
        .build()
        .expect("a file cache manager");
    (dir, manager)
}

fn memory_manager() -> CacheManager {
    CacheManager::builder()
        .backend("memory")
        .stale_for(Duration::ZERO)
        .build()
        .expect("a memory cache manager")
}

/// carboy-session's settings for a server-side session on `backend`
/// (sessions live an hour after last use, as in the tower-sessions rows).
fn session_config(backend: &str) -> SessionConfig {
    SessionConfig::new()
        .session_type(SessionType::Backend(backend.to_string()))
        .secret(["benchmark id-signing key"])
        .timeout(Some(Duration::from_secs(3600)))
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// A row: its name and a maker of a fresh app (each round starts with
/// empty stores).
type Row<'a> = (&'static str, Box<dyn Fn() -> Router + 'a>);

fn main() {
    let workload = Workload {
        connections: env_number("SESSIONS_BENCH_CONNECTIONS", 16) as usize,
        warmup: Duration::from_millis(env_number("SESSIONS_BENCH_WARMUP_MS", 300)),
        measure: Duration::from_millis(env_number("SESSIONS_BENCH_MS", 4000)),
        slice: Duration::from_millis(env_number("SESSIONS_BENCH_SLICE_MS", 100).max(1)),
    };

    // The file stores' directories live as long as the benchmark.
    let dirs = std::sync::Mutex::new(Vec::new());
    let dirs = &dirs;
    let rows: Vec<Row<'_>> = vec![
        (
            "tower-sessions MemoryStore (process-local map)",
            Box::new(|| support::router(MemoryStore::default())),
        ),
        (
            "tower-sessions + CarboyStore, file backend",
            Box::new(move || {
                let (dir, manager) = file_manager();
                dirs.lock().expect("dirs").push(dir);
                support::router(CarboyStore::new(&manager, "sessions").expect("store"))
            }),
        ),
        (
            "tower-sessions + CarboyStore, file backend, SessionLockLayer",
            Box::new(move || {
                let (dir, manager) = file_manager();
                let locks = SessionLocks::open(dir.path().join("sessions.request-lock"))
                    .expect("the lock file");
                dirs.lock().expect("dirs").push(dir);
                let store = CarboyStore::new(&manager, "sessions").expect("store");
                support::router(store.with_session_locks(locks)).layer(SessionLockLayer::new())
            }),
        ),
        (
            "tower-sessions + CarboyStore, memory backend",
            Box::new(|| {
                support::router(CarboyStore::new(&memory_manager(), "sessions").expect("store"))
            }),
        ),
        // carboy-session's own middleware, the demo server's router.
        (
            "carboy-session SessionLayer, file backend",
            Box::new(move || {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let config = session_config("file").data_dir(dir.path());
                dirs.lock().expect("dirs").push(dir);
                carboy_session::demo::router(config.build().expect("file sessions"))
            }),
        ),
        (
            "carboy-session SessionLayer, memory backend",
            Box::new(|| {
                let config = session_config("memory");
                carboy_session::demo::router(config.build().expect("memory sessions"))
            }),
        ),
        (
            "carboy-session SessionLayer, cookie session (signed)",
            Box::new(|| {
                let config = SessionConfig::new()
                    .session_type(SessionType::Cookie)
                    .secret(["benchmark validate key, newest"])
                    .timeout(Some(Duration::from_secs(3600)));
                carboy_session::demo::router(config.build().expect("cookie sessions"))
            }),
        ),
        (
            "carboy-session SessionLayer, cookie session (encrypted)",
            Box::new(|| {
                let config = SessionConfig::new()
                    .session_type(SessionType::Cookie)
                    .secret(["benchmark validate key, newest"])
                    .encrypt_key(["benchmark encrypt key, newest"])
                    .timeout(Some(Duration::from_secs(3600)));
                carboy_session::demo::router(config.build().expect("cookie sessions"))
            }),
        ),
    ];

    // `SESSIONS_BENCH_ONLY='SessionLayer, file|cookie'`: the baseline and
    // the rows whose name holds one of these `|`-separated parts (to
    // profile one row).
    let only = std::env::var("SESSIONS_BENCH_ONLY").unwrap_or_default();
    let words: Vec<&str> = only
        .split('|')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let rows: Vec<Row<'_>> = rows
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| {
            *i == 0 || words.is_empty() || words.iter().any(|w| name.contains(w))
        })
        .map(|(_, row)| row)
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Each row runs at once with a fresh baseline, the two loaded in turns.
    let runs: Vec<(&str, PairRun)> = rows[1..]
        .iter()
        .map(|(name, app)| {
            let run = runtime
                .block_on(drive([(rows[0].1)(), app()], workload))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            eprintln!(
                "{name}: {:.0} requests/s against {:.0} ({:.2}×)",
                run.rps[1],
                run.rps[0],
                run.rps[1] / run.rps[0]
            );
            (*name, run)
        })
        .collect();

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    println!();
    println!(
        "- workload: GET /count (read the session's counter, add one, save), \
         {} keep-alive HTTP/1.1 connections per server over loopback, one session each, \
         servers and clients in this process on one tokio runtime",
        workload.connections,
    );
    println!(
        "- each row runs beside a fresh MemoryStore server, the two loaded in turns of {} ms \
         ({} ms measured each, after {} ms of warmup each), so that the machine's noise falls \
         on both alike; the range is the ratio in each fifth of the run",
        workload.slice.as_millis(),
        workload.measure.as_millis(),
        workload.warmup.as_millis()
    );
    println!("- machine: {nproc} CPUs (nproc), {cpu}");
    println!();
    println!(
        "| store | requests/s | × MemoryStore beside it | range | CPU µs/request | MemoryStore's |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, run) in &runs {
        let (lo, hi) = run
            .group_ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "| {name} | {:.0} | {:.2} | {lo:.2}–{hi:.2} | {:.1} | {:.1} |",
            run.rps[1],
            run.rps[1] / run.rps[0],
            run.cpu_us[1],
            run.cpu_us[0],
        );
    }
}
