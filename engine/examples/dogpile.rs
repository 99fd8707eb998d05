//! Cross-process dogpile protection: 4 processes × 4 threads ask for the
//! same expired value at once; exactly one of the 16 callers regenerates
//! it, and the other 15 get the stale value at once instead of waiting.
//!
//! `cargo run -p carboy --example dogpile`
//!
//! The example re-runs itself as the worker processes (`dogpile worker
//! <dir>`). Each worker prints one line per thread; the parent counts them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use carboy::cache::{Cache, CacheManager};

const PROCESSES: usize = 4;
const THREADS: usize = 4;

fn cache(dir: &Path) -> Result<Cache, carboy::Error> {
    CacheManager::builder()
        .backend("file")
        .data_dir(dir)
        .expire(Duration::from_secs(60))
        .build()?
        .get_cache("reports")
}

/// The slow computation that must not run 16 times at once.
fn build_report(dir: &Path) -> Result<String, std::io::Error> {
    // Leave a trace of every run, so the parent can count them.
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("runs"))?;
    std::io::Write::write_all(&mut log, b"run\n")?;
    // Hold the creation lock a while: every other caller arrives meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    Ok(format!("report built by process {}", std::process::id()))
}

fn worker(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cache = cache(dir)?;
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                let t = Instant::now();
                let report: String = cache
                    .get_or_create("daily", || build_report(dir))
                    .expect("report");
                println!("{} ms: {report}", t.elapsed().as_millis());
            });
        }
    });
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(Path::new(&args[2]));
    }
    let dir = std::env::temp_dir().join(format!("carboy-dogpile-{}", std::process::id()));
    let cache = cache(&dir)?;
    // Yesterday's report, already expired: stale for everyone.
    cache.set_for("daily", "yesterday's report", Some(Duration::ZERO))?;

    let exe = std::env::current_exe()?;
    let workers: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .arg("worker")
                .arg(&dir)
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut lines = Vec::new();
    for mut w in workers {
        let out = w.stdout.take().ok_or("no stdout")?;
        lines.extend(BufReader::new(out).lines().map_while(Result::ok));
        assert!(w.wait()?.success(), "a worker failed");
    }
    for l in &lines {
        println!("{l}");
    }
    let runs = std::fs::read_to_string(dir.join("runs"))?.lines().count();
    let stale = lines.iter().filter(|l| l.contains("yesterday")).count();
    println!(
        "{} callers in {PROCESSES} processes: {runs} regeneration, {stale} served the stale report",
        lines.len()
    );
    assert_eq!(runs, 1, "exactly one caller regenerates");
    assert_eq!(lines.len(), PROCESSES * THREADS);
    println!(
        "now cached for everyone: {:?}",
        cache.get::<String>("daily")?
    );
    drop(cache);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
