//! The fuzz targets' bodies, shared by `fuzz/` (cargo-fuzz, nightly) and the
//! corpus replay test (`tests/fuzz_corpus.rs`, stable): whatever bytes they
//! are given, they must return, never panic, never crash.

use std::path::Path;

use carboy::{Options, Store};
use carboy_format::{header, lockfile, record};

/// Every decoder of the format crate, on raw bytes.
pub fn decode_format(data: &[u8]) {
    let _ = header::Header::decode(data);
    let _ = record::Prefix::decode(data);
    let _ = record::decode(data);
    let _ = record::Commit::decode(data);
    let _ = record::decode_index_header(data);
    let _ = lockfile::decode(data);
    if let Ok(p) = record::Prefix::decode(data) {
        let _ = p.covered_len();
        let _ = p.block_len();
        let _ = record::decode_with_prefix(p, data);
    }
}

/// Opens `data` as a data file (plain, and with the index rebuilt), and
/// uses it every way a reader or tool would: gets, iteration, verify,
/// stats, a write, compaction, salvage.
pub fn open_image(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    for rebuild in [false, true] {
        let path = dir.path().join(format!("image-{rebuild}.carboy"));
        if std::fs::write(&path, data).is_err() {
            return;
        }
        exercise(&path, rebuild);
        let _ = carboy::salvage(&path, dir.path().join(format!("salvaged-{rebuild}.carboy")));
    }
}

fn exercise(path: &Path, rebuild: bool) {
    let Ok(store) = Options::new()
        .create(false)
        .rebuild_index(rebuild)
        .open(path)
    else {
        return;
    };
    let _ = store.stats();
    let _ = store.len();
    let keys = store.keys().unwrap_or_default();
    for key in keys.iter().take(64) {
        let _ = store.get(key).map(|v| v.map(|v| v.len()));
    }
    let _ = store.get(b"absent key");
    if let Ok(snapshot) = store.snapshot() {
        for entry in snapshot.into_iter().take(64) {
            let _ = entry;
        }
    }
    let _ = store.verify();
    let _ = store.put(b"fuzz", b"value");
    let _ = store.delete(keys.first().map_or(&b"x"[..], Vec::as_slice));
    let _ = store.compact();
    let _ = store.verify();
    drop(store);
    let _ = Store::open(path).map(|s| s.verify());
}

/// The export format's parser on arbitrary bytes; whatever it accepts must
/// write back and parse again to the same entries.
pub fn export_parser(data: &[u8]) {
    use carboy_tools::export_format::{Reader, Writer};
    let mut entries = Vec::new();
    for entry in Reader::with_max_line(data, 1 << 16) {
        match entry {
            Ok(e) => entries.push(e),
            Err(_) => return,
        }
    }
    let mut writer = Writer::new(Vec::new()).expect("writing to memory");
    for e in &entries {
        writer
            .entry(&e.key, &e.value, e.expiry)
            .expect("writing to memory");
    }
    let dump = writer.finish().expect("writing to memory");
    let again: Vec<_> = Reader::new(&dump[..])
        .collect::<Result<_, _>>()
        .expect("a dump the writer made must parse");
    assert_eq!(again, entries, "the export format does not round-trip");
}

/// A small valid data file to mutate: a few puts, a delete, an expiring key,
/// a transaction, in the current format.
pub fn seed_image() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("seed.carboy");
    {
        let store = Options::new()
            .expected_keys(4)
            .open(&path)
            .expect("create seed");
        for i in 0u32..12 {
            store
                .put(
                    format!("key/{i}").as_bytes(),
                    &i.to_le_bytes().repeat(i as usize),
                )
                .expect("put");
        }
        store.delete(b"key/3").expect("delete");
        store
            .put_with_expiry(b"expiring", b"soon", carboy::Expiry::AtUnixMs(1))
            .expect("put");
        let mut txn = store.transaction().expect("txn");
        txn.put(b"a", b"1").expect("put");
        txn.put(b"b", b"2").expect("put");
        txn.commit().expect("commit");
    }
    let bytes = std::fs::read(&path).expect("read seed");
    // Only the written part: the tail is preallocated zeros.
    let end = crate::read_live_word(&path, header::live::COMMIT_END) as usize;
    bytes[..end.min(bytes.len())].to_vec()
}
