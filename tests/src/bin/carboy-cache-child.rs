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

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;

use carboy::cache::{Cache, CacheManager, Invalidation, RegionSettings};

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

fn fail(msg: &str) -> ! {
    eprintln!("carboy-cache-child: {msg}");
    std::process::exit(2)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn how(arg: &str) -> Invalidation {
    match arg {
        "hard" => Invalidation::Hard,
        "soft" => Invalidation::Soft,
        _ => fail("expected hard or soft"),
    }
}

fn print_entry(cache: &Cache, key: &str) {
    match cache.get_entry::<String>(key) {
        Ok(Some(e)) if e.stale => say(&format!("stale {}", e.value)),
        Ok(Some(e)) => say(&e.value),
        Ok(None) => say("none"),
        Err(e) => fail(&e.to_string()),
    }
}

fn dogpile(dir: &Path, threads: usize, serve_stale: bool) {
    let cache = manager(dir, serve_stale)
        .get_cache("dogpile")
        .unwrap_or_else(|e| fail(&e.to_string()));
    let parent = dir
        .parent()
        .unwrap_or_else(|| fail("data dir has no parent"));
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
                        .open(parent.join("assert.lock"))
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
                        .open(parent.join("creators"))
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
