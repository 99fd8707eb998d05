//! A cache-layer worker process for `tests/tests/dogpile_processes.rs`.
//!
//! Every subcommand builds the same manager: the `file` backend in
//! `<data_dir>`, default expiry 60 s, region `r` (expiry 60 s).
//!
//! * `dogpile <data_dir> <threads> <serve_stale 0|1>`: every thread calls
//!   `get_or_create("k")` at once and prints `got <value>`. The creator
//!   takes an exclusive, non-blocking flock on `<data_dir>/../assert.lock`
//!   (printing `DOUBLE` and exiting 3 if another creator holds it),
//!   prints `creating`, waits for a line on stdin, appends a line to
//!   `<data_dir>/../creators`, and returns `new`.
//! * `get <data_dir> <ns> <key>`: prints the fresh value, `stale <value>`
//!   or `none`.
//! * `set <data_dir> <ns> <key> <value>`
//! * `invalidate <data_dir> <ns> hard|soft`: the whole namespace.
//! * `invalidate-region <data_dir> hard|soft`
//! * `region-get <data_dir> <ns> <key>`: like `get`, through region `r`.

use std::path::Path;
use std::time::Duration;

use carboy::cache::{CacheManager, RegionSettings};
use carboy_tests::cache_child::{self, fail, how, print_entry};

fn manager(dir: &Path, serve_stale: bool) -> CacheManager {
    CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .expire(Duration::from_secs(60))
        .serve_stale(serve_stale)
        .region("r", RegionSettings::new().expire(Duration::from_secs(60)))
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()))
}

fn dogpile(dir: &Path, threads: usize, serve_stale: bool) {
    let cache = manager(dir, serve_stale)
        .get_cache("dogpile")
        .unwrap_or_else(|e| fail(&e.to_string()));
    let parent = dir
        .parent()
        .unwrap_or_else(|| fail("data dir has no parent"));
    cache_child::dogpile(&cache, threads, parent);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| fail("missing argument"))
    };
    let dir = Path::new(arg(1));
    match arg(0) {
        "dogpile" => dogpile(
            dir,
            arg(2).parse().unwrap_or_else(|_| fail("threads")),
            arg(3) == "1",
        ),
        "get" => {
            let cache = manager(dir, true)
                .get_cache(arg(2))
                .unwrap_or_else(|e| fail(&e.to_string()));
            print_entry(&cache, arg(3));
        }
        "region-get" => {
            let m = manager(dir, true);
            let cache = m
                .region("r")
                .and_then(|r| r.cache(arg(2)))
                .unwrap_or_else(|e| fail(&e.to_string()));
            print_entry(&cache, arg(3));
        }
        "set" => {
            let cache = manager(dir, true)
                .get_cache(arg(2))
                .unwrap_or_else(|e| fail(&e.to_string()));
            cache
                .set(arg(3), arg(4))
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        "invalidate" => {
            let cache = manager(dir, true)
                .get_cache(arg(2))
                .unwrap_or_else(|e| fail(&e.to_string()));
            cache
                .invalidate_all(how(arg(3)))
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        "invalidate-region" => {
            let m = manager(dir, true);
            m.region("r")
                .and_then(|r| r.invalidate(how(arg(2))))
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        other => fail(&format!("unknown subcommand {other}")),
    }
}
