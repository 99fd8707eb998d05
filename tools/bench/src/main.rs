//! carboy-bench: carboy against LMDB, redb, SQLite, sled, fjall and an
//! in-memory HashMap, side by side. See README.md.
//!
//! The driver (no `--child`) re-executes this binary once per engine and
//! workload (`--child --engine X --workload Y`), so that each engine's peak
//! memory is its own process's and the multi-process rows run real
//! processes; children report `BENCH {json}` lines on stdout.

mod data;
mod driver;
mod engine;
mod engines;
mod machine;
mod measure;
mod report;
mod workloads;

use std::path::PathBuf;

use engine::Config;
use workloads::Params;

/// Command-line options of the driver.
#[derive(Clone, Debug)]
pub struct Opts {
    pub params: Params,
    pub engines: Vec<String>,
    pub growth: Vec<u32>,
    pub mp: bool,
    pub json: bool,
    pub dir: PathBuf,
    /// The arguments as given, for the report's "reproduce" line.
    pub args: Vec<String>,
}

const USAGE: &str = "\
usage: cargo run --release -- [options]

  --n N                keys loaded (default 1000000; 1e6, 10^6 and 1_000_000 work)
  --engines a,b,...    engines to run (default: carboy,lmdb,redb,sqlite,sled,fjall,hashmap)
  --durable N          individual durable puts (default 2000)
  --cap-secs S         time cap of each write row (default 10)
  --mp-secs S          length of each multi-process row (default 5)
  --mp-write-rate R    puts/s of the writer beside the 2 readers (default 10000)
  --no-mp              skip the multi-process rows
  --growth 4,5,6       carboy cost-growth points, as powers of ten (default 4,5,6)
  --growth-1e7         add N = 10^7 to the cost growth (a 1.5 GB file, about +30 s)
  --no-growth          skip the cost growth
  --dir PATH           where the databases go (default: the system temp dir)
  --json               print the results as JSON instead of markdown
";

fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.replace(['_', ','], "");
    if let Some((m, e)) = t.split_once("e").or_else(|| t.split_once("E")) {
        let m: f64 = m.parse().map_err(|_| format!("bad number {s:?}"))?;
        let e: i32 = e.parse().map_err(|_| format!("bad number {s:?}"))?;
        return Ok((m * 10f64.powi(e)).round() as u64);
    }
    if let Some(e) = t.strip_prefix("10^") {
        let e: u32 = e.parse().map_err(|_| format!("bad number {s:?}"))?;
        return Ok(10u64.pow(e));
    }
    t.parse().map_err(|_| format!("bad number {s:?}"))
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--child") {
        std::process::exit(child(&args));
    }
    let opts = match parse_driver(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    driver::run(opts);
}

fn parse_driver(args: &[String]) -> Result<Opts, String> {
    let mut n = 1_000_000u64;
    let mut durable = None;
    let mut cap = None;
    let mut mp_secs = None;
    let mut mp_rate = None;
    let mut engines: Vec<String> = engines::ALL.iter().map(|s| s.to_string()).collect();
    let mut growth = vec![4, 5, 6];
    let mut g7 = false;
    let mut mp = true;
    let mut json = false;
    let mut dir = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--n" => n = parse_count(&val()?)?,
            "--engines" => {
                engines = val()?.split(',').map(|s| s.trim().to_lowercase()).collect();
                for e in &engines {
                    if !engines::ALL.contains(&e.as_str()) {
                        return Err(format!("unknown engine {e:?}"));
                    }
                }
            }
            "--durable" => durable = Some(parse_count(&val()?)?),
            "--cap-secs" => cap = Some(parse_f64(&val()?)?),
            "--mp-secs" => mp_secs = Some(parse_f64(&val()?)?),
            "--mp-write-rate" => mp_rate = Some(parse_f64(&val()?)?),
            "--no-mp" => mp = false,
            "--growth" => {
                growth = val()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u32>()
                            .map_err(|_| format!("bad exponent {s:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--growth-1e7" => g7 = true,
            "--no-growth" => growth.clear(),
            "--dir" => dir = PathBuf::from(val()?),
            "--json" => json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if n < 1_000 {
        return Err("--n must be at least 1000".into());
    }
    if g7 && !growth.contains(&7) {
        growth.push(7);
    }
    let mut params = Params::for_n(n);
    if let Some(d) = durable {
        params.durable = d.max(1);
    }
    if let Some(c) = cap {
        params.cap_secs = c;
    }
    if let Some(s) = mp_secs {
        params.mp_secs = s;
    }
    if let Some(r) = mp_rate {
        params.mp_write_rate = r;
    }
    Ok(Opts {
        params,
        engines,
        growth,
        mp,
        json,
        dir,
        args: args.to_vec(),
    })
}

/// A child process: one workload of one engine. Returns the exit code.
fn child(args: &[String]) -> i32 {
    let mut engine = String::new();
    let mut workload = String::new();
    let mut data = PathBuf::new();
    let mut params: Option<Params> = None;
    let mut id = 0u64;
    let mut multi_process = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--child" => {}
            "--multi-process" => multi_process = true,
            "--engine" => engine = it.next().cloned().unwrap_or_default(),
            "--workload" => workload = it.next().cloned().unwrap_or_default(),
            "--data" => data = it.next().map(PathBuf::from).unwrap_or_default(),
            "--id" => id = it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            "--params" => {
                params = it.next().and_then(|s| serde_json::from_str(s).ok());
            }
            other => {
                eprintln!("child: unknown argument {other:?}");
                return 2;
            }
        }
    }
    let Some(p) = params else {
        eprintln!("child: --params missing or invalid");
        return 2;
    };
    let cfg = Config {
        dir: data,
        n: p.n,
        multi_process,
    };
    let result = with_engine!(engine.as_str(), E => match workload.as_str() {
        "suite" => workloads::suite::<E>(&cfg, &p),
        "mp-prepare" => workloads::mp_prepare::<E>(&cfg, &p),
        "mp-reader" => workloads::mp_reader::<E>(&cfg, &p, id),
        "mp-writer" => workloads::mp_writer::<E>(&cfg, &p, id, false, Some(p.mp_write_rate)),
        "mp-durable-writer" => workloads::mp_writer::<E>(&cfg, &p, id, true, None),
        "growth" => workloads::growth::<E>(&cfg, &p),
        other => Err(format!("unknown workload {other:?}").into()),
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child {engine}/{workload}: {e}");
            measure::emit(&measure::Measure::new(
                "error",
                measure::Value::Failed {
                    error: e.to_string(),
                },
            ));
            1
        }
    }
}
