//! Store benchmark: bulk load, point reads (one key per call and
//! `get_many`), full scans, individual and batched writes, misses, file
//! size and peak RSS, printed as a markdown table.
//!
//! Run with `cargo bench -p carboy --bench store`. Environment:
//!
//! * `CARBOY_BENCH_N`: number of keys (default 1,000,000);
//! * `CARBOY_BENCH_DIR`: where the temporary store goes (default: the
//!   system temp dir); put it on the filesystem you care about.
//!
//! Every row uses the same seeded keys (16 random bytes) and values (100
//! random bytes), drawn from a splitmix64 generator.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carboy::{Durability, Options, Store};

mod common;

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const SEED: u64 = 0x00ca_4b0f_5eed_2026;
const BATCH: usize = 1_000;

use common::Rng;

fn keys(seed: u64, n: usize) -> Vec<[u8; KEY_LEN]> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut k = [0u8; KEY_LEN];
            rng.fill(&mut k);
            k
        })
        .collect()
}

/// `count` keys of `keys` in random order, copied out in that order so
/// that the timed loop streams through them: fetching a key must not cost
/// a cache miss of its own (about 200 ns here) on top of the store's.
fn shuffled(keys: &[[u8; KEY_LEN]], seed: u64, count: usize) -> Vec<[u8; KEY_LEN]> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| keys[rng.below(keys.len())]).collect()
}

/// `count` keys to write: even positions overwrite a random present key,
/// odd ones take the next new key from `fresh`.
fn write_mix(
    present: &[[u8; KEY_LEN]],
    fresh: &mut impl Iterator<Item = [u8; KEY_LEN]>,
    rng: &mut Rng,
    count: usize,
) -> Vec<[u8; KEY_LEN]> {
    (0..count)
        .map(|i| {
            if i.is_multiple_of(2) {
                present[rng.below(present.len())]
            } else {
                fresh.next().expect("fresh key")
            }
        })
        .collect()
}

/// One table row.
struct Row {
    what: String,
    ops: String,
    time: String,
    rate: String,
}

struct Table(Vec<Row>);

impl Table {
    fn rate(&mut self, what: &str, ops: usize, unit: &str, took: Duration) {
        let secs = took.as_secs_f64();
        self.0.push(Row {
            what: what.to_string(),
            ops: group(ops as u64),
            time: format!("{:.3} s", secs),
            rate: format!("{} {unit}", human(ops as f64 / secs)),
        });
    }

    fn note(&mut self, what: &str, ops: &str, time: &str, rate: String) {
        self.0.push(Row {
            what: what.to_string(),
            ops: ops.to_string(),
            time: time.to_string(),
            rate,
        });
    }

    fn print(&self) {
        println!("| what | ops | time | result |");
        println!("|---|---:|---:|---:|");
        for r in &self.0 {
            println!("| {} | {} | {} | {} |", r.what, r.ops, r.time, r.rate);
        }
    }
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with an M / k suffix.
fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{:.0}", x)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A `key: value` line of a `/proc` file.
fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn peak_rss() -> String {
    proc_field("/proc/self/status", "VmHWM").unwrap_or_else(|| "unknown".into())
}

/// The filesystem type `dir` lives on, from /proc/self/mounts.
fn fs_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, ty)| ty)
}

fn machine() {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let mem = proc_field("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into());
    let mem = mem
        .trim_end_matches(" kB")
        .parse::<u64>()
        .map_or(mem.clone(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    println!("- machine: {nproc} CPUs (nproc), {mem} RAM, {cpu}");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Writes a fresh random value into `buf`.
fn value<'b>(rng: &mut Rng, buf: &'b mut [u8; VALUE_LEN]) -> &'b [u8] {
    rng.fill(buf);
    &buf[..]
}

/// A get of every key of `keys`, returning (found, bytes). Not inlined, so
/// that a profiler can be limited to it:
/// `valgrind --tool=callgrind --toggle-collect='*read_all*' <bench binary>`.
#[inline(never)]
fn read_all(store: &Store, keys: &[[u8; KEY_LEN]]) -> (usize, usize) {
    let mut found = 0;
    let mut bytes = 0;
    for k in keys {
        if let Some(v) = store.get(black_box(k)).expect("get") {
            found += 1;
            bytes += black_box(v.len());
        }
    }
    (found, bytes)
}

fn main() {
    let n: usize = std::env::var("CARBOY_BENCH_N")
        .ok()
        .and_then(|s| s.replace(['_', ','], "").parse().ok())
        .unwrap_or(1_000_000)
        .max(BATCH);
    let base: PathBuf = std::env::var_os("CARBOY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let path = dir.path().join("bench.carboy");
    let raw_pair = (KEY_LEN + VALUE_LEN) as u64;

    let puts = (n / 5).max(1);
    let durable = (n / 500).max(10);
    let batched = (n / 5).max(BATCH) / BATCH * BATCH;

    println!("## carboy store benchmark\n");
    machine();
    println!(
        "- N = {} keys, {KEY_LEN}-byte random keys, {VALUE_LEN}-byte random values (splitmix64, seed {SEED:#x})",
        group(n as u64)
    );
    println!(
        "- store: {} ({})",
        dir.path().display(),
        fs_type(dir.path())
    );
    println!(
        "- reproduce: `cargo bench -p carboy --bench store` (env CARBOY_BENCH_N={n}, CARBOY_BENCH_DIR={})",
        base.display()
    );
    println!();

    let present = keys(SEED, n);
    let absent = keys(SEED ^ 0xdead_beef, n);
    let fresh = keys(SEED ^ 0x0f0f_0f0f, puts.div_ceil(2) + batched.div_ceil(2));
    let reads = shuffled(&present, SEED ^ 1, 2 * n);
    let mut table = Table(Vec::new());
    let mut vrng = Rng::new(SEED ^ 2);
    let mut vbuf = [0u8; VALUE_LEN];

    let store = Options::new()
        .durability(Durability::None)
        .open(&path)
        .expect("open");

    // Bulk load: everything in one transaction.
    let t = Instant::now();
    let mut txn = store.transaction().expect("transaction");
    for k in &present {
        txn.put(k, value(&mut vrng, &mut vbuf)).expect("put");
    }
    txn.commit().expect("commit");
    table.rate("bulk load (1 txn)", n, "keys/s", t.elapsed());
    assert_eq!(store.len().expect("len"), n as u64);
    let loaded_len = file_len(&path);
    let loaded_committed = store.stats().expect("stats").committed_bytes;

    // Random point reads, one thread: get (borrowed) then get_owned.
    let t = Instant::now();
    let (found, _) = read_all(&store, &reads);
    table.rate(
        "get, 1 thread (random present keys)",
        reads.len(),
        "gets/s",
        t.elapsed(),
    );
    assert_eq!(found, reads.len());

    let t = Instant::now();
    let mut found = 0;
    for k in &reads {
        if let Some(v) = store.get_owned(black_box(k)).expect("get") {
            found += 1;
            black_box(v);
        }
    }
    table.rate("get_owned, 1 thread", reads.len(), "gets/s", t.elapsed());
    assert_eq!(found, reads.len());

    // The same reads through get_many, 1,000 keys per call.
    let t = Instant::now();
    let mut found = 0;
    for chunk in reads.chunks(BATCH) {
        store
            .get_many(chunk, |_, v| {
                if let Some(v) = v {
                    found += 1;
                    black_box(v.len());
                }
            })
            .expect("get_many");
    }
    table.rate(
        &format!("get_many, 1 thread, {BATCH} keys per call"),
        reads.len(),
        "gets/s",
        t.elapsed(),
    );
    assert_eq!(found, reads.len());

    // Random point reads, two threads, each its own order.
    let threads = 2;
    let orders: Vec<Vec<[u8; KEY_LEN]>> = (0..threads)
        .map(|t| shuffled(&present, SEED ^ (10 + t as u64), 2 * n))
        .collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = orders
            .iter()
            .map(|o| {
                let store = store.clone();
                s.spawn(move || read_all(&store, o).0)
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("reader"), 2 * n);
        }
    });
    table.rate(
        "get, 2 threads (aggregate)",
        threads * 2 * n,
        "gets/s",
        t.elapsed(),
    );
    drop(orders);
    drop(reads);

    // Full scans: borrowed from a snapshot, then copied out by Store::iter.
    let t = Instant::now();
    let snap = store.snapshot().expect("snapshot");
    let mut entries = 0;
    for e in snap.iter() {
        black_box(e.expect("entry").value.len());
        entries += 1;
    }
    drop(snap);
    table.rate(
        "full scan, Snapshot::iter (borrowed)",
        entries,
        "entries/s",
        t.elapsed(),
    );
    assert_eq!(entries, n);
    let t = Instant::now();
    let mut entries = 0;
    for e in store.iter().expect("iter") {
        black_box(e.expect("entry").value.len());
        entries += 1;
    }
    table.rate(
        "full scan, Store::iter (copied)",
        entries,
        "entries/s",
        t.elapsed(),
    );
    assert_eq!(entries, n);

    // Misses.
    let t = Instant::now();
    let mut found = 0;
    for k in &absent {
        found += usize::from(store.get(black_box(k)).expect("get").is_some());
    }
    table.rate("get, absent keys (misses)", n, "gets/s", t.elapsed());
    assert_eq!(found, 0);

    // Individual puts, each its own commit: alternately an existing key
    // (overwrite) and a new one.
    let mut krng = Rng::new(SEED ^ 3);
    let mut fresh = fresh.into_iter();
    let put_keys = write_mix(&present, &mut fresh, &mut krng, puts);
    let durable_keys = shuffled(&present, SEED ^ 4, durable);
    let batch_keys = write_mix(&present, &mut fresh, &mut krng, batched);
    let t = Instant::now();
    for k in &put_keys {
        store.put(k, value(&mut vrng, &mut vbuf)).expect("put");
    }
    table.rate(
        "put, 1 commit each, Durability::None (1/2 overwrite)",
        puts,
        "puts/s",
        t.elapsed(),
    );

    // Individual durable puts: overwrites of existing keys.
    let sync_store = Options::new()
        .durability(Durability::Sync)
        .open(&path)
        .expect("open sync");
    let t = Instant::now();
    for k in &durable_keys {
        sync_store.put(k, value(&mut vrng, &mut vbuf)).expect("put");
    }
    table.rate(
        "put, 1 commit each, Durability::Sync (overwrite)",
        durable,
        "commits/s",
        t.elapsed(),
    );
    drop(sync_store);

    // Batches of BATCH keys per transaction, same mix.
    let t = Instant::now();
    for chunk in batch_keys.chunks(BATCH) {
        let mut txn = store.transaction().expect("transaction");
        for k in chunk {
            txn.put(k, value(&mut vrng, &mut vbuf)).expect("put");
        }
        txn.commit().expect("commit");
    }
    table.rate(
        &format!("put, {BATCH} keys per txn, Durability::None (1/2 overwrite)"),
        batched,
        "keys/s",
        t.elapsed(),
    );

    // Sizes.
    let live = store.len().expect("len");
    table.note(
        "file size after bulk load",
        &group(n as u64),
        "",
        format!(
            "{} ({} committed); {:.2}× raw {}",
            mib(loaded_len),
            mib(loaded_committed),
            loaded_len as f64 / (n as u64 * raw_pair) as f64,
            mib(n as u64 * raw_pair)
        ),
    );
    let before = file_len(&path);
    let t = Instant::now();
    let report = store.compact().expect("compact");
    let took = t.elapsed();
    let after = file_len(&path);
    table.note(
        "file size after writes, before compact()",
        &group(live),
        "",
        format!(
            "{} ({} committed); {:.2}× raw {}",
            mib(before),
            mib(report.bytes_before),
            before as f64 / (live * raw_pair) as f64,
            mib(live * raw_pair)
        ),
    );
    table.note(
        "file size after compact()",
        &group(report.keys),
        &format!("{:.3} s", took.as_secs_f64()),
        format!(
            "{} ({} committed); {:.2}× raw {}",
            mib(after),
            mib(report.bytes_after),
            after as f64 / (live * raw_pair) as f64,
            mib(live * raw_pair)
        ),
    );
    assert_eq!(store.len().expect("len"), live);
    table.note(
        "peak RSS (VmHWM, includes mapped file pages)",
        "",
        "",
        peak_rss(),
    );

    table.print();
}
