//! A cache worker process on a memcached server, for
//! `tests/tests/memcached_processes.rs`.
//!
//! `carboy-memcached-child <url> <lock_lease secs> <subcommand> …`. Every
//! subcommand builds the same manager: `cache.type = ext:memcached` (through
//! `carboy_memcached::register`), `cache.url = <url>`, default expiry 60 s.
//!
//! * `dogpile <threads> <serve_stale 0|1> <dir>`: every thread calls
//!   `get_or_create("k")` in namespace `dogpile` at once and prints
//!   `got <value>`. The creator takes an exclusive non-blocking flock on
//!   `<dir>/assert.lock` (printing `DOUBLE` and exiting 3 if another
//!   creator holds it), prints `creating`, waits for a line on stdin,
//!   appends its pid to `<dir>/creators`, and returns `new`.
//! * `hold <key>`: `get_or_create(<key>)` in namespace `dogpile` whose
//!   creator prints `creating` and then waits for stdin to close (the test
//!   kills the process while it holds the creation lock).
//! * `create <key>`: `get_or_create(<key>)` whose creator prints
//!   `creating`; then prints `got <value>` (`new <pid>` when it created).
//! * `get <ns> <key>`: prints the fresh value, `stale <value>` or `none`.
//! * `set <ns> <key> <value>`
//! * `invalidate <ns> hard|soft`: the whole namespace.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;

use carboy::cache::{Cache, CacheManager, Invalidation};

fn manager(url: &str, lease: &str, serve_stale: bool) -> CacheManager {
    carboy_memcached::register().unwrap_or_else(|e| fail(&e.to_string()));
    CacheManager::builder()
        .backend("ext:memcached")
        .option("url", url)
        .option("lock_lease", lease)
        .expire(Duration::from_secs(60))
        .serve_stale(serve_stale)
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()))
}

fn fail(msg: &str) -> ! {
    eprintln!("carboy-memcached-child: {msg}");
    std::process::exit(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn print_entry(cache: &Cache, key: &str) {
    match cache.get_entry::<String>(key) {
        Ok(Some(e)) if e.stale => say(&format!("stale {}", e.value)),
        Ok(Some(e)) => say(&e.value),
        Ok(None) => say("none"),
        Err(e) => fail(&e.to_string()),
    }
}

fn dogpile(cache: &Cache, threads: usize, dir: &Path) {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                say("calling");
                let got = cache.get_or_create("k", || {
                    let assert = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(dir.join("assert.lock"))
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    if assert.try_lock().is_err() {
                        say("DOUBLE");
                        std::process::exit(3);
                    }
                    say("creating");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line).unwrap_or(0);
                    let mut log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join("creators"))
                        .unwrap_or_else(|e| fail(&e.to_string()));
                    let _ = writeln!(log, "{}", std::process::id());
                    drop(assert);
                    Ok::<_, std::io::Error>("new".to_string())
                });
                match got {
                    Ok(v) => say(&format!("got {v}")),
                    Err(e) => fail(&e.to_string()),
                }
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| fail("missing argument"))
    };
    let (url, lease) = (arg(0), arg(1));
    let cache = |ns: &str, serve_stale: bool| {
        manager(url, lease, serve_stale)
            .get_cache(ns)
            .unwrap_or_else(|e| fail(&e.to_string()))
    };
    match arg(2) {
        "dogpile" => dogpile(
            &cache("dogpile", arg(4) == "1"),
            arg(3).parse().unwrap_or_else(|_| fail("threads")),
            Path::new(arg(5)),
        ),
        "hold" => {
            let c = cache("dogpile", true);
            let _ = c.get_or_create(arg(3), || {
                say("creating");
                let mut rest = Vec::new();
                let _ = std::io::stdin().lock().read_to_end(&mut rest);
                Ok::<_, std::io::Error>("held".to_string())
            });
        }
        "create" => {
            let c = cache("dogpile", true);
            let got = c.get_or_create(arg(3), || {
                say("creating");
                Ok::<_, std::io::Error>(format!("new {}", std::process::id()))
            });
            match got {
                Ok(v) => say(&format!("got {v}")),
                Err(e) => fail(&e.to_string()),
            }
        }
        "get" => print_entry(&cache(arg(3), true), arg(4)),
        "set" => cache(arg(3), true)
            .set(arg(4), arg(5))
            .unwrap_or_else(|e| fail(&e.to_string())),
        "invalidate" => {
            let how = match arg(4) {
                "hard" => Invalidation::Hard,
                "soft" => Invalidation::Soft,
                _ => fail("expected hard or soft"),
            };
            cache(arg(3), true)
                .invalidate_all(how)
                .unwrap_or_else(|e| fail(&e.to_string()))
        }
        other => fail(&format!("unknown subcommand {other}")),
    }
}
