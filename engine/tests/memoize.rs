//! `#[cache_region]` and `#[cached]` on real functions, through an installed
//! manager: hits and misses by argument, expiry on a mock clock (no
//! sleeping), `_invalidate` for one argument set, `Result`s (only `Ok` is
//! cached, the caller's error comes back as it was), `return` and `?` in the
//! body, named namespaces, disabled and unknown regions, re-installs,
//! recursion (also on the file backend, through creation locks the thread
//! already holds), and values that outlive their manager on the file
//! backend.
//!
//! The installed manager is process-wide and these tests run on parallel
//! threads: each holds `LOCK` and installs a fresh manager of its own, and
//! each decorated function is called by one test only, so its run counter
//! starts at zero. (No manager at all: `memoize_uninstalled.rs`.)

use std::num::ParseIntError;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{self, CacheManager, RegionSettings};
use serde::{Deserialize, Serialize};

static LOCK: Mutex<()> = Mutex::new(());

/// The expiry of region `short_term`.
const SHORT_TERM: Duration = Duration::from_secs(60);
/// The manager's default expiry (what `#[cached]` without `expire` gets).
const DEFAULT_EXPIRE: Duration = Duration::from_secs(300);
const MS: Duration = Duration::from_millis(1);

/// A manager installed for one test, and the test's hold on `LOCK`.
struct Installed {
    clock: MockClock,
    manager: CacheManager,
    _lock: MutexGuard<'static, ()>,
}

/// Installs a memory-backed manager with regions `short_term` (60 s) and
/// `off` (disabled), a 300 s default expiry, and a mock clock.
fn install() -> Installed {
    let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let clock = MockClock::new(1_700_000_000_000);
    let manager = CacheManager::builder()
        .expire(DEFAULT_EXPIRE)
        .region("short_term", RegionSettings::new().expire(SHORT_TERM))
        .region("off", RegionSettings::new().enabled(false))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    cache::install(manager.clone());
    Installed {
        clock,
        manager,
        _lock: lock,
    }
}

fn runs(counter: &AtomicUsize) -> usize {
    counter.load(SeqCst)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u32,
    lang: String,
}

static LOAD_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Loads a user.
#[carboy::cache_region("short_term")]
pub fn load(user: u32, lang: &str) -> User {
    LOAD_RUNS.fetch_add(1, SeqCst);
    User {
        id: user,
        lang: lang.to_string(),
    }
}

fn user(id: u32, lang: &str) -> User {
    User {
        id,
        lang: lang.to_string(),
    }
}

#[test]
fn same_arguments_hit_other_arguments_miss() {
    let t = install();
    assert_eq!(load(1, "en"), user(1, "en"));
    assert_eq!(load(1, "en"), user(1, "en"));
    assert_eq!(runs(&LOAD_RUNS), 1, "the second call is a hit");
    assert_eq!(load(2, "en"), user(2, "en"));
    assert_eq!(load(1, "fr"), user(1, "fr"));
    assert_eq!(runs(&LOAD_RUNS), 3, "each new argument set runs once");
    assert_eq!(load(2, "en"), user(2, "en"));
    assert_eq!(load(1, "fr"), user(1, "fr"));
    assert_eq!(runs(&LOAD_RUNS), 3);
    // The values live in the region, in the namespace named after the path.
    let ns = t
        .manager
        .region("short_term")
        .unwrap()
        .cache(concat!(module_path!(), "::load"))
        .unwrap();
    assert_eq!(ns.keys().unwrap().len(), 3);
}

static EXPIRING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn expiring(n: u32) -> u32 {
    EXPIRING_RUNS.fetch_add(1, SeqCst);
    n * 2
}

#[test]
fn values_expire_with_their_region() {
    let t = install();
    assert_eq!(expiring(4), 8);
    t.clock.advance(SHORT_TERM - MS);
    assert_eq!(expiring(4), 8);
    assert_eq!(runs(&EXPIRING_RUNS), 1, "fresh until the region's expiry");
    t.clock.advance(MS);
    assert_eq!(expiring(4), 8);
    assert_eq!(runs(&EXPIRING_RUNS), 2, "expired values are created again");
    assert_eq!(expiring(4), 8);
    assert_eq!(runs(&EXPIRING_RUNS), 2, "and the new value is cached");
}

static PRICE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn price(item: u32, currency: String) -> u64 {
    PRICE_RUNS.fetch_add(1, SeqCst);
    u64::from(item) * 100 + currency.len() as u64
}

#[test]
fn invalidate_forces_one_argument_set_to_run_again() {
    let _t = install();
    assert_eq!(price(1, "EUR".into()), 103);
    assert_eq!(price(2, "EUR".into()), 203);
    assert_eq!(runs(&PRICE_RUNS), 2);
    price_invalidate(1, "EUR".into()).unwrap();
    assert_eq!(price(1, "EUR".into()), 103);
    assert_eq!(runs(&PRICE_RUNS), 3, "the invalidated call runs again");
    assert_eq!(price(2, "EUR".into()), 203);
    assert_eq!(runs(&PRICE_RUNS), 3, "other argument sets stay cached");
    // Invalidating a call that was never cached is not an error.
    price_invalidate(9, "USD".into()).unwrap();
}

/// An error type that is neither `Clone` nor serializable: errors are
/// handed back, never stored.
#[derive(Debug, PartialEq)]
enum LookupError {
    NotFound(u32),
}

static FIND_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn find(id: u32) -> Result<String, LookupError> {
    FIND_RUNS.fetch_add(1, SeqCst);
    if id > 100 {
        Err(LookupError::NotFound(id))
    } else {
        Ok(format!("item {id}"))
    }
}

static FLAKY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Fails on its first run, succeeds after.
#[carboy::cached]
fn flaky(id: u32) -> std::io::Result<u32> {
    if FLAKY_RUNS.fetch_add(1, SeqCst) == 0 {
        return Err(std::io::Error::other(format!("first try for {id}")));
    }
    Ok(id + 1)
}

#[test]
fn results_cache_ok_values_and_return_errors_unchanged() {
    let _t = install();
    assert_eq!(find(7), Ok("item 7".to_string()));
    assert_eq!(find(7), Ok("item 7".to_string()));
    assert_eq!(runs(&FIND_RUNS), 1, "Ok values are cached");
    assert_eq!(find(101), Err(LookupError::NotFound(101)));
    assert_eq!(find(101), Err(LookupError::NotFound(101)));
    assert_eq!(runs(&FIND_RUNS), 3, "errors are not");

    let err = flaky(1).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    assert_eq!(err.to_string(), "first try for 1");
    assert_eq!(flaky(1).unwrap(), 2, "after an error, the next call runs");
    assert_eq!(flaky(1).unwrap(), 2);
    assert_eq!(runs(&FLAKY_RUNS), 2, "and its Ok value is cached");
}

static SUM_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn parse_sum(text: &str) -> Result<u32, ParseIntError> {
    SUM_RUNS.fetch_add(1, SeqCst);
    if text.is_empty() {
        return Ok(0);
    }
    let mut sum = 0;
    for part in text.split('+') {
        sum += part.trim().parse::<u32>()?;
    }
    Ok(sum)
}

static SIGN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn sign(n: i64) -> String {
    SIGN_RUNS.fetch_add(1, SeqCst);
    if n < 0 {
        return "negative".to_string();
    }
    if n == 0 {
        return "zero".to_string();
    }
    "positive".to_string()
}

#[test]
fn return_and_question_mark_keep_their_meaning() {
    let _t = install();
    assert_eq!(sign(-5), "negative");
    assert_eq!(sign(0), "zero");
    assert_eq!(sign(5), "positive");
    assert_eq!(sign(-5), "negative");
    assert_eq!(runs(&SIGN_RUNS), 3, "an early return's value is cached");

    assert_eq!(parse_sum(""), Ok(0));
    assert_eq!(parse_sum("1 + 2"), Ok(3));
    let err = parse_sum("1 + x").unwrap_err();
    assert_eq!(err, "x".parse::<u32>().unwrap_err());
    assert_eq!(parse_sum(""), Ok(0));
    assert_eq!(parse_sum("1 + 2"), Ok(3));
    assert_eq!(
        runs(&SUM_RUNS),
        3,
        "Ok values from `return` and the end are cached"
    );
    assert!(parse_sum("1 + x").is_err());
    assert_eq!(runs(&SUM_RUNS), 4, "an error from `?` is not");
}

static NAME_RUNS: AtomicUsize = AtomicUsize::new(0);
static EMAIL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached(namespace = "users", expire = 30)]
fn user_name(id: u32) -> String {
    NAME_RUNS.fetch_add(1, SeqCst);
    format!("user {id}")
}

/// Shares namespace `users` with `user_name`, with the same argument types.
#[carboy::cached(namespace = "users")]
fn user_email(id: u32) -> String {
    EMAIL_RUNS.fetch_add(1, SeqCst);
    format!("{id}@example.com")
}

#[test]
fn cached_uses_the_named_namespace_and_expiry() {
    let t = install();
    let users = t.manager.get_cache("users").unwrap();
    assert!(users.keys().unwrap().is_empty());
    assert_eq!(user_name(1), "user 1");
    assert_eq!(users.keys().unwrap().len(), 1, "the value is in `users`");
    assert_eq!(user_email(1), "1@example.com", "not user_name(1)'s value");
    assert_eq!(users.keys().unwrap().len(), 2);
    assert_eq!(user_name(1), "user 1");
    assert_eq!(user_email(1), "1@example.com");
    assert_eq!((runs(&NAME_RUNS), runs(&EMAIL_RUNS)), (1, 1));
    user_email_invalidate(1).unwrap();
    assert_eq!(user_name(1), "user 1");
    assert_eq!(user_email(1), "1@example.com");
    assert_eq!(
        (runs(&NAME_RUNS), runs(&EMAIL_RUNS)),
        (1, 2),
        "invalidating user_email(1) spares user_name(1)"
    );

    t.clock.advance(Duration::from_secs(30) - MS);
    user_name(1);
    assert_eq!(runs(&NAME_RUNS), 1, "fresh until its own 30 s");
    t.clock.advance(MS);
    user_name(1);
    assert_eq!(runs(&NAME_RUNS), 2, "expired after 30 s");
    user_email(1);
    assert_eq!(runs(&EMAIL_RUNS), 2, "the manager's 300 s still hold");
    t.clock.advance(DEFAULT_EXPIRE - Duration::from_secs(30));
    user_email(1);
    assert_eq!(runs(&EMAIL_RUNS), 3, "expired after the manager's 300 s");
}

static SQUARE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached]
fn square(x: u64) -> u64 {
    SQUARE_RUNS.fetch_add(1, SeqCst);
    x * x
}

#[test]
fn bare_cached_uses_the_function_path_and_default_expiry() {
    let t = install();
    assert_eq!(square(12), 144);
    let own = t
        .manager
        .get_cache(concat!(module_path!(), "::square"))
        .unwrap();
    assert_eq!(own.keys().unwrap().len(), 1);
    t.clock.advance(DEFAULT_EXPIRE - MS);
    assert_eq!(square(12), 144);
    assert_eq!(runs(&SQUARE_RUNS), 1);
    t.clock.advance(MS);
    assert_eq!(square(12), 144);
    assert_eq!(runs(&SQUARE_RUNS), 2);
}

static OFF_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("off")]
fn switched_off(x: u32) -> u32 {
    OFF_RUNS.fetch_add(1, SeqCst);
    x
}

static NOWHERE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("nowhere")]
fn nowhere(x: u32) -> u32 {
    NOWHERE_RUNS.fetch_add(1, SeqCst);
    x
}

#[test]
fn disabled_and_unknown_regions_always_run() {
    let _t = install();
    for _ in 0..3 {
        assert_eq!(switched_off(5), 5);
        assert_eq!(nowhere(5), 5);
    }
    assert_eq!(runs(&OFF_RUNS), 3, "a disabled region stores nothing");
    assert_eq!(runs(&NOWHERE_RUNS), 3, "an unknown region runs uncached");
    switched_off_invalidate(5).unwrap();
    let err = nowhere_invalidate(5).unwrap_err();
    assert!(
        matches!(&err, carboy::Error::UnknownRegion { name, .. } if name == "nowhere"),
        "{err}"
    );
}

static REINSTALL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn reinstalled(x: u32) -> u32 {
    REINSTALL_RUNS.fetch_add(1, SeqCst);
    x
}

#[test]
fn a_new_install_is_used_at_once() {
    let t = install();
    reinstalled(1);
    reinstalled(1);
    assert_eq!(runs(&REINSTALL_RUNS), 1);
    // A new manager has empty caches: the function notices the install.
    cache::install(
        CacheManager::builder()
            .region("short_term", RegionSettings::new())
            .build()
            .unwrap(),
    );
    reinstalled(1);
    reinstalled(1);
    assert_eq!(runs(&REINSTALL_RUNS), 2);
    // Back to the first manager, whose cache still holds the value.
    cache::install(t.manager.clone());
    reinstalled(1);
    assert_eq!(runs(&REINSTALL_RUNS), 2);
}

static FIB_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn fib(n: u64) -> u64 {
    FIB_RUNS.fetch_add(1, SeqCst);
    if n < 2 {
        return n;
    }
    fib(n - 1) + fib(n - 2)
}

#[test]
fn recursive_calls_go_through_the_cache() {
    let _t = install();
    assert_eq!(fib(40), 102_334_155);
    assert_eq!(runs(&FIB_RUNS), 41, "each n runs once");
}

static SHAPES_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cache_region("short_term")]
fn constant() -> Vec<u8> {
    SHAPES_RUNS.fetch_add(1, SeqCst);
    vec![1, 2, 3]
}

#[carboy::cache_region("short_term")]
fn first_word<'a>(text: &'a str, mut skip: usize) -> String
where
    'a: 'a,
{
    SHAPES_RUNS.fetch_add(1, SeqCst);
    let mut words = text.split(' ');
    while skip > 0 {
        words.next();
        skip -= 1;
    }
    words.next().unwrap_or_default().to_string()
}

#[carboy::cached(expire = 5)]
fn r#match(pattern: Option<String>, text: (u8, char)) -> bool {
    SHAPES_RUNS.fetch_add(1, SeqCst);
    pattern.is_some_and(|p| p.starts_with(text.1))
}

#[test]
fn signatures_no_arguments_lifetimes_mut_and_raw_names() {
    let _t = install();
    assert_eq!(constant(), [1, 2, 3]);
    assert_eq!(constant(), [1, 2, 3]);
    assert_eq!(first_word("a b c", 1), "b");
    assert_eq!(first_word("a b c", 1), "b");
    assert!(r#match(Some("xy".into()), (1, 'x')));
    assert!(r#match(Some("xy".into()), (1, 'x')));
    assert!(!r#match(None, (1, 'x')));
    assert_eq!(runs(&SHAPES_RUNS), 4);
    constant_invalidate().unwrap();
    first_word_invalidate("a b c", 1).unwrap();
    match_invalidate(Some("xy".into()), (1, 'x')).unwrap();
    constant();
    first_word("a b c", 1);
    r#match(Some("xy".into()), (1, 'x'));
    assert_eq!(runs(&SHAPES_RUNS), 7);
}

static STORED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached(namespace = "reports", expire = 3600)]
fn report(year: u16) -> Vec<String> {
    STORED_RUNS.fetch_add(1, SeqCst);
    vec![format!("{year}: fine")]
}

#[test]
fn file_backend_values_outlive_their_manager() {
    let t = install();
    let dir = tempfile::tempdir().unwrap();
    let on_disk = || {
        CacheManager::builder()
            .backend("file")
            .data_dir(dir.path())
            .clock(Arc::new(t.clock.clone()))
            .build()
            .unwrap()
    };
    cache::install(on_disk());
    assert_eq!(report(2024), ["2024: fine"]);
    assert_eq!(runs(&STORED_RUNS), 1);
    // A new manager on the same directory, as in a restarted process.
    cache::install(on_disk());
    assert_eq!(report(2024), ["2024: fine"]);
    assert_eq!(runs(&STORED_RUNS), 1, "read from the file");
    report_invalidate(2024).unwrap();
    cache::install(on_disk());
    assert_eq!(report(2024), ["2024: fine"]);
    assert_eq!(runs(&STORED_RUNS), 2, "the invalidation was stored");
}

static TRIANGLE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[carboy::cached]
fn triangle(n: u32) -> u64 {
    TRIANGLE_RUNS.fetch_add(1, SeqCst);
    if n == 0 {
        return 0;
    }
    u64::from(n) + triangle(n - 1)
}

/// The creation-lock stripe of `triangle(n)`'s key on the file backend:
/// its lock hash (of the postcard encoding of `(n,)`), modulo the
/// backend's 1024 stripes.
fn stripe(n: u32) -> u64 {
    let key = postcard::to_allocvec(&(n,)).unwrap();
    carboy::cache::lock_hash(&key) % 1024
}

#[test]
fn recursion_on_the_file_backend_takes_held_stripes_again() {
    const N: u32 = 300;
    // Each level holds its key's creation lock while the next one runs:
    // some of these keys share a stripe, which the thread already holds.
    let mut stripes: Vec<u64> = (0..=N).map(stripe).collect();
    stripes.sort_unstable();
    stripes.dedup();
    assert!(stripes.len() <= N as usize, "no two keys share a stripe");

    let t = install();
    let dir = tempfile::tempdir().unwrap();
    cache::install(
        CacheManager::builder()
            .backend("file")
            .data_dir(dir.path())
            .clock(Arc::new(t.clock.clone()))
            .build()
            .unwrap(),
    );
    // A deep recursion: a thread with room for it, and a deadline instead
    // of a hang if a held stripe were locked again.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || done.send(triangle(N)).unwrap())
        .unwrap();
    let sum = result
        .recv_timeout(Duration::from_secs(120))
        .expect("the recursion finishes");
    assert_eq!(sum, u64::from(N) * u64::from(N + 1) / 2);
    assert_eq!(runs(&TRIANGLE_RUNS), N as usize + 1);
    assert_eq!(triangle(N), sum);
    assert_eq!(
        runs(&TRIANGLE_RUNS),
        N as usize + 1,
        "every level was stored"
    );
}
