//! The driver: runs every engine's workloads in child processes, then
//! prints the report.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Opts;
use crate::engine::Engine;
use crate::machine::{Machine, load_avg};
use crate::measure::{Measure, PREFIX, Value};
use crate::with_engine;
use crate::workloads::Params;

/// Everything one engine produced.
#[derive(Clone, Debug, Serialize)]
pub struct EngineRun {
    pub name: String,
    pub label: String,
    pub settings: String,
    /// Set when the engine's durable commits are not really durable.
    pub durable_caveat: Option<String>,
    pub measures: Vec<Measure>,
    /// 1-minute load average when its single-process suite started.
    pub load_before: f64,
    pub suite_secs: f64,
}

impl EngineRun {
    pub fn get(&self, id: &str) -> Option<&Measure> {
        self.measures.iter().find(|m| m.id == id)
    }
}

/// One point of carboy's cost growth.
#[derive(Clone, Debug, Serialize)]
pub struct GrowthPoint {
    pub n: u64,
    pub measures: Vec<Measure>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub command: String,
    pub date: String,
    pub carboy_rev: String,
    pub machine: Machine,
    pub crate_versions: String,
    pub sqlite_library: String,
    pub lmdb_library: String,
    pub params: Params,
    pub engines: Vec<EngineRun>,
    pub growth: Vec<GrowthPoint>,
    pub wall_secs: f64,
    pub load_start: f64,
    pub load_end: f64,
    /// `fdatasync`s per second of the data directory's disk at the start
    /// and at the end of the run: (overwriting written blocks, writing
    /// into fallocated blocks).
    pub disk_syncs_start: (f64, f64),
    pub disk_syncs_end: (f64, f64),
    /// µs per `fdatasync` with 1 dirty page, 4 scattered, 4 contiguous
    /// (at the start of the run).
    pub sync_scatter: (f64, f64, f64),
    /// ns per dependent random memory read, by block size in MiB.
    pub memory_latency: Vec<(u64, f64)>,
}

fn log(msg: &str) {
    eprintln!("[carboy-bench] {msg}");
}

fn child_cmd(engine: &str, workload: &str, data: &Path, p: &Params) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut c = Command::new(exe);
    c.args([
        "--child",
        "--engine",
        engine,
        "--workload",
        workload,
        "--data",
    ])
    .arg(data)
    .arg("--params")
    .arg(serde_json::to_string(p).expect("params"))
    .stderr(Stdio::inherit());
    c
}

/// Reads a child's stdout to the end: its measures, and whether it said READY.
fn collect(out: &mut BufReader<ChildStdout>, until_ready: bool) -> (Vec<Measure>, bool) {
    let mut ms = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => return (ms, false),
            Ok(_) => {}
        }
        let l = line.trim_end();
        if l == "READY" && until_ready {
            return (ms, true);
        }
        if let Some(j) = l.strip_prefix(PREFIX) {
            match serde_json::from_str::<Measure>(j) {
                Ok(m) => ms.push(m),
                Err(e) => log(&format!("unreadable child line {l:?}: {e}")),
            }
        }
    }
}

fn failed(id: &str, error: String) -> Measure {
    Measure::new(id, Value::Failed { error })
}

/// Runs one child to completion; a failure becomes a `Failed` measure.
fn run_child(engine: &str, workload: &str, data: &Path, p: &Params) -> Vec<Measure> {
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data).expect("data dir");
    let mut child = match child_cmd(engine, workload, data, p)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return vec![failed("error", format!("spawn: {e}"))],
    };
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut ms, _) = collect(&mut out, false);
    match child.wait() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            if !ms.iter().any(|m| matches!(m.value, Value::Failed { .. })) {
                ms.push(failed("error", format!("child exited with {s}")));
            }
        }
        Err(e) => ms.push(failed("error", format!("wait: {e}"))),
    }
    ms
}

struct Running {
    child: Child,
    out: BufReader<ChildStdout>,
    early: Vec<Measure>,
    ready: bool,
}

/// Starts every `(workload, id)` child on the shared `data` dir, waits
/// until all are ready, starts them at once, and collects what each
/// reported (one `Vec` per child, in order).
fn run_together(engine: &str, data: &Path, p: &Params, who: &[(&str, u64)]) -> Vec<Vec<Measure>> {
    let mut running = Vec::new();
    for (workload, id) in who {
        let mut cmd = child_cmd(engine, workload, data, p);
        cmd.args(["--multi-process", "--id", &id.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        match cmd.spawn() {
            Ok(mut child) => {
                let out = BufReader::new(child.stdout.take().expect("stdout"));
                running.push(Some(Running {
                    child,
                    out,
                    early: Vec::new(),
                    ready: false,
                }));
            }
            Err(e) => {
                log(&format!("spawn {engine}/{workload}: {e}"));
                running.push(None);
            }
        }
    }
    for r in running.iter_mut().flatten() {
        let (ms, ready) = collect(&mut r.out, true);
        r.early = ms;
        r.ready = ready;
    }
    // Go: one line to every child's stdin, all at once.
    for r in running.iter_mut().flatten() {
        if let Some(stdin) = r.child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }
    running
        .into_iter()
        .map(|r| {
            let Some(mut r) = r else {
                return vec![failed("error", "spawn failed".into())];
            };
            let (more, _) = collect(&mut r.out, false);
            let mut ms = r.early;
            ms.extend(more);
            let status = r.child.wait();
            if (!r.ready || !matches!(status, Ok(s) if s.success()))
                && !ms.iter().any(|m| matches!(m.value, Value::Failed { .. }))
            {
                ms.push(failed("error", format!("child failed: {status:?}")));
            }
            ms
        })
        .collect()
}

fn find<'a>(ms: &'a [Measure], id: &str) -> Option<&'a Measure> {
    ms.iter().find(|m| m.id == id)
}

fn first_error(ms: &[Measure]) -> Option<String> {
    ms.iter().find_map(|m| match &m.value {
        Value::Failed { error } => Some(error.clone()),
        _ => None,
    })
}

/// Sums the `Rate` measures `id` of several children: total ops over the
/// longest of their times.
fn sum_rates(all: &[Vec<Measure>], id: &str) -> Option<(u64, f64, Vec<f64>)> {
    let mut ops = 0;
    let mut secs: f64 = 0.0;
    let mut each = Vec::new();
    for ms in all {
        match find(ms, id).map(|m| &m.value) {
            Some(v @ Value::Rate { ops: o, secs: s }) => {
                ops += o;
                secs = secs.max(*s);
                each.push(v.rate().unwrap_or(0.0));
            }
            _ => return None,
        }
    }
    Some((ops, secs, each))
}

fn human(x: f64) -> String {
    crate::report::human(x)
}

/// The two multi-process rows of engine `E`.
fn multi_process<E: Engine>(base: &Path, p: &Params) -> Vec<Measure> {
    if let Err(reason) = E::MULTI_PROCESS {
        return ["mp_read", "mp_write4"]
            .iter()
            .map(|id| {
                Measure::new(
                    id,
                    Value::NotSupported {
                        reason: reason.to_string(),
                    },
                )
            })
            .collect();
    }
    let data = base.join(format!("{}-mp", E::NAME));
    let mut out = Vec::new();
    let prep = {
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("data dir");
        let mut c = child_cmd(E::NAME, "mp-prepare", &data, p);
        c.arg("--multi-process")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match c.spawn() {
            Ok(mut ch) => {
                let mut o = BufReader::new(ch.stdout.take().expect("stdout"));
                let (ms, _) = collect(&mut o, false);
                let ok = matches!(ch.wait(), Ok(s) if s.success());
                if ok {
                    Ok(())
                } else {
                    Err(first_error(&ms).unwrap_or("prepare failed".into()))
                }
            }
            Err(e) => Err(format!("spawn: {e}")),
        }
    };
    if let Err(e) = prep {
        let _ = std::fs::remove_dir_all(&data);
        return vec![failed("mp_read", e.clone()), failed("mp_write4", e)];
    }

    log(&format!(
        "{}: 2 reader processes + 1 writer process",
        E::NAME
    ));
    let all = run_together(
        E::NAME,
        &data,
        p,
        &[("mp-writer", 0), ("mp-reader", 0), ("mp-reader", 1)],
    );
    let readers = &all[1..];
    match (sum_rates(readers, "mp_reader"), find(&all[0], "mp_writer")) {
        (Some((ops, secs, each)), Some(w)) => {
            let note = format!(
                "readers {} gets/s; writer {} puts/s (aiming at {})",
                each.iter()
                    .map(|r| human(*r))
                    .collect::<Vec<_>>()
                    .join(" + "),
                human(w.value.rate().unwrap_or(0.0)),
                human(p.mp_write_rate)
            );
            out.push(Measure::new("mp_read", Value::Rate { ops, secs }).with_note(note));
        }
        _ => {
            let e = all
                .iter()
                .find_map(|m| first_error(m))
                .unwrap_or("no result".into());
            out.push(failed("mp_read", e));
        }
    }

    log(&format!("{}: 4 durable writer processes", E::NAME));
    let who: Vec<(&str, u64)> = (0..4).map(|i| ("mp-durable-writer", i)).collect();
    let all = run_together(E::NAME, &data, p, &who);
    match sum_rates(&all, "mp_writer") {
        Some((ops, secs, each)) => {
            let mut note = format!(
                "per process {} commits/s",
                each.iter()
                    .map(|r| human(*r))
                    .collect::<Vec<_>>()
                    .join(" + ")
            );
            let syncs: Vec<&str> = all
                .iter()
                .filter_map(|ms| find(ms, "mp_writer")?.note.as_deref())
                .collect();
            if !syncs.is_empty() {
                note += &format!("; {}", syncs.join(", "));
            }
            out.push(Measure::new("mp_write4", Value::Rate { ops, secs }).with_note(note));
        }
        None => {
            let e = all
                .iter()
                .find_map(|m| first_error(m))
                .unwrap_or("no result".into());
            out.push(failed("mp_write4", e));
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    out
}

pub fn run(opts: Opts) {
    let started = Instant::now();
    let load_start = load_avg();
    let base: PathBuf = opts
        .dir
        .join(format!("carboy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("create the data directory");
    let machine = Machine::probe(&base);
    let disk_syncs_start = crate::machine::disk_probe(&base);
    let sync_scatter = crate::machine::scatter_probe(&base);
    let memory_latency = crate::machine::memory_probe(&[16, 256, 2048]);
    if machine.filesystem == "tmpfs" {
        log("warning: the data directory is on tmpfs: fsync costs nothing there");
    }
    let p = &opts.params;
    log(&format!(
        "N = {}, engines {}, data in {}",
        p.n,
        opts.engines.join(","),
        base.display()
    ));

    let mut engines = Vec::new();
    for name in &opts.engines {
        let (label, settings, caveat) =
            with_engine!(name.as_str(), E => (E::LABEL, E::SETTINGS, E::DURABLE_CAVEAT));
        let load_before = load_avg();
        log(&format!(
            "{name}: single-process suite (load {load_before:.2})"
        ));
        let t = Instant::now();
        let data = base.join(format!("{name}-suite"));
        let mut measures = run_child(name, "suite", &data, p);
        let _ = std::fs::remove_dir_all(&data);
        let suite_secs = t.elapsed().as_secs_f64();
        log(&format!("{name}: suite done in {suite_secs:.1} s"));
        if let Some(e) = first_error(&measures) {
            log(&format!("{name}: FAILED: {e}"));
        }
        if opts.mp {
            let mp = with_engine!(name.as_str(), E => multi_process::<E>(&base, p));
            measures.extend(mp);
        }
        engines.push(EngineRun {
            name: name.clone(),
            label: label.to_string(),
            settings: settings.to_string(),
            durable_caveat: caveat.map(str::to_string),
            measures,
            load_before,
            suite_secs,
        });
    }

    let mut growth = Vec::new();
    for &e in &opts.growth {
        let n = 10u64.pow(e);
        log(&format!("carboy cost growth: N = 10^{e}"));
        let mut gp = p.clone();
        gp.n = n;
        let data = base.join(format!("carboy-growth-{e}"));
        let measures = run_child("carboy", "growth", &data, &gp);
        let _ = std::fs::remove_dir_all(&data);
        growth.push(GrowthPoint { n, measures });
    }
    let disk_syncs_end = crate::machine::disk_probe(&base);
    let _ = std::fs::remove_dir_all(&base);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut command = String::from("cd tools/bench && cargo run --release --");
    for a in &opts.args {
        command.push(' ');
        command.push_str(a);
    }
    let run = Run {
        command,
        date: crate::machine::utc(now),
        carboy_rev: env!("BENCH_GIT_REV").to_string(),
        machine,
        crate_versions: env!("BENCH_CRATE_VERSIONS").to_string(),
        sqlite_library: rusqlite::version().to_string(),
        lmdb_library: heed::lmdb_version().string.to_string(),
        params: p.clone(),
        engines,
        growth,
        wall_secs: started.elapsed().as_secs_f64(),
        load_start,
        load_end: load_avg(),
        disk_syncs_start,
        sync_scatter,
        memory_latency,
        disk_syncs_end,
    };
    log(&format!("done in {:.1} min", run.wall_secs / 60.0));
    if opts.json {
        let doc = serde_json::json!({ "run": run, "targets": crate::report::targets(&run) });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        print!("{}", crate::report::markdown(&run));
    }
}
