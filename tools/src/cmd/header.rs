//! `carboy header FILE`: the raw header page, field by field.

use std::path::{Path, PathBuf};

use carboy_format::FORMAT_VERSION;
use carboy_format::header::{self, IMMUTABLE_LEN, live};
use carboy_format::lockfile;

use crate::failure::Status;
use crate::open::hex;
use crate::raw::{self, LIVE_WORDS, LiveWords, RawFile};
use crate::{escape, timestamp};

/// The arguments of `carboy header`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print the raw header page, field by field, even of a damaged file",
    long_about = "\
        Print the header page of FILE: every field of the immutable header and every live \
        word, with its offset and its name in FORMAT.md, checked against what the format \
        requires; then the lock file's fields.\n\n\
        Reads the bytes directly, without the engine and without any lock, so it works on a \
        damaged or foreign file and needs only read access. Exit status 1 when a field is \
        invalid (a bad magic number or checksum, a live word out of bounds).",
    after_help = "\
Examples:
  carboy header users.carboy
  carboy header users.carboy | grep BAD"
)]
pub struct Args {
    /// The namespace's data file (damaged or not).
    pub file: PathBuf,
}

/// What a field's check found.
enum Verdict {
    /// Not checked: any value is valid.
    Any,
    /// Valid.
    Ok,
    /// Valid, with something worth knowing.
    Note(String),
    /// Invalid.
    Bad(String),
}

/// Prints rows and counts the invalid ones.
struct Table {
    problems: usize,
}

impl Table {
    fn row(&mut self, offset: usize, size: usize, name: &str, value: &str, verdict: Verdict) {
        let check = match verdict {
            Verdict::Any => String::new(),
            Verdict::Ok => "  ok".to_string(),
            Verdict::Note(note) => format!("  note: {note}"),
            Verdict::Bad(why) => {
                self.problems += 1;
                format!("  BAD: {why}")
            }
        };
        let line = format!("{offset:>6} {size:>5}  {name:<15} {value:<24}{check}");
        println!("{}", line.trim_end());
    }

    fn missing(&mut self, offset: usize, size: usize, name: &str, file_len: u64) {
        self.row(
            offset,
            size,
            name,
            "-",
            Verdict::Bad(format!("missing: the file is {file_len} bytes")),
        );
    }
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn u32_at(page: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(page.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(page: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(page.get(at..at + 2)?.try_into().ok()?))
}

/// Runs `carboy header`.
pub fn run(args: Args) -> anyhow::Result<Status> {
    let raw = RawFile::open(&args.file)?;
    let page = raw.header_page()?;
    let len = raw.len();
    let mut t = Table { problems: 0 };
    println!("{}: {len} bytes", args.file.display());
    println!();
    println!("immutable header (bytes 0..{IMMUTABLE_LEN}, covered by header_crc)");
    println!("offset  size  field           value");
    immutable(&mut t, &page, len);
    println!();
    println!(
        "live words (bytes {}..{}, not checksummed)",
        live::BASE,
        live::END
    );
    println!("offset  size  field           value");
    live_words(&mut t, &raw, &page);
    let generation = page
        .get(header::OFF_GENERATION..header::OFF_GENERATION + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    lock_file(&mut t, &args.file, generation);
    println!();
    match t.problems {
        0 => println!("no problems found"),
        1 => println!("1 problem found"),
        n => println!("{n} problems found"),
    }
    Ok(if t.problems == 0 {
        Status::Ok
    } else {
        Status::Problem
    })
}

fn immutable(t: &mut Table, page: &[u8], len: u64) {
    use header::*;
    match page.get(OFF_MAGIC..OFF_MAGIC + 8) {
        Some(m) if m == MAGIC => t.row(OFF_MAGIC, 8, "magic", &spaced_hex(m), Verdict::Ok),
        Some(m) if m == lockfile::MAGIC => t.row(
            OFF_MAGIC,
            8,
            "magic",
            &spaced_hex(m),
            Verdict::Bad("this is a carboy lock file, not a data file".into()),
        ),
        Some(m) => t.row(
            OFF_MAGIC,
            8,
            "magic",
            &spaced_hex(m),
            Verdict::Bad(format!(
                "not a carboy data file (expected {})",
                spaced_hex(&MAGIC)
            )),
        ),
        None => t.missing(OFF_MAGIC, 8, "magic", len),
    }
    match u32_at(page, OFF_VERSION) {
        Some(v) if (1..=FORMAT_VERSION).contains(&v) => t.row(
            OFF_VERSION,
            4,
            "format_version",
            &v.to_string(),
            Verdict::Ok,
        ),
        Some(v) => t.row(
            OFF_VERSION,
            4,
            "format_version",
            &v.to_string(),
            Verdict::Bad(format!("this build reads versions 1 to {FORMAT_VERSION}")),
        ),
        None => t.missing(OFF_VERSION, 4, "format_version", len),
    }
    match u32_at(page, OFF_HEADER_SIZE) {
        Some(v) if u64::from(v) == HEADER_SIZE => t.row(
            OFF_HEADER_SIZE,
            4,
            "header_size",
            &v.to_string(),
            Verdict::Ok,
        ),
        Some(v) => t.row(
            OFF_HEADER_SIZE,
            4,
            "header_size",
            &v.to_string(),
            Verdict::Bad(format!("must be {HEADER_SIZE}")),
        ),
        None => t.missing(OFF_HEADER_SIZE, 4, "header_size", len),
    }
    for (off, name) in [(OFF_HASH_KEY, "hash_key"), (OFF_FILE_ID, "file_id")] {
        match page.get(off..off + 16) {
            Some(b) => t.row(off, 16, name, &hex(b), Verdict::Any),
            None => t.missing(off, 16, name, len),
        }
    }
    match raw::word(page, OFF_GENERATION) {
        Some(g) => t.row(
            OFF_GENERATION,
            8,
            "generation",
            &g.to_string(),
            Verdict::Any,
        ),
        None => t.missing(OFF_GENERATION, 8, "generation", len),
    }
    match raw::word(page, OFF_CREATED_MS) {
        Some(ms) => t.row(
            OFF_CREATED_MS,
            8,
            "created_ms",
            &format!("{ms} ({})", timestamp::rfc3339(ms)),
            Verdict::Any,
        ),
        None => t.missing(OFF_CREATED_MS, 8, "created_ms", len),
    }
    let name_len = u16_at(page, OFF_NAME_LEN).map(usize::from);
    match name_len {
        Some(n) if n <= MAX_NAME_LEN => {
            t.row(OFF_NAME_LEN, 2, "name_len", &n.to_string(), Verdict::Ok)
        }
        Some(n) => t.row(
            OFF_NAME_LEN,
            2,
            "name_len",
            &n.to_string(),
            Verdict::Bad(format!("must be at most {MAX_NAME_LEN}")),
        ),
        None => t.missing(OFF_NAME_LEN, 2, "name_len", len),
    }
    match page.get(OFF_NAME..OFF_NAME + MAX_NAME_LEN) {
        Some(name) => {
            let n = name_len.unwrap_or(0).min(MAX_NAME_LEN);
            let rest_zero = name[n..].iter().all(|&b| b == 0);
            let verdict = if rest_zero {
                Verdict::Any
            } else {
                Verdict::Note("bytes after name_len are not zero".into())
            };
            t.row(
                OFF_NAME,
                MAX_NAME_LEN,
                "name",
                &escape::quoted(&name[..n]),
                verdict,
            );
        }
        None => t.missing(OFF_NAME, MAX_NAME_LEN, "name", len),
    }
    let reserved_at = OFF_NAME + MAX_NAME_LEN;
    match page.get(reserved_at..OFF_HEADER_CRC) {
        Some(r) => {
            let nonzero = r.iter().filter(|&&b| b != 0).count();
            let (value, verdict) = if nonzero == 0 {
                ("zero".to_string(), Verdict::Ok)
            } else {
                (
                    format!("{nonzero} nonzero bytes"),
                    Verdict::Note("writers write zero; readers ignore them".into()),
                )
            };
            t.row(
                reserved_at,
                OFF_HEADER_CRC - reserved_at,
                "reserved",
                &value,
                verdict,
            );
        }
        None => t.missing(reserved_at, OFF_HEADER_CRC - reserved_at, "reserved", len),
    }
    match (u32_at(page, OFF_HEADER_CRC), page.get(..OFF_HEADER_CRC)) {
        (Some(stored), Some(covered)) => {
            let computed = crc32fast::hash(covered);
            let verdict = if stored == computed {
                Verdict::Ok
            } else {
                Verdict::Bad(format!(
                    "the bytes 0..{OFF_HEADER_CRC} have CRC32 {computed:#010x}: the header is \
                     damaged"
                ))
            };
            t.row(
                OFF_HEADER_CRC,
                4,
                "header_crc",
                &format!("{stored:#010x}"),
                verdict,
            );
        }
        _ => t.missing(OFF_HEADER_CRC, 4, "header_crc", len),
    }
}

fn live_words(t: &mut Table, raw: &RawFile, page: &[u8]) {
    let len = raw.len();
    let words = LiveWords::read(page);
    for (off, name) in LIVE_WORDS {
        let Some(value) = raw::word(page, off) else {
            t.missing(off, 8, name, len);
            continue;
        };
        let Some(w) = words else {
            t.row(off, 8, name, &value.to_string(), Verdict::Any);
            continue;
        };
        let ok_or_bad = |r: Result<u64, String>| match r {
            Ok(_) => Verdict::Ok,
            Err(why) => Verdict::Bad(why),
        };
        let (shown, verdict) = match off {
            live::INDEX_OFFSET => match w.check_index(raw) {
                Ok(idx) => (
                    value.to_string(),
                    Verdict::Note(format!("an index of 2^{} slots", idx.log2)),
                ),
                Err(why) => (value.to_string(), Verdict::Bad(why)),
            },
            live::SUPERSEDED if value != 0 => (
                value.to_string(),
                Verdict::Note("a compaction replaced this file at its path".into()),
            ),
            live::COMMIT_END => (value.to_string(), ok_or_bad(w.check_commit_end(len))),
            live::INDEXED_END => match w.check_below_commit_end(value) {
                Ok(v) if v < w.commit_end => (
                    value.to_string(),
                    Verdict::Note(format!(
                        "the records in {v}..{} are not indexed yet; the next writer indexes \
                         them",
                        w.commit_end
                    )),
                ),
                r => (value.to_string(), ok_or_bad(r)),
            },
            live::SYNCED_END => (
                value.to_string(),
                ok_or_bad(w.check_below_commit_end(value)),
            ),
            live::WRITE_PENDING if value != 0 => (
                value.to_string(),
                Verdict::Note(
                    "a writer is publishing a commit, or died doing it (the next writer \
                     finishes it)"
                        .into(),
                ),
            ),
            live::LAST_COMMIT_MS => (
                format!("{value} ({})", timestamp::rfc3339(value)),
                Verdict::Any,
            ),
            live::ALLOC_END => (value.to_string(), ok_or_bad(w.check_alloc_end(len))),
            live::LIVE_KEYS | live::USED_SLOTS | live::EXPIRING_KEYS | live::DEAD_BYTES => {
                (format!("{value} (advisory)"), Verdict::Any)
            }
            live::BOOT_ID_LO | live::BOOT_ID_HI => (hex(&value.to_le_bytes()), Verdict::Any),
            _ => (value.to_string(), Verdict::Any),
        };
        t.row(off, 8, name, &shown, verdict);
    }
}

/// The lock file's fields, when it exists.
fn lock_file(t: &mut Table, data: &Path, generation: Option<u64>) {
    let mut name = data.as_os_str().to_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    let Ok(raw) = RawFile::open(&path) else {
        println!();
        println!(
            "lock file {}: none (a process creates it when it opens the file)",
            path.display()
        );
        return;
    };
    let page = match raw.read(0, raw.len().min(lockfile::SIZE)) {
        Ok(Some(page)) => page,
        _ => Vec::new(),
    };
    let len = raw.len();
    println!();
    println!("lock file {}: {len} bytes", path.display());
    println!("offset  size  field           value");
    match page.get(..16).map(lockfile::decode) {
        Some(Ok(true)) => t.row(0, 8, "magic", &spaced_hex(&page[..8]), Verdict::Ok),
        Some(Ok(false)) => t.row(
            0,
            8,
            "magic",
            &spaced_hex(&page[..8]),
            Verdict::Note("zero: not initialized yet (the next opener writes it)".into()),
        ),
        Some(Err(e)) => t.row(
            0,
            8,
            "magic",
            &spaced_hex(&page[..8]),
            Verdict::Bad(e.to_string()),
        ),
        None => t.missing(0, 16, "magic", len),
    }
    if let Some(v) = u32_at(&page, lockfile::OFF_VERSION) {
        t.row(
            lockfile::OFF_VERSION,
            4,
            "version",
            &v.to_string(),
            Verdict::Any,
        );
    }
    match raw::word(&page, lockfile::OFF_GENERATION) {
        Some(g) => {
            let verdict = match generation {
                Some(d) if d == g => Verdict::Ok,
                Some(d) => Verdict::Note(format!(
                    "the data file's generation is {d}: a compaction is replacing the file, \
                     or one died doing it (the next writer repairs it)"
                )),
                None => Verdict::Any,
            };
            t.row(
                lockfile::OFF_GENERATION,
                8,
                "generation",
                &g.to_string(),
                verdict,
            );
        }
        None => t.missing(lockfile::OFF_GENERATION, 8, "generation", len),
    }
    if let Some(w) = u32_at(&page, lockfile::OFF_WANTED) {
        let verdict = if w == 0 {
            Verdict::Any
        } else {
            Verdict::Note(format!("{w} process(es) waiting for the writer lock"))
        };
        t.row(lockfile::OFF_WANTED, 4, "wanted", &w.to_string(), verdict);
    }
}
