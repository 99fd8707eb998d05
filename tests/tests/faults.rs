//! A write that fails part way (here: the file cannot grow past a file-size
//! limit, as on a full disk) returns a typed error, and loses nothing that
//! was committed before it: the next opener finds a clean file holding every
//! acknowledged commit.
//!
//! The child runs under `ulimit -f` with SIGXFSZ ignored (set by the shell,
//! inherited across exec), so growing the file fails with EFBIG.

use std::process::{Command, Stdio};

use carboy::Store;
use carboy_tests::{assert_clean, versioned_value};

#[test]
fn a_file_that_cannot_grow_fails_writes_but_keeps_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.carboy");
    // 4 MiB in 1 KiB blocks: the first file allocation fits, later growth
    // does not.
    let script = "trap '' XFSZ; ulimit -f 4096; exec \"$0\" fill \"$1\"";
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_carboy-test-child"))
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last_line = stdout.lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("error: ") && last_line.contains("full.carboy"),
        "the failure should be a typed error naming the file, got {last_line:?}"
    );
    let acked: Vec<u64> = stdout.lines().filter_map(|l| l.parse().ok()).collect();
    let last = *acked.last().expect("no commit fit under the limit");
    assert!(
        last >= 3,
        "only {last} commits before the limit: the limit is too tight"
    );

    let store = Store::open(&path).unwrap();
    assert_clean(&store);
    // The newest acknowledged commit wrote fill/0..min(4·last, 5000).
    for i in 0..(last * 4).min(5000) {
        let key = format!("fill/{i}").into_bytes();
        let newest = (i..last * 4).step_by(5000).last().unwrap_or(i);
        assert_eq!(
            store.get_owned(&key).unwrap(),
            Some(versioned_value(newest as u32, last)),
            "fill/{i} after commit {last}"
        );
    }
    // Without the limit, the same file takes writes again.
    store.put(b"after", b"the limit").unwrap();
    assert_clean(&store);
}
