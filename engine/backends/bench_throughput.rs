//! The throughput rows that the redis and memcached benchmarks share
//! (engine/backends/redis/benches/redis.rs and
//! engine/backends/memcached/benches/memcached.rs include this file with
//! `#[path = "../../bench_throughput.rs"] mod throughput;`): carboy's
//! `get_or_create` hits per second from OS threads sharing one `Cache` and
//! from tokio tasks sharing one `AsyncCache`, and the table that prints
//! them beside the Python script's rows.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carboy::cache::{AsyncCache, Cache};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Keys the throughput rows cycle over (the Python scripts' `KEYS`).
const THROUGHPUT_KEYS: usize = 64;

/// The throughput rows' settings: `<PREFIX>_BENCH_THREADS` OS threads,
/// `<PREFIX>_BENCH_TASKS` tokio tasks, `<PREFIX>_BENCH_SECONDS` per row.
pub struct Throughput {
    pub threads: usize,
    pub tasks: usize,
    pub seconds: Duration,
}

impl Throughput {
    /// The settings from `{prefix}_BENCH_THREADS` (default 8),
    /// `{prefix}_BENCH_TASKS` (default 64) and `{prefix}_BENCH_SECONDS`
    /// (default 2).
    pub fn from_env(prefix: &str) -> Throughput {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Throughput {
            threads: var(&format!("{prefix}_BENCH_THREADS"), 8usize).max(1),
            tasks: var(&format!("{prefix}_BENCH_TASKS"), 64usize).max(1),
            seconds: Duration::from_secs_f64(
                var(&format!("{prefix}_BENCH_SECONDS"), 2.0f64).max(0.1),
            ),
        }
    }

    fn warm_up(&self) -> Duration {
        (self.seconds / 10).max(Duration::from_millis(200))
    }

    /// Stores `make()` under each of the throughput keys in `cache`, then
    /// runs carboy's two rows on them: `(blocking, async)` hits per second.
    pub fn carboy<V>(&self, cache: &Cache, acache: &AsyncCache, make: fn() -> V) -> (f64, f64)
    where
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        let keys: Vec<String> = (0..THROUGHPUT_KEYS).map(|i| format!("tp:{i}")).collect();
        for key in &keys {
            cache.set(key.as_str(), &make()).expect("set");
        }
        (
            self.blocking(cache, &keys, make),
            self.tasks(acache, &keys, make),
        )
    }

    /// Hits per second that `counts` (bumped by running workers) grow by
    /// over `seconds`, after the warm-up.
    fn measure(&self, counts: &[AtomicU64]) -> f64 {
        let sum = || {
            counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        std::thread::sleep(self.warm_up());
        let (before, started) = (sum(), Instant::now());
        std::thread::sleep(self.seconds);
        let (after, elapsed) = (sum(), started.elapsed());
        (after - before) as f64 / elapsed.as_secs_f64()
    }

    /// `Cache::get_or_create` hits per second from `threads` OS threads
    /// sharing `cache`; thread i cycles over `keys` from key i.
    fn blocking<V>(&self, cache: &Cache, keys: &[String], make: fn() -> V) -> f64
    where
        V: Serialize + DeserializeOwned,
    {
        let stop = AtomicBool::new(false);
        let created = AtomicU64::new(0);
        let counts: Vec<AtomicU64> = (0..self.threads).map(|_| AtomicU64::new(0)).collect();
        let rate = std::thread::scope(|s| {
            for (i, count) in counts.iter().enumerate() {
                let (stop, created) = (&stop, &created);
                s.spawn(move || {
                    let mut k = i;
                    while !stop.load(Ordering::Relaxed) {
                        let u: V = cache
                            .get_or_create(&keys[k % keys.len()], || {
                                created.fetch_add(1, Ordering::Relaxed);
                                Ok::<_, std::convert::Infallible>(make())
                            })
                            .expect("a hit");
                        black_box(u);
                        count.fetch_add(1, Ordering::Relaxed);
                        k += 1;
                    }
                });
            }
            let rate = self.measure(&counts);
            stop.store(true, Ordering::Relaxed);
            rate
        });
        assert_eq!(created.into_inner(), 0, "a blocking call was not a hit");
        rate
    }

    /// `AsyncCache::get_or_create` hits per second from `tasks` tokio
    /// tasks on a multi-thread runtime with 2 workers; task i cycles over
    /// `keys` from key i.
    fn tasks<V>(&self, cache: &AsyncCache, keys: &[String], make: fn() -> V) -> f64
    where
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a multi-thread tokio runtime");
        let keys: Arc<[String]> = keys.into();
        let stop = Arc::new(AtomicBool::new(false));
        let created = Arc::new(AtomicU64::new(0));
        let counts: Arc<[AtomicU64]> = (0..self.tasks).map(|_| AtomicU64::new(0)).collect();
        let handles: Vec<_> = (0..self.tasks)
            .map(|i| {
                let (cache, keys) = (cache.clone(), Arc::clone(&keys));
                let (stop, created, counts) =
                    (Arc::clone(&stop), Arc::clone(&created), Arc::clone(&counts));
                rt.spawn(async move {
                    let mut k = i;
                    while !stop.load(Ordering::Relaxed) {
                        let u: V = cache
                            .get_or_create(&keys[k % keys.len()], || async {
                                created.fetch_add(1, Ordering::Relaxed);
                                Ok::<_, std::convert::Infallible>(make())
                            })
                            .await
                            .expect("a hit");
                        black_box(u);
                        counts[i].fetch_add(1, Ordering::Relaxed);
                        k += 1;
                    }
                })
            })
            .collect();
        let rate = self.measure(&counts);
        stop.store(true, Ordering::Relaxed);
        rt.block_on(async {
            for h in handles {
                h.await.expect("a throughput task");
            }
        });
        assert_eq!(
            created.load(Ordering::Relaxed),
            0,
            "an async call was not a hit"
        );
        rate
    }

    /// The throughput table, titled `{server}, throughput: ...`: carboy's
    /// rows and the Python ones, with how many times more hits per second
    /// carboy's blocking and async rows make than each row.
    pub fn print(&self, server: &str, (blocking, tasks): (f64, f64), python: &[(String, f64)]) {
        let t = self.threads;
        let mut rows = vec![
            (
                format!("carboy Cache::get_or_create, {t} threads, one Cache"),
                blocking,
            ),
            (
                format!(
                    "carboy AsyncCache::get_or_create, {} tokio tasks, 2 workers",
                    self.tasks
                ),
                tasks,
            ),
        ];
        rows.extend(
            python
                .iter()
                .map(|(name, rate)| (format!("Python {name}, {t} threads"), *rate)),
        );
        println!();
        println!(
            "{server}, throughput: {THROUGHPUT_KEYS} keys, {:?} per row after a warm-up of {:?}; carboy's rows ran first",
            self.seconds,
            self.warm_up()
        );
        println!("| what | hits/s | carboy blocking is faster by | carboy async is faster by |");
        println!("|---|---:|---:|---:|");
        for (name, rate) in rows {
            println!(
                "| {name} | {rate:.0} | {:.2}× | {:.2}× |",
                blocking / rate,
                tasks / rate
            );
        }
    }
}
