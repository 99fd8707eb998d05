//! `carboy dump FILE`: every live entry, or with `--all` every block of
//! the log.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carboy_format::Expiry;
use carboy_format::header::Header;
use carboy_format::record::Kind;
use serde_json::{Value, json};

use crate::cmd::Global;
use crate::failure::Status;
use crate::open::{self, Opening};
use crate::raw::{self, Block, LiveWords, RawFile, Walk};
use crate::{escape, timestamp, wait};

/// The arguments of `carboy dump`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print every live entry (or, with --all, every block of the log)",
    long_about = "\
        Print every live (present, unexpired) entry of FILE: key, value and expiry, one \
        entry a line, in no particular order.\n\n\
        Printable UTF-8 shows as text; anything else is escaped (`\\n`, `\\0`, `\\xff`, \
        `\\u{202e}`). With --json each line is a JSON object whose key and value are base64: \
        {\"key\": \"dXNlcjox\", \"value\": \"YWxpY2U=\", \"expires_ms\": null}.\n\n\
        --all walks the log itself, read-only and without the engine, from the header page \
        to commit_end: every record with its offset and its status (live, expired, \
        tombstone: the key's newest record is a delete; dead: a newer record replaced it; \
        uncommitted: no commit marker covers it), every commit marker and index block, and \
        every damaged byte range. JSON objects then also have \"offset\", \"kind\" (put, \
        delete, commit, index, damaged) and \"status\".\n\n\
        Exit status 1 when damage was found (damaged records are reported on stderr and \
        skipped).",
    after_help = "\
Examples:
  carboy dump users.carboy
  carboy dump --json users.carboy | jq -r .key | base64 -d
  carboy dump --all users.carboy | grep -v ' live '
  carboy dump --all --json damaged.carboy > forensics.jsonl"
)]
pub struct Args {
    /// The namespace's data file.
    pub file: PathBuf,
    /// One JSON object per line, keys and values in base64.
    #[arg(long)]
    pub json: bool,
    /// Every block of the log with its offset, dead, expired and damaged
    /// ones included (reads the file directly; works on damaged files).
    #[arg(long)]
    pub all: bool,
}

/// Runs `carboy dump`.
pub fn run(args: Args, global: &Global) -> anyhow::Result<Status> {
    if args.all {
        return all(&args.file, args.json);
    }
    let file = &args.file;
    let store = open::existing(file, Opening::reading(global.wait))?;
    let snapshot = wait::for_lock(file, global.wait, || store.snapshot())
        .map_err(|e| open::explain(file, e))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut status = Status::Ok;
    for entry in snapshot {
        match entry {
            Ok(e) if args.json => {
                let mut obj =
                    json!({"key": BASE64.encode(&e.key), "value": BASE64.encode(&e.value)});
                obj["expires_ms"] = expires_json(e.expiry);
                writeln!(out, "{obj}")?;
            }
            Ok(e) => writeln!(
                out,
                "{}: {}{}",
                escape::quoted(&e.key),
                escape::quoted(&e.value),
                expires_text(e.expiry)
            )?,
            Err(e) => {
                out.flush()?;
                eprintln!("carboy: skipped: {e}");
                status = Status::Problem;
            }
        }
    }
    out.flush()?;
    Ok(status)
}

fn expires_json(expiry: Expiry) -> Value {
    match expiry {
        Expiry::Never => Value::Null,
        Expiry::AtUnixMs(ms) => json!(ms),
    }
}

fn expires_text(expiry: Expiry) -> String {
    match expiry {
        Expiry::Never => String::new(),
        Expiry::AtUnixMs(ms) => format!("  (expires {})", timestamp::rfc3339(ms)),
    }
}

/// What the first pass over the log learned.
#[derive(Debug, Default)]
struct Ledger {
    /// Offset of each key's newest committed record.
    newest: HashMap<Vec<u8>, u64>,
    /// Committed transactions' record ranges, `[txn_start, marker)`, in
    /// log order.
    committed: Vec<(u64, u64)>,
}

impl Ledger {
    fn read(walk: Walk<'_>) -> anyhow::Result<Ledger> {
        let mut ledger = Ledger::default();
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        for block in walk {
            match block? {
                Block::Record { offset, key, .. } => pending.push((offset, key)),
                Block::Commit { offset, commit } => {
                    ledger.committed.push((commit.txn_start, offset));
                    for (at, key) in pending.drain(..) {
                        if at >= commit.txn_start {
                            ledger.newest.insert(key, at);
                        }
                    }
                }
                Block::Index { .. } | Block::Damaged { .. } => {}
            }
        }
        Ok(ledger)
    }

    fn is_committed(&self, offset: u64) -> bool {
        let i = self.committed.partition_point(|&(_, end)| end <= offset);
        self.committed
            .get(i)
            .is_some_and(|&(start, end)| start <= offset && offset < end)
    }
}

/// `carboy dump --all`: two passes over the raw log.
fn all(file: &Path, json: bool) -> anyhow::Result<Status> {
    let raw = RawFile::open(file)?;
    let page = raw.header_page()?;
    let mut status = Status::Ok;
    if let Err(e) = Header::decode(&page) {
        eprintln!("carboy: {}: the header is damaged: {e}", file.display());
        status = Status::Problem;
    }
    let (limit, until_zeros, why) = raw::log_limit(&raw, &page);
    if let Some(why) = &why {
        eprintln!(
            "carboy: {}: {why}; walking the whole file instead (zeros that run to its end end the log)",
            file.display()
        );
        status = Status::Problem;
    }
    let current_index = LiveWords::read(&page).map(|w| w.index_offset);
    let ledger = Ledger::read(Walk::new(&raw, limit, until_zeros))?;
    let now = timestamp::now_ms();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (mut damaged, mut uncommitted) = (0u64, 0u64);
    for block in Walk::new(&raw, limit, until_zeros) {
        let (offset, kind, status, text, obj) = match block? {
            Block::Record {
                offset,
                kind,
                expiry,
                key,
                value,
            } => {
                let status = if !ledger.is_committed(offset) {
                    uncommitted += 1;
                    "uncommitted"
                } else if ledger.newest.get(&key) != Some(&offset) {
                    "dead"
                } else if kind == Kind::Delete {
                    "tombstone"
                } else if expiry.is_expired_at(now) {
                    "expired"
                } else {
                    "live"
                };
                let (name, text) = if kind == Kind::Delete {
                    ("delete", escape::quoted(&key))
                } else {
                    (
                        "put",
                        format!(
                            "{}: {}{}",
                            escape::quoted(&key),
                            escape::quoted(&value),
                            expires_text(expiry)
                        ),
                    )
                };
                let mut obj = json!({"key": BASE64.encode(&key)});
                if kind == Kind::Put {
                    obj["value"] = json!(BASE64.encode(&value));
                    obj["expires_ms"] = expires_json(expiry);
                }
                (offset, name, status, text, obj)
            }
            Block::Commit { offset, commit } => (
                offset,
                "commit",
                "",
                format!(
                    "txn {}, {} record{} from {}, at {}",
                    commit.txn_id,
                    commit.records,
                    if commit.records == 1 { "" } else { "s" },
                    commit.txn_start,
                    timestamp::rfc3339(commit.unix_ms)
                ),
                json!({
                    "txn_id": commit.txn_id,
                    "txn_start": commit.txn_start,
                    "unix_ms": commit.unix_ms,
                    "records": commit.records,
                }),
            ),
            Block::Index { offset, log2 } => {
                let current = current_index == Some(offset);
                (
                    offset,
                    "index",
                    if current { "current" } else { "old" },
                    format!("2^{log2} slots"),
                    json!({"log2": log2, "capacity": 1u64 << log2}),
                )
            }
            Block::Damaged { offset, len } => {
                damaged += 1;
                (
                    offset,
                    "damaged",
                    "",
                    format!("{len} bytes that are no valid block"),
                    json!({"len": len}),
                )
            }
        };
        if json {
            let mut line = json!({"offset": offset, "kind": kind});
            if !status.is_empty() {
                line["status"] = json!(status);
            }
            if let (Value::Object(line), Value::Object(rest)) = (&mut line, obj) {
                line.extend(rest);
            }
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{offset:>12}  {kind:<8} {status:<11} {text}")?;
        }
    }
    out.flush()?;
    if damaged + uncommitted == 0 {
        return Ok(status);
    }
    eprintln!(
        "carboy: {}: {damaged} damaged range(s), {uncommitted} uncommitted record(s) below the \
         committed end; `carboy check` verifies the rest, `carboy salvage` copies what verifies",
        file.display()
    );
    Ok(Status::Problem)
}
