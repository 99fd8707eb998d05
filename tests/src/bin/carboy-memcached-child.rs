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

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use carboy::cache::{CacheManager, Invalidation};
use carboy_tests::cache_child::{dogpile, fail, print_entry, say};

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
