//! Recovery never costs data that still verifies, and looking never
//! changes a file: `check` is read-only even when the file needs
//! recovery (after a reboot, with damage); a recovery that keeps a prefix
//! of the log sets aside the commits that verify past the damage; an index
//! whose slots were zeroed is detected on open and rebuilt from the log, so
//! `keys`, `export` and `compact` never drop keys it lost.

mod common;

use std::path::{Path, PathBuf};

use carboy_format::header::live;
use carboy_format::record::Kind;
use carboy_tests::{flip_byte, log_blocks, read_live_word, write_live_word, zero_range};
use common::{carboy, scratch};

/// The reproduction's file: four transactions, the second one a record
/// (`victim`) that the tests damage.
fn four_transactions(path: &Path) -> u64 {
    for args in [
        &["put", "k2", "old"][..],
        &["put", "victim", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],
        &["put", "k1", "new"],
        &["del", "k2"],
    ] {
        carboy()
            .arg(args[0])
            .arg(path)
            .args(&args[1..])
            .assert()
            .code(0);
    }
    let puts: Vec<_> = log_blocks(path)
        .into_iter()
        .filter(|b| b.kind == Kind::Put)
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    puts[1].offset
}

/// What a reboot leaves in every file: a boot id in the header that is not
/// the running kernel's.
fn as_after_a_reboot(path: &Path) {
    let lo = read_live_word(path, live::BOOT_ID_LO);
    write_live_word(path, live::BOOT_ID_LO, lo ^ 0x5a5a_5a5a);
}

/// The set-aside files beside `path`, found by name (as a user would).
fn set_aside_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.set-aside-", path.file_name().unwrap().to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn check_after_a_reboot_changes_nothing_and_reports_what_recovery_would_set_aside() {
    let (_dir, path) = scratch();
    let victim = four_transactions(&path);
    flip_byte(&path, victim + 20, 0x01);
    as_after_a_reboot(&path);
    let before = std::fs::read(&path).unwrap();

    let out = carboy().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("offset {victim}: the log stops verifying")),
        "{report}"
    );
    assert!(
        report.contains("3 commits (2 records) that verify"),
        "{report}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this check changed nothing"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "check changed the file"
    );
    assert!(set_aside_files(&path).is_empty());
    // Twice: still the same finding, still nothing changed.
    carboy().arg("check").arg(&path).assert().code(1);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "check changed the file"
    );
}

#[test]
fn recovery_after_a_reboot_sets_aside_the_commits_past_a_damaged_record() {
    let (dir, path) = scratch();
    let victim = four_transactions(&path);
    flip_byte(&path, victim + 20, 0x01);
    as_after_a_reboot(&path);

    // The first command that opens the file recovers it: the log keeps
    // its prefix (txn 1: k2 = old), and says so.
    let out = carboy().arg("get").arg(&path).arg("k2").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"old");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set aside"),
        "no word of what recovery set aside: {out:?}"
    );
    let sides = set_aside_files(&path);
    assert_eq!(sides.len(), 1, "{sides:?}");
    let side = &sides[0];
    assert!(
        side.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("ns.carboy.set-aside-{victim}-")),
        "{side:?}"
    );
    // check reports the set-aside file until it is dealt with.
    let out = carboy().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout_of_lossy(&out).contains("commits set aside by an earlier recovery"),
        "{out:?}"
    );

    // Salvage reads every commit that verified back from the set-aside
    // file: k1 = new, and the delete of k2.
    let out_path = dir.path().join("recovered.carboy");
    carboy()
        .arg("salvage")
        .arg(side)
        .arg(&out_path)
        .assert()
        .code(0);
    let keys = ok_stdout(carboy().arg("keys").arg("--sort").arg(&out_path));
    assert_eq!(keys, "k1\n");
    let value = carboy()
        .arg("get")
        .arg(&out_path)
        .arg("k1")
        .output()
        .unwrap()
        .stdout;
    assert_eq!(value, b"new");
}

/// The command's stdout, once it exited 0.
fn ok_stdout(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn stdout_of_lossy(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 300 keys, imported in one transaction; returns the index's offset.
fn three_hundred_keys(path: &Path) -> u64 {
    let mut dump = String::from("carboy-export 1\n");
    for i in 0..300 {
        dump.push_str(&format!(
            "{}\t{}\t-\n",
            b64(format!("key{i:03}").as_bytes()),
            b64(format!("value{i:03}").as_bytes())
        ));
    }
    dump.push_str("end 300\n");
    carboy()
        .arg("import")
        .arg(path)
        .write_stdin(dump)
        .assert()
        .code(0);
    read_live_word(path, live::INDEX_OFFSET)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn zeroed_index_slots_are_found_by_check_and_rebuilt_on_open_so_no_key_is_lost() {
    let (_dir, path) = scratch();
    let index = three_hundred_keys(&path);
    zero_range(&path, index + 1024, 1024);
    let damaged = std::fs::read(&path).unwrap();

    // check: the damage, by offset, and the file untouched.
    let out = carboy().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout_of_lossy(&out).contains(&format!("offset {index}: index at {index} damaged")),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        damaged,
        "check changed the file"
    );

    // keys, export: every key (the open rebuilt the index from the log,
    // and says so).
    let out = carboy().arg("keys").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout_of_lossy(&out).lines().count(), 300, "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "warning: {}: index at {index} damaged",
            path.display()
        )) && said.contains("the index was rebuilt from the log"),
        "{said}"
    );
    std::fs::write(&path, &damaged).unwrap();
    let export = ok_stdout(carboy().arg("export").arg(&path));
    assert_eq!(export.lines().count(), 302, "{export}");

    // compact keeps every key, and the result is clean.
    std::fs::write(&path, &damaged).unwrap();
    carboy().arg("compact").arg(&path).assert().code(0);
    let keys = ok_stdout(carboy().arg("keys").arg(&path));
    assert_eq!(keys.lines().count(), 300, "{keys}");
    carboy().arg("check").arg(&path).assert().code(0);
    for i in [0, 150, 299] {
        let value = carboy()
            .arg("get")
            .arg(&path)
            .arg(format!("key{i:03}"))
            .output()
            .unwrap()
            .stdout;
        assert_eq!(value, format!("value{i:03}").as_bytes());
    }
}

#[test]
fn stat_after_index_damage_reports_the_rebuilt_index() {
    let (_dir, path) = scratch();
    let index = three_hundred_keys(&path);
    zero_range(&path, index + 1024, 1024);
    let json = ok_stdout(carboy().arg("stat").arg("--json").arg(&path));
    // The open rebuilt the index: it is elsewhere now, and whole.
    let moved = read_live_word(&path, live::INDEX_OFFSET);
    assert_ne!(moved, index, "{json}");
    assert_eq!(read_live_word(&path, live::USED_SLOTS), 300);
    assert!(json.contains("\"damaged_slots\":0"), "{json}");
}

#[test]
fn dump_all_walks_past_a_zeroed_record_when_the_committed_end_is_invalid() {
    let (_dir, path) = scratch();
    let victim = four_transactions(&path);
    zero_range(&path, victim, 56);
    write_live_word(&path, live::COMMIT_END, 12345);
    let out = carboy()
        .arg("dump")
        .arg("--all")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout_of_lossy(&out);
    assert!(
        text.contains(&format!("{victim}  damaged              56 bytes")),
        "{text}"
    );
    // Every later block is shown, up to the delete of k2; the zeros after
    // the log are not damage.
    assert!(text.contains("\"k1\": \"new\""), "{text}");
    assert!(text.contains("txn 4"), "{text}");
    assert_eq!(text.matches("damaged").count(), 1, "{text}");
}
