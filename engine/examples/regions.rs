//! Regions from Beaker-style settings: two regions with their own expiry,
//! expiry against an injected clock, and soft and hard invalidation.
//!
//! `cargo run -p carboy --example regions`

use std::sync::Arc;
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{CacheManager, Invalidation};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("carboy-regions-{}", std::process::id()));
    let data_dir = dir.display().to_string();
    // A clock we move by hand, so the example shows expiry without waiting.
    let clock = MockClock::new(1_700_000_000_000);
    // Beaker's settings, as an application's config file would hold them
    // (keys without a cache prefix are someone else's and are skipped).
    let settings = [
        ("cache.type", "file"),
        ("cache.data_dir", data_dir.as_str()),
        ("cache.regions", "short_term, long_term"),
        ("cache.short_term.expire", "60"),
        ("cache.long_term.expire", "3600"),
        ("app.unrelated", "ignored"),
    ];
    let manager = CacheManager::builder()
        .settings(settings)?
        .clock(Arc::new(clock.clone()))
        .build()?;
    println!("built {manager:?}");

    let prices = manager.region("short_term")?.cache("prices")?;
    let countries = manager.region("long_term")?.cache("countries")?;
    let mut fetches = 0;
    let mut fetch = |what: &str| -> Result<String, std::io::Error> {
        fetches += 1;
        Ok(format!("{what} (fetch #{fetches})"))
    };

    let p: String = prices
        .get_or_create("btc", || fetch("price of btc"))
        .unwrap();
    let c: String = countries.get_or_create("fr", || fetch("France")).unwrap();
    println!("first:  {p} / {c}");

    clock.advance(Duration::from_secs(61)); // short_term values are stale now
    let p: String = prices
        .get_or_create("btc", || fetch("price of btc"))
        .unwrap();
    let c: String = countries.get_or_create("fr", || fetch("France")).unwrap();
    println!("+61 s:  {p} / {c}");
    assert!(
        p.ends_with("#3)") && c.ends_with("#2)"),
        "only short_term expired"
    );

    // Soft: the old value stays readable as stale while one caller
    // regenerates; hard: it is gone for everyone, in every process.
    manager
        .region("long_term")?
        .invalidate(Invalidation::Soft)?;
    let stale = countries.get_entry::<String>("fr")?.expect("kept");
    println!(
        "after a soft invalidation: {:?}, stale = {}",
        stale.value, stale.stale
    );
    assert!(stale.stale);
    manager
        .region("long_term")?
        .invalidate(Invalidation::Hard)?;
    assert!(countries.get_entry::<String>("fr")?.is_none());
    let c: String = countries.get_or_create("fr", || fetch("France")).unwrap();
    println!("after a hard invalidation: {c}");

    drop((prices, countries, manager));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
