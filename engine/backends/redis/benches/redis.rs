//! The redis backend's hit cost, over loopback, against a `redis-server`
//! this benchmark starts on a free port (and kills at the end): a hit
//! through `Cache::get_or_create` and `Cache::get`, against a raw client
//! `GET` plus decode of the same value, in one run; prints the times per
//! call, the ratio, and how many redis commands one hit sends (from the
//! server's `INFO commandstats`). The async rows do the same through
//! carboy's `AsyncCache` (the backend's native async path, on a
//! current-thread tokio runtime) against a raw `MultiplexedConnection`
//! `GET` plus decode on the same runtime; each call of both is one
//! `block_on`. Then, if `python3` has redis-py,
//! dogpile.cache and Beaker (`pip install redis dogpile.cache Beaker`),
//! runs `tools/bench/beaker/redis_hits.py` on the same server and prints
//! their hits beside carboy's.
//!
//!
//! Then throughput, hits per second, on the same server: `Cache::get_or_create`
//! hits from `REDIS_BENCH_THREADS` OS threads (default 8) sharing one `Cache`
//! (one manager), and `AsyncCache::get_or_create` hits from
//! `REDIS_BENCH_TASKS` tokio tasks (default 64) on a multi-thread runtime
//! with 2 workers (the native async path: one multiplexed connection), each
//! thread or task cycling over 64 keys holding the same record (a creator
//! that runs is counted and fails the benchmark). The python script runs
//! the same hit loop from as many Python threads (`--threads`; redis-py's
//! raw GET, dogpile.cache, Beaker), and one table prints all five rows with
//! how many times more hits per second carboy's blocking and async rows
//! make. Each throughput row runs `REDIS_BENCH_SECONDS` (default 2) after a
//! warm-up of a tenth of that (at least 0.2 s); carboy's rows run before the
//! Python ones.
//!
//! `cargo bench -p carboy-redis --bench redis` (set `CARBOY_BENCH_N` for
//! the number of calls per row; default 20000). Skips, saying so, when
//! `redis-server` is not installed.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carboy::cache::{CacheManager, Codec, Postcard};
use serde::{Deserialize, Serialize};

#[path = "../../bench_throughput.rs"]
mod throughput;
use throughput::Throughput;

/// A typical cached record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    roles: Vec<String>,
    logins: u32,
}

fn user() -> User {
    User {
        id: 42,
        name: "Alice Example".into(),
        email: "alice@example.invalid".into(),
        roles: vec!["admin".into(), "editor".into()],
        logins: 1234,
    }
}

/// A redis-server on a free loopback port, killed on drop.
struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn start() -> Option<Server> {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("skipped: redis-server is not installed (Debian package redis-server)");
        return None;
    }
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut server = Server {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if pings(port) {
                return Some(server);
            }
            if let Ok(Some(_)) = server.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = server.child.kill();
    }
    panic!("redis-server did not start");
}

/// Calls of `name` in the server's `INFO commandstats`, by command.
fn command_calls(con: &mut redis::Connection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// Commands sent per call while `f` ran `n` calls (INFO itself excluded).
fn commands_per_call(con: &mut redis::Connection, n: u64, f: impl FnOnce()) -> String {
    let before = command_calls(con);
    f();
    let after = command_calls(con);
    let mut parts = Vec::new();
    for (name, calls) in &after {
        if name == "info" {
            continue;
        }
        let was = before
            .iter()
            .find(|(b, _)| b == name)
            .map_or(0, |(_, c)| *c);
        if calls > &was {
            parts.push(format!(
                "{:.2} {}",
                (calls - was) as f64 / n as f64,
                name.to_uppercase()
            ));
        }
    }
    parts.join(" + ")
}

/// The median time per call of each row, measured in `ROUNDS` rounds that
/// take turns (raw, carboy, raw, …), so that a load change on a shared
/// machine hits every row alike.
fn interleaved(n: u64, rows: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    let per_round = (n / ROUNDS).max(1);
    let mut samples = vec![Vec::new(); rows.len()];
    for row in rows.iter_mut() {
        for _ in 0..per_round / 10 {
            row();
        }
    }
    for _ in 0..ROUNDS {
        for (i, row) in rows.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..per_round {
                row();
            }
            samples[i].push(started.elapsed() / per_round as u32);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s[s.len() / 2]
        })
        .collect()
}

/// Rounds of [`interleaved`].
const ROUNDS: u64 = 9;

/// Runs `tools/bench/beaker/redis_hits.py` against the same server and
/// prints its rows (dogpile.cache's and Beaker's redis backends, and
/// redis-py's raw GET) beside carboy's hit; says why when it cannot.
/// Returns its throughput rows (name, hits per second from `tp.threads`
/// Python threads).
fn python_rows(url: &str, n: u64, carboy_hit: Duration, tp: &Throughput) -> Vec<(String, f64)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tools/bench/beaker/redis_hits.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--url")
        .arg(url)
        .arg("--n")
        .arg(n.to_string())
        .args(["--threads", &tp.threads.to_string()])
        .args(["--seconds", &tp.seconds.as_secs_f64().to_string()])
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            println!(
                "python rows skipped: {} failed (pip install redis dogpile.cache Beaker): {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            return Vec::new();
        }
        Err(e) => {
            println!("python rows skipped: python3 did not run: {e}");
            return Vec::new();
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    println!();
    println!("Python on the same server, run after the rows above:");
    println!("| what | per call | commands per call | carboy's get_or_create hit, faster by |");
    println!("|---|---|---|---|");
    let mut versions = "";
    let mut throughput = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["throughput", name, rate, _threads] => {
                if let Ok(rate) = rate.parse::<f64>() {
                    throughput.push((name.to_string(), rate));
                }
            }
            ["row", name, micros, cmds] => {
                let Ok(micros) = micros.parse::<f64>() else {
                    continue;
                };
                println!(
                    "| {name} | {micros:.1}µs | {cmds} | {:.2}× |",
                    micros / (carboy_hit.as_secs_f64() * 1e6)
                );
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
    let Some(server) = start() else {
        return;
    };
    let n: u64 = std::env::var("CARBOY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let url = format!("redis://127.0.0.1:{}/0", server.port);
    let client = redis::Client::open(url.as_str()).expect("a redis client");
    let mut raw = client.get_connection().expect("a raw connection");
    let mut stats = client.get_connection().expect("a stats connection");

    // The raw baseline: the same value, encoded alone, GET and decode.
    let mut encoded = Vec::new();
    Postcard.encode(&user(), &mut encoded).expect("encode");
    let _: () = redis::cmd("SET")
        .arg("raw:user")
        .arg(&encoded)
        .query(&mut raw)
        .expect("SET");
    let raw_get = || {
        let bytes: Vec<u8> = redis::cmd("GET")
            .arg("raw:user")
            .query(&mut raw)
            .expect("GET");
        let u: User = Postcard.decode(&bytes).expect("decode");
        black_box(u);
    };
    let mut raw_get = raw_get;
    let raw_cmds = commands_per_call(&mut stats, 1_000, || {
        for _ in 0..1_000 {
            raw_get();
        }
    });

    let manager = CacheManager::builder()
        .backend_factory("redis", Arc::new(carboy_redis::RedisFactory::new()))
        .option("url", url.as_str())
        .expire(Duration::from_secs(3600))
        .region(
            "short_term",
            carboy::cache::RegionSettings::new().expire(Duration::from_secs(3600)),
        )
        .build()
        .expect("a manager on redis");
    let users = manager.get_cache("users").expect("a namespace");
    let make = || Ok::<_, std::convert::Infallible>(user());
    let created: User = users.get_or_create("u42", make).expect("created");
    assert_eq!(created, user());
    let mut hit = || {
        let u: User = users.get_or_create("u42", make).expect("a hit");
        black_box(u);
    };
    let hit_cmds = commands_per_call(&mut stats, 1_000, || {
        for _ in 0..1_000 {
            hit();
        }
    });
    let regional = manager
        .region("short_term")
        .and_then(|r| r.cache("users"))
        .expect("a region's namespace");
    let _: User = regional.get_or_create("u42", make).expect("created");
    let mut region_hit = || {
        let u: User = regional.get_or_create("u42", make).expect("a hit");
        black_box(u);
    };
    let region_cmds = commands_per_call(&mut stats, 1_000, || {
        for _ in 0..1_000 {
            region_hit();
        }
    });
    let mut get = || {
        let u: Option<User> = users.get("u42").expect("a hit");
        black_box(u.expect("present"));
    };
    let backend = Arc::clone(users.backend());
    let mut backend_get = || {
        black_box(backend.get(b"u42").expect("GET").expect("present"));
    };
    let times = interleaved(
        n,
        &mut [
            &mut raw_get,
            &mut hit,
            &mut region_hit,
            &mut get,
            &mut backend_get,
        ],
    );
    let (raw_ns, hit_ns, region_ns, get_ns, backend_ns) =
        (times[0], times[1], times[2], times[3], times[4]);

    // The async rows, on one current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut araw = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("a raw async connection");
    let mut araw_get = || {
        rt.block_on(async {
            let bytes: Vec<u8> = redis::cmd("GET")
                .arg("raw:user")
                .query_async(&mut araw)
                .await
                .expect("GET");
            let u: User = Postcard.decode(&bytes).expect("decode");
            black_box(u);
        })
    };
    let araw_cmds = commands_per_call(&mut stats, 1_000, || {
        for _ in 0..1_000 {
            araw_get();
        }
    });
    let ausers = users.to_async();
    let amake = || async { Ok::<_, std::convert::Infallible>(user()) };
    let mut ahit = || {
        rt.block_on(async {
            let u: User = ausers.get_or_create("u42", amake).await.expect("a hit");
            black_box(u);
        })
    };
    let ahit_cmds = commands_per_call(&mut stats, 1_000, || {
        for _ in 0..1_000 {
            ahit();
        }
    });
    let atimes = interleaved(n, &mut [&mut araw_get, &mut ahit]);
    let (araw_ns, ahit_ns) = (atimes[0], atimes[1]);

    println!(
        "redis backend, loopback, one thread, {n} calls per row, redis-server on port {}",
        server.port
    );
    println!("| what | per call | commands per call | vs raw |");
    println!("|---|---|---|---|");
    println!("| raw client GET + postcard decode | {raw_ns:?} | {raw_cmds} | 1.00× |");
    println!(
        "| Cache::get_or_create hit | {hit_ns:?} | {hit_cmds} | {:.2}× |",
        hit_ns.as_secs_f64() / raw_ns.as_secs_f64()
    );
    println!(
        "| Cache::get_or_create hit in a region | {region_ns:?} | {region_cmds} | {:.2}× |",
        region_ns.as_secs_f64() / raw_ns.as_secs_f64()
    );
    println!(
        "| Cache::get hit | {get_ns:?} | | {:.2}× |",
        get_ns.as_secs_f64() / raw_ns.as_secs_f64()
    );
    println!(
        "| Backend::get (one GET, no decode) | {backend_ns:?} | 1 GET | {:.2}× |",
        backend_ns.as_secs_f64() / raw_ns.as_secs_f64()
    );
    println!(
        "| async: raw MultiplexedConnection GET + postcard decode | {araw_ns:?} | {araw_cmds} | {:.2}× (async raw 1.00×) |",
        araw_ns.as_secs_f64() / raw_ns.as_secs_f64()
    );
    println!(
        "| async: AsyncCache::get_or_create hit (native path) | {ahit_ns:?} | {ahit_cmds} | {:.2}× (async raw {:.2}×) |",
        ahit_ns.as_secs_f64() / raw_ns.as_secs_f64(),
        ahit_ns.as_secs_f64() / araw_ns.as_secs_f64()
    );

    let tp = Throughput::from_env("REDIS");
    let carboy = tp.carboy(&users, &ausers, user);
    let python = python_rows(&url, n, hit_ns, &tp);
    batched(&users, &mut stats, n);
    tp.print("redis backend, loopback", carboy, &python);
}

/// Ten keys a batch: `Cache::get_many` (one MGET) against ten `Cache::get`s,
/// per key, alternating.
fn batched(users: &carboy::cache::Cache, stats: &mut redis::Connection, n: u64) {
    let keys: Vec<String> = (0..10).map(|i| format!("batch{i}")).collect();
    for key in &keys {
        users.set(key, &user()).expect("set");
    }
    let mut many = || {
        let got: Vec<Option<User>> = users.get_many(&keys).expect("get_many");
        black_box(got);
    };
    let many_cmds = commands_per_call(stats, 100, || {
        for _ in 0..100 {
            many();
        }
    });
    let mut one_by_one = || {
        for key in &keys {
            let got: Option<User> = users.get(key).expect("get");
            black_box(got);
        }
    };
    let times = interleaved((n / 10).max(1), &mut [&mut many, &mut one_by_one]);
    println!("| batches of 10 keys | per key | commands per batch | |");
    println!("|---|---|---|---|");
    println!(
        "| Cache::get_many (one MGET) | {:?} | {many_cmds} | |",
        times[0] / 10
    );
    println!("| ten Cache::get | {:?} | | |", times[1] / 10);
}
