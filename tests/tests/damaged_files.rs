//! Bad input is an error, never a panic and never a wrong value: foreign,
//! truncated and damaged files, odd paths, salvage of a damaged file,
//! oversized keys and values, and namespace names that try to escape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use carboy::{Error, Expiry, MAX_KEY_LEN, MAX_VALUE_LEN, Options, Store};
use carboy_format::header::{HEADER_SIZE, IMMUTABLE_LEN, live};
use carboy_format::record::{INDEX_HEADER_LEN, Kind};
use carboy_tests::{
    LogBlock, assert_clean, assert_names_path, contents, flip_byte, log_blocks, read_live_word,
    show, truncate_file, versioned_value, write_live_word,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// A populated file to damage
// ---------------------------------------------------------------------------

const KEYS: u32 = 120;

fn key(i: u32) -> Vec<u8> {
    format!("key/{i}").into_bytes()
}

/// A directory holding `pristine.carboy`: keys written one commit each,
/// a third of them overwritten in one transaction, every seventh deleted,
/// the index grown several times, and everything synced. Returns the
/// directory, the file and what it holds.
fn pristine() -> (TempDir, PathBuf, BTreeMap<Vec<u8>, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pristine.carboy");
    let mut expected = BTreeMap::new();
    {
        let store = Options::new().expected_keys(1).open(&path).unwrap();
        for i in 0..KEYS {
            let value = versioned_value(i, u64::from(i));
            store.put(&key(i), &value).unwrap();
            expected.insert(key(i), value);
        }
        let mut txn = store.transaction().unwrap();
        for i in (0..KEYS).step_by(3) {
            let value = versioned_value(i, 1_000 + u64::from(i));
            txn.put(&key(i), &value).unwrap();
            expected.insert(key(i), value);
        }
        txn.commit().unwrap();
        for i in (0..KEYS).step_by(7) {
            assert!(store.delete(&key(i)).unwrap());
            expected.remove(&key(i));
        }
        store.sync().unwrap();
        assert_clean(&store);
    }
    (dir, path, expected)
}

/// Copies `src` to a new file `name` in `dir`: every case damages its own
/// copy (and gets its own lock file and in-process handle).
fn copy_to(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

/// Reads every key through `store.get`: each must give its right value,
/// `None` if it holds none, or a corruption error naming the file. With
/// `absent_ok`, a present key may also read as absent. Returns how many
/// keys read their right value.
fn check_reads(
    store: &Store,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
    absent_ok: bool,
    case: &str,
) -> usize {
    let mut right = 0;
    for i in 0..KEYS {
        let k = key(i);
        match store.get(&k) {
            Ok(got) => {
                let got = got.as_deref().map(<[u8]>::to_vec);
                let want = expected.get(&k);
                if got.as_ref() == want {
                    right += 1;
                    continue;
                }
                assert!(
                    got.is_none() && absent_ok,
                    "{case}: get({}) returned {:?}, the file holds {:?}",
                    show(&k),
                    got.as_deref().map(show),
                    want.map(|v| show(v))
                );
            }
            Err(e) => {
                assert!(
                    e.is_corruption(),
                    "{case}: get({}) failed with a non-corruption error: {e}",
                    show(&k)
                );
                assert_names_path(&e, store.path());
            }
        }
    }
    right
}

/// Opens `path`, which must be refused: the error names the file, and the
/// refused open left the file's bytes as they were.
fn refused(path: &Path, opts: &Options) -> Error {
    let before = std::fs::read(path).ok();
    let err = match opts.open(path) {
        Ok(store) => panic!("opening {} succeeded: {store:?}", path.display()),
        Err(e) => e,
    };
    assert_names_path(&err, path);
    if let Some(before) = before {
        assert!(
            std::fs::read(path).unwrap() == before,
            "the refused open of {} changed the file",
            path.display()
        );
    }
    err
}

/// Removes a case's data and lock files when the case is done.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let mut lock = self.0.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---------------------------------------------------------------------------
// Files that are not carboy files
// ---------------------------------------------------------------------------

#[test]
fn empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "empty.carboy", b"");
    let err = refused(&path, &Options::new());
    assert!(matches!(err, Error::NotCarboy { .. }), "{err:?}");
}

#[test]
fn zero_filled_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for len in [4096, 100] {
        let path = write_file(dir.path(), &format!("zeros{len}.carboy"), &vec![0; len]);
        let err = refused(&path, &Options::new());
        assert!(matches!(err, Error::NotCarboy { .. }), "{len}: {err:?}");
    }
}

#[test]
fn png_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89".to_vec();
    png.resize(5000, 0x42);
    let path = write_file(dir.path(), "image.png", &png);
    let err = refused(&path, &Options::new());
    assert!(matches!(err, Error::NotCarboy { .. }), "{err:?}");
    assert!(err.to_string().contains("not a carboy"), "{err}");
}

#[test]
fn text_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = "carboy is an embedded key-value store.\n".repeat(200);
    let path = write_file(dir.path(), "README.txt", text.as_bytes());
    let err = refused(&path, &Options::new());
    assert!(matches!(err, Error::NotCarboy { .. }), "{err:?}");
}

#[test]
fn directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-directory");
    std::fs::create_dir(&path).unwrap();
    let err = refused(&path, &Options::new());
    assert!(
        matches!(
            err,
            Error::NotRegularFile {
                kind: "a directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(path.is_dir());
}

#[test]
fn missing_file_without_create_is_not_found_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.carboy");
    let err = refused(&path, &Options::new().create(false));
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "a failed open left files behind: {left:?}");
}

// ---------------------------------------------------------------------------
// Truncated files
// ---------------------------------------------------------------------------

/// Truncates a copy of the pristine file to `len(path, file length,
/// committed length)` bytes and opens it. Refusing is fine (with a typed
/// error naming the file). Opening is fine if no read then gives a wrong
/// value or passes a lost key off as absent: the file was synced, so a cut
/// below its durable end must not open as if intact (FORMAT.md §6.3).
fn check_truncated(len: impl Fn(&Path, u64, u64) -> u64) {
    let (dir, src, expected) = pristine();
    let file_len = std::fs::metadata(&src).unwrap().len();
    let committed = read_live_word(&src, live::COMMIT_END);
    let len = len(&src, file_len, committed);
    let path = copy_to(&src, dir.path(), "cut.carboy");
    truncate_file(&path, len);
    let case = format!("truncated to {len} of {file_len} bytes ({committed} committed)");
    match Store::open(&path) {
        Err(e) => {
            assert_names_path(&e, &path);
            assert!(
                matches!(e, Error::NotCarboy { .. }) || e.is_corruption(),
                "{case}: refused with an untyped error: {e:?}"
            );
            assert!(
                len < committed,
                "{case}: nothing committed was cut, yet the open failed: {e}"
            );
        }
        Ok(store) => {
            let right = check_reads(&store, &expected, false, &case);
            if len >= committed {
                assert_eq!(right, KEYS as usize, "{case}: keys lost");
                assert_eq!(contents(&store).len(), expected.len(), "{case}");
                assert_clean(&store);
            }
        }
    }
}

#[test]
fn truncated_to_10_bytes() {
    check_truncated(|_, _, _| 10);
}

#[test]
fn truncated_to_100_bytes() {
    check_truncated(|_, _, _| 100);
}

#[test]
fn truncated_to_1535_bytes() {
    check_truncated(|_, _, _| 1535);
}

#[test]
fn truncated_inside_the_live_words() {
    // The immutable header is whole (1536 bytes), the live words are not.
    check_truncated(|_, _, _| 1600);
}

#[test]
fn truncated_to_the_header_page() {
    check_truncated(|_, _, _| HEADER_SIZE);
}

#[test]
fn truncated_to_half_the_log() {
    check_truncated(|_, _, committed| (HEADER_SIZE + (committed - HEADER_SIZE) / 2) / 8 * 8);
}

#[test]
fn truncated_to_half_the_file() {
    check_truncated(|_, file_len, _| file_len / 2);
}

#[test]
fn truncated_after_a_commit_in_the_middle_of_the_log() {
    // The log ends cleanly there: only the durable end (synced_end, past
    // the new file length) tells that committed transactions are missing.
    check_truncated(|path, _, committed| {
        let commits: Vec<LogBlock> = log_blocks(path)
            .into_iter()
            .filter(|b| b.kind == Kind::Commit)
            .collect();
        let middle = commits[commits.len() / 2];
        let end = middle.offset + middle.len;
        assert!(end < committed);
        end
    });
}

#[test]
fn truncated_by_8_bytes() {
    check_truncated(|_, file_len, _| file_len - 8);
}

#[test]
fn truncated_by_8_bytes_of_the_log() {
    check_truncated(|_, _, committed| committed - 8);
}

// ---------------------------------------------------------------------------
// Damaged bytes
// ---------------------------------------------------------------------------

#[test]
fn flipped_byte_in_the_immutable_header_is_refused() {
    let (dir, src, _) = pristine();
    // magic, version, header_size, hash_key, file_id, generation,
    // created_ms, name_len, name, reserved, header_crc.
    for offset in [
        0,
        5,
        8,
        12,
        20,
        40,
        50,
        60,
        64,
        70,
        1200,
        IMMUTABLE_LEN as u64 - 1,
    ] {
        let path = copy_to(&src, dir.path(), &format!("header-{offset}.carboy"));
        flip_byte(&path, offset, 0x10);
        let err = refused(&path, &Options::new());
        assert!(
            matches!(err, Error::NotCarboy { .. }),
            "flip at {offset}: {err:?}"
        );
        if offset == 8 {
            // The version now reads 17: say so, and what to do.
            let text = err.to_string();
            assert!(text.contains("v17") && text.contains("upgrade"), "{text}");
        }
    }
}

#[test]
fn implausible_live_words_are_not_trusted() {
    let (dir, src, expected) = pristine();
    let file_len = std::fs::metadata(&src).unwrap().len();
    let first_put = log_blocks(&src)
        .iter()
        .find(|b| b.kind == Kind::Put)
        .unwrap()
        .offset;
    // (An older index block would pass every check a live word can get:
    // the words are not checksummed. Only values that fail the checks of
    // FORMAT.md §2.2 are tried here.)
    let cases: &[(&str, usize, u64)] = &[
        ("commit_end huge", live::COMMIT_END, u64::MAX),
        ("commit_end unaligned", live::COMMIT_END, HEADER_SIZE + 4),
        ("commit_end past the file", live::COMMIT_END, file_len + 8),
        ("commit_end zero", live::COMMIT_END, 0),
        ("index_offset zero", live::INDEX_OFFSET, 0),
        (
            "index_offset unaligned",
            live::INDEX_OFFSET,
            HEADER_SIZE + 4,
        ),
        ("index_offset at the end", live::INDEX_OFFSET, u64::MAX - 7),
        ("index_offset on a record", live::INDEX_OFFSET, first_put),
        ("alloc_end huge", live::ALLOC_END, u64::MAX),
        ("indexed_end huge", live::INDEXED_END, u64::MAX),
        ("indexed_end zero", live::INDEXED_END, 0),
        ("write_pending set", live::WRITE_PENDING, 1),
    ];
    for (n, &(what, word, value)) in cases.iter().enumerate() {
        let path = copy_to(&src, dir.path(), &format!("live-{n}.carboy"));
        write_live_word(&path, word, value);
        match Store::open(&path) {
            Err(e) => {
                assert_names_path(&e, &path);
                assert!(
                    e.is_corruption(),
                    "{what}: refused with an untyped error: {e:?}"
                );
            }
            Ok(store) => {
                let right = check_reads(&store, &expected, false, what);
                assert_eq!(right, KEYS as usize, "{what}: reads went wrong");
                assert_clean(&store);
            }
        }
    }
}

/// Opens a damaged file: `None` if it was refused with a corruption error
/// naming it, the store if it opened.
fn open_damaged(path: &Path, opts: &Options, case: &str) -> Option<Store> {
    match opts.open(path) {
        Ok(store) => Some(store),
        Err(e) => {
            assert_names_path(&e, path);
            assert!(e.is_corruption(), "{case}: refused with {e:?}");
            None
        }
    }
}

/// Byte positions in `block` that its checks cover: the CRC field, the
/// prefix, and the first, middle and last covered body bytes.
fn covered_positions(block: &LogBlock) -> Vec<u64> {
    let mut at = vec![0, 4, 5, 6, 8];
    if block.covered > 12 {
        at.extend([12, (12 + block.covered) / 2, block.covered - 1]);
    }
    at.sort_unstable();
    at.dedup();
    at.into_iter().map(|p| block.offset + p).collect()
}

#[test]
fn flipped_byte_in_the_log_never_gives_a_wrong_value() {
    let (dir, src, expected) = pristine();
    let blocks = log_blocks(&src);
    let kinds = |k: Kind| blocks.iter().filter(|b| b.kind == k).count();
    assert!(kinds(Kind::Put) > 100 && kinds(Kind::Delete) > 10 && kinds(Kind::Index) > 3);
    // One block in five, and every index block.
    let picked: Vec<&LogBlock> = blocks
        .iter()
        .enumerate()
        .filter(|(i, b)| i % 5 == 0 || b.kind == Kind::Index)
        .map(|(_, b)| b)
        .collect();
    for kind in [Kind::Put, Kind::Delete, Kind::Commit, Kind::Index] {
        assert!(
            picked.iter().any(|b| b.kind == kind),
            "no {kind:?} block picked"
        );
    }
    let mut cases = 0;
    for block in picked {
        for offset in covered_positions(block) {
            // A one-bit flip, and a whole byte inverted.
            for mask in [0x01, 0xff] {
                cases += 1;
                let case = format!(
                    "{:?} block at {}: byte {offset} ^ {mask:#04x}",
                    block.kind, block.offset
                );
                let path = copy_to(&src, dir.path(), &format!("log-{cases}.carboy"));
                let _cleanup = RemoveOnDrop(path.clone());
                flip_byte(&path, offset, mask);
                if mask == 0xff {
                    // As after a reboot: the index is rebuilt from the log.
                    let copy = copy_to(&path, dir.path(), &format!("log-{cases}-rebuilt.carboy"));
                    let _cleanup = RemoveOnDrop(copy.clone());
                    let opts = Options::new().rebuild_index(true);
                    if let Some(store) = open_damaged(&copy, &opts, &case) {
                        check_reads(&store, &expected, false, &format!("{case}, rebuilt"));
                    }
                }
                let Some(store) = open_damaged(&path, &Options::new(), &case) else {
                    continue;
                };
                // One damaged block costs at most the key it holds.
                let right = check_reads(&store, &expected, false, &case);
                assert!(
                    right >= KEYS as usize - 1,
                    "{case}: only {right} keys read right"
                );
                // verify() finds the damage and says where it is.
                let end = block.offset + block.len;
                let report = store
                    .verify()
                    .unwrap_or_else(|e| panic!("{case}: verify() failed: {e}"));
                assert!(
                    report
                        .problems
                        .iter()
                        .any(|p| (block.offset..end).contains(&p.offset)),
                    "{case}: verify() reports no problem in {}..{end}: {:?}",
                    block.offset,
                    report.problems
                );
            }
        }
    }
    assert!(cases > 300, "only {cases} cases");
}

#[test]
fn flipped_index_slot_never_gives_a_wrong_value() {
    // Slots are not checksummed (FORMAT.md §4), so a damaged slot may hide
    // its key; it must never make a read return another key's value or
    // garbage, and verify() must find it.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("once.carboy");
    let mut expected = BTreeMap::new();
    {
        // One version per key: a slot misdirected to an older record of
        // the same key cannot happen.
        let store = Options::new()
            .expected_keys(KEYS.into())
            .open(&src)
            .unwrap();
        for i in 0..KEYS {
            let value = versioned_value(i, u64::from(i));
            store.put(&key(i), &value).unwrap();
            expected.insert(key(i), value);
        }
        store.sync().unwrap();
    }
    let index = read_live_word(&src, live::INDEX_OFFSET);
    let block = log_blocks(&src)
        .into_iter()
        .find(|b| b.offset == index)
        .unwrap();
    let slots = (block.len - INDEX_HEADER_LEN as u64) / 8;
    let bytes = std::fs::read(&src).unwrap();
    let slot = |b: u64| {
        let at = (index + INDEX_HEADER_LEN as u64 + b * 8) as usize;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    };
    let used: Vec<u64> = (0..slots).filter(|&b| slot(b) != 0).collect();
    let empty: Vec<u64> = (0..slots).filter(|&b| slot(b) == 0).collect();
    assert_eq!(used.len(), KEYS as usize);
    let (mut cases, mut rebuilt) = (0, 0);
    // Byte 0 and 4 hit the offset, byte 5 and 7 the tag.
    let picks = used
        .iter()
        .step_by(7)
        .flat_map(|&b| [(b, 0), (b, 4), (b, 5), (b, 7)]);
    let picks = picks.chain(empty.iter().step_by(17).flat_map(|&b| [(b, 0), (b, 6)]));
    for (b, byte) in picks {
        cases += 1;
        let at = index + INDEX_HEADER_LEN as u64 + b * 8;
        let case = format!("slot {b} (at {at}), byte {byte} flipped");
        let path = copy_to(&src, dir.path(), &format!("slot-{cases}.carboy"));
        let _cleanup = RemoveOnDrop(path.clone());
        flip_byte(&path, at + byte, 0x01);
        let Some(store) = open_damaged(&path, &Options::new(), &case) else {
            continue;
        };
        let right = check_reads(&store, &expected, true, &case);
        assert!(
            right >= KEYS as usize - 1,
            "{case}: only {right} keys read right"
        );
        let report = store
            .verify()
            .unwrap_or_else(|e| panic!("{case}: verify() failed: {e}"));
        if read_live_word(&path, live::INDEX_OFFSET) != index {
            // The open found the slot pointing outside the log (or a slot
            // too many) and rebuilt the index from the log: whole again.
            rebuilt += 1;
            assert_eq!(right, KEYS as usize, "{case}: rebuilt, yet keys read wrong");
            assert!(report.is_clean(), "{case}: rebuilt: {:?}", report.problems);
        } else {
            assert!(
                report.problems.iter().any(|p| p.offset == at),
                "{case}: verify() does not name the slot: {:?}",
                report.problems
            );
        }
    }
    assert!(cases > 60, "only {cases} cases");
    // Every flip changes the slots' sum (or their count): the open catches
    // each one and rebuilds the index, whole again.
    assert_eq!(rebuilt, cases, "{rebuilt} of {cases} rebuilt");
}

// ---------------------------------------------------------------------------
// Salvage
// ---------------------------------------------------------------------------

#[test]
fn salvage_keeps_exactly_what_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("damaged.carboy");
    let mut expected = BTreeMap::new();
    {
        let store = Options::new().expected_keys(1).open(&src).unwrap();
        for i in 0..KEYS {
            let value = versioned_value(i, u64::from(i));
            if i % 5 == 0 {
                store
                    .put_with_expiry(&key(i), &value, Expiry::AtUnixMs(u64::MAX - 1))
                    .unwrap();
            } else {
                store.put(&key(i), &value).unwrap();
            }
            expected.insert(key(i), value);
        }
        store.sync().unwrap();
    }
    // Damage the value of every ninth key's only record.
    let records: Vec<LogBlock> = log_blocks(&src)
        .into_iter()
        .filter(|b| b.kind == Kind::Put)
        .collect();
    assert_eq!(records.len(), KEYS as usize);
    let mut damaged = Vec::new();
    for (i, rec) in records.iter().enumerate().step_by(9) {
        flip_byte(&src, rec.offset + rec.covered - 1, 0x20);
        damaged.push(key(i as u32));
    }

    let dst = dir.path().join("salvaged.carboy");
    let report = carboy::salvage(&src, &dst).unwrap();
    assert!(!report.damaged.is_empty(), "{report:?}");
    for (offset, _) in &report.damaged {
        assert!(
            records.iter().any(|r| r.offset == *offset),
            "damage reported at {offset}, not at a damaged record"
        );
    }
    let store = Store::open(&dst).unwrap();
    let kept = contents(&store);
    assert_eq!(report.keys, kept.len() as u64);
    for (k, (value, _)) in &kept {
        assert_eq!(
            Some(value),
            expected.get(k),
            "salvage kept {} with a wrong value",
            show(k)
        );
        assert!(!damaged.contains(k), "salvage kept damaged {}", show(k));
    }
    assert_eq!(
        kept.len(),
        KEYS as usize - damaged.len(),
        "salvage dropped records that verify"
    );
    assert_clean(&store);
    // The expiry survives salvage too.
    assert_eq!(
        kept.get(&key(5)).map(|(_, e)| *e),
        Some(Expiry::AtUnixMs(u64::MAX - 1))
    );
}

#[test]
fn salvage_refuses_an_existing_target_and_a_foreign_source() {
    let (dir, src, _) = pristine();
    let dst = write_file(dir.path(), "taken.carboy", b"mine");
    let err = carboy::salvage(&src, &dst).unwrap_err();
    assert_names_path(&err, &dst);
    assert_eq!(std::fs::read(&dst).unwrap(), b"mine");
    let foreign = write_file(dir.path(), "notes.txt", b"hello, world\n");
    let err = carboy::salvage(&foreign, dir.path().join("out.carboy")).unwrap_err();
    assert_names_path(&err, &foreign);
    assert!(!dir.path().join("out.carboy").exists());
}

// ---------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------

#[test]
fn keys_longer_than_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("limits.carboy")).unwrap();
    let long = vec![b'k'; MAX_KEY_LEN + 1];
    let is_key_too_long = |r: carboy::Result<()>| match r {
        Err(Error::KeyTooLong { len, max }) => {
            assert_eq!((len, max), (MAX_KEY_LEN + 1, MAX_KEY_LEN));
        }
        other => panic!("expected KeyTooLong, got {other:?}"),
    };
    is_key_too_long(store.put(&long, b"v"));
    is_key_too_long(store.put_for(&long, b"v", std::time::Duration::from_secs(1)));
    is_key_too_long(store.put_with_expiry(&long, b"v", Expiry::Never));
    is_key_too_long(store.delete(&long).map(|_| ()));
    {
        let mut txn = store.transaction().unwrap();
        is_key_too_long(txn.put(&long, b"v"));
        is_key_too_long(txn.delete(&long).map(|_| ()));
    }
    let err = store.put(&long, b"v").unwrap_err();
    assert!(err.to_string().contains(&MAX_KEY_LEN.to_string()), "{err}");
    assert_eq!(store.get(&long).unwrap().as_deref(), None);

    // The longest key is fine.
    let longest = vec![b'k'; MAX_KEY_LEN];
    store.put(&longest, b"v").unwrap();
    assert_eq!(
        store.get_owned(&longest).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(store.len().unwrap(), 1);
    assert_clean(&store);
}

#[test]
fn values_longer_than_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("limits.carboy")).unwrap();
    // Zeroed pages are not touched: this costs address space, not memory.
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    match store.put(b"k", &huge) {
        Err(Error::ValueTooLong { len, max }) => {
            assert_eq!((len, max), (MAX_VALUE_LEN + 1, MAX_VALUE_LEN));
        }
        other => panic!("expected ValueTooLong, got {other:?}"),
    }
    let mut txn = store.transaction().unwrap();
    assert!(matches!(
        txn.put(b"k", &huge),
        Err(Error::ValueTooLong { .. })
    ));
    drop(txn);
    assert!(store.is_empty().unwrap());
    assert_clean(&store);
}

// ---------------------------------------------------------------------------
// Namespace names
// ---------------------------------------------------------------------------

#[test]
fn odd_namespace_names_stay_inside_the_directory_and_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let names: Vec<String> = [
        "../x",
        "a/b",
        "a\\b",
        ".",
        "..",
        "a\0b",
        "日本語",
        "Ünïcödé name",
        "users",
        "Users",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["x".repeat(300), "é".repeat(300)])
    .collect();
    let mut files = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let store = Store::open_namespace(&data, name)
            .unwrap_or_else(|e| panic!("open_namespace({name:?}): {e}"));
        assert_eq!(
            store.path().parent(),
            Some(data.as_path()),
            "{name:?} lives at {}",
            store.path().display()
        );
        store.put(b"name", name.as_bytes()).unwrap();
        store.put(b"index", &(i as u64).to_le_bytes()).unwrap();
        files.push(store.path().to_path_buf());
    }
    let mut distinct = files.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), names.len(), "two names share a file");

    // Nothing escaped: the root holds only the data directory, which holds
    // only data files and their lock files.
    let in_root: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(in_root, ["data"]);
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        let file = entry.path();
        assert!(entry.file_type().unwrap().is_file(), "{}", file.display());
        let base = file.to_str().unwrap().trim_end_matches(".lock");
        assert!(
            files.iter().any(|f| f.to_str() == Some(base)),
            "unexpected file {}",
            file.display()
        );
    }

    // Every handle is gone (the stores above were dropped): reopening by
    // name finds the same data, once by `open_namespace` and once again.
    for _ in 0..2 {
        for (i, name) in names.iter().enumerate() {
            let store = Store::open_namespace(&data, name).unwrap();
            assert_eq!(
                store.get_owned(b"name").unwrap().as_deref(),
                Some(name.as_bytes())
            );
            assert_eq!(
                store.get_owned(b"index").unwrap().as_deref(),
                Some(&(i as u64).to_le_bytes()[..])
            );
            assert_eq!(store.len().unwrap(), 2);
        }
    }
}

#[test]
fn empty_and_overlong_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in [String::new(), "n".repeat(1025)] {
        match Store::open_namespace(dir.path(), &name) {
            Err(e @ Error::InvalidName { .. }) => assert!(!e.to_string().is_empty()),
            other => panic!(
                "name of {} bytes: expected InvalidName, got {other:?}",
                name.len()
            ),
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_file_under_another_namespace_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = Store::open_namespace(dir.path(), "theirs").unwrap();
    theirs.put(b"k", b"v").unwrap();
    let path = theirs.path().to_path_buf();
    drop(theirs);
    std::fs::rename(&path, dir.path().join("mine.carboy")).unwrap();
    let err = Store::open_namespace(dir.path(), "mine").unwrap_err();
    assert!(matches!(err, Error::NameMismatch { .. }), "{err:?}");
    assert_names_path(&err, &dir.path().join("mine.carboy"));
}
