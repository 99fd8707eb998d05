//! What the run happened on, and process measurements from `/proc`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// A `key: value` line of a `/proc` file.
fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// Peak resident set size (VmHWM) of this process, in bytes.
pub fn vm_hwm() -> u64 {
    proc_field("/proc/self/status", "VmHWM")
        .and_then(|v| v.trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets this process's VmHWM to its current RSS (Linux 4.0 and later),
/// so that the next [`vm_hwm`] is the peak of what runs in between.
pub fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time (user + system) this process has used so far, every thread
/// included (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn cpu_secs() -> f64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Bytes allocated on disk (`st_blocks` × 512) by everything under `dir`,
/// as `du` counts them: sparse or preallocated-but-unused ranges count as
/// what the filesystem really holds.
pub fn dir_allocated(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if md.is_dir() {
            total += dir_allocated(&e.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}

/// The 1-minute load average.
pub fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub hypervisor: bool,
    pub memory_gib: f64,
    pub kernel: String,
    pub data_dir: String,
    pub filesystem: String,
    pub device: String,
    pub mount_options: String,
    pub rotational: Option<bool>,
    pub rustc: String,
}

/// The mount `dir` lives on: (device, mount point, type, options).
fn mount_of(dir: &Path) -> Option<(String, String, String, String)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && dir.starts_with(f[1])).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
        })
        .max_by_key(|m| m.1.len())
}

impl Machine {
    pub fn probe(data_dir: &Path) -> Machine {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu_model =
            proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
        let hypervisor = proc_field("/proc/cpuinfo", "flags")
            .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor"));
        let memory_gib = proc_field("/proc/meminfo", "MemTotal")
            .and_then(|v| v.trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1048576.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let (device, _mnt, filesystem, mount_options) = mount_of(data_dir).unwrap_or_default();
        let rotational = device
            .strip_prefix("/dev/")
            .and_then(|d| {
                // vda1 -> vda, nvme0n1p1 -> nvme0n1
                let base = d.trim_end_matches(|c: char| c.is_ascii_digit());
                let base = base
                    .strip_suffix('p')
                    .filter(|b| b.contains("nvme"))
                    .unwrap_or(base);
                [d, base].into_iter().find_map(|name| {
                    std::fs::read_to_string(format!("/sys/block/{name}/queue/rotational")).ok()
                })
            })
            .map(|s| s.trim() == "1");
        Machine {
            cpus,
            cpu_model,
            hypervisor,
            memory_gib,
            kernel,
            data_dir: data_dir.display().to_string(),
            filesystem,
            device,
            mount_options,
            rotational,
            rustc: env!("BENCH_RUSTC").to_string(),
        }
    }
}

/// `unix` seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// How fast this disk makes small writes durable, measured on `dir`:
/// `fdatasync`s per second after a 200-byte write into a fresh 4 KiB
/// block, (overwriting blocks already written, writing into blocks
/// reserved with `fallocate`). A yardstick for the durable rows, which
/// vary with whatever else the machine's disk is doing.
pub fn disk_probe(dir: &Path) -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    const SYNCS: u64 = 300;
    let run = |prewritten: bool| -> std::io::Result<f64> {
        let path = dir.join(format!("disk-probe-{prewritten}"));
        let f = scratch_file(&path)?;
        let len = SYNCS * 4096;
        if prewritten {
            f.write_all_at(&vec![0u8; len as usize], 0)?;
        } else {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len)?;
        }
        f.sync_all()?;
        let t = std::time::Instant::now();
        for i in 0..SYNCS {
            f.write_all_at(&[0x5a; 200], i * 4096)?;
            f.sync_data()?;
        }
        let rate = SYNCS as f64 / t.elapsed().as_secs_f64();
        drop(f);
        std::fs::remove_file(&path)?;
        Ok(rate)
    };
    (
        run(true).unwrap_or(f64::NAN),
        run(false).unwrap_or(f64::NAN),
    )
}

/// A probe's scratch file at `path`, created empty (or emptied).
fn scratch_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// What one `fdatasync` costs, in µs, by how many pages are dirty and
/// where: (1 page; 4 pages scattered over a 64 MiB file; 4 contiguous
/// pages). A commit dirties its log pages and, scattered over the index,
/// one page per key; this shows what syncing the scattered ones costs,
/// the reason carboy's group commit syncs only the log (engine/DESIGN.md,
/// "Log-only syncs").
pub fn scatter_probe(dir: &Path) -> (f64, f64, f64) {
    use std::os::unix::fs::FileExt;
    const SYNCS: u64 = 200;
    const PAGES: u64 = 16384; // 64 MiB
    let path = dir.join("scatter-probe");
    let run = || -> std::io::Result<(f64, f64, f64)> {
        let f = scratch_file(&path)?;
        f.write_all_at(&vec![0u8; (PAGES * 4096) as usize], 0)?;
        f.sync_all()?;
        let mut rng = crate::data::Rng::new(77);
        let time = |pages: &mut dyn FnMut() -> Vec<u64>| -> std::io::Result<f64> {
            let t = std::time::Instant::now();
            for _ in 0..SYNCS {
                for page in pages() {
                    f.write_all_at(&[0x5a; 64], page * 4096)?;
                }
                f.sync_data()?;
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / SYNCS as f64)
        };
        let one = time(&mut || vec![rng.below(PAGES)])?;
        let scattered = time(&mut || (0..4).map(|_| rng.below(PAGES)).collect())?;
        let contiguous = time(&mut || {
            let first = rng.below(PAGES - 4);
            (first..first + 4).collect()
        })?;
        Ok((one, scattered, contiguous))
    };
    let out = run().unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let _ = std::fs::remove_file(&path);
    out
}

/// Nanoseconds per random memory read that depends on the one before (a
/// pointer chase over a random cycle of the 64-byte lines of a heap
/// block), for each block size in MiB. The floor under a random point
/// read of an engine whose data are that large: a carboy get at 10^6 keys
/// makes two such reads in turn (its index slot, then its record).
pub fn memory_probe(sizes_mib: &[u64]) -> Vec<(u64, f64)> {
    const LINE: usize = 64 / 8; // u64s per cache line
    const STEPS: u64 = 2_000_000;
    sizes_mib
        .iter()
        .map(|&mib| {
            let lines = (mib << 20) as usize / 64;
            let mut mem = vec![0u64; lines * LINE];
            // Sattolo's algorithm: one cycle through every line.
            let mut order: Vec<u32> = (0..lines as u32).collect();
            let mut rng = crate::data::Rng::new(mib);
            for i in (1..lines).rev() {
                let j = rng.below(i as u64) as usize;
                order.swap(i, j);
            }
            for (i, &next) in order.iter().enumerate() {
                mem[i * LINE] = u64::from(next) * LINE as u64;
            }
            drop(order);
            let mut at = 0u64;
            let t = std::time::Instant::now();
            for _ in 0..STEPS {
                at = mem[at as usize];
            }
            let ns = t.elapsed().as_nanos() as f64 / STEPS as f64;
            std::hint::black_box(at);
            (mib, ns)
        })
        .collect()
}
