//! `carboy compact`: the file shrinks to its live entries, every live entry
//! survives, and the figures it prints are the engine's.

mod common;

use carboy::{Expiry, Store};
use carboy_format::header::live;
use carboy_tests::read_live_word;
use common::{carboy, read_entries, scratch, stdout_of};

#[test]
fn compact_keeps_live_entries_and_prints_before_and_after() {
    let (_dir, file) = scratch();
    {
        let store = Store::open(&file).unwrap();
        for round in 0..5u32 {
            for i in 0..200u32 {
                store
                    .put(format!("k{i}").as_bytes(), &round.to_le_bytes().repeat(20))
                    .unwrap();
            }
        }
        for i in 0..50u32 {
            store.delete(format!("k{i}").as_bytes()).unwrap();
        }
        store
            .put_with_expiry(b"stale", b"x", Expiry::AtUnixMs(1))
            .unwrap();
    }
    let before = read_entries(&file);
    let committed_before = read_live_word(&file, live::COMMIT_END);

    let out = carboy().arg("compact").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout_of(&out);
    let committed_after = read_live_word(&file, live::COMMIT_END);
    assert!(committed_after < committed_before / 3, "{committed_after}");
    for line in [
        format!("committed bytes  {committed_before} -> {committed_after} ("),
        "keys kept        150".to_string(),
        "expired dropped  1".to_string(),
        "file size        ".to_string(),
    ] {
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    assert_eq!(read_entries(&file), before);
    assert_eq!(before.len(), 150);
    carboy().arg("check").arg(&file).assert().success();
}
