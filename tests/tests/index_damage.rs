//! Damage to the index and the live words never costs a committed key: an
//! open finds an index that lost slots, or a committed end that hides
//! commits, and rebuilds from the log; a process that had the file open
//! before the damage finds it when it compacts or iterates; an index and a
//! log both damaged are refused, not cut.

use std::path::Path;

use carboy::{Error, Options, Store};
use carboy_format::header::live;
use carboy_format::record::Kind;
use carboy_tests::{flip_byte, log_blocks, read_live_word, write_live_word, zero_range};

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:03}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value {i}").repeat(3).into_bytes()
}

/// 300 keys in one transaction; returns the index block's offset.
fn three_hundred(path: &Path) -> u64 {
    let store = Store::open(path).unwrap();
    let mut txn = store.transaction().unwrap();
    for i in 0..300 {
        txn.put(&key(i), &value(i)).unwrap();
    }
    txn.commit().unwrap();
    read_live_word(path, live::INDEX_OFFSET)
}

fn assert_all(store: &Store, n: u32) {
    for i in 0..n {
        assert_eq!(
            store.get(&key(i)).unwrap().as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
    assert_eq!(store.keys().unwrap().len(), n as usize);
}

#[test]
fn an_open_rebuilds_an_index_that_lost_slots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy");
    let index = three_hundred(&path);
    zero_range(&path, index + 1024, 1024);
    let store = Store::open(&path).unwrap();
    assert_ne!(read_live_word(&path, live::INDEX_OFFSET), index);
    let repairs = store.repairs();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert!(
        repairs[0].starts_with(&format!("index at {index} damaged: ")),
        "{repairs:?}"
    );
    assert_all(&store, 300);
    // A handle opened later in the process is told too; a clean file
    // reports nothing.
    assert_eq!(Store::open(&path).unwrap().repairs(), repairs);
    let clean = dir.path().join("clean.carboy");
    three_hundred(&clean);
    assert!(Store::open(&clean).unwrap().repairs().is_empty());
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_process_that_opened_before_the_damage_finds_it_when_it_compacts_or_iterates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy");
    let index = three_hundred(&path);
    let store = Store::open(&path).unwrap();
    // Another program zeroes slots under the open store (the mapping is
    // shared: the store sees the zeros).
    zero_range(&path, index + 1024, 1024);
    let err = store
        .snapshot()
        .unwrap()
        .iter()
        .find_map(|e| e.err())
        .expect("an iteration over an index that lost slots must not end quietly");
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("index damaged"), "{err}");

    let report = store.compact().unwrap();
    assert_eq!(report.keys, 300);
    assert_all(&store, 300);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_damaged_index_over_a_damaged_log_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy");
    let index = three_hundred(&path);
    let first_put = log_blocks(&path)
        .into_iter()
        .find(|b| b.kind == Kind::Put)
        .unwrap()
        .offset;
    zero_range(&path, index + 1024, 1024);
    flip_byte(&path, first_put + 20, 0x40);
    let before = std::fs::read(&path).unwrap();
    match Store::open(&path) {
        Err(Error::Corruption { offset, detail, .. }) => {
            assert_eq!(offset, first_put, "{detail}");
            assert!(detail.contains("index at"), "{detail}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the open changed the file"
    );
    // Salvage still gets every record but the damaged one.
    let out = dir.path().join("salvaged.carboy");
    let report = carboy::salvage(&path, &out).unwrap();
    assert_eq!(report.keys, 299);
}

#[test]
fn a_committed_end_lowered_by_damage_hides_nothing_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.carboy");
    {
        let store = Store::open(&path).unwrap();
        for i in 0..3 {
            store.put(&key(i), &value(i)).unwrap();
        }
    }
    // Lower commit_end to the end of the second transaction.
    let second_marker = log_blocks(&path)
        .into_iter()
        .filter(|b| b.kind == Kind::Commit)
        .nth(1)
        .unwrap();
    let end = read_live_word(&path, live::COMMIT_END);
    write_live_word(
        &path,
        live::COMMIT_END,
        second_marker.offset + second_marker.len,
    );
    write_live_word(
        &path,
        live::INDEXED_END,
        second_marker.offset + second_marker.len,
    );

    // check's way: refused without a change.
    let before = std::fs::read(&path).unwrap();
    match Options::new().recover(false).open(&path) {
        Err(Error::NeedsRecovery { reason, .. }) => {
            assert!(reason.contains("committed end"), "{reason}")
        }
        other => panic!("expected NeedsRecovery, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let plan = carboy::inspect_recovery(&path).unwrap();
    assert!(plan.end_damaged && plan.rebuilds, "{plan:?}");
    assert_eq!(plan.log_end, end);

    let store = Store::open(&path).unwrap();
    store.put(&key(3), &value(3)).unwrap();
    assert_all(&store, 4);
    assert!(store.verify().unwrap().is_clean());
}
