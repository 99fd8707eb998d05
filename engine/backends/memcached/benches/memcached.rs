//! Hits over loopback on a memcached this benchmark starts: a cache hit
//! through `get_or_create` (and `get`) against a raw client `mg` plus a
//! postcard decode of the same value, and a batch of keys with one
//! multi-get against one get per key. One run, rounds interleaved, the
//! median round reported, with the ratio to the raw get. Then, if
//! `python3` has pymemcache, python-memcached, dogpile.cache and Beaker
//! (`pip install pymemcache python-memcached dogpile.cache Beaker`), runs
//! `tools/bench/beaker/memcached_hits.py` on the same server and prints
//! their hits beside carboy's get_or_create hit.
//!
//! Then throughput, hits per second, on the same server:
//! `Cache::get_or_create` hits from `MEMCACHED_BENCH_THREADS` OS threads
//! (default 8) sharing one `Cache` (one manager), and
//! `AsyncCache::get_or_create` hits from `MEMCACHED_BENCH_TASKS` tokio
//! tasks (default 64) on a multi-thread runtime with 2 workers (the native
//! async path: memcache's async meta client, at most
//! `cache.max_connections` connections, 64 by default), each thread or
//! task cycling over 64 keys holding the same record (a creator that runs
//! is counted and fails the benchmark). The python script runs the same
//! hit loop from as many Python threads (`--threads`; pymemcache's raw
//! get, dogpile.cache, Beaker), and one table prints all five rows with
//! how many times more hits per second carboy's blocking and async rows
//! make. Each throughput row runs `MEMCACHED_BENCH_SECONDS` (default 2)
//! after a warm-up of a tenth of that (at least 0.2 s); carboy's rows run
//! before the Python ones.
//!
//! `cargo bench -p carboy-memcached --bench memcached` (needs `memcached`
//! on PATH; without it the benchmark says so and exits 0).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carboy::cache::{Backend, BackendConfig, CacheManager};
use carboy_memcached::MemcachedFactory;
use memcache::exp::MetaClient;
use serde::{Deserialize, Serialize};

#[path = "../../bench_throughput.rs"]
mod throughput;
use throughput::Throughput;

const ROUNDS: usize = 15;
const OPS: usize = 2_000;
const BATCH: usize = 10;

/// The cached value: a small record, as a web page cache would hold (the
/// shape of `memcached_hits.py`'s record).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct User {
    id: u64,
    name: String,
    email: String,
    roles: Vec<String>,
    logins: u32,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user number {id}"),
        email: format!("user{id}@example.invalid"),
        roles: vec!["reader".into(), "editor".into()],
        logins: 1234,
    }
}

/// memcached on a free loopback port, killed on drop (the benchmark's own
/// copy of what `carboy-tests`' launcher does: a bench cannot depend on
/// the test crate).
struct Server(Child, u16);

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut command = Command::new("memcached");
        command
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-t",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        if root {
            command.args(["-u", "root"]);
        }
        let child = command.spawn().ok()?;
        let server = Server(child, port);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let mut buf = [0u8; 32];
                if s.write_all(b"version\r\n").is_ok()
                    && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"VERSION"))
                {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nanoseconds per operation of each round of `f` (which runs `OPS`
/// operations), interleaved with the other workloads by the caller.
fn round(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64 / OPS as f64
}

/// A named workload: `OPS` operations per call.
type Workload<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// The server's `cmd_get` (keys fetched, all get commands and `mg`).
fn cmd_get(addr: &str) -> u64 {
    let mut s = TcpStream::connect(addr).expect("a stats connection");
    s.write_all(b"stats\r\n").expect("stats");
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with("END\r\n") {
        let n = s.read(&mut buf).expect("stats reply");
        assert!(n > 0, "memcached closed the stats connection");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("STAT cmd_get "))
        .and_then(|v| v.trim().parse().ok())
        .expect("STAT cmd_get in the stats reply")
}

/// Runs `tools/bench/beaker/memcached_hits.py` against the same server and
/// prints its rows (pymemcache's raw get, dogpile.cache's and Beaker's
/// memcached backends) beside carboy's get_or_create hit (`hit_ns`, the
/// keys it fetches per call in `hit_gets`); says why when it cannot.
/// Returns its throughput rows (name, hits per second from `tp.threads`
/// Python threads).
fn python_rows(
    url: &str,
    n: usize,
    hit_ns: f64,
    hit_gets: f64,
    tp: &Throughput,
) -> Vec<(String, f64)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tools/bench/beaker/memcached_hits.py");
    let pip = "pip install pymemcache python-memcached dogpile.cache Beaker";
    let out = match Command::new("python3")
        .arg(&script)
        .args(["--url", url, "--n", &n.to_string()])
        .args(["--rounds", &ROUNDS.to_string()])
        .args(["--threads", &tp.threads.to_string()])
        .args(["--seconds", &tp.seconds.as_secs_f64().to_string()])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("");
            println!(
                "python rows skipped: {} failed ({pip}): {last}",
                script.display()
            );
            return Vec::new();
        }
        Err(e) => {
            println!("python rows skipped: python3 did not run ({pip}): {e}");
            return Vec::new();
        }
    };
    println!();
    println!(
        "Python on the same server, run after the rows above: {ROUNDS} interleaved rounds of {} calls; median round",
        n / ROUNDS
    );
    println!("| what | per call | keys fetched per call | carboy's hit is faster by |");
    println!("|---|---:|---|---:|");
    println!(
        "| carboy Cache::get_or_create, a hit (above) | {:.1} µs | {hit_gets:.2} get | 1.00× |",
        hit_ns / 1000.0
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions = "";
    let mut throughput = Vec::new();
    for line in text.lines() {
        match line.split('\t').collect::<Vec<_>>().as_slice() {
            ["throughput", name, rate, _threads] => {
                if let Ok(rate) = rate.parse::<f64>() {
                    throughput.push((name.to_string(), rate));
                }
            }
            ["row", name, micros, cmds] => {
                if let Ok(micros) = micros.parse::<f64>() {
                    let ratio = micros * 1000.0 / hit_ns;
                    println!("| {name} | {micros:.1} µs | {cmds} | {ratio:.2}× |");
                }
            }
            ["versions", v] => versions = v,
            _ => {}
        }
    }
    if !versions.is_empty() {
        println!("python: {versions}");
    }
    throughput
}

fn main() {
    let Some(server) = Server::start() else {
        println!("memcached benchmark: SKIPPED (no memcached on PATH)");
        return;
    };
    let url = server.address();
    let manager = CacheManager::builder()
        .backend_factory("memcached", Arc::new(MemcachedFactory::new()))
        .option("url", url.as_str())
        .expire(Duration::from_secs(3600))
        .build()
        .expect("manager");
    let cache = manager.get_cache("bench").expect("namespace");
    let keys: Vec<String> = (0..BATCH).map(|i| format!("user:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        cache.set(k.as_str(), &user(i as u64)).expect("set");
    }

    // The raw client: the same server, a value stored as postcard bytes.
    let client = MetaClient::builder()
        .connect(url.as_str())
        .expect("raw client");
    let raw_bytes = postcard::to_allocvec(&user(0)).expect("encode");
    client
        .set("raw:user:0", &raw_bytes)
        .send()
        .expect("raw set");
    let mut config = BackendConfig::new("memcached");
    config.options.insert("url".into(), url.clone());
    let ns = MemcachedFactory::new()
        .open_namespace("bench", &config)
        .expect("raw namespace");
    let key_bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();

    let want = user(0);
    let mut workloads: Vec<Workload> = vec![
        (
            "raw client mg + postcard decode",
            Box::new(|| {
                for _ in 0..OPS {
                    let got = client.get("raw:user:0").send().expect("raw get");
                    let u: User =
                        postcard::from_bytes(got.value.as_deref().expect("hit")).expect("decode");
                    assert_eq!(u.id, want.id);
                }
            }),
        ),
        (
            "Backend::get (carboy-memcached, bytes)",
            Box::new(|| {
                for _ in 0..OPS {
                    assert!(ns.get(b"user:0").expect("get").is_some());
                }
            }),
        ),
        (
            "Cache::get (markers read + value)",
            Box::new(|| {
                for _ in 0..OPS {
                    let u: User = cache.get("user:0").expect("get").expect("hit");
                    assert_eq!(u.id, 0);
                }
            }),
        ),
        (
            "Cache::get_or_create, a hit",
            Box::new(|| {
                for _ in 0..OPS {
                    let u: User = cache
                        .get_or_create("user:0", || Ok::<_, String>(user(0)))
                        .expect("get_or_create");
                    assert_eq!(u.id, 0);
                }
            }),
        ),
        (
            "batches of 10 keys, one Backend::get each (per key)",
            Box::new(|| {
                for _ in 0..OPS / BATCH {
                    for k in &key_bytes {
                        assert!(ns.get(k).expect("get").is_some());
                    }
                }
            }),
        ),
        (
            "batches of 10 keys, one get_many (multi-get; per key)",
            Box::new(|| {
                for _ in 0..OPS / BATCH {
                    let got = ns.get_many(&key_bytes).expect("get_many");
                    assert!(got.iter().all(Option::is_some));
                }
            }),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    // One warm-up round, then interleaved rounds.
    for (_, f) in workloads.iter_mut() {
        round(f.as_mut());
    }
    for _ in 0..ROUNDS {
        for (i, (_, f)) in workloads.iter_mut().enumerate() {
            samples[i].push(round(f.as_mut()));
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let raw = medians[0];
    println!(
        "memcached over loopback ({}), one memcached 1.6 thread (-t 1)",
        machine()
    );
    println!(
        "{ROUNDS} interleaved rounds of {OPS} operations (batches: {} of {BATCH} keys); median round",
        OPS / BATCH
    );
    println!();
    println!("| workload | per operation | vs raw mg + decode |");
    println!("|---|---:|---:|");
    for ((name, _), m) in workloads.iter().zip(&medians) {
        println!("| {name} | {:.1} µs | {:.2}x |", m / 1000.0, m / raw);
    }
    let hit_ns = workloads
        .iter()
        .zip(&medians)
        .find_map(|((name, _), m)| (*name == "Cache::get_or_create, a hit").then_some(*m))
        .expect("the get_or_create row");
    drop(workloads);
    let before = cmd_get(&url);
    for _ in 0..1_000 {
        let _: User = cache
            .get_or_create("user:0", || Ok::<_, String>(user(0)))
            .expect("get_or_create");
    }
    let hit_gets = (cmd_get(&url) - before) as f64 / 1_000.0;

    let tp = Throughput::from_env("MEMCACHED");
    let carboy = tp.carboy(&cache, &cache.to_async(), || user(0));
    let python = python_rows(&url, ROUNDS * OPS, hit_ns, hit_gets, &tp);
    tp.print("memcached over loopback", carboy, &python);
    drop(server);
}
