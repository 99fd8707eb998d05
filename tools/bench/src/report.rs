//! The markdown report (and the targets check the JSON carries too).

use std::fmt::Write;

use serde::Serialize;

use crate::driver::{EngineRun, Run};
use crate::measure::{Measure, Value};
use crate::workloads::{BATCH, MP_READ_CHUNK};

/// The peers: every engine but carboy and the HashMap ceiling.
const PEERS: &[&str] = &["lmdb", "redb", "sqlite", "sled", "fjall"];

/// A rate with an M / k suffix.
pub fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{:.0}", x)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
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

struct Row {
    id: &'static str,
    label: String,
    /// Higher is better (rates) or lower (sizes, memory).
    higher: bool,
}

fn rows(run: &Run) -> Vec<Row> {
    let p = &run.params;
    let r = |id, label: String| Row {
        id,
        label,
        higher: true,
    };
    let l = |id, label: String| Row {
        id,
        label,
        higher: false,
    };
    vec![
        r(
            "load",
            format!("bulk load, {} keys in 1 txn (keys/s)", group(p.n)),
        ),
        r("get1", "random get, 1 thread (gets/s)".into()),
        r("get2", "random get, 2 threads, total (gets/s)".into()),
        r("put", "put, 1 commit each, no fsync (puts/s)".into()),
        r("put_sync", "put, 1 commit each, durable (commits/s)".into()),
        r(
            "batch",
            format!("put, {} keys per commit, no fsync (keys/s)", group(BATCH)),
        ),
        r(
            "delete",
            "delete, 1 commit each, no fsync (deletes/s)".into(),
        ),
        r("scan", "full scan (entries/s)".into()),
        l("size_load", "size on disk after load (× raw)".into()),
        l(
            "size_written",
            "size on disk after all writes (× raw)".into(),
        ),
        l(
            "size_compact",
            "size on disk after compaction, engine closed (× raw)".into(),
        ),
        l("peak_mem", "peak memory, VmHWM of the process".into()),
        r(
            "mp_read",
            "2 reader processes + 1 writer process (gets/s of the readers)".into(),
        ),
        r(
            "mp_write4",
            "4 writer processes, durable puts (commits/s, total)".into(),
        ),
    ]
}

fn figure(e: &EngineRun, id: &str) -> Option<f64> {
    e.get(id).and_then(|m| m.value.figure())
}

fn engine<'a>(run: &'a Run, name: &str) -> Option<&'a EngineRun> {
    run.engines.iter().find(|e| e.name == name)
}

fn cell(m: Option<&Measure>, notes: &mut Vec<String>, who: &str) -> String {
    let Some(m) = m else {
        return "—".into();
    };
    let mut s = match &m.value {
        Value::Rate { .. } => human(m.value.rate().unwrap_or(0.0)),
        Value::Size { bytes, raw } => {
            if *raw > 0 {
                format!("{} ({:.2}×)", mib(*bytes), *bytes as f64 / *raw as f64)
            } else {
                mib(*bytes)
            }
        }
        Value::Memory { bytes, .. } => mib(*bytes),
        Value::NotSupported { reason } => {
            if reason == "in memory" {
                "n/a".into()
            } else {
                "not supported".into()
            }
        }
        Value::Failed { error } => {
            notes.push(format!("{who}, {}: failed: {error}", m.id));
            return format!("failed [{}]", notes.len());
        }
    };
    // Only notes that change how to read the number become footnotes; the
    // rest (compaction times, per-process rates, phases of peak memory,
    // passes) are shown in the sections below the table.
    if let Some(n) = &m.note
        && let Some(i) = n.find("stopped at")
    {
        notes.push(format!("{who}, {}: {}", m.id, &n[i..]));
        let _ = write!(s, " [{}]", notes.len());
    }
    s
}

/// Rows that only mean something for a really durable commit.
const DURABLE_ROWS: &[&str] = &["put_sync", "mp_write4"];

/// The best peer's figure of a row and its name.
fn best_peer(run: &Run, row: &Row) -> Option<(f64, String)> {
    PEERS
        .iter()
        .filter_map(|p| engine(run, p))
        .filter(|e| !(DURABLE_ROWS.contains(&row.id) && e.durable_caveat.is_some()))
        .filter_map(|e| figure(e, row.id).map(|f| (f, e.label.clone())))
        .reduce(|a, b| {
            let better = if row.higher { b.0 > a.0 } else { b.0 < a.0 };
            if better { b } else { a }
        })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

/// One target and whether this run meets it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub workload: String,
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub holds: Option<bool>,
}

pub fn targets(run: &Run) -> Vec<Target> {
    let rows = rows(run);
    let row = |id: &str| rows.iter().find(|r| r.id == id).expect("row");
    let carboy = engine(run, "carboy");
    let c = |id: &str| carboy.and_then(|e| figure(e, id));
    let of = |name: &str, id: &str| engine(run, name).and_then(|e| figure(e, id));
    let best = |id: &str| best_peer(run, row(id));
    let mut out = Vec::new();

    for (id, what) in [
        ("get1", "random reads, 1 thread"),
        ("get2", "random reads, 2 threads"),
    ] {
        let vs_lmdb = ratio(c(id), of("lmdb", id));
        let vs_map = ratio(c(id), of("hashmap", id));
        out.push(Target {
            workload: what.into(),
            target: "≥ 4× LMDB and ≥ 0.5× the HashMap ceiling".into(),
            measured: format!("{} LMDB, {} HashMap", fmt_ratio(vs_lmdb), fmt_ratio(vs_map)),
            holds: vs_lmdb.zip(vs_map).map(|(a, b)| a >= 4.0 && b >= 0.5),
        });
    }
    for (id, what, need) in [
        ("put", "individual puts, no fsync", 2.0),
        ("put_sync", "durable puts, 1 writer", 1.0),
        ("batch", "batches of 1,000", 1.5),
    ] {
        let b = best(id);
        let r = ratio(c(id), b.as_ref().map(|b| b.0));
        out.push(Target {
            workload: what.into(),
            target: format!("≥ {need}× the best peer"),
            measured: format!(
                "{} ({})",
                fmt_ratio(r),
                b.map_or("no peer".into(), |b| format!(
                    "best peer {} {}",
                    b.1,
                    human(b.0)
                ))
            ),
            holds: r.map(|r| r >= need),
        });
    }
    let r = ratio(c("mp_write4"), c("put_sync"));
    out.push(Target {
        workload: "durable puts, 4 writer processes".into(),
        target: "≥ 3× carboy's own 1-writer figure".into(),
        measured: format!(
            "{} ({} vs {} commits/s)",
            fmt_ratio(r),
            c("mp_write4").map_or("—".into(), human),
            c("put_sync").map_or("—".into(), human)
        ),
        holds: r.map(|r| r >= 3.0),
    });
    let r = ratio(c("load"), of("lmdb", "load"));
    out.push(Target {
        workload: "bulk load".into(),
        target: "≥ 2× LMDB".into(),
        measured: fmt_ratio(r),
        holds: r.map(|r| r >= 2.0),
    });
    let compact = carboy
        .and_then(|e| e.get("size_compact"))
        .and_then(|m| match m.value {
            Value::Size { bytes, raw } if raw > 0 => Some(bytes as f64 / raw as f64),
            _ => None,
        });
    out.push(Target {
        workload: "size after compaction".into(),
        target: "≤ 1.3× the raw key+value bytes".into(),
        measured: fmt_ratio(compact),
        holds: compact.map(|r| r <= 1.3),
    });
    let largest = ["size_load", "size_written", "size_compact"]
        .iter()
        .filter_map(|id| c(id))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let peak = c("peak_mem");
    let slack = 8.0 * 1048576.0;
    out.push(Target {
        workload: "peak memory".into(),
        target: "≤ the file's size + a few MiB (taken as + 8 MiB over the largest size seen)"
            .into(),
        measured: match (peak, largest) {
            (Some(p), Some(l)) => {
                format!("{} peak vs {} largest file", mib(p as u64), mib(l as u64))
            }
            _ => "—".into(),
        },
        holds: peak.zip(largest).map(|(p, l)| p <= l + slack),
    });
    let g = |n: u64| {
        run.growth
            .iter()
            .find(|g| g.n == n)
            .and_then(|g| g.measures.iter().find(|m| m.id == "growth_get"))
            .and_then(|m| m.value.rate())
    };
    let at4 = g(10_000);
    let r7 = ratio(g(10_000_000), at4);
    let r6 = ratio(g(1_000_000), at4);
    out.push(Target {
        workload: "reads at N = 10^7".into(),
        target: "≥ 70% of reads at N = 10^4".into(),
        measured: match r7 {
            Some(r) => format!("{:.0}%", r * 100.0),
            None => format!(
                "not run (--growth-1e7); at 10^6: {}",
                r6.map_or("—".into(), |r| format!("{:.0}%", r * 100.0))
            ),
        },
        holds: r7.map(|r| r >= 0.7),
    });
    out
}

pub fn markdown(run: &Run) -> String {
    let mut s = String::new();
    let p = &run.params;
    let m = &run.machine;
    let _ = writeln!(
        s,
        "# carboy-bench: carboy against LMDB, redb, SQLite, sled, fjall\n"
    );
    let _ = writeln!(s, "- date: {}; carboy at {}", run.date, run.carboy_rev);
    let _ = writeln!(s, "- reproduce: `{}`", run.command);
    let _ = writeln!(
        s,
        "- machine: {} CPUs ({}{}), {:.1} GiB RAM, Linux {}",
        m.cpus,
        m.cpu_model,
        if m.hypervisor {
            ", virtual machine"
        } else {
            ""
        },
        m.memory_gib,
        m.kernel
    );
    let _ = writeln!(
        s,
        "- disk: {} ({}, {}; rotational flag {}), data in {}",
        m.device,
        m.filesystem,
        m.mount_options,
        m.rotational.map_or("unknown".into(), |r| r.to_string()),
        m.data_dir
    );
    let _ = writeln!(s, "- build: {}, release profile", m.rustc);
    let _ = writeln!(
        s,
        "- crates: {}; SQLite {}; {}",
        run.crate_versions, run.sqlite_library, run.lmdb_library
    );
    let _ = writeln!(
        s,
        "- data: N = {} keys, 16-byte random keys, 100-byte random values, the same for every engine (seeded splitmix64, computed on the fly)",
        group(p.n)
    );
    let _ = writeln!(
        s,
        "- counts: {} gets per thread; {} individual puts (half overwrite a random present key, half add a new key); {} durable puts (overwrites); {} keys in batches of {} (same mix); {} deletes of distinct present keys; each write row stops at a {:.0} s cap if not done",
        group(p.reads),
        group(p.puts),
        group(p.durable),
        group(p.batched),
        group(BATCH),
        group(p.deletes),
        p.cap_secs
    );
    let _ = writeln!(
        s,
        "- multi-process rows: {:.0} s each on a database of N keys; the writer beside the readers commits individual non-durable puts paced at {} puts/s; readers take a read transaction per {} gets; durable writers overwrite random keys",
        p.mp_secs,
        human(p.mp_write_rate),
        group(MP_READ_CHUNK)
    );
    let _ = writeln!(
        s,
        "- total wall time {:.1} min; 1-minute load average {:.2} at start, {:.2} at end (other sessions share this machine: see Noise)\n",
        run.wall_secs / 60.0,
        run.load_start,
        run.load_end
    );

    // The table.
    let rows = rows(run);
    let mut notes = Vec::new();
    let _ = write!(s, "| workload |");
    for e in &run.engines {
        let _ = write!(s, " {} |", e.label);
    }
    let _ = writeln!(
        s,
        " carboy / best peer | carboy / LMDB | carboy / HashMap |"
    );
    let _ = write!(s, "|---|");
    for _ in &run.engines {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|---:|---:|");
    for row in &rows {
        let label = if row.higher {
            row.label.clone()
        } else {
            format!("{} — lower is better", row.label)
        };
        let _ = write!(s, "| {label} |");
        for e in &run.engines {
            let mut c = cell(e.get(row.id), &mut notes, &e.label);
            if let (true, Some(why), Some(Value::Rate { .. })) = (
                DURABLE_ROWS.contains(&row.id),
                &e.durable_caveat,
                e.get(row.id).map(|m| &m.value),
            ) {
                notes.push(format!(
                    "{}, {}: not counted as best peer: {why}",
                    e.label, row.id
                ));
                let _ = write!(c, " [{}]", notes.len());
            }
            let _ = write!(s, " {c} |");
        }
        let carboy = engine(run, "carboy").and_then(|e| figure(e, row.id));
        let best = best_peer(run, row);
        let vs_best = match (ratio(carboy, best.as_ref().map(|b| b.0)), &best) {
            (Some(r), Some((_, who))) => format!("**{r:.2}×** ({who})"),
            _ => "—".into(),
        };
        let vs_lmdb = fmt_ratio(ratio(
            carboy,
            engine(run, "lmdb").and_then(|e| figure(e, row.id)),
        ));
        let vs_map = fmt_ratio(ratio(
            carboy,
            engine(run, "hashmap").and_then(|e| figure(e, row.id)),
        ));
        let _ = writeln!(s, " {vs_best} | {vs_lmdb} | {vs_map} |");
    }
    let _ = writeln!(
        s,
        "\nRates are operations per second (M = 10^6, k = 10^3). Sizes are bytes allocated on disk (st_blocks, as `du` counts) for the whole database directory, with the ratio to the raw key+value bytes of the live entries. \"carboy / best peer\" compares with the best of LMDB, redb, SQLite, sled and fjall (for sizes and memory: the smallest); the HashMap is the in-memory ceiling, not a peer. \"n/a\": the HashMap keeps nothing on disk."
    );
    if !notes.is_empty() {
        let _ = writeln!(s);
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(s, "{}. {n}", i + 1);
        }
    }

    // Multi-process details and reasons.
    let _ = writeln!(s, "\nMulti-process rows in detail:\n");
    for e in &run.engines {
        for id in ["mp_read", "mp_write4"] {
            if let Some(m) = e.get(id) {
                let what = match &m.value {
                    Value::NotSupported { reason } => format!("not supported: {reason}"),
                    Value::Failed { error } => format!("failed: {error}"),
                    v => format!(
                        "{}{}",
                        human(v.rate().unwrap_or(0.0)),
                        m.note.as_ref().map_or(String::new(), |n| format!(" — {n}"))
                    ),
                };
                let _ = writeln!(s, "- {} `{id}`: {what}", e.label);
            }
        }
    }

    // Compaction times.
    let _ = writeln!(s, "\nCompaction (after all writes):\n");
    for e in &run.engines {
        if let Some(m) = e.get("size_compact") {
            let what = match (&m.value, &m.note) {
                (Value::Size { .. }, Some(n)) => n.clone(),
                (Value::NotSupported { reason }, _) => reason.clone(),
                (Value::Failed { error }, _) => format!("failed: {error}"),
                _ => "done".into(),
            };
            let _ = writeln!(s, "- {}: {what}", e.label);
        }
    }

    // Peak memory.
    let _ = writeln!(
        s,
        "\nPeak memory (VmHWM counts file pages mapped and touched, too):\n"
    );
    for e in &run.engines {
        if let Some(Measure {
            value: Value::Memory { bytes, baseline },
            note,
            ..
        }) = e.get("peak_mem")
        {
            let _ = writeln!(
                s,
                "- {}: {} peak ({}); {} before the engine was opened (the harness)",
                e.label,
                mib(*bytes),
                note.as_deref().unwrap_or(""),
                mib(*baseline)
            );
        }
    }

    // Cost growth.
    if !run.growth.is_empty() {
        let _ = writeln!(
            s,
            "\n## Cost growth (carboy)\n\nEach point is a fresh database of N keys in its own process: bulk load, then {} random gets (1 thread) and {} individual non-durable puts (same mix as above).\n",
            group(p.growth_reads),
            group(p.growth_puts)
        );
        let _ = writeln!(
            s,
            "| N | bulk load (keys/s) | get (gets/s) | put (puts/s) | get vs N = 10^4 | put vs N = 10^4 | size after load |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
        let first = run.growth.iter().find(|g| g.n == 10_000);
        let rate = |g: &crate::driver::GrowthPoint, id: &str| {
            g.measures
                .iter()
                .find(|m| m.id == id)
                .and_then(|m| m.value.rate())
        };
        for g in &run.growth {
            let f = |id: &str| rate(g, id).map_or("—".into(), human);
            let rel = |id: &str| match (rate(g, id), first.and_then(|f| rate(f, id))) {
                (Some(a), Some(b)) => format!("{:.0}%", 100.0 * a / b),
                _ => "—".into(),
            };
            let size = g
                .measures
                .iter()
                .find(|m| m.id == "growth_size")
                .map_or("—".into(), |m| cell(Some(m), &mut Vec::new(), ""));
            let err = g
                .measures
                .iter()
                .find_map(|m| match &m.value {
                    Value::Failed { error } => Some(format!(" (failed: {error})")),
                    _ => None,
                })
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| 10^{}{err} | {} | {} | {} | {} | {} | {size} |",
                g.n.ilog10(),
                f("growth_load"),
                f("growth_get"),
                f("growth_put"),
                rel("growth_get"),
                rel("growth_put"),
            );
        }
    }

    // Targets.
    let _ = writeln!(s, "\n## Targets, as measured in this run\n");
    let _ = writeln!(s, "| workload | target | measured | holds |");
    let _ = writeln!(s, "|---|---|---|---|");
    for t in targets(run) {
        let holds = match t.holds {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {holds} |",
            t.workload, t.target, t.measured
        );
    }

    // Settings.
    let _ = writeln!(s, "\n## Engine settings (non-durable / durable)\n");
    for e in &run.engines {
        let _ = writeln!(s, "- **{}**: {}", e.label, e.settings);
    }

    // Noise.
    let _ = writeln!(
        s,
        "\n## Noise\n\nThis machine is shared with other sessions; the 1-minute load average when each engine's single-process suite started (2.0 means both cores were already busy with other work):\n"
    );
    for e in &run.engines {
        let _ = writeln!(
            s,
            "- {}: load {:.2}, suite took {:.1} s",
            e.label, e.load_before, e.suite_secs
        );
    }
    let _ = writeln!(
        s,
        "\nThe disk under the data directory, probed by the driver (`fdatasync` after a 200-byte write into a fresh 4 KiB block): {} syncs/s overwriting blocks already written and {} syncs/s writing into blocks reserved with `fallocate`, at the start of the run; {} and {} at the end. The durable rows move with this figure, which depends on what else the machine's disk is doing.",
        human(run.disk_syncs_start.0),
        human(run.disk_syncs_start.1),
        human(run.disk_syncs_end.0),
        human(run.disk_syncs_end.1)
    );
    let _ = writeln!(
        s,
        "\nOne random memory read that depends on the one before (a pointer chase through a heap block, 4 KiB pages) took {} (at the start of the run). That is the floor under a random point read from data of that size: a carboy get at N = 10^6 (a 150 MiB file) makes two such reads in turn, its index slot and then its record; LMDB walks a B-tree, the HashMap follows its bucket to the key and value on the heap.",
        run.memory_latency
            .iter()
            .map(|(mib, ns)| format!("{ns:.0} ns in {mib} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (one, scattered, contiguous) = run.sync_scatter;
    let _ = writeln!(
        s,
        "\nOne `fdatasync` of a 64 MiB file took {one:.0} µs with 1 dirty page, {scattered:.0} µs with 4 pages scattered over the file and {contiguous:.0} µs with 4 contiguous pages (at the start of the run). A commit dirties the log pages it appends and one index page per key, scattered; carboy's Sync commits write only the log bytes (engine/DESIGN.md, \"Log-only syncs\")."
    );
    let cpu_rows = [
        ("load", "bulk load"),
        ("get1", "get, 1 thread"),
        ("get2", "get, 2 threads"),
        ("put", "put"),
        ("put_sync", "durable put"),
        ("batch", "batches"),
        ("delete", "delete"),
        ("scan", "scan"),
    ];
    let _ = writeln!(
        s,
        "\nCPU time the engine's process used per second of each row (every thread counted; 100% = one full core). A CPU-bound single-threaded row well under 100%, or a 2-thread row well under 200%, lost time to other work on the machine; durable rows wait for the disk, and engines with background threads can exceed the thread count. Read rows and the scan are the best of up to 3 passes (while under the time cap).\n"
    );
    let _ = write!(s, "| row |");
    for e in &run.engines {
        let _ = write!(s, " {} |", e.label);
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|");
    for _ in &run.engines {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for (id, label) in cpu_rows {
        let _ = write!(s, "| {label} |");
        for e in &run.engines {
            let c = e
                .get(id)
                .and_then(Measure::cpu_share)
                .map_or("—".into(), |c| format!("{:.0}%", c * 100.0));
            let _ = write!(s, " {c} |");
        }
        let _ = writeln!(s);
    }
    s
}
