//! Function caching with `#[carboy::cache_region]` and `#[carboy::cached]`.
//!
//! `cargo run -p carboy --example memoize` installs a cache manager on the
//! `file` backend in a temporary directory, calls two decorated functions
//! and prints which calls ran and which were served from the cache: a hit,
//! a miss for other arguments, `_invalidate` for one argument set, expiry,
//! a `Result` whose errors are not cached, and a value read back by a new
//! manager on the same directory, as a restarted process would. The clock is
//! a `MockClock`, so expiry shows without waiting. It checks every claim it
//! prints and exits non-zero if one does not hold.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{self, CacheManager, RegionSettings};

/// How many times `exchange_rate`'s body ran.
static RATE_LOOKUPS: AtomicUsize = AtomicUsize::new(0);
/// How many times `report`'s body ran.
static REPORTS_BUILT: AtomicUsize = AtomicUsize::new(0);

/// An exchange rate, as a slow remote lookup would give it. Cached in
/// region `short_term` (60 s), keyed by both currencies.
#[carboy::cache_region("short_term")]
fn exchange_rate(from: &str, to: &str) -> f64 {
    RATE_LOOKUPS.fetch_add(1, SeqCst);
    println!("    (looking up {from}->{to})");
    match (from, to) {
        ("EUR", "USD") => 1.08,
        ("EUR", "GBP") => 0.85,
        _ => 1.0,
    }
}

/// A year's report; years to come are an error, which is never cached.
/// Cached for an hour in namespace `reports`.
#[carboy::cached(namespace = "reports", expire = 3600)]
fn report(year: u16) -> Result<Vec<String>, String> {
    REPORTS_BUILT.fetch_add(1, SeqCst);
    println!("    (building the report for {year})");
    if year > 2025 {
        return Err(format!("{year} has not happened yet"));
    }
    Ok(vec![
        format!("{year}: revenue up"),
        format!("{year}: costs flat"),
    ])
}

/// What a step returns: any failure, to print.
type Outcome = Result<(), Box<dyn Error>>;

/// Fails with `claim` unless `holds`.
fn check(holds: bool, claim: &str) -> Outcome {
    if holds {
        println!("  ok: {claim}");
        Ok(())
    } else {
        Err(format!("claim failed: {claim}").into())
    }
}

fn main() -> Outcome {
    let dir = tempfile::tempdir()?;
    let clock = MockClock::new(1_700_000_000_000);
    let manager = || {
        CacheManager::builder()
            .backend("file")
            .data_dir(dir.path())
            .region(
                "short_term",
                RegionSettings::new().expire(Duration::from_secs(60)),
            )
            .clock(Arc::new(clock.clone()))
            .build()
    };
    cache::install(manager()?);
    println!("cache in {}", dir.path().display());

    println!("exchange_rate(\"EUR\", \"USD\") twice:");
    let first = exchange_rate("EUR", "USD");
    let second = exchange_rate("EUR", "USD");
    check(first == 1.08 && second == 1.08, "both calls return 1.08")?;
    check(RATE_LOOKUPS.load(SeqCst) == 1, "the second call is a hit")?;

    println!("exchange_rate(\"EUR\", \"GBP\"):");
    exchange_rate("EUR", "GBP");
    check(RATE_LOOKUPS.load(SeqCst) == 2, "other arguments miss")?;

    println!("exchange_rate_invalidate(\"EUR\", \"USD\"), then both pairs again:");
    exchange_rate_invalidate("EUR", "USD")?;
    exchange_rate("EUR", "USD");
    exchange_rate("EUR", "GBP");
    check(
        RATE_LOOKUPS.load(SeqCst) == 3,
        "only the invalidated pair is looked up again",
    )?;

    println!("61 seconds later (on the mock clock):");
    clock.advance(Duration::from_secs(61));
    exchange_rate("EUR", "GBP");
    check(
        RATE_LOOKUPS.load(SeqCst) == 4,
        "the region's 60 s expiry has passed: looked up again",
    )?;

    println!("report(2024) twice, report(2999) twice:");
    let kept = report(2024)?;
    check(report(2024)? == kept, "the same report comes back")?;
    check(report(2999).is_err() && report(2999).is_err(), "2999 fails")?;
    check(
        REPORTS_BUILT.load(SeqCst) == 3,
        "2024 was built once; each failing call ran, errors are not cached",
    )?;

    println!("a new manager on the same directory, as after a restart:");
    cache::install(manager()?);
    check(report(2024)? == kept, "report(2024) is the stored one")?;
    check(
        REPORTS_BUILT.load(SeqCst) == 3,
        "read from the file, not built again",
    )?;

    let mut files: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.sort();
    println!("files in the cache directory:");
    for f in &files {
        println!("    {f}");
    }
    let stem = |ns: &str| carboy::name::file_name(ns).map_err(|e| e.to_string());
    let rates = stem(concat!(module_path!(), "::exchange_rate"))?;
    let reports = stem("reports")?;
    check(
        files.contains(&rates) && files.contains(&reports),
        "one namespace file per function's namespace (its path, or `reports`)",
    )?;
    println!("done");
    Ok(())
}
