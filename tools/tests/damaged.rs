//! Damaged files are reported, never crash the tool: `check` lists each
//! problem with its offset, `header` and `dump --all` read what is left,
//! `salvage` rebuilds a clean file, and mutated files give statuses 0, 1
//! or 3 from every inspecting command (a panic would be 101).

mod common;

use std::path::{Path, PathBuf};

use carboy::Store;
use carboy_format::header::{OFF_NAME, live};
use carboy_format::record::Kind;
use carboy_tests::{flip_byte, log_blocks, read_live_word, splitmix, truncate_file};
use common::{carboy, stdout_of};
use predicates::prelude::*;
use tempfile::TempDir;

/// A synced file of 40 keys, a few overwritten and deleted.
fn healthy() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.carboy");
    let store = Store::open(&path).unwrap();
    for i in 0..40u32 {
        store
            .put(format!("key/{i}").as_bytes(), &i.to_le_bytes().repeat(5))
            .unwrap();
    }
    for i in (0..40u32).step_by(5) {
        store.put(format!("key/{i}").as_bytes(), b"again").unwrap();
    }
    for i in (0..40u32).step_by(9) {
        store.delete(format!("key/{i}").as_bytes()).unwrap();
    }
    store.sync().unwrap();
    (dir, path)
}

/// Offset of the `n`th put record of the log.
fn nth_put(path: &Path, n: usize) -> u64 {
    log_blocks(path)
        .into_iter()
        .filter(|b| b.kind == Kind::Put)
        .nth(n)
        .unwrap()
        .offset
}

#[test]
fn check_is_clean_on_a_healthy_file() {
    let (_dir, path) = healthy();
    carboy().arg("check").arg(&path).assert().code(0).stdout(
        predicate::str::is_match(concat!(
            r"^.*data\.carboy: clean: 53 records in 53 transactions, ",
            r"\d+ index slots, 35 live keys\n$"
        ))
        .unwrap(),
    );
}

#[test]
fn check_lists_a_damaged_record_at_its_offset() {
    let (_dir, path) = healthy();
    let record = nth_put(&path, 3);
    flip_byte(&path, record + 14, 0x20); // a byte of its key
    let out = carboy().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout_of(&out);
    assert!(
        text.contains(&format!("offset {record}: ")),
        "no problem at {record}:\n{text}"
    );
    for line in text.lines() {
        assert!(
            regex_like_offset(line),
            "problem line {line:?} is not `offset N: what`"
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("carboy salvage"));
}

fn regex_like_offset(line: &str) -> bool {
    line.strip_prefix("offset ")
        .and_then(|rest| rest.split_once(": "))
        .is_some_and(|(n, what)| n.parse::<u64>().is_ok() && !what.is_empty())
}

#[test]
fn header_dump_and_stat_report_damage_instead_of_failing() {
    let (_dir, path) = healthy();
    let record = nth_put(&path, 3);
    flip_byte(&path, record + 14, 0x20);

    carboy()
        .args(["dump", "--all"])
        .arg(&path)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!("{record:>12}  damaged ")))
        .stderr(predicate::str::contains("1 damaged range(s)"));
    // The live dump prints every other entry and reports the damaged one.
    let out = carboy().arg("dump").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout_of(&out).lines().count() >= 30);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("corruption at offset {record}"))
    );
    // The header is intact.
    carboy().arg("header").arg(&path).assert().code(0);

    // Damage the header itself: `header` shows where, the engine refuses.
    flip_byte(&path, OFF_NAME as u64 + 3, 0x01);
    carboy().arg("header").arg(&path).assert().code(1).stdout(
        predicate::str::contains("header_crc").and(predicate::str::contains(
            "BAD: the bytes 0..1532 have CRC32",
        )),
    );
    for cmd in ["stat", "check", "dump", "keys", "export"] {
        carboy()
            .arg(cmd)
            .arg(&path)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("the header is damaged"))
            .stderr(predicate::str::contains("`carboy header"));
    }
    carboy().args(["dump", "--all"]).arg(&path).assert().code(1);
}

#[test]
fn a_file_cut_short_is_walked_up_to_what_is_left() {
    let (_dir, path) = healthy();
    let commit_end = read_live_word(&path, live::COMMIT_END);
    let cut = nth_put(&path, 10) + 4;
    truncate_file(&path, cut);
    carboy()
        .arg("header")
        .arg(&path)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "commit_end      {commit_end}"
        )))
        .stdout(predicate::str::contains("is past the end of the file"));
    let out = carboy()
        .args(["dump", "--all"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("commit_end is invalid"));
    assert_eq!(
        stdout_of(&out)
            .lines()
            .filter(|l| l.contains(" put "))
            .count(),
        10,
        "the ten puts before the cut"
    );
}

#[test]
fn salvage_builds_a_clean_file_without_the_damaged_record() {
    let (dir, path) = healthy();
    let record = nth_put(&path, 3);
    flip_byte(&path, record + 14, 0x20);
    let out_path = dir.path().join("salvaged.carboy");
    carboy()
        .arg("salvage")
        .arg(&path)
        .arg(&out_path)
        .assert()
        .success()
        .stdout(predicate::str::contains("damaged byte ranges skipped: 1"))
        .stdout(predicate::str::contains(format!("offset {record}: ")));
    carboy().arg("check").arg(&out_path).assert().success();
    let keys = Store::open(&out_path).unwrap().keys().unwrap();
    assert_eq!(keys.len(), 34, "35 live keys less the damaged one");
    // OUT must not exist.
    carboy()
        .arg("salvage")
        .arg(&path)
        .arg(&out_path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
}

#[test]
fn mutated_files_never_crash_an_inspecting_command() {
    let (dir, path) = healthy();
    let pristine = std::fs::read(&path).unwrap();
    let commit_end = read_live_word(&path, live::COMMIT_END) as usize;
    let mut seed = 0x0ca4_b0f5_eed0_0004_u64;
    for case in 0..12 {
        let mut bytes = pristine.clone();
        for _ in 0..1 + case % 4 {
            let at = (splitmix(&mut seed) as usize) % commit_end;
            bytes[at] ^= 1 << (splitmix(&mut seed) % 8);
        }
        if case % 5 == 4 {
            bytes.truncate((splitmix(&mut seed) as usize) % commit_end);
        }
        let file = dir.path().join(format!("mutant-{case}.carboy"));
        std::fs::write(&file, &bytes).unwrap();
        for args in [
            &["header"][..],
            &["dump", "--all", "--json"],
            &["stat"],
            &["check"],
            &["dump"],
        ] {
            let out = carboy().args(args).arg(&file).output().unwrap();
            let code = out.status.code();
            assert!(
                matches!(code, Some(0 | 1 | 3)),
                "case {case}: carboy {args:?} exited {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
