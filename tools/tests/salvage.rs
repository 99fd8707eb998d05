//! `carboy salvage FILE OUT` on real files damaged in every way salvage
//! must see past: each test compares every key of OUT with what FILE held
//! (the newest committed record of each key that still verifies; deleted
//! keys stay deleted) and checks the damaged ranges it reports.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use carboy::Store;
use carboy_format::header::HEADER_SIZE;
use carboy_format::record::{COMMIT_LEN, Kind};
use carboy_tests::served::Unprivileged;
use carboy_tests::{LogBlock, flip_byte, log_blocks, splitmix, zero_range};
use common::{carboy, stdout_of};
use tempfile::TempDir;

/// What a key of the salvaged file must hold: its value, or absent.
type Truth = BTreeMap<&'static str, Option<&'static str>>;

/// A scratch directory and the path of a data file in it.
fn scratch() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns");
    (dir, path)
}

/// Runs `carboy ARGS`, which must succeed; its stdout.
fn run(args: &[&str], path: &Path) -> String {
    let out = carboy().args(args).arg(path).output().unwrap();
    assert!(out.status.success(), "carboy {args:?}: {out:?}");
    stdout_of(&out)
}

/// `carboy put FILE KEY VALUE`.
fn put(path: &Path, key: &str, value: &str) {
    let out = carboy()
        .arg("put")
        .arg(path)
        .args([key, value])
        .output()
        .unwrap();
    assert!(out.status.success(), "put {key}: {out:?}");
}

/// `carboy del FILE KEY`.
fn del(path: &Path, key: &str) {
    let out = carboy().arg("del").arg(path).arg(key).output().unwrap();
    assert!(out.status.success(), "del {key}: {out:?}");
}

/// Several puts and deletes in one transaction, through the engine.
fn transaction(path: &Path, puts: &[(&str, &str)], deletes: &[&str]) {
    let store = Store::open(path).unwrap();
    let mut txn = store.transaction().unwrap();
    for (k, v) in puts {
        txn.put(k.as_bytes(), v.as_bytes()).unwrap();
    }
    for k in deletes {
        txn.delete(k.as_bytes()).unwrap();
    }
    txn.commit().unwrap();
}

/// The blocks of the (still undamaged) log of `path` of one kind.
fn blocks_of(path: &Path, kind: Kind) -> Vec<LogBlock> {
    log_blocks(path)
        .into_iter()
        .filter(|b| b.kind == kind)
        .collect()
}

/// Overwrites the bytes at `offset` with `bytes`.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(bytes, offset))
        .unwrap_or_else(|e| panic!("write {} at {offset}: {e}", path.display()));
}

/// `len` bytes of garbage: reproducible, and no zero word among them.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len).map(|_| (splitmix(&mut state) as u8) | 1).collect()
}

/// What `carboy salvage` printed.
#[derive(Debug)]
struct Salvaged {
    keys: u64,
    deleted: u64,
    dropped: u64,
    damaged: Vec<(u64, u64)>,
}

/// Runs `carboy salvage SRC OUT`, which must exit 0 and write OUT, and
/// reads its report; the count of damaged ranges must match the ranges
/// listed.
fn salvage(src: &Path, out: &Path) -> Salvaged {
    let output = carboy().arg("salvage").arg(src).arg(out).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "salvage: {output:?}");
    assert!(out.exists(), "salvage wrote no {}", out.display());
    parse_report(&stdout_of(&output))
}

fn parse_report(text: &str) -> Salvaged {
    let field = |label: &str| -> u64 {
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
        line.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{label:?} {line:?}: {e}"))
    };
    let keys = text
        .lines()
        .next()
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key count in:\n{text}"));
    let damaged: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("offset "))
        .map(|l| {
            let (offset, len) = l.split_once(": ").unwrap();
            let len = len.strip_suffix(" bytes").unwrap();
            (offset.parse().unwrap(), len.parse().unwrap())
        })
        .collect();
    assert_eq!(
        field("damaged byte ranges skipped:"),
        damaged.len() as u64,
        "{text}"
    );
    Salvaged {
        keys,
        deleted: field("deleted keys (left out):"),
        dropped: field("records without a commit marker (dropped):"),
        damaged,
    }
}

/// Asserts that `out` holds exactly the keys of `truth` that have a value,
/// each with that value, and that it verifies clean.
fn assert_holds(out: &Path, truth: &Truth) {
    for (key, want) in truth {
        let got = carboy().arg("get").arg(out).arg(key).output().unwrap();
        match want {
            Some(value) => {
                assert_eq!(got.status.code(), Some(0), "get {key}: {got:?}");
                assert_eq!(stdout_of(&got), *value, "value of {key}");
            }
            None => assert_eq!(got.status.code(), Some(1), "{key} must be absent: {got:?}"),
        }
    }
    let mut keys: Vec<String> = run(&["keys"], out).lines().map(String::from).collect();
    keys.sort();
    let live: Vec<&str> = truth
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(keys, live, "the keys of {}", out.display());
    run(&["check"], out);
}

/// The reproduction, command for command: a zeroed record ended
/// salvage, so the delete after it was lost (a deleted key came back) and
/// an intact later transaction was dropped, with no damage reported.
#[test]
fn a_zeroed_record_is_skipped_and_every_later_transaction_kept() {
    let (dir, ns) = scratch();
    put(&ns, "k2", "old");
    put(&ns, "victim", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    put(&ns, "k1", "new");
    del(&ns, "k2");
    // The victim's offset, as `dump --all` shows it.
    let dump = run(&["dump", "--all"], &ns);
    let victim: u64 = dump
        .lines()
        .find(|l| l.contains("\"victim\""))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no victim in:\n{dump}"));
    zero_range(&ns, victim, 56);

    let out = dir.path().join("out");
    let report = salvage(&ns, &out);
    assert_eq!(report.damaged, [(victim, 56)]);
    assert_eq!((report.keys, report.deleted, report.dropped), (1, 1, 0));
    let truth = Truth::from([("k1", Some("new")), ("k2", None), ("victim", None)]);
    assert_holds(&out, &truth);
}

/// A flipped byte damages one record: the key keeps its older value.
#[test]
fn a_flipped_byte_loses_only_its_record() {
    let (dir, ns) = scratch();
    put(&ns, "a", "a1");
    put(&ns, "b", "b1");
    put(&ns, "a", "a2");
    put(&ns, "c", "c1");
    let a2 = blocks_of(&ns, Kind::Put)[2];
    flip_byte(&ns, a2.offset + a2.covered - 1, 0x04); // the value's last byte

    let out = dir.path().join("out");
    let report = salvage(&ns, &out);
    assert_eq!(report.damaged, [(a2.offset, a2.len)]);
    assert_eq!((report.keys, report.deleted, report.dropped), (3, 0, 0));
    let truth = Truth::from([("a", Some("a1")), ("b", Some("b1")), ("c", Some("c1"))]);
    assert_holds(&out, &truth);
}

/// Garbage from inside one record over its commit marker into the next
/// transaction's record: both records are lost, everything after is kept.
#[test]
fn a_garbage_range_is_one_damaged_range() {
    let (dir, ns) = scratch();
    put(&ns, "a", "a1");
    put(&ns, "b", "b1");
    put(&ns, "a", "a2"); // damaged
    put(&ns, "b", "b2"); // damaged
    put(&ns, "c", "c1");
    put(&ns, "d", "d1");
    let puts = blocks_of(&ns, Kind::Put);
    let (a2, b2) = (puts[2], puts[3]);
    let from = a2.offset + 8;
    let to = b2.offset + b2.len;
    write_at(&ns, from, &garbage((to - from) as usize, 7));

    let out = dir.path().join("out");
    let report = salvage(&ns, &out);
    // From the damaged record to the commit marker after the last one.
    assert_eq!(report.damaged, [(a2.offset, to - a2.offset)]);
    assert_eq!((report.keys, report.deleted, report.dropped), (4, 0, 0));
    let truth = Truth::from([
        ("a", Some("a1")),
        ("b", Some("b1")),
        ("c", Some("c1")),
        ("d", Some("d1")),
    ]);
    assert_holds(&out, &truth);
}

/// Zeros over two records in the middle of a transaction of puts and a
/// delete: the rest of it, committed by its marker, is kept (its delete
/// too), and the two keys keep their older values.
#[test]
fn a_zeroed_range_inside_a_transaction_loses_only_its_records() {
    let (dir, ns) = scratch();
    transaction(
        &ns,
        &[
            ("m1", "old1"),
            ("m2", "old2"),
            ("m3", "old3"),
            ("m4", "old4"),
            ("m5", "old5"),
            ("m6", "old6"),
        ],
        &[],
    );
    transaction(
        &ns,
        &[
            ("m1", "new1"),
            ("m2", "new2"),
            ("m3", "new3"),
            ("m4", "new4"),
            ("m5", "new5"),
        ],
        &["m6"],
    );
    put(&ns, "z", "z1");
    let puts = blocks_of(&ns, Kind::Put);
    let (m2, m3) = (puts[7], puts[8]);
    assert_eq!(m2.offset + m2.len, m3.offset, "adjacent records");
    zero_range(&ns, m2.offset, m2.len + m3.len);

    let out = dir.path().join("out");
    let report = salvage(&ns, &out);
    assert_eq!(report.damaged, [(m2.offset, m2.len + m3.len)]);
    assert_eq!((report.keys, report.deleted, report.dropped), (6, 1, 0));
    let truth = Truth::from([
        ("m1", Some("new1")),
        ("m2", Some("old2")),
        ("m3", Some("old3")),
        ("m4", Some("new4")),
        ("m5", Some("new5")),
        ("m6", None),
        ("z", Some("z1")),
    ]);
    assert_holds(&out, &truth);
}

/// A zeroed commit marker: its transaction may never have committed, so
/// its records are dropped (and counted); the next transaction is kept.
#[test]
fn a_zeroed_commit_marker_drops_its_transaction_only() {
    let (dir, ns) = scratch();
    transaction(&ns, &[("a", "a1"), ("b", "b1"), ("c", "c1")], &[]);
    transaction(&ns, &[("a", "a2"), ("b", "b2")], &["c"]);
    put(&ns, "d", "d1");
    let marker = blocks_of(&ns, Kind::Commit)[1];
    zero_range(&ns, marker.offset, COMMIT_LEN);

    let out = dir.path().join("out");
    let report = salvage(&ns, &out);
    assert_eq!(report.damaged, [(marker.offset, COMMIT_LEN)]);
    assert_eq!((report.keys, report.deleted, report.dropped), (4, 0, 3));
    let truth = Truth::from([
        ("a", Some("a1")),
        ("b", Some("b1")),
        ("c", Some("c1")),
        ("d", Some("d1")),
    ]);
    assert_holds(&out, &truth);
}

/// A zeroed record, a flipped byte, garbage and a zeroed delete in one
/// file: each is reported, in file order, and everything else is kept.
/// The preallocated zeros after the log are not damage.
#[test]
fn several_damaged_ranges_in_one_file() {
    let (dir, ns) = scratch();
    let mut truth = Truth::new();
    const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    const FIRST: [&str; 8] = ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"];
    const SECOND: [&str; 8] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"];
    for (k, v) in KEYS.iter().zip(FIRST) {
        put(&ns, k, v);
        truth.insert(k, Some(v));
    }
    for (k, v) in KEYS.iter().zip(SECOND) {
        put(&ns, k, v);
        truth.insert(k, Some(v));
    }
    del(&ns, "k6"); // zeroed below: k6 keeps w6
    del(&ns, "k7");
    truth.insert("k7", None);
    let puts = blocks_of(&ns, Kind::Put);
    let deletes = blocks_of(&ns, Kind::Delete);
    let len = std::fs::metadata(&ns).unwrap().len();
    let end = log_blocks(&ns).last().map(|b| b.offset + b.len).unwrap();
    assert!(len > end + 4096, "the file is preallocated past its log");

    // k1's second record zeroed, k3's flipped, k4's and k5's (with the
    // marker between) garbage, k6's delete zeroed.
    let (k1, k3, k4, k5) = (puts[9], puts[11], puts[12], puts[13]);
    zero_range(&ns, k1.offset, k1.len);
    truth.insert("k1", Some("v1"));
    flip_byte(&ns, k3.offset + 13, 0x40);
    truth.insert("k3", Some("v3"));
    write_at(
        &ns,
        k4.offset,
        &garbage((k5.offset + k5.len - k4.offset) as usize, 11),
    );
    truth.insert("k4", Some("v4"));
    truth.insert("k5", Some("v5"));
    zero_range(&ns, deletes[0].offset, deletes[0].len);

    let out = dir.path().join("out");
    let report = salvage(&ns, &out);
    assert_eq!(
        report.damaged,
        [
            (k1.offset, k1.len),
            (k3.offset, k3.len),
            (k4.offset, k5.offset + k5.len - k4.offset),
            (deletes[0].offset, deletes[0].len),
        ]
    );
    assert_eq!((report.keys, report.deleted, report.dropped), (7, 1, 0));
    assert_holds(&out, &truth);
}

/// A sparse "set-aside" file (the header page, a hole, then log bytes at
/// their original offsets): the hole is one damaged range, and every
/// transaction after it is kept.
#[test]
fn log_bytes_after_a_hole_are_found() {
    let (dir, ns) = scratch();
    for (k, v) in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")] {
        put(&ns, k, v);
    }
    del(&ns, "b");
    let kept_from = blocks_of(&ns, Kind::Put)[2].offset; // a2 onwards
    let end = log_blocks(&ns).last().map(|b| b.offset + b.len).unwrap();
    let bytes = std::fs::read(&ns).unwrap();
    let aside = dir.path().join("aside");
    let file = std::fs::File::create(&aside).unwrap();
    file.write_all_at(&bytes[..HEADER_SIZE as usize], 0)
        .unwrap();
    file.write_all_at(&bytes[kept_from as usize..end as usize], kept_from)
        .unwrap();
    drop(file);

    let out = dir.path().join("out");
    let report = salvage(&aside, &out);
    assert_eq!(report.damaged, [(HEADER_SIZE, kept_from - HEADER_SIZE)]);
    assert_eq!((report.keys, report.deleted, report.dropped), (2, 1, 0));
    let truth = Truth::from([("a", Some("a2")), ("b", None), ("c", Some("c1"))]);
    assert_holds(&out, &truth);
}

/// Salvage only reads FILE: it works on a file this user may not write.
/// As root, which bypasses permission checks, `carboy salvage` runs as
/// user 65534 (a copy of the binary in a directory it can enter), so the
/// read-only file really refuses to be opened for writing.
#[test]
fn salvage_needs_only_read_access() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, ns) = scratch();
    put(&ns, "k", "v");
    put(&ns, "gone", "soon");
    del(&ns, "gone");
    let user = Unprivileged::new(Path::new(env!("CARGO_BIN_EXE_carboy")));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ns, std::fs::Permissions::from_mode(0o444)).unwrap();
    let outs = dir.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    user.give(&outs, 0o755);
    let before = std::fs::read(&ns).unwrap();
    let modified = std::fs::metadata(&ns).unwrap().modified().unwrap();

    // The file really refuses this user's writes.
    let probe = user
        .command()
        .arg("put")
        .arg(&ns)
        .args(["k", "w"])
        .output()
        .unwrap();
    assert_ne!(probe.status.code(), Some(0), "{probe:?}");

    let out = outs.join("out");
    let output = user
        .command()
        .arg("salvage")
        .arg(&ns)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "salvage: {output:?}");
    let report = parse_report(&stdout_of(&output));
    assert!(report.damaged.is_empty(), "{report:?}");
    assert_holds(&out, &Truth::from([("k", Some("v")), ("gone", None)]));
    assert_eq!(std::fs::read(&ns).unwrap(), before, "FILE changed");
    assert_eq!(
        std::fs::metadata(&ns).unwrap().modified().unwrap(),
        modified
    );
}
