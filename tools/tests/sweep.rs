//! A corruption sweep through the CLI: many damaged copies of populated
//! namespaces, every command run on each, the answers compared with the
//! truth.
//!
//! Each file gets a known random history written through the library
//! (puts, overwrites, deletes, multi-record transactions, far-future
//! expiries, values of mixed sizes), then one damage: a zeroed range, a
//! bit flip, a byte flip or a garbage range, placed in a record, a commit
//! marker, the current index's slots, the header's immutable part or the
//! live words; half the time followed by a simulated reboot (new boot id
//! live words, FORMAT.md §2.2), so that the next opener rebuilds from the
//! log. Every command then runs on its own fresh copy (with or without the
//! lock file), under a deadline, and these rules are checked:
//!
//! - R1: exit status 0..=3; never a panic, a signal or a hang.
//! - R2: a read command (`get`, `keys`, `export`, `dump`) that succeeds
//!   answers exactly the truth, or, when it said recovery set data aside
//!   (stderr `set aside`, or a `FILE.set-aside*` sidecar), the prefix
//!   state: the truth after the transactions that lie wholly before the
//!   first damaged byte.
//! - R3: `check` changes no byte outside the live words, and never exits 0
//!   after damage to bytes a checksum covers. Its detection
//!   rate (exit 1 on damage to verified bytes) is reported.
//! - R4: a write (`compact`, `put`) that succeeds loses nothing (truth, or
//!   with a set-aside the prefix state, and the sidecar must salvage to the
//!   keys whose newest verifying record lies past the cut); one that fails
//!   leaves every verifying record recoverable by `salvage`.
//! - R5: `salvage` that succeeds yields exactly the verifying state: every
//!   put/delete record that verifies, applied in log order, when the next
//!   verifying commit marker after it has `txn_start` ≤ its offset.
//!
//! Violations are collected and listed together at the end. The default
//! size suits CI; `CARBOY_SWEEP_FILES=N` sets the number of files,
//! `CARBOY_SWEEP_SEED=S` the seed, `CARBOY_SWEEP_ONLY=I` runs file I
//! alone (as the full run made it, except that which index slots are used
//! depends on each file's random hash key). Run with `--nocapture` for the summary
//! table; for big runs use a release build:
//! `CARBOY_SWEEP_FILES=500 cargo test --release -p carboy-tools --test sweep -- --nocapture`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carboy::{Expiry, Store};
use carboy_format::header::{HEADER_SIZE, IMMUTABLE_LEN, live};
use carboy_format::record::{self, Commit, Kind};
use carboy_tests::{LogBlock, log_blocks, splitmix};
use carboy_tools::export_format::Reader;

/// Files swept by default (CI): about 15 s in a debug build on 2 cores.
const DEFAULT_FILES: usize = 48;
/// Seed used when `CARBOY_SWEEP_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed_c0de;
/// How long one command may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(30);
/// Far-future expiries (2100-01-01 and later).
const FUTURE_MS: u64 = 4_102_444_800_000;
/// The live words: the only bytes `check` may change (FORMAT.md §2.2).
const LIVE_WORDS: std::ops::Range<u64> = 1536..1728;
/// The key `put` adds.
const NEW_KEY: &[u8] = b"sweep/new key";
const NEW_VALUE: &[u8] = b"fresh";

/// Key -> (value, expiry).
type Map = BTreeMap<Vec<u8>, (Vec<u8>, Expiry)>;

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        splitmix(&mut self.0)
    }
    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// The populated file and what it holds
// ---------------------------------------------------------------------------

/// A committed put or delete record of the undamaged file.
#[derive(Clone, Debug)]
struct Rec {
    offset: u64,
    key: Vec<u8>,
    /// `None` for a delete.
    value: Option<(Vec<u8>, Expiry)>,
}

/// A transaction of the undamaged file: its records and where it ends
/// (the end of its commit marker).
#[derive(Debug)]
struct Txn {
    records: Vec<Rec>,
    end: u64,
}

/// A populated data file, before damage.
struct Base {
    bytes: Vec<u8>,
    lock: Vec<u8>,
    blocks: Vec<LogBlock>,
    txns: Vec<Txn>,
    truth: Map,
    /// Keys that were written and then deleted (absent from the truth).
    deleted: Vec<Vec<u8>>,
}

fn apply(map: &mut Map, rec: &Rec) {
    match &rec.value {
        Some(v) => {
            map.insert(rec.key.clone(), v.clone());
        }
        None => {
            map.remove(&rec.key);
        }
    }
}

fn value_of(rng: &mut Rng, key_id: u64, version: u64) -> Vec<u8> {
    let len = match rng.below(100) {
        0..70 => rng.below(33),
        70..95 => rng.range(33, 1_000),
        _ => rng.range(1_000, 20_000),
    };
    let stamp = format!("{key_id}.{version}:");
    stamp.bytes().cycle().take(len as usize).collect()
}

fn key_of(id: u64) -> Vec<u8> {
    if id % 7 == 3 {
        // Some binary keys: NUL, 0xff, newline.
        vec![0, 0xff, b'\n', id as u8, (id >> 8) as u8]
    } else {
        format!("key/{id}").into_bytes()
    }
}

/// Writes a random history to `path` through the library and returns the
/// file as it is then, with its truth (checked against the log).
fn build(rng: &mut Rng, path: &Path) -> Base {
    let nkeys = rng.range(50, 300);
    let mut truth = Map::new();
    let mut ever = BTreeSet::new();
    {
        let store = Store::open(path).unwrap();
        let mut version = 0u64;
        let mut pending: Vec<u64> = (0..nkeys).collect();
        // First every key at least once, then overwrites and deletes.
        let txns = nkeys / 2 + rng.range(10, nkeys);
        for _ in 0..txns {
            let mut txn = store.transaction().unwrap();
            let ops = if rng.chance(30) { rng.range(2, 12) } else { 1 };
            for _ in 0..ops {
                version += 1;
                let id = match pending.pop() {
                    Some(id) => id,
                    None => rng.below(nkeys),
                };
                let key = key_of(id);
                if truth.contains_key(&key) && rng.chance(20) {
                    assert!(txn.delete(&key).unwrap());
                    truth.remove(&key);
                    continue;
                }
                let value = value_of(rng, id, version);
                let expiry = if rng.chance(20) {
                    Expiry::AtUnixMs(FUTURE_MS + rng.below(1 << 30))
                } else {
                    Expiry::Never
                };
                txn.put_with_expiry(&key, &value, expiry).unwrap();
                truth.insert(key.clone(), (value, expiry));
                ever.insert(key);
            }
            txn.commit().unwrap();
        }
    }
    let bytes = std::fs::read(path).unwrap();
    let lock = std::fs::read(lock_path(path)).unwrap();
    let blocks = log_blocks(path);
    let txns = decode_txns(&bytes, &blocks);
    let mut model = Map::new();
    for t in &txns {
        for r in &t.records {
            apply(&mut model, r);
        }
    }
    assert_eq!(
        model, truth,
        "the log of the undamaged file holds the history"
    );
    let deleted = ever
        .into_iter()
        .filter(|k| !truth.contains_key(k))
        .collect();
    Base {
        bytes,
        lock,
        blocks,
        txns,
        truth,
        deleted,
    }
}

/// The transactions of an undamaged log.
fn decode_txns(bytes: &[u8], blocks: &[LogBlock]) -> Vec<Txn> {
    let mut txns = Vec::new();
    let mut records = Vec::new();
    for b in blocks {
        let at = &bytes[b.offset as usize..(b.offset + b.len) as usize];
        match b.kind {
            Kind::Put | Kind::Delete => {
                records.push(rec_from(b.offset, record::decode(at).unwrap()))
            }
            Kind::Commit => {
                let c = Commit::decode(at).unwrap();
                assert!(records.iter().all(|r: &Rec| r.offset >= c.txn_start));
                txns.push(Txn {
                    records: std::mem::take(&mut records),
                    end: b.offset + b.len,
                });
            }
            Kind::Index => assert!(records.is_empty(), "an index inside a transaction"),
        }
    }
    assert!(records.is_empty(), "records after the last commit marker");
    txns
}

fn rec_from(offset: u64, r: record::Record<'_>) -> Rec {
    Rec {
        offset,
        key: r.key.to_vec(),
        value: (r.kind == Kind::Put).then(|| (r.value.to_vec(), r.expiry)),
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------
// Damage
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Record,
    Commit,
    IndexSlots,
    Header,
    LiveWords,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Zero,
    BitFlip,
    ByteFlip,
    Garbage,
}

/// One damaged file.
struct Damaged {
    bytes: Vec<u8>,
    /// Whether the commands get the lock file too.
    with_lock: bool,
    place: Place,
    reboot: bool,
    /// Bytes the damage covered, and where.
    at: u64,
    len: u64,
    how: How,
    /// The first byte the damage changed (None: it changed nothing).
    first: Option<u64>,
    /// Whether it changed a byte that a checksum covers.
    verified_hit: bool,
    /// The key of the damaged record, if any.
    record_key: Option<Vec<u8>>,
}

impl Damaged {
    fn describe(&self) -> String {
        format!(
            "{:?} of {} byte(s) at {} in {:?}{}{}",
            self.how,
            self.len,
            self.at,
            self.place,
            if self.reboot { ", then a reboot" } else { "" },
            if self.with_lock {
                ""
            } else {
                ", lock file not copied"
            },
        )
    }
}

fn damage(rng: &mut Rng, base: &Base) -> Damaged {
    let places = [
        Place::Record,
        Place::Record,
        Place::Commit,
        Place::IndexSlots,
        Place::IndexSlots,
        Place::Header,
        Place::LiveWords,
    ];
    let place = *rng.pick(&places);
    let how = *rng.pick(&[How::Zero, How::BitFlip, How::ByteFlip, How::Garbage]);
    let of_kind = |kinds: &[Kind]| -> Vec<LogBlock> {
        base.blocks
            .iter()
            .filter(|b| kinds.contains(&b.kind))
            .copied()
            .collect()
    };
    let mut record_key = None;
    // The region the damage starts in.
    let (lo, hi) = match place {
        Place::Record => {
            let b = *rng.pick(&of_kind(&[Kind::Put, Kind::Delete]));
            let at = &base.bytes[b.offset as usize..(b.offset + b.len) as usize];
            record_key = Some(record::decode(at).unwrap().key.to_vec());
            (b.offset, b.offset + b.covered)
        }
        Place::Commit => {
            let b = *rng.pick(&of_kind(&[Kind::Commit]));
            (b.offset, b.offset + b.covered)
        }
        Place::IndexSlots => {
            let off = word(&base.bytes, live::INDEX_OFFSET as u64);
            let b = base
                .blocks
                .iter()
                .find(|b| b.offset == off)
                .expect("index_offset names a block");
            let slots = (b.offset + 16..b.offset + b.len).step_by(8);
            let used: Vec<u64> = slots.filter(|&s| word(&base.bytes, s) != 0).collect();
            let s = *rng.pick(&used);
            (s, s + 8)
        }
        Place::Header => (0, IMMUTABLE_LEN as u64),
        Place::LiveWords => (LIVE_WORDS.start, LIVE_WORDS.end),
    };
    let at = rng.range(lo, hi - 1);
    let len = match how {
        How::BitFlip | How::ByteFlip => 1,
        How::Zero | How::Garbage => match rng.below(3) {
            0 => rng.range(1, 8),
            1 => rng.range(8, 64),
            _ => hi - at,
        },
    };
    let len = len.min(base.bytes.len() as u64 - at).max(1);
    let mut bytes = base.bytes.clone();
    let span = &mut bytes[at as usize..(at + len) as usize];
    match how {
        How::Zero => span.fill(0),
        How::BitFlip => span[0] ^= 1 << rng.below(8),
        How::ByteFlip => span[0] ^= 0xff,
        How::Garbage => span.iter_mut().for_each(|b| *b = rng.next() as u8),
    }
    let changed: Vec<u64> = (at..at + len)
        .filter(|&i| bytes[i as usize] != base.bytes[i as usize])
        .collect();
    let first = changed.first().copied();
    let verified_hit = changed.iter().any(|&i| verified(base, i));
    let reboot = rng.chance(50);
    if reboot {
        for w in [live::BOOT_ID_LO, live::BOOT_ID_HI] {
            bytes[w..w + 8].copy_from_slice(&(rng.next() | 1).to_le_bytes());
        }
    }
    Damaged {
        bytes,
        with_lock: rng.chance(50),
        place,
        reboot,
        at,
        len,
        how,
        first,
        verified_hit,
        record_key,
    }
}

fn word(bytes: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Whether byte `i` is covered by a checksum (the header's, or a block's).
fn verified(base: &Base, i: u64) -> bool {
    if i < IMMUTABLE_LEN as u64 {
        return true;
    }
    base.blocks
        .iter()
        .any(|b| (b.offset..b.offset + b.covered).contains(&i))
}

/// The verifying state of `bytes` (rule R5) and, for each key, the offset
/// of its newest record in it.
fn verifying_state(base: &Base, bytes: &[u8]) -> (Map, BTreeMap<Vec<u8>, u64>) {
    let mut state = Map::new();
    let mut newest = BTreeMap::new();
    let mut pending: Vec<Rec> = Vec::new();
    for b in &base.blocks {
        let at = &bytes[b.offset as usize..(b.offset + b.len) as usize];
        match b.kind {
            Kind::Put | Kind::Delete => {
                if let Ok(r) = record::decode(at) {
                    pending.push(rec_from(b.offset, r));
                }
            }
            Kind::Commit => {
                if let Ok(c) = Commit::decode(at) {
                    for r in pending.drain(..) {
                        if r.offset >= c.txn_start {
                            newest.insert(r.key.clone(), r.offset);
                            apply(&mut state, &r);
                        }
                    }
                }
            }
            Kind::Index => {}
        }
    }
    (state, newest)
}

/// The prefix state: the truth after the transactions that end at or
/// before `first` (every one when nothing changed), and where they end.
fn prefix_state(base: &Base, first: Option<u64>) -> (Map, u64) {
    let mut state = Map::new();
    let mut cut = HEADER_SIZE;
    for t in &base.txns {
        if first.is_some_and(|f| t.end > f) {
            break;
        }
        for r in &t.records {
            apply(&mut state, r);
        }
        cut = t.end;
    }
    (state, cut)
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// How one command ended.
struct Ran {
    /// The exit status; `None` when killed by a signal.
    code: Option<i32>,
    signal: Option<i32>,
    hang: bool,
    stdout: Vec<u8>,
    stderr: String,
    /// It warned that recovery set data aside, or left a sidecar.
    set_aside: bool,
}

impl Ran {
    fn status(&self) -> String {
        match (self.code, self.signal, self.hang) {
            (_, _, true) => "hang".into(),
            (Some(c), _, _) => c.to_string(),
            (None, Some(s), _) => format!("sig{s}"),
            (None, None, _) => "?".into(),
        }
    }
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// A fresh copy of the damaged file in its own directory.
struct Copy {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

fn fresh_copy(d: &Damaged, base: &Base) -> Copy {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ns.carboy");
    std::fs::write(&file, &d.bytes).unwrap();
    if d.with_lock {
        std::fs::write(lock_path(&file), &base.lock).unwrap();
    }
    Copy { _dir: dir, file }
}

fn sidecars(file: &Path) -> Vec<PathBuf> {
    let name = file.file_name().unwrap().to_string_lossy().into_owned() + ".set-aside";
    let mut found: Vec<PathBuf> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// The tally and the violations of a sweep.
#[derive(Default)]
struct Sweep {
    /// command -> status -> count
    outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    commands: u64,
    /// Damage to verified bytes, and how often `check` exited 1 on it.
    verified_damage: u64,
    detected: u64,
    /// Of those, how often it refused the file (exit 3: a damaged header).
    refused: u64,
    /// Damage to unverified bytes only, and how often `check` exited 1.
    unverified_damage: u64,
    unverified_flagged: u64,
    set_aside_seen: u64,
    /// rule -> (count, smallest example: (damage length, text))
    violations: BTreeMap<String, (u64, u64, String)>,
    /// Every violation, one line each.
    all: Vec<String>,
}

impl Sweep {
    fn run(&mut self, label: &str, file: &Path, args: &[&std::ffi::OsStr]) -> Ran {
        self.commands += 1;
        let start = Instant::now();
        let out = common::carboy()
            .args(args)
            .timeout(DEADLINE)
            .output()
            .unwrap();
        let hang = out.status.code().is_none() && start.elapsed() >= DEADLINE;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let set_aside = stderr.to_lowercase().contains("set aside") || !sidecars(file).is_empty();
        let ran = Ran {
            code: out.status.code(),
            signal: out.status.signal(),
            hang,
            stdout: out.stdout,
            stderr,
            set_aside,
        };
        *self
            .outcomes
            .entry(label.to_string())
            .or_default()
            .entry(ran.status())
            .or_default() += 1;
        if set_aside {
            self.set_aside_seen += 1;
        }
        ran
    }

    fn violation(&mut self, rule: &str, case: &Case<'_>, what: String) {
        let text = format!(
            "file {} (seed {:#x}): {}: {what}",
            case.index,
            case.seed,
            case.damaged.describe()
        );
        self.all.push(format!("{rule}: {text}"));
        let e = self
            .violations
            .entry(rule.to_string())
            .or_insert((0, u64::MAX, String::new()));
        e.0 += 1;
        if case.damaged.len < e.1 {
            e.1 = case.damaged.len;
            e.2 = text;
        }
    }
}

/// What the checks of one damaged file need.
struct Case<'a> {
    index: usize,
    seed: u64,
    base: &'a Base,
    damaged: &'a Damaged,
    prefix: Map,
    cut: u64,
    verifying: Map,
    newest: BTreeMap<Vec<u8>, u64>,
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn show(bytes: &[u8]) -> String {
    let text = carboy_tests::show(bytes);
    if text.chars().count() > 80 {
        let head: String = text.chars().take(80).collect();
        format!("{head}… ({} bytes)", bytes.len())
    } else {
        text
    }
}

/// How `got` differs from `want`, in a line.
fn diff(got: &Map, want: &Map) -> String {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let changed: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    let some = |v: &[&Vec<u8>]| {
        v.iter()
            .take(3)
            .map(|k| show(k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{} keys, want {}: {} missing ({}), {} extra ({}), {} with another value ({})",
        got.len(),
        want.len(),
        missing.len(),
        some(&missing),
        extra.len(),
        some(&extra),
        changed.len(),
        some(&changed)
    )
}

/// Parses `carboy export` output.
fn parse_export(out: &[u8]) -> Result<Map, String> {
    let mut map = Map::new();
    for e in Reader::new(out) {
        let e = e.map_err(|e| e.to_string())?;
        map.insert(e.key, (e.value, e.expiry));
    }
    Ok(map)
}

/// Parses `carboy dump --json` output.
fn parse_dump(out: &[u8]) -> Result<Map, String> {
    let mut map = Map::new();
    for line in String::from_utf8_lossy(out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let field = |name: &str| {
            v[name]
                .as_str()
                .and_then(|s| BASE64.decode(s).ok())
                .ok_or_else(|| format!("no {name} in {line}"))
        };
        let expiry = match v["expires_ms"].as_u64() {
            Some(ms) => Expiry::AtUnixMs(ms),
            None => Expiry::Never,
        };
        map.insert(field("key")?, (field("value")?, expiry));
    }
    Ok(map)
}

/// Parses `carboy keys --hex` output.
fn parse_keys(out: &[u8]) -> Result<BTreeSet<Vec<u8>>, String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| unhex(l).ok_or_else(|| format!("not hex: {l}")))
        .collect()
}

fn keyset(map: &Map) -> BTreeSet<Vec<u8>> {
    map.keys().cloned().collect()
}

/// R1 for every command.
fn r1(sweep: &mut Sweep, case: &Case<'_>, label: &str, ran: &Ran) {
    if !matches!(ran.code, Some(0..=3)) {
        let first_line = ran.stderr.lines().find(|l| !l.is_empty()).unwrap_or("");
        sweep.violation(
            "R1",
            case,
            format!("{label}: exit {} ({first_line})", ran.status()),
        );
    }
}

/// R2 for a listing (keys, export, dump) that exited 0: `got` is the
/// answer, `view` maps a state to what the command shows of it.
fn r2_listing<T: PartialEq>(
    sweep: &mut Sweep,
    case: &Case<'_>,
    label: &str,
    ran: &Ran,
    got: Result<T, String>,
    view: impl Fn(&Map) -> T,
    explain: impl Fn(&T, &Map) -> String,
) {
    if !ran.ok() {
        return;
    }
    let got = match got {
        Ok(g) => g,
        Err(e) => return sweep.violation("R2", case, format!("{label}: unreadable output: {e}")),
    };
    if got == view(&case.base.truth) || (ran.set_aside && got == view(&case.prefix)) {
        return;
    }
    let rule = if ran.set_aside {
        "R2 (set aside)"
    } else {
        "R2"
    };
    sweep.violation(
        rule,
        case,
        format!("{label} exited 0: {}", explain(&got, &case.base.truth)),
    );
}

/// Sweeps one damaged file.
fn sweep_file(sweep: &mut Sweep, case: &Case<'_>, rng: &mut Rng) {
    let (base, d) = (case.base, case.damaged);

    // get: the damaged record's key, 9 more keys of the truth, a deleted
    // key and one that never existed.
    let mut keys: Vec<Vec<u8>> = d.record_key.iter().cloned().collect();
    let truth_keys: Vec<&Vec<u8>> = base.truth.keys().collect();
    while keys.len() < 10 {
        keys.push(rng.pick(&truth_keys).to_vec());
    }
    if !base.deleted.is_empty() {
        keys.push(rng.pick(&base.deleted).clone());
    }
    keys.push(b"never written".to_vec());
    for key in keys {
        let c = fresh_copy(d, base);
        let h = hex(&key);
        let ran = sweep.run(
            "get",
            &c.file,
            &[os("get"), os("--hex"), c.file.as_os_str(), os(&h)],
        );
        r1(sweep, case, "get", &ran);
        let answer = match ran.code {
            Some(0) => {
                let text = String::from_utf8_lossy(&ran.stdout);
                Some(unhex(text.trim_end()))
            }
            Some(1) => None,
            _ => continue,
        };
        let want = |m: &Map| m.get(&key).map(|v| Some(v.0.clone()));
        if answer == want(&base.truth) || (ran.set_aside && answer == want(&case.prefix)) {
            continue;
        }
        let shown = match &answer {
            Some(Some(v)) => format!("value {}", show(v)),
            Some(None) => "unreadable output".into(),
            None => "absent (exit 1)".into(),
        };
        let truth = match base.truth.get(&key) {
            Some(v) => format!("value {}", show(&v.0)),
            None => "absent".into(),
        };
        let rule = if ran.set_aside {
            "R2 (set aside)"
        } else {
            "R2"
        };
        sweep.violation(
            rule,
            case,
            format!("get {}: {shown}, truth {truth}", show(&key)),
        );
    }

    // keys, export, dump, stat.
    let c = fresh_copy(d, base);
    let ran = sweep.run(
        "keys",
        &c.file,
        &[os("keys"), os("--hex"), c.file.as_os_str()],
    );
    r1(sweep, case, "keys", &ran);
    r2_listing(
        sweep,
        case,
        "keys",
        &ran,
        parse_keys(&ran.stdout),
        keyset,
        |g, t| {
            let got: Map = g
                .iter()
                .map(|k| (k.clone(), (Vec::new(), Expiry::Never)))
                .collect();
            let want: Map = t
                .keys()
                .map(|k| (k.clone(), (Vec::new(), Expiry::Never)))
                .collect();
            diff(&got, &want)
        },
    );
    let mut export_worked = false;
    for (label, args) in [("export", &["export"][..]), ("dump", &["dump", "--json"])] {
        let c = fresh_copy(d, base);
        let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| os(a)).collect();
        argv.push(c.file.as_os_str());
        let ran = sweep.run(label, &c.file, &argv);
        r1(sweep, case, label, &ran);
        if label == "export" {
            export_worked = ran.ok();
        }
        let got = if label == "export" {
            parse_export(&ran.stdout)
        } else {
            parse_dump(&ran.stdout)
        };
        r2_listing(sweep, case, label, &ran, got, Map::clone, diff);
    }
    let c = fresh_copy(d, base);
    let ran = sweep.run(
        "stat",
        &c.file,
        &[os("stat"), os("--json"), c.file.as_os_str()],
    );
    r1(sweep, case, "stat", &ran);

    // check: R3 and the detection rate.
    let c = fresh_copy(d, base);
    let ran = sweep.run("check", &c.file, &[os("check"), c.file.as_os_str()]);
    r1(sweep, case, "check", &ran);
    let after = std::fs::read(&c.file).unwrap_or_default();
    if let Some(off) = first_change_outside_live_words(&d.bytes, &after) {
        // Changes only past the committed log (a rebuilt index appended)
        // are told apart from changes to the header or the log itself.
        let end = word(&base.bytes, live::COMMIT_END as u64);
        let rule = if off < end {
            "R3"
        } else {
            "R3 (only past the committed end)"
        };
        sweep.violation(
            rule,
            case,
            format!(
                "check (exit {}) changed the file at byte {off} ({}; length {} -> {})",
                ran.status(),
                region(base, off),
                d.bytes.len(),
                after.len()
            ),
        );
    }
    if d.verified_hit && ran.code == Some(0) {
        sweep.violation(
            "R3",
            case,
            "check exited 0 after damage to bytes a checksum covers".into(),
        );
    }
    if d.verified_hit {
        sweep.verified_damage += 1;
        sweep.detected += u64::from(ran.code == Some(1));
        sweep.refused += u64::from(ran.code == Some(3));
    } else {
        sweep.unverified_damage += 1;
        sweep.unverified_flagged += u64::from(ran.code == Some(1));
    }

    // salvage: R5. Its result on the untouched file also tells whether a
    // failed write made anything worse (R4).
    let c = fresh_copy(d, base);
    let salvaged = salvage_state(sweep, case, "salvage", &c.file);
    let salvage_works = salvaged.as_ref().is_some_and(|s| *s == case.verifying);
    if let Some(s) = &salvaged
        && *s != case.verifying
    {
        sweep.violation(
            "R5",
            case,
            format!("salvage exited 0: {}", diff(s, &case.verifying)),
        );
    }

    // compact then export; put then export: R4.
    for label in ["compact", "put"] {
        let c = fresh_copy(d, base);
        let ran = if label == "compact" {
            sweep.run("compact", &c.file, &[os("compact"), c.file.as_os_str()])
        } else {
            let (k, v) = (hex(NEW_KEY), hex(NEW_VALUE));
            sweep.run(
                "put",
                &c.file,
                &[os("put"), os("--hex"), c.file.as_os_str(), os(&k), os(&v)],
            )
        };
        r1(sweep, case, label, &ran);
        let added = |m: &Map| {
            let mut m = m.clone();
            if label == "put" {
                m.insert(NEW_KEY.to_vec(), (NEW_VALUE.to_vec(), Expiry::Never));
            }
            m
        };
        if ran.ok() {
            let after = sweep.run(
                &format!("{label}+export"),
                &c.file,
                &[os("export"), c.file.as_os_str()],
            );
            r1(sweep, case, &format!("export after {label}"), &after);
            let set_aside = ran.set_aside || after.set_aside;
            let got = if after.ok() {
                parse_export(&after.stdout)
            } else {
                Err(format!(
                    "export exited {}: {}",
                    after.status(),
                    after.stderr.trim()
                ))
            };
            match got {
                Ok(g) if g == added(&base.truth) => {}
                Ok(g) if set_aside && g == added(&case.prefix) => {
                    check_sidecar(sweep, case, label, &c.file);
                }
                Ok(g) => sweep.violation(
                    if set_aside { "R4 (set aside)" } else { "R4" },
                    case,
                    format!(
                        "{label} exited 0, then export: {}",
                        diff(&g, &added(&base.truth))
                    ),
                ),
                Err(e) if export_worked => sweep.violation(
                    "R4",
                    case,
                    format!(
                        "{label} exited 0, then {} (export of the untouched copy worked)",
                        first_line(&e)
                    ),
                ),
                // The damage already made export fail before the write:
                // whether the write lost an entry, salvage tells.
                Err(e) => {
                    let s = salvage_state(sweep, case, &format!("{label}+salvage"), &c.file);
                    if let Some(what) = lost(&s, &salvaged, salvage_works, &added) {
                        sweep.violation(
                            "R4",
                            case,
                            format!(
                                "{label} exited 0, then {}; salvage of the result: {what}",
                                first_line(&e)
                            ),
                        );
                    }
                }
            }
        } else if matches!(ran.code, Some(1..=3)) {
            let s = salvage_state(sweep, case, &format!("{label}+salvage"), &c.file);
            // A failed put that still committed its key loses nothing.
            let lost_any = lost(&s, &salvaged, salvage_works, &|m: &Map| m.clone()).and(lost(
                &s,
                &salvaged,
                salvage_works,
                &added,
            ));
            if let Some(what) = lost_any {
                sweep.violation(
                    "R4 (failed write)",
                    case,
                    format!("{label} exited {}, then salvage: {what}", ran.status()),
                );
            }
        }
    }
}

/// Whether a write lost a verifying record, judged by `after`, the
/// salvage of its result (`None`: salvage failed); `with` adds what the
/// write itself should have added. When salvage yields the verifying state
/// of the untouched file (`salvage_works`), `after` must be that state;
/// when it cannot (a damaged header, or the salvage defect R5 reports), the
/// write loses nothing if salvage does as well after it as before it
/// (`untouched`).
fn lost(
    after: &Option<Map>,
    untouched: &Option<Map>,
    salvage_works: bool,
    with: &dyn Fn(&Map) -> Map,
) -> Option<String> {
    if salvage_works {
        let want = with(untouched.as_ref()?);
        return match after {
            Some(a) if *a == want => None,
            Some(a) => Some(diff(a, &want)),
            None => Some("salvage failed, though it works on the untouched file".into()),
        };
    }
    match (after, untouched) {
        (None, None) => None,
        (Some(a), Some(u)) if *a == with(u) => None,
        (Some(a), Some(u)) => Some(format!(
            "compared with salvage of the untouched file: {}",
            diff(a, &with(u))
        )),
        (None, Some(_)) => Some("salvage failed, though it exits 0 on the untouched file".into()),
        (Some(_), None) => None, // salvage does better after the write
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// After a write that set data aside: the sidecar must salvage to every
/// key whose newest verifying record lies past the cut.
fn check_sidecar(sweep: &mut Sweep, case: &Case<'_>, label: &str, file: &Path) {
    let found = sidecars(file);
    let Some(sidecar) = found.first() else {
        return; // warned without a sidecar: nothing to salvage from
    };
    let Some(got) = salvage_state(sweep, case, &format!("{label}+sidecar salvage"), sidecar) else {
        return sweep.violation(
            "R4 (sidecar)",
            case,
            format!("{label}: salvage of {} failed", sidecar.display()),
        );
    };
    for (key, &offset) in &case.newest {
        if offset < case.cut {
            continue;
        }
        let want = case.verifying.get(key);
        if got.get(key) != want {
            sweep.violation(
                "R4 (sidecar)",
                case,
                format!(
                    "{label}: key {} (newest record at {offset}, past the cut {}) not recovered from the sidecar",
                    show(key),
                    case.cut
                ),
            );
        }
    }
}

/// Salvages `file` and exports the result: `None` unless both exit 0.
fn salvage_state(sweep: &mut Sweep, case: &Case<'_>, label: &str, file: &Path) -> Option<Map> {
    let mut out = file.as_os_str().to_os_string();
    out.push(".salvaged");
    let out = PathBuf::from(out);
    let ran = sweep.run(
        label,
        file,
        &[os("salvage"), file.as_os_str(), out.as_os_str()],
    );
    r1(sweep, case, label, &ran);
    if !ran.ok() {
        return None;
    }
    let exported = sweep.run(
        &format!("{label}+export"),
        &out,
        &[os("export"), out.as_os_str()],
    );
    r1(sweep, case, &format!("export after {label}"), &exported);
    match exported.code {
        Some(0) => match parse_export(&exported.stdout) {
            Ok(m) => Some(m),
            Err(e) => {
                sweep.violation(
                    "R5",
                    case,
                    format!("export of salvaged file unreadable: {e}"),
                );
                None
            }
        },
        _ => {
            sweep.violation(
                "R5",
                case,
                format!(
                    "salvage exited 0, export of its file exited {}: {}",
                    exported.status(),
                    first_line(&exported.stderr)
                ),
            );
            None
        }
    }
}

fn first_change_outside_live_words(before: &[u8], after: &[u8]) -> Option<u64> {
    let common = before.len().min(after.len());
    let changed = (0..common as u64)
        .filter(|i| !LIVE_WORDS.contains(i))
        .find(|&i| before[i as usize] != after[i as usize]);
    changed.or((before.len() != after.len()).then_some(common as u64))
}

/// What lies at byte `off` of the undamaged file.
fn region(base: &Base, off: u64) -> String {
    if off < IMMUTABLE_LEN as u64 {
        return "header, immutable part".into();
    }
    if off < HEADER_SIZE {
        return "header page, reserved bytes".into();
    }
    match base
        .blocks
        .iter()
        .find(|b| (b.offset..b.offset + b.len).contains(&off))
    {
        Some(b) => format!("{:?} block at {}", b.kind, b.offset),
        None => "past the committed log".into(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

#[test]
fn damaged_files_through_every_command() {
    let files = env_u64("CARBOY_SWEEP_FILES").map_or(DEFAULT_FILES, |n| n as usize);
    let seed = env_u64("CARBOY_SWEEP_SEED").unwrap_or(DEFAULT_SEED);
    let only = env_u64("CARBOY_SWEEP_ONLY").map(|i| i as usize);
    let start = Instant::now();
    let mut sweep = Sweep::default();
    let mut by_place: BTreeMap<Place, u64> = BTreeMap::new();
    let mut reboots = 0;
    let work = tempfile::tempdir().unwrap();
    for index in 0..files {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        // Each file has its own stream, so CARBOY_SWEEP_ONLY reproduces it.
        let file_seed = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = Rng(file_seed);
        let path = work.path().join(format!("base-{index}.carboy"));
        let base = build(&mut rng, &path);
        let damaged = damage(&mut rng, &base);
        *by_place.entry(damaged.place).or_default() += 1;
        reboots += u64::from(damaged.reboot);
        let (prefix, cut) = prefix_state(&base, damaged.first);
        let (verifying, newest) = verifying_state(&base, &damaged.bytes);
        let case = Case {
            index,
            seed,
            base: &base,
            damaged: &damaged,
            prefix,
            cut,
            verifying,
            newest,
        };
        sweep_file(&mut sweep, &case, &mut rng);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(lock_path(&path));
    }
    println!(
        "{}",
        summary(&sweep, files, seed, &by_place, reboots, start.elapsed())
    );
    assert!(
        sweep.all.is_empty(),
        "{} rule violations:\n{}",
        sweep.all.len(),
        sweep.all.join("\n")
    );
}

fn summary(
    sweep: &Sweep,
    files: usize,
    seed: u64,
    by_place: &BTreeMap<Place, u64>,
    reboots: u64,
    took: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "corruption sweep: {files} files (seed {seed:#x}), {} commands in {:.1} s",
        sweep.commands,
        took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "damage placed in: {by_place:?}; {reboots} followed by a simulated reboot"
    );
    let statuses: BTreeSet<&String> = sweep.outcomes.values().flat_map(|m| m.keys()).collect();
    let _ = write!(s, "{:<28}", "command");
    for st in &statuses {
        let _ = write!(s, "{st:>8}");
    }
    let _ = writeln!(s);
    for (cmd, m) in &sweep.outcomes {
        let _ = write!(s, "{cmd:<28}");
        for st in &statuses {
            let _ = write!(s, "{:>8}", m.get(*st).copied().unwrap_or(0));
        }
        let _ = writeln!(s);
    }
    let rate = |a: u64, b: u64| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * a as f64 / b as f64)
        }
    };
    let _ = writeln!(
        s,
        "check on damage to verified bytes: exit 1 {}/{}, refused (exit 3) {}, found in all \
         {}; on other damage: exit 1 {}/{}",
        sweep.detected,
        sweep.verified_damage,
        sweep.refused,
        rate(sweep.detected + sweep.refused, sweep.verified_damage),
        sweep.unverified_flagged,
        sweep.unverified_damage
    );
    let _ = writeln!(
        s,
        "commands that reported data set aside: {}",
        sweep.set_aside_seen
    );

    if sweep.violations.is_empty() {
        let _ = writeln!(s, "no rule violated");
    }
    for (rule, (n, _, example)) in &sweep.violations {
        let _ = writeln!(s, "{rule}: {n} violations; smallest damage: {example}");
    }
    s
}
