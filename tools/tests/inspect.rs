//! `carboy stat`, `header` and `dump` on a healthy file: every field they
//! promise, with values that match what the engine and the format say.

mod common;

use std::path::{Path, PathBuf};

use carboy::{Expiry, Options, Store};
use carboy_format::header::{Header, live};
use carboy_format::record::Kind;
use carboy_tests::{log_blocks, read_live_word};
use common::{FUTURE_MS, carboy, stdout_of};
use predicates::prelude::*;
use serde_json::Value;
use tempfile::TempDir;

/// A namespace "users" holding three live keys (one expiring), one expired
/// key and two deleted ones, written in seven commits.
fn populated() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = Options::new().open_namespace(dir.path(), "users").unwrap();
    store.put(b"user:1", b"alice").unwrap();
    store.put(b"user:2", b"bob").unwrap();
    store
        .put_with_expiry(b"token", b"\x00\xff", Expiry::AtUnixMs(FUTURE_MS))
        .unwrap();
    store
        .put_with_expiry(b"stale", b"old", Expiry::AtUnixMs(1_000))
        .unwrap();
    store.put(b"gone:1", b"x").unwrap();
    store.delete(b"gone:1").unwrap();
    let mut txn = store.transaction().unwrap();
    txn.put(b"gone:2", b"y").unwrap();
    txn.commit().unwrap();
    store.delete(b"gone:2").unwrap();
    let path = store.path().to_path_buf();
    (dir, path)
}

fn stat_json(path: &Path) -> Value {
    let out = carboy()
        .args(["stat", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn stat_reports_header_fields_counts_sizes_and_probe_lengths() {
    let (_dir, path) = populated();
    let header = Header::decode(&std::fs::read(&path).unwrap()).unwrap();
    let s = stat_json(&path);
    assert_eq!(s["name"], "users");
    assert_eq!(s["format_version"], 1);
    assert_eq!(s["generation"], header.generation);
    assert_eq!(s["created_ms"], header.created_ms);
    let file_id: String = header.file_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(s["file_id"], file_id.as_str());
    assert_eq!(s["last_txn"], 8);
    assert_eq!(s["live_keys"], 3);
    assert_eq!(s["live_keys_with_expiry"], 1);
    assert_eq!(s["expired_keys"], 1);
    assert_eq!(s["tombstones"], 2);
    assert_eq!(s["damaged_slots"], 0);
    assert_eq!(s["used_slots"], 6);
    assert_eq!(s["file_bytes"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(
        s["committed_bytes"],
        read_live_word(&path, live::COMMIT_END)
    );
    assert_eq!(s["dead_bytes"], read_live_word(&path, live::DEAD_BYTES));
    assert_eq!(s["index_offset"], read_live_word(&path, live::INDEX_OFFSET));
    let probed: u64 = s["probe_lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bin| bin["slots"].as_u64().unwrap())
        .sum();
    assert_eq!(probed, 6, "every used slot is in the histogram");
    assert!(s["probe_length_max"].as_u64().unwrap() >= 1);

    let text = carboy().arg("stat").arg(&path).output().unwrap();
    assert!(text.status.success());
    let text = stdout_of(&text);
    for line in [
        "name              \"users\"",
        "format version    1",
        "live keys         3 (1 with an expiry)",
        "expired keys      1",
        "tombstones        2",
        "last commit       txn 8 at ",
        "probe length      slots",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn header_names_every_field_at_its_offset() {
    let (_dir, path) = populated();
    let out = carboy().arg("header").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout_of(&out);
    let commit_end = read_live_word(&path, live::COMMIT_END);
    for line in [
        "     0     8  magic           89 43 42 59 0d 0a 1a 0a   ok".to_string(),
        "     8     4  format_version  1".to_string(),
        "    66  1024  name            \"users\"".to_string(),
        format!("  1600     8  commit_end      {commit_end}"),
        "  1532     4  header_crc".to_string(),
        "  1704     8  boot_id_hi".to_string(),
        "    64     8  generation      0                         ok".to_string(),
        "no problems found".to_string(),
    ] {
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains("BAD"), "{text}");
}

#[test]
fn dump_prints_live_entries_as_text_and_json() {
    let (_dir, path) = populated();
    let out = carboy().arg("dump").arg(&path).output().unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = stdout_of(&out).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "\"token\": \"\\0\\xff\"  (expires 2100-01-01T00:00:00.000Z)",
            "\"user:1\": \"alice\"",
            "\"user:2\": \"bob\"",
        ]
    );

    let out = carboy()
        .args(["dump", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut objects: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    objects.sort_by_key(|o| o["key"].as_str().unwrap().to_string());
    assert_eq!(
        objects[0],
        serde_json::json!({"key": "dG9rZW4=", "value": "AP8=", "expires_ms": FUTURE_MS})
    );
    assert_eq!(
        objects[1],
        serde_json::json!({"key": "dXNlcjox", "value": "YWxpY2U=", "expires_ms": null})
    );
}

#[test]
fn dump_all_shows_every_block_with_its_offset_and_status() {
    let (_dir, path) = populated();
    let blocks = log_blocks(&path);
    let out = carboy()
        .args(["dump", "--all", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let objects: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let offsets: Vec<u64> = objects
        .iter()
        .map(|o| o["offset"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = blocks.iter().map(|b| b.offset).collect();
    assert_eq!(offsets, expected, "one line per block of the log, in order");
    for (o, b) in objects.iter().zip(&blocks) {
        let kind = match b.kind {
            Kind::Put => "put",
            Kind::Delete => "delete",
            Kind::Commit => "commit",
            Kind::Index => "index",
        };
        assert_eq!(o["kind"], kind, "{o}");
    }
    let status_of = |key: &[u8], kind: &str| -> Vec<String> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        objects
            .iter()
            .filter(|o| o["key"] == key.as_str() && o["kind"] == kind)
            .map(|o| o["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status_of(b"user:1", "put"), ["live"]);
    assert_eq!(status_of(b"stale", "put"), ["expired"]);
    assert_eq!(status_of(b"gone:1", "put"), ["dead"]);
    assert_eq!(status_of(b"gone:1", "delete"), ["tombstone"]);
    assert_eq!(status_of(b"gone:2", "delete"), ["tombstone"]);

    let text = carboy()
        .args(["dump", "--all"])
        .arg(&path)
        .output()
        .unwrap();
    let text = stdout_of(&text);
    let line_with = |words: &[&str]| text.lines().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(line_with(&[" commit ", "txn 8, 1 record from "]), "{text}");
    assert!(line_with(&[" index ", " current ", " 2^"]), "{text}");
    assert!(
        line_with(&[" put ", " expired ", "\"stale\": \"old\"  (expires 1970-"]),
        "{text}"
    );
}

#[test]
fn commands_read_a_file_other_handles_have_open() {
    // The test process keeps the store open (and may hold the writer
    // lock's lease): the tool still reads and writes it.
    let (_dir, path) = populated();
    let store = Store::open(&path).unwrap();
    store.put(b"held", b"open").unwrap();
    carboy()
        .arg("get")
        .arg(&path)
        .arg("held")
        .assert()
        .success()
        .stdout("open");
    carboy()
        .arg("put")
        .arg(&path)
        .args(["from", "tool"])
        .assert()
        .success();
    assert_eq!(store.get(b"from").unwrap().as_deref(), Some(&b"tool"[..]));
    carboy()
        .arg("check")
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::contains("clean"));
}
