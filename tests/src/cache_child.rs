//! What the cache worker binaries share (`carboy-cache-child` on the
//! `file` backend, `carboy-redis-child`, `carboy-memcached-child`): how a
//! worker reports (lines on stdout, a failure on stderr with exit code 2),
//! and the dogpile worker itself, so that the three multi-process dogpile
//! tests check one algorithm the same way on every backend.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Barrier;

use carboy::cache::{Cache, Invalidation};

/// Prints `msg` on stderr, named by the running binary, and exits with 2.
pub fn fail(msg: &str) -> ! {
    let me = std::env::args()
        .next()
        .and_then(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "cache worker".into());
    eprintln!("{me}: {msg}");
    std::process::exit(2)
}

/// Prints one line on stdout and flushes it (the test reads it at once).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `hard` or `soft`.
pub fn how(arg: &str) -> Invalidation {
    match arg {
        "hard" => Invalidation::Hard,
        "soft" => Invalidation::Soft,
        _ => fail("expected hard or soft"),
    }
}

/// Prints the value of `key`: itself when fresh, `stale <value>`, or
/// `none`.
pub fn print_entry(cache: &Cache, key: &str) {
    match cache.get_entry::<String>(key) {
        Ok(Some(e)) if e.stale => say(&format!("stale {}", e.value)),
        Ok(Some(e)) => say(&e.value),
        Ok(None) => say("none"),
        Err(e) => fail(&e.to_string()),
    }
}

/// `threads` threads call `get_or_create("k")` on `cache` at once, each
/// printing `calling` and then `got <value>`. The creator takes an
/// exclusive, non-blocking flock on `<dir>/assert.lock` (printing `DOUBLE`
/// and exiting 3 if another creator, in any process, holds it), prints
/// `creating`, waits for a line on stdin, appends its pid to
/// `<dir>/creators`, and returns `new`.
pub fn dogpile(cache: &Cache, threads: usize, dir: &Path) {
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
