//! `carboy stat FILE`: a file's header fields, counts, sizes and index
//! figures.

use std::path::PathBuf;

use anyhow::anyhow;
use carboy_format::header::Header;
use carboy_format::key_hash;
use carboy_format::record::Kind;
use carboy_format::{Expiry, slot};
use serde_json::json;

use crate::cmd::Global;
use crate::failure::Status;
use crate::open::{self, Opening};
use crate::raw::{self, LiveWords, RawFile, Window};
use crate::{escape, timestamp, wait};

/// The arguments of `carboy stat`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print a file's header fields, counts, sizes and index figures",
    long_about = "\
        Print FILE's header fields (format version, generation, creation time, name, file \
        id), its counts (live and expired keys, tombstones), its sizes (file, committed and \
        dead bytes) and its index (capacity, load, and how many probes a lookup of each key \
        takes).\n\n\
        The counts come from a walk of every index slot, under a snapshot: writers wait \
        until it ends. Exit status 1 when a slot points at a damaged record (`carboy check` \
        lists them).",
    after_help = "\
Examples:
  carboy stat users.carboy
  carboy stat --json users.carboy | jq .dead_bytes"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
    /// Print one JSON object instead of aligned text.
    #[arg(long)]
    pub json: bool,
}

/// What the slot walk counted.
#[derive(Debug, Default)]
struct SlotCounts {
    live: u64,
    live_expiring: u64,
    expired: u64,
    tombstones: u64,
    damaged: u64,
    /// `probes[i]`: slots whose key is found at probe `i + 1`.
    probes: Vec<u64>,
}

/// Runs `carboy stat`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    let file = &args.file;
    let store = open::existing(file, Opening::reading(global.wait))?;
    let explain = |e| open::explain(file, e);
    // The snapshot keeps every writer out while the raw reads below run,
    // so the slots and records they see are one consistent state.
    let snapshot = wait::for_lock(file, global.wait, || store.snapshot()).map_err(explain)?;
    let stats = store.stats().map_err(explain)?;
    let raw = RawFile::open(store.path())?;
    let page = raw.header_page()?;
    let header = Header::decode(&page).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let words = LiveWords::read(&page)
        .ok_or_else(|| anyhow!("{}: the header page is cut short", file.display()))?;
    let commit_end = words
        .check_commit_end(raw.len())
        .map_err(|e| anyhow!("{}: commit_end: {e}", file.display()))?;
    let idx = words
        .check_index(&raw)
        .map_err(|e| anyhow!("{}: index_offset: {e}", file.display()))?;
    let counts = count_slots(&raw, &header, idx, commit_end)?;
    drop(snapshot);

    let used: u64 = counts.probes.iter().sum::<u64>() + counts.damaged;
    let load = used as f64 * 100.0 / idx.capacity() as f64;
    let probed: u64 = counts.probes.iter().sum();
    let mean = if probed == 0 {
        0.0
    } else {
        let total: u64 = (1u64..).zip(&counts.probes).map(|(len, n)| len * n).sum();
        total as f64 / probed as f64
    };
    let longest = counts.probes.len();
    let bins = histogram(&counts.probes);
    let file_size = raw.len();

    if args.json {
        let probe_lengths: Vec<_> = bins
            .iter()
            .map(|&(from, to, n)| json!({"from": from, "to": to, "slots": n}))
            .collect();
        let out = json!({
            "path": store.path().display().to_string(),
            "name": String::from_utf8_lossy(&header.name),
            "format_version": header.version,
            "generation": header.generation,
            "file_id": open::hex(&header.file_id),
            "created_ms": header.created_ms,
            "last_txn": stats.last_txn,
            "last_commit_ms": stats.last_commit_unix_ms,
            "file_bytes": file_size,
            "allocated_bytes": stats.allocated_bytes,
            "committed_bytes": stats.committed_bytes,
            "dead_bytes": stats.dead_bytes,
            "live_keys": counts.live,
            "live_keys_with_expiry": counts.live_expiring,
            "expired_keys": counts.expired,
            "tombstones": counts.tombstones,
            "damaged_slots": counts.damaged,
            "index_offset": idx.offset,
            "index_capacity": idx.capacity(),
            "used_slots": used,
            "load_percent": load,
            "probe_lengths": probe_lengths,
            "probe_length_mean": mean,
            "probe_length_max": longest,
        });
        println!("{out}");
    } else {
        let dead_share = if stats.committed_bytes == 0 {
            0.0
        } else {
            stats.dead_bytes as f64 * 100.0 / stats.committed_bytes as f64
        };
        println!("file              {}", store.path().display());
        println!("name              {}", escape::quoted(&header.name));
        println!("format version    {}", header.version);
        println!("generation        {}", header.generation);
        println!("file id           {}", open::hex(&header.file_id));
        println!(
            "created           {} ({} ms)",
            timestamp::rfc3339(header.created_ms),
            header.created_ms
        );
        println!(
            "last commit       txn {} at {} ({} ms)",
            stats.last_txn,
            timestamp::rfc3339(stats.last_commit_unix_ms),
            stats.last_commit_unix_ms
        );
        println!("file size         {file_size} bytes ({})", human(file_size));
        println!("allocated         {} bytes", stats.allocated_bytes);
        println!(
            "committed         {} bytes ({})",
            stats.committed_bytes,
            human(stats.committed_bytes)
        );
        println!(
            "dead              {} bytes ({dead_share:.1}% of committed; `carboy compact` \
             reclaims them)",
            stats.dead_bytes
        );
        println!(
            "live keys         {} ({} with an expiry)",
            counts.live, counts.live_expiring
        );
        println!(
            "expired keys      {} (compaction drops them)",
            counts.expired
        );
        println!(
            "tombstones        {} (slots pointing at delete records)",
            counts.tombstones
        );
        if counts.damaged > 0 {
            println!(
                "damaged slots     {} (`carboy check` lists them)",
                counts.damaged
            );
        }
        println!(
            "index             {} slots at offset {}; {used} used ({load:.1}% load)",
            idx.capacity(),
            idx.offset
        );
        println!("probe length      slots");
        for (from, to, n) in &bins {
            let range = if from == to {
                from.to_string()
            } else {
                format!("{from}-{to}")
            };
            println!("  {range:<16}{n}");
        }
        println!("  mean {mean:.2}, longest {longest}");
    }
    let mut status = Status::Ok;
    if counts.damaged > 0 {
        eprintln!(
            "carboy: {}: {} index slot(s) point at damaged records; `carboy check` lists them",
            file.display(),
            counts.damaged
        );
        status = Status::Problem;
    }
    // Opening rebuilt an index that disagreed with its count; a mismatch
    // here is damage done since, under a process that has the file open.
    if used != stats.used_slots {
        eprintln!(
            "carboy: {}: the index has {used} slots in use but the header counts {}: slots \
             were lost; `carboy check` lists the keys they held",
            file.display(),
            stats.used_slots
        );
        status = Status::Problem;
    }
    Ok(status)
}

/// Reads every used slot and the record it points at, in log order.
fn count_slots(
    raw: &RawFile,
    header: &Header,
    idx: raw::IndexLoc,
    commit_end: u64,
) -> anyhow::Result<SlotCounts> {
    let mut slots = Vec::new();
    raw::for_each_used_slot(raw, idx, |bucket, s| slots.push((slot::offset(s), bucket)))?;
    // In log order, so that the window reads the log forward.
    slots.sort_unstable();
    let now = timestamp::now_ms();
    let mask = idx.capacity() - 1;
    let mut window = Window::new(raw);
    let mut counts = SlotCounts::default();
    for (offset, bucket) in slots {
        let found = window.record_at(offset, commit_end, |r| {
            (r.kind, r.expiry, key_hash(&header.hash_key, r.key))
        })?;
        let Ok((kind, expiry, hash)) = found else {
            counts.damaged += 1;
            continue;
        };
        match kind {
            Kind::Delete => counts.tombstones += 1,
            _ if expiry.is_expired_at(now) => counts.expired += 1,
            _ => {
                counts.live += 1;
                if expiry != Expiry::Never {
                    counts.live_expiring += 1;
                }
            }
        }
        let home = slot::bucket(hash, idx.log2);
        let probes = (bucket.wrapping_sub(home) & mask) as usize + 1;
        if counts.probes.len() < probes {
            counts.probes.resize(probes, 0);
        }
        counts.probes[probes - 1] += 1;
    }
    Ok(counts)
}

/// Probe lengths in bins: 1, 2, 3, 4, then 5-8, 9-16, ... up to the
/// longest; `(from, to, slots)`.
fn histogram(probes: &[u64]) -> Vec<(usize, usize, u64)> {
    let mut bins = Vec::new();
    let mut from = 1;
    while from <= probes.len() {
        let to = if from <= 4 { from } else { (from - 1) * 2 };
        let n = probes[from - 1..to.min(probes.len())].iter().sum();
        bins.push((from, to, n));
        from = to + 1;
    }
    bins
}

/// Bytes in binary units, one decimal.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_grow_by_powers_of_two() {
        assert_eq!(histogram(&[]), vec![]);
        assert_eq!(histogram(&[5]), vec![(1, 1, 5)]);
        let probes = [10, 4, 2, 1, 1, 0, 0, 1, 1];
        assert_eq!(
            histogram(&probes),
            vec![
                (1, 1, 10),
                (2, 2, 4),
                (3, 3, 2),
                (4, 4, 1),
                (5, 8, 2),
                (9, 16, 1)
            ]
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
