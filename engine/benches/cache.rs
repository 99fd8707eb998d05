//! Cache-layer benchmark: what a hit costs through the cache compared with
//! the raw store underneath, printed as a markdown table.
//!
//! Run with `cargo bench -p carboy --bench cache` (add `--features async`
//! for the async front's rows, driven by tokio). `CARBOY_BENCH_N` sets
//! the number of keys (default 200,000); `CARBOY_BENCH_DIR` where the
//! files go (default: the system temp dir).
//!
//! Every row reads the same seeded keys (16 random bytes, as `[u8; 16]`)
//! in the same random order; values are 100 random bytes (a `Vec<u8>`,
//! postcard-encoded). The baseline is what any cache must do at least: a
//! raw `Store::get` of the postcard bytes plus decoding them. The issue's
//! target: a hit through `get_or_create` on the `file` backend costs at
//! most 1.5× that baseline.

use std::hint::black_box;
use std::time::{Duration, Instant};

use carboy::Store;
use common::Rng;

mod common;
use carboy::cache::{Cache, CacheManager};

const SEED: u64 = 0x00ca_c4e0_5eed_2026;
const VALUE_LEN: usize = 100;

/// Runs `op` over every key in `order` until at least `min` has passed;
/// returns operations per second.
fn rate(order: &[usize], min: Duration, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        for &i in order {
            op(i);
        }
        ops += order.len() as u64;
        let t = start.elapsed();
        if t >= min {
            return ops as f64 / t.as_secs_f64();
        }
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

fn main() {
    let n: usize = std::env::var("CARBOY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let base = std::env::var_os("CARBOY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("carboy-cache-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");

    let mut rng = Rng::new(SEED);
    let keys: Vec<[u8; 16]> = (0..n).map(|_| rng.bytes::<16>()).collect();
    let values: Vec<Vec<u8>> = (0..n).map(|_| rng.bytes::<VALUE_LEN>().to_vec()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }

    // The baseline: the raw store with postcard values, no envelope.
    let raw = Store::open(dir.join("raw.carboy")).expect("raw store");
    {
        let mut txn = raw.transaction().expect("txn");
        for (k, v) in keys.iter().zip(&values) {
            txn.put(k, &postcard::to_allocvec(v).expect("encode"))
                .expect("put");
        }
        txn.commit().expect("commit");
    }

    let file = CacheManager::builder()
        .backend("file")
        .data_dir(dir.join("cache"))
        .expire(Duration::from_secs(3600))
        .build()
        .expect("manager");
    let memory = CacheManager::builder()
        .expire(Duration::from_secs(3600))
        .build()
        .expect("manager");
    let fill = |c: &Cache| {
        for (k, v) in keys.iter().zip(&values) {
            c.set(k, v).expect("set");
        }
    };
    let file_cache = file.get_cache("bench").expect("cache");
    let region_cache = CacheManager::builder()
        .backend("file")
        .data_dir(dir.join("region"))
        .region(
            "r",
            carboy::cache::RegionSettings::new().expire(Duration::from_secs(3600)),
        )
        .build()
        .expect("manager")
        .region("r")
        .expect("region")
        .cache("bench")
        .expect("cache");
    let memory_cache = memory.get_cache("bench").expect("cache");
    fill(&file_cache);
    fill(&region_cache);
    fill(&memory_cache);

    let min = Duration::from_secs(2);
    let mut rows: Vec<(&str, f64)> = Vec::new();
    rows.push((
        "raw `Store::get` + postcard decode (baseline)",
        rate(&order, min, |i| {
            let v = raw.get(&keys[i]).expect("get").expect("present");
            let decoded: Vec<u8> = postcard::from_bytes(&v).expect("decode");
            black_box(decoded);
        }),
    ));
    let creator = || -> Result<Vec<u8>, std::convert::Infallible> { unreachable!("all hits") };
    rows.push((
        "`get_or_create` hit, file backend",
        rate(&order, min, |i| {
            black_box(file_cache.get_or_create(&keys[i], creator).expect("hit"));
        }),
    ));
    rows.push((
        "`get` hit, file backend",
        rate(&order, min, |i| {
            black_box(file_cache.get::<Vec<u8>>(&keys[i]).expect("get"));
        }),
    ));
    rows.push((
        "`get_or_create` hit, file backend, in a region",
        rate(&order, min, |i| {
            black_box(region_cache.get_or_create(&keys[i], creator).expect("hit"));
        }),
    ));
    rows.push((
        "`get_or_create` hit, memory backend",
        rate(&order, min, |i| {
            black_box(memory_cache.get_or_create(&keys[i], creator).expect("hit"));
        }),
    ));

    #[cfg(feature = "async")]
    let herd = async_rows::run(&file_cache, &keys, &order, min, &mut rows);

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# carboy cache benchmark\n");
    println!(
        "{n} keys (16 random bytes), values of {VALUE_LEN} random bytes, random order, \
         one thread, {cpus} CPUs; each row runs for at least {} s.\n",
        min.as_secs()
    );
    println!("| workload | hits/s | ns per hit | × baseline cost |");
    println!("|---|---:|---:|---:|");
    let baseline = rows[0].1;
    for (name, r) in &rows {
        println!(
            "| {name} | {} | {:.0} | {:.2}× |",
            fmt_rate(*r),
            1e9 / r,
            baseline / r
        );
    }
    #[cfg(feature = "async")]
    println!("\n{herd}");
    drop((raw, file_cache, region_cache, memory_cache, file, memory));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The async front's rows (feature `async`): a hit through its
/// `get_or_create`, awaited in a loop on a current-thread runtime, beside
/// the blocking rows; and a herd of tasks asking for one missing key.
#[cfg(feature = "async")]
mod async_rows {
    use std::hint::black_box;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use carboy::cache::Cache;

    /// The creator of a key that is always present.
    async fn never() -> Result<Vec<u8>, std::convert::Infallible> {
        unreachable!("all hits")
    }

    /// Adds the async hit row to `rows`; returns the herd's report.
    pub fn run(
        cache: &Cache,
        keys: &[[u8; 16]],
        order: &[usize],
        min: Duration,
        rows: &mut Vec<(&'static str, f64)>,
    ) -> String {
        let front = cache.to_async();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let hits = rt.block_on(async {
            let start = Instant::now();
            let mut ops = 0u64;
            loop {
                for &i in order {
                    let v: Vec<u8> = front.get_or_create(&keys[i], never).await.expect("hit");
                    black_box(v);
                }
                ops += order.len() as u64;
                let t = start.elapsed();
                if t >= min {
                    break ops as f64 / t.as_secs_f64();
                }
            }
        });
        rows.push(("`get_or_create` hit, file backend, async front", hits));
        herd(cache, 10_000)
    }

    /// `tasks` tasks on a 2-worker runtime ask for one missing key at
    /// once; the creator computes for about `WORK`. Reports the time
    /// against one creation plus `tasks` hits, each measured alone.
    fn herd(cache: &Cache, tasks: u64) -> String {
        const WORK: Duration = Duration::from_millis(5);
        let spin = || {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < WORK {
                x = black_box(x.wrapping_add(1));
            }
            x.to_le_bytes().to_vec()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let front = Arc::new(cache.to_async());
        let created = Arc::new(AtomicU64::new(0));
        let key = b"herd: one missing key".to_vec();
        let start = Instant::now();
        rt.block_on(async {
            let mut handles = Vec::with_capacity(tasks as usize);
            for _ in 0..tasks {
                let (front, created, key) = (Arc::clone(&front), Arc::clone(&created), key.clone());
                handles.push(tokio::spawn(async move {
                    let v: Vec<u8> = front
                        .get_or_create(&key, || async move {
                            created.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(spin())
                        })
                        .await
                        .expect("value");
                    black_box(v);
                }));
            }
            for h in handles {
                h.await.expect("task");
            }
        });
        let herd = start.elapsed();
        // One creation alone, then `tasks` hits alone, on the same runtime.
        let key2 = b"herd: a creation alone".to_vec();
        let t = Instant::now();
        rt.block_on(async {
            let v: Vec<u8> = front
                .get_or_create(&key2, || async {
                    Ok::<_, std::convert::Infallible>(spin())
                })
                .await
                .expect("value");
            black_box(v);
        });
        let one = t.elapsed();
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..tasks {
                let v: Vec<u8> = front.get_or_create(&key, never).await.expect("hit");
                black_box(v);
            }
        });
        let hits = t.elapsed();
        let budget = one + hits;
        format!(
            "Herd: {tasks} tasks on 2 workers asking for one missing key: {:.1} ms, {} \
             creation(s); one creation alone {:.1} ms + {tasks} hits {:.1} ms = {:.1} ms; \
             ratio {:.2} (target ≤ 2)",
            herd.as_secs_f64() * 1e3,
            created.load(Ordering::Relaxed),
            one.as_secs_f64() * 1e3,
            hits.as_secs_f64() * 1e3,
            budget.as_secs_f64() * 1e3,
            herd.as_secs_f64() / budget.as_secs_f64()
        )
    }
}
