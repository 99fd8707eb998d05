//! A cache-layer worker process on the redis backend, for
//! `tests/tests/redis_processes.rs`.
//!
//! Every subcommand builds the same manager: the redis backend at `<url>`
//! with key prefix `<prefix>` and creation-lock lease `<lease_ms>`, default
//! expiry 60 s, region `r` (expiry 60 s). Arguments: `<url> <prefix>
//! <lease_ms>` first, then the subcommand's.
//!
//! * `dogpile <threads> <dir>`: every thread calls `get_or_create("k")` in
//!   namespace `dogpile` at once and prints `got <value>`. The creator
//!   takes an exclusive, non-blocking flock on `<dir>/assert.lock`
//!   (printing `DOUBLE` and exiting 3 if another creator holds it),
//!   prints `creating`, waits for a line on stdin, appends its pid to
//!   `<dir>/creators`, and returns `new`.
//! * `create <serve_stale 0|1>`: one `get_or_create("k")` in `dogpile`
//!   whose creator prints `creating` and returns `made by <pid>`; prints
//!   `got <value>`.
//! * `hold`: one `get_or_create("k")` in `dogpile` whose creator prints
//!   `creating` and then waits for stdin to close (the test kills it).
//! * `get <ns> <key>`: prints the fresh value, `stale <value>` or `none`.
//! * `set <ns> <key> <value>`
//! * `invalidate <ns> hard|soft`: the whole namespace.
//! * `invalidate-key <ns> <key> hard|soft`
//! * `invalidate-region hard|soft`
//! * `region-get <ns> <key>`: like `get`, through region `r`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use carboy::cache::{CacheManager, RegionSettings};
use carboy_tests::cache_child::{dogpile, fail, how, print_entry, say};

fn manager(url: &str, prefix: &str, lease_ms: &str, serve_stale: bool) -> CacheManager {
    CacheManager::builder()
        .backend_factory("redis", Arc::new(carboy_redis::RedisFactory::new()))
        .option("url", url)
        .option("prefix", prefix)
        .option("lock_lease_ms", lease_ms)
        .expire(Duration::from_secs(60))
        .serve_stale(serve_stale)
        .region("r", RegionSettings::new().expire(Duration::from_secs(60)))
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
    let (url, prefix, lease) = (arg(0), arg(1), arg(2));
    let m = |serve_stale| manager(url, prefix, lease, serve_stale);
    let cache =
        |m: &CacheManager, ns: &str| m.get_cache(ns).unwrap_or_else(|e| fail(&e.to_string()));
    let done = |r: carboy::Result<()>| r.unwrap_or_else(|e| fail(&e.to_string()));
    match arg(3) {
        "dogpile" => dogpile(
            &cache(&m(true), "dogpile"),
            arg(4).parse().unwrap_or_else(|_| fail("threads")),
            Path::new(arg(5)),
        ),
        "create" => {
            let c = cache(&m(arg(4) == "1"), "dogpile");
            let got = c.get_or_create("k", || {
                say("creating");
                Ok::<_, std::io::Error>(format!("made by {}", std::process::id()))
            });
            match got {
                Ok(v) => say(&format!("got {v}")),
                Err(e) => fail(&e.to_string()),
            }
        }
        "hold" => {
            let c = cache(&m(true), "dogpile");
            let _ = c.get_or_create("k", || {
                say("creating");
                let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
                Ok::<_, std::io::Error>("never".to_string())
            });
        }
        "get" => print_entry(&cache(&m(true), arg(4)), arg(5)),
        "region-get" => {
            let m = m(true);
            let c = m
                .region("r")
                .and_then(|r| r.cache(arg(4)))
                .unwrap_or_else(|e| fail(&e.to_string()));
            print_entry(&c, arg(5));
        }
        "set" => done(cache(&m(true), arg(4)).set(arg(5), arg(6))),
        "invalidate" => done(cache(&m(true), arg(4)).invalidate_all(how(arg(5)))),
        "invalidate-key" => done(cache(&m(true), arg(4)).invalidate(arg(5), how(arg(6)))),
        "invalidate-region" => done(m(true).region("r").and_then(|r| r.invalidate(how(arg(4))))),
        other => fail(&format!("unknown subcommand {other}")),
    }
}
