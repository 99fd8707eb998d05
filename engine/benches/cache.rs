//! Cache-layer benchmark: what a hit costs through the cache compared with
//! the raw store underneath, printed as a markdown table.
//!
//! Run with `cargo bench -p carboy --bench cache` (add `--features async`
//! for the async front's rows, driven by tokio, and moka's for
//! comparison). `CARBOY_BENCH_N` sets the number of keys (default
//! 200,000); `CARBOY_BENCH_DIR` where the files go (default: the system
//! temp dir); `CARBOY_BENCH_HERD_ROUNDS` how many rounds the herd takes
//! the median of (default 9); `CARBOY_BENCH_MIN_MS` how long each hit row
//! runs (default 2,000; small under a profiler).
//!
//! Every row reads the same seeded keys (16 random bytes, as `[u8; 16]`)
//! in the same random order; values are 100 random bytes (a `Vec<u8>`,
//! postcard-encoded). The baseline is what any cache must do at least: a
//! raw `Store::get` of the postcard bytes plus decoding them. The issue's
//! target: a hit through `get_or_create` on the `file` backend costs at
//! most 1.5× that baseline.
//!
//! With `--features async` (issue 13's targets): the async front's hit
//! through `get_or_create` against the blocking one (≤ 1.2×) and against
//! moka's `future::Cache::get_with` (reported), each ratio the median of
//! runs that alternate the two; and a herd of 10,000 tasks asking for one
//! missing key against one creation plus 10,000 hits (≤ 2×), the median of
//! rounds, beside what 10,000 spawned tasks that only hit cost.

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

    let min = Duration::from_millis(
        std::env::var("CARBOY_BENCH_MIN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
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
    let report = async_rows::run(
        &file_cache,
        &memory_cache,
        &keys,
        &values,
        &order,
        min,
        &mut rows,
    );

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# carboy cache benchmark\n");
    println!(
        "{n} keys (16 random bytes), values of {VALUE_LEN} random bytes, random order, \
         one thread, {cpus} CPUs; each row runs for at least {:.1} s.\n",
        min.as_secs_f64()
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
    {
        let (r, h) = (&report, &report.herd);
        let ms = |s: f64| s * 1e3;
        println!(
            "\n| async comparison (cost per hit; medians of 7 alternating runs of {:.1} s each) | ratio | target |",
            min.as_secs_f64() / 4.0
        );
        println!("|---|---:|---:|");
        println!(
            "| async hit / blocking hit, file (`get_or_create`) | {:.2}× | ≤ 1.2× |",
            r.async_over_blocking
        );
        println!(
            "| carboy async hit / moka `get_with` hit, file | {:.2}× | |",
            r.file_over_moka
        );
        println!(
            "| carboy async hit / moka `get_with` hit, memory | {:.2}× | |",
            r.memory_over_moka
        );
        println!(
            "| herd: {} tasks on one missing key / (one creation + {} hits) | {:.2}× | ≤ 2× |",
            h.tasks, h.tasks, h.ratio
        );
        println!(
            "\nHerd (2 workers, creator computes 5 ms; medians of {} rounds after a warm-up): \
             herd {:.1} ms, {:.2} creation(s) per round; one creation alone {:.1} ms + {} hits \
             in one task {:.1} ms = {:.1} ms; for scale, {} spawned tasks that each hit: {:.1} ms.",
            h.rounds,
            ms(h.herd),
            h.creations_per_round,
            ms(h.one),
            h.tasks,
            ms(h.hits),
            ms(h.one + h.hits),
            h.tasks,
            ms(h.spawned_hits),
        );
        println!(
            "Where the herd's time goes (ms from its start, medians): its creator began at {:.1} \
             and returned at {:.1}, the last task ended at {:.1}. Alone, the creator began at {:.1} \
             and returned at {:.1}, and the call ended at {:.1}.",
            h.herd_creator.0,
            h.herd_creator.1,
            ms(h.herd),
            h.alone_creator.0,
            h.alone_creator.1,
            ms(h.one),
        );
    }
    drop((raw, file_cache, region_cache, memory_cache, file, memory));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The async front's rows (feature `async`): a hit through its
/// `get_or_create` on `file` and on `memory`, awaited in a loop on a
/// current-thread runtime, beside the blocking rows; moka's
/// `future::Cache::get_with` hit on the same keys and values (a
/// process-local cache: the ceiling for a hit); and a herd of tasks asking
/// for one missing key.
#[cfg(feature = "async")]
mod async_rows {
    use std::future::Future;
    use std::hint::black_box;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use carboy::cache::Cache;

    /// The creator of a key that is always present.
    async fn never() -> Result<Vec<u8>, std::convert::Infallible> {
        unreachable!("all hits")
    }

    /// What the async rows found, for the comparison table.
    pub struct Report {
        /// Cost per hit, as a ratio: the async front's over the blocking
        /// front's (`get_or_create` on file); the async front's on file,
        /// then on memory, over moka's.
        pub async_over_blocking: f64,
        pub file_over_moka: f64,
        pub memory_over_moka: f64,
        pub herd: Herd,
    }

    /// The blocking creator of a key that is always present.
    fn blocking_never() -> Result<Vec<u8>, std::convert::Infallible> {
        unreachable!("all hits")
    }

    /// The median over 7 alternations of `a`'s cost per operation over
    /// `b`'s, given their rates.
    fn paired(mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> f64 {
        median((0..7).map(|_| b() / a()).collect())
    }

    /// Hits per second of `op` over `order` on a current-thread runtime,
    /// for at least `min`.
    fn async_rate<F: Future<Output = ()>>(
        rt: &tokio::runtime::Runtime,
        order: &[usize],
        min: Duration,
        op: impl Fn(usize) -> F,
    ) -> f64 {
        rt.block_on(async {
            let start = Instant::now();
            let mut ops = 0u64;
            loop {
                for &i in order {
                    op(i).await;
                }
                ops += order.len() as u64;
                let t = start.elapsed();
                if t >= min {
                    break ops as f64 / t.as_secs_f64();
                }
            }
        })
    }

    /// Adds the async hit rows to `rows`; runs the herd.
    pub fn run(
        file: &Cache,
        memory: &Cache,
        keys: &[[u8; 16]],
        values: &[Vec<u8>],
        order: &[usize],
        min: Duration,
        rows: &mut Vec<(&'static str, f64)>,
    ) -> Report {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (file_front, memory_front) = (file.to_async(), memory.to_async());
        let async_hit = |front: &carboy::cache::AsyncCache, d: Duration| {
            async_rate(&rt, order, d, |i| async move {
                let v: Vec<u8> = front.get_or_create(&keys[i], never).await.expect("hit");
                black_box(v);
            })
        };
        let moka: moka::future::Cache<[u8; 16], Vec<u8>> =
            moka::future::Cache::new(keys.len() as u64);
        rt.block_on(async {
            for (k, v) in keys.iter().zip(values) {
                moka.insert(*k, v.clone()).await;
            }
        });
        let moka_hit = |d: Duration| {
            async_rate(&rt, order, d, |i| {
                let moka = &moka;
                async move {
                    let v = moka
                        .get_with(keys[i], async { unreachable!("all hits") })
                        .await;
                    black_box(v);
                }
            })
        };
        let blocking_hit = |d: Duration| {
            super::rate(order, d, |i| {
                let v: Vec<u8> = file.get_or_create(&keys[i], blocking_never).expect("hit");
                black_box(v);
            })
        };
        let file_rate = async_hit(&file_front, min);
        rows.push(("`get_or_create` hit, file backend, async front", file_rate));
        let memory_rate = async_hit(&memory_front, min);
        rows.push((
            "`get_or_create` hit, memory backend, async front",
            memory_rate,
        ));
        let moka_rate = moka_hit(min);
        rows.push((
            "moka `future::Cache::get_with` hit (process-local)",
            moka_rate,
        ));
        // The ratios, from runs that alternate (the machine is shared).
        let slice = min / 4;
        let async_over_blocking = paired(|| async_hit(&file_front, slice), || blocking_hit(slice));
        let file_over_moka = paired(|| async_hit(&file_front, slice), || moka_hit(slice));
        let memory_over_moka = paired(|| async_hit(&memory_front, slice), || moka_hit(slice));
        let rounds = std::env::var("CARBOY_BENCH_HERD_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(9);
        Report {
            async_over_blocking,
            file_over_moka,
            memory_over_moka,
            herd: herd(file, 10_000, rounds),
        }
    }

    /// The herd's medians over its rounds.
    pub struct Herd {
        pub tasks: u64,
        pub rounds: usize,
        pub creations_per_round: f64,
        /// Medians, in seconds.
        pub herd: f64,
        pub one: f64,
        pub hits: f64,
        pub spawned_hits: f64,
        /// The median of the rounds' herd / (one + hits).
        pub ratio: f64,
        /// When the creator began and returned (ms from the start; medians):
        /// in the herd, and alone. Before it began: the lookups, the flight
        /// and the creation lock taken on a helper thread; after it
        /// returned: the write on a helper thread, then the followers.
        pub herd_creator: (f64, f64),
        pub alone_creator: (f64, f64),
    }

    /// Seconds for `tasks` tasks made by `task` to run to completion on
    /// `rt`'s workers. They are spawned and joined by a task on a worker,
    /// as a server's accept loop would spawn them: spawning and joining
    /// from outside the runtime would add a cross-thread wake-up of that
    /// outside thread per task, which is the harness's cost, not theirs.
    fn on_workers<F>(
        rt: &tokio::runtime::Runtime,
        tasks: u64,
        task: impl Fn(u64) -> F,
    ) -> (Instant, f64)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let spawned: Vec<F> = (0..tasks).map(task).collect();
        let t = Instant::now();
        rt.block_on(async move {
            tokio::spawn(async move {
                let handles: Vec<_> = spawned.into_iter().map(tokio::spawn).collect();
                for h in handles {
                    h.await.expect("task");
                }
            })
            .await
            .expect("driver");
        });
        (t, t.elapsed().as_secs_f64())
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// `tasks` tasks on a 2-worker runtime ask for one missing key at
    /// once; the creator computes for about `WORK`. Against the issue's
    /// budget: one creation plus `tasks` hits, done one after the other
    /// on the same runtime. Each round measures the herd (a new missing
    /// key), then the budget's two parts, then (not in the budget, to
    /// show what 10,000 tasks cost by themselves) `tasks` spawned tasks
    /// that each hit; medians over `rounds` rounds, after one warm-up.
    fn herd(cache: &Cache, tasks: u64, rounds: usize) -> Herd {
        const WORK: Duration = Duration::from_millis(5);
        /// The creator's work: computing for `WORK`.
        fn spin() -> Vec<u8> {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < WORK {
                x = black_box(x.wrapping_add(1));
            }
            x.to_le_bytes().to_vec()
        }
        /// `spin`, recording when it began and returned in `span`.
        fn timed(span: &Span) -> Vec<u8> {
            let began = Instant::now();
            let v = spin();
            *span.lock().expect("span") = Some((began, Instant::now()));
            v
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let front = Arc::new(cache.to_async());
        let created = Arc::new(AtomicU64::new(0));
        // When the creator of the current round began and returned.
        let span: Span = Arc::new(Mutex::new(None));
        let ms_since = |t0: Instant, span: &Span| {
            let (b, e) = span.lock().expect("span").take().expect("a creation");
            (ms(b - t0), ms(e - t0))
        };
        let (mut herd_spans, mut alone_spans) = (Vec::new(), Vec::new());
        let (mut herds, mut ones, mut hits, mut spawned, mut ratios) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..=rounds {
            let key = format!("herd: one missing key, round {round}").into_bytes();
            let (t0, herd) = on_workers(&rt, tasks, |_| {
                let (front, created, key) = (Arc::clone(&front), Arc::clone(&created), key.clone());
                let span = Arc::clone(&span);
                async move {
                    let v: Vec<u8> = front
                        .get_or_create(&key, || async move {
                            created.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(timed(&span))
                        })
                        .await
                        .expect("value");
                    black_box(v);
                }
            });
            let alone = format!("herd: a creation alone, round {round}").into_bytes();
            let herd_span = ms_since(t0, &span);
            let t = Instant::now();
            rt.block_on(async {
                let v: Vec<u8> = front
                    .get_or_create(&alone, || async {
                        Ok::<_, std::convert::Infallible>(timed(&span))
                    })
                    .await
                    .expect("value");
                black_box(v);
            });
            let one = t.elapsed().as_secs_f64();
            let alone_span = ms_since(t, &span);
            let t = Instant::now();
            rt.block_on(async {
                for _ in 0..tasks {
                    let v: Vec<u8> = front.get_or_create(&key, never).await.expect("hit");
                    black_box(v);
                }
            });
            let hit = t.elapsed().as_secs_f64();
            let (_, spawned_hit) = on_workers(&rt, tasks, |_| {
                let (front, key) = (Arc::clone(&front), key.clone());
                async move {
                    let v: Vec<u8> = front.get_or_create(&key, never).await.expect("hit");
                    black_box(v);
                }
            });
            if round > 0 {
                herds.push(herd);
                ones.push(one);
                hits.push(hit);
                spawned.push(spawned_hit);
                ratios.push(herd / (one + hit));
                herd_spans.push(herd_span);
                alone_spans.push(alone_span);
            }
        }
        Herd {
            tasks,
            rounds,
            creations_per_round: created.load(Ordering::Relaxed) as f64 / (rounds + 1) as f64,
            herd: median(herds),
            one: median(ones),
            hits: median(hits),
            spawned_hits: median(spawned),
            ratio: median(ratios),
            herd_creator: (
                median(herd_spans.iter().map(|s| s.0).collect()),
                median(herd_spans.iter().map(|s| s.1).collect()),
            ),
            alone_creator: (
                median(alone_spans.iter().map(|s| s.0).collect()),
                median(alone_spans.iter().map(|s| s.1).collect()),
            ),
        }
    }

    /// When a creator began and returned.
    type Span = Arc<Mutex<Option<(Instant, Instant)>>>;

    /// Milliseconds in `d`.
    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }
}
