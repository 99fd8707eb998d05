//! `carboy export` and `carboy import`: an exact round trip of binary keys,
//! values and expiries, batched commits, and malformed dumps refused with
//! their line number.

mod common;

use carboy::{Expiry, Store};
use carboy_tools::export_format::Reader;
use common::{awkward_entries, carboy, read_entries, scratch, stdout_of, write_entries};
use predicates::prelude::*;

#[test]
fn export_then_import_is_byte_exact() {
    let (dir, src) = scratch();
    let entries = awkward_entries();
    write_entries(&src, &entries);
    let dump = carboy().arg("export").arg(&src).output().unwrap();
    assert!(dump.status.success(), "{dump:?}");
    assert!(dump.stdout.starts_with(b"carboy-export 1\n"));
    assert!(
        dump.stdout
            .ends_with(format!("end {}\n", entries.len()).as_bytes())
    );

    let dst = dir.path().join("copy.carboy");
    carboy()
        .arg("import")
        .arg(&dst)
        .write_stdin(dump.stdout.clone())
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "imported {} entries",
            entries.len()
        )));
    let mut expected = entries.clone();
    expected.sort();
    assert_eq!(read_entries(&dst), expected);

    // Sorted dumps of the two files are identical, byte for byte.
    let a = carboy()
        .args(["export", "--sort"])
        .arg(&src)
        .output()
        .unwrap();
    let b = carboy()
        .args(["export", "--sort"])
        .arg(&dst)
        .output()
        .unwrap();
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
    let keys: Vec<Vec<u8>> = Reader::new(&a.stdout[..]).map(|e| e.unwrap().key).collect();
    assert_eq!(keys.len(), entries.len());
    assert!(keys.is_sorted(), "--sort sorts by key bytes");
}

#[test]
fn import_commits_in_batches() {
    let (dir, src) = scratch();
    let entries: Vec<_> = (0..2_500u32)
        .map(|i| (i.to_be_bytes().to_vec(), vec![7; 10], Expiry::Never))
        .collect();
    write_entries(&src, &entries);
    let dump = carboy().arg("export").arg(&src).output().unwrap().stdout;
    let dump_file = dir.path().join("ns.dump");
    std::fs::write(&dump_file, &dump).unwrap();

    for (batch, transactions) in [("1000", 3), ("0", 1), ("7", 358)] {
        let dst = dir.path().join(format!("batch-{batch}.carboy"));
        carboy()
            .args(["import", "--batch", batch])
            .arg(&dst)
            .arg(&dump_file)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!(
                "imported 2500 entries from {} in {transactions} transaction",
                dump_file.display()
            )));
        let store = Store::open(&dst).unwrap();
        assert_eq!(store.stats().unwrap().last_txn, transactions);
        assert_eq!(store.len().unwrap(), 2_500);
    }
}

/// A dump of `n` valid entries followed by `tail`.
fn dump_with(n: u32, tail: &str) -> Vec<u8> {
    let mut dump = String::from("carboy-export 1\n");
    for i in 0..n {
        dump.push_str(&format!("{}\tdjE=\t-\n", b64(&i.to_be_bytes())));
    }
    dump.push_str(tail);
    dump.into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_malformed_line_stops_the_import_with_its_number() {
    let (dir, _) = scratch();
    let cases = [
        (
            "bad-base64",
            "a!==\tdjE=\t-\nend 1501\n",
            "line 1502: the key is not valid base64",
        ),
        (
            "two-fields",
            "azE=\tdjE=\nend 1501\n",
            "line 1502: expected an entry",
        ),
        (
            "bad-expiry",
            "azE=\tdjE=\tsoon\nend 1501\n",
            "line 1502: the expiry must be",
        ),
        (
            "bad-count",
            "end 7\n",
            "line 1502: the end line counts 7 entries",
        ),
        (
            "cut-short",
            "",
            "line 1501: the dump ends without its `end COUNT` line",
        ),
    ];
    for (name, tail, message) in cases {
        let dst = dir.path().join(format!("{name}.carboy"));
        carboy()
            .arg("import")
            .arg(&dst)
            .write_stdin(dump_with(1_500, tail))
            .assert()
            .code(3)
            .stderr(predicate::str::contains(format!("stdin: {message}")))
            .stderr(predicate::str::contains(
                "the 1000 entries of earlier batches were imported",
            ));
        // The first batch is committed; the one in progress is not.
        assert_eq!(Store::open(&dst).unwrap().len().unwrap(), 1_000, "{name}");
    }

    // With --batch 0 a malformed dump imports nothing.
    let dst = dir.path().join("atomic.carboy");
    carboy()
        .args(["import", "--batch", "0"])
        .arg(&dst)
        .write_stdin(dump_with(1_500, "oops\n"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("line 1502"));
    assert_eq!(Store::open(&dst).unwrap().len().unwrap(), 0);

    // Not a dump at all: refused before the file is created.
    let never = dir.path().join("never.carboy");
    carboy()
        .arg("import")
        .arg(&never)
        .write_stdin("key,value\n")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("line 1: not a carboy export"))
        .stderr(predicate::str::contains("nothing was imported"));
    assert!(!never.exists());
}

#[test]
fn import_skips_entries_that_already_expired_and_overwrites_existing_keys() {
    let (_dir, dst) = scratch();
    Store::open(&dst).unwrap().put(b"k1", b"old").unwrap();
    let dump = format!(
        "carboy-export 1\n{}\t{}\t-\n{}\t{}\t1000\nend 2\n",
        b64(b"k1"),
        b64(b"new"),
        b64(b"k2"),
        b64(b"stale")
    );
    let out = carboy()
        .arg("import")
        .arg(&dst)
        .write_stdin(dump)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stdout_of(&out)
            .contains("imported 1 entries from stdin in 1 transaction; 1 already expired, skipped")
    );
    assert_eq!(
        read_entries(&dst),
        vec![(b"k1".to_vec(), b"new".to_vec(), Expiry::Never)]
    );
}

#[test]
fn export_of_a_missing_file_is_a_clear_error() {
    let (_dir, file) = scratch();
    carboy()
        .arg("export")
        .arg(&file)
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains("no such file"));
}
