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
//! Settings (environment): `SESSIONS_BENCH_CONNECTIONS` (default 16),
//! `SESSIONS_BENCH_MS` measured per run (default 1000),
//! `SESSIONS_BENCH_WARMUP_MS` before each run (default 300),
//! `SESSIONS_BENCH_ROUNDS` (default 7: in each round every row runs once
//! paired with a run of the baseline right beside it, before it in even
//! rounds and after it in odd ones; shown: the median requests/s, and the
//! median and range of each pair's ratio, so that the machine's drift
//! between rows cancels out),
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use carboy::cache::CacheManager;
use carboy_session::{SessionConfig, SessionType};
use carboy_tower_sessions::{CarboyStore, SessionLockLayer, SessionLocks};
use support::Client;
use tower_sessions::MemoryStore;

/// How [`drive`] loads a server.
#[derive(Clone, Copy, Debug)]
struct Workload {
    /// Keep-alive connections, each with its own session, each sending
    /// its next request when the previous response arrived.
    connections: usize,
    /// Requests sent before counting starts.
    warmup: Duration,
    /// How long requests are counted.
    measure: Duration,
}

/// Serves `app` on a loopback port and loads it with `workload`: every
/// connection sends `GET /count` back to back with its session cookie and
/// checks that its count goes up by one each time. Returns requests per
/// second over the measured interval.
async fn drive(app: Router, workload: Workload) -> Result<f64, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..workload.connections {
        let (counting, stop, counted) = (
            Arc::clone(&counting),
            Arc::clone(&stop),
            Arc::clone(&counted),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&[addr]).await?;
            let mut expected = 1;
            while !stop.load(Ordering::Relaxed) {
                let got = client.count().await?;
                if got != expected {
                    return Err(format!("connection {c}: count {got}, expected {expected}"));
                }
                expected += 1;
                if counting.load(Ordering::Relaxed) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, String>(())
        }));
    }
    tokio::time::sleep(workload.warmup).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(workload.measure).await;
    let n = counted.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(|e| format!("client task: {e}"))??;
    }
    server.abort();
    Ok(n as f64 / elapsed.as_secs_f64())
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
        measure: Duration::from_millis(env_number("SESSIONS_BENCH_MS", 1000)),
    };
    let rounds = env_number("SESSIONS_BENCH_ROUNDS", 7).max(1) as usize;

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
    let run = |(name, app): &Row<'_>, round: usize| {
        let rps = runtime
            .block_on(drive(app(), workload))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!("round {}: {name}: {rps:.0} requests/s", round + 1);
        rps
    };
    // Each row is paired with a run of the baseline right beside it (before
    // it in even rounds, after it in odd ones), and its ratio is taken to
    // that run: the machine's drift between rows cancels out.
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        for i in 1..rows.len() {
            let (base, row) = if round % 2 == 0 {
                let base = run(&rows[0], round);
                (base, run(&rows[i], round))
            } else {
                let row = run(&rows[i], round);
                (run(&rows[0], round), row)
            };
            figures[0].push(base);
            figures[i].push(row);
            ratios[i].push(row / base);
        }
    }
    ratios[0] = vec![1.0];

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    println!();
    println!(
        "- workload: GET /count (read the session's counter, add one, save), \
         {} keep-alive HTTP/1.1 connections over loopback, one session each, \
         server and clients in this process on one tokio runtime; \
         {} ms warmup and {} ms measured per run, {rounds} rounds of each row \
         paired with a baseline run beside it",
        workload.connections,
        workload.warmup.as_millis(),
        workload.measure.as_millis()
    );
    println!("- machine: {nproc} CPUs (nproc), {cpu}");
    println!();
    println!(
        "| store | requests/s (median) | × MemoryStore (median of the paired runs' ratios) | range of the ratios |"
    );
    println!("|---|---:|---:|---:|");
    for (((name, _), f), r) in rows.iter().zip(&figures).zip(&ratios) {
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "| {name} | {:.0} | {:.2} | {lo:.2}–{hi:.2} |",
            median(f),
            median(r)
        );
    }
}
