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

/// Random operation sequences, decoded from `data`, applied to a store and
/// to an in-memory model with the same expiry rule; after every step the
/// touched key must agree, and at the end (and after every reopen, plain or
/// with the index rebuilt as after a crash) the whole contents must agree
/// and `verify` must be clean.
pub fn ops_model(data: &[u8]) {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use carboy::{Clock, Expiry, MockClock};

    type Model = BTreeMap<Vec<u8>, (Vec<u8>, Expiry)>;

    fn live(model: &Model, now: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
        model
            .iter()
            .filter(|(_, (_, e))| !e.is_expired_at(now))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn check_all(store: &Store, model: &Model, now: u64, step: usize) {
        let got: BTreeMap<Vec<u8>, Vec<u8>> = store
            .iter()
            .expect("iter")
            .map(|e| {
                let e = e.expect("entry");
                (e.key, e.value)
            })
            .collect();
        assert_eq!(
            got,
            live(model, now),
            "step {step}: contents differ from the model"
        );
        assert_eq!(
            store.len().expect("len"),
            got.len() as u64,
            "step {step}: len"
        );
        let report = store.verify().expect("verify");
        assert!(report.is_clean(), "step {step}: {:?}", report.problems);
    }

    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("model.carboy");
    let clock = MockClock::new(1_000_000);
    let open = |rebuild: bool| {
        Options::new()
            .clock(Arc::new(clock.clone()))
            .expected_keys(4)
            .rebuild_index(rebuild)
            .open(&path)
            .expect("open")
    };
    let mut store = open(false);
    let mut model = Model::new();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let key_of = |b: u8| format!("k{}", b % 24).into_bytes();
    let value_of = |len: u8, tag: u8| vec![tag; len as usize % 200];
    let mut step = 0;
    while let Some(op) = next() {
        step += 1;
        if step > 200 {
            break;
        }
        let now = clock.now_unix_ms();
        match op % 8 {
            0 | 1 => {
                let (Some(k), Some(l)) = (next(), next()) else {
                    break;
                };
                let key = key_of(k);
                let value = value_of(l, op);
                let expiry = if op % 8 == 1 {
                    Expiry::AtUnixMs(now + u64::from(next().unwrap_or(0)))
                } else {
                    Expiry::Never
                };
                store.put_with_expiry(&key, &value, expiry).expect("put");
                model.insert(key.clone(), (value, expiry));
                let want = model
                    .get(&key)
                    .filter(|(_, e)| !e.is_expired_at(now))
                    .map(|(v, _)| v.clone());
                assert_eq!(
                    store.get_owned(&key).expect("get"),
                    want,
                    "step {step}: after put"
                );
            }
            2 => {
                let Some(k) = next() else { break };
                let key = key_of(k);
                let was = model
                    .remove(&key)
                    .is_some_and(|(_, e)| !e.is_expired_at(now));
                assert_eq!(
                    store.delete(&key).expect("delete"),
                    was,
                    "step {step}: delete's answer"
                );
                assert_eq!(
                    store.get_owned(&key).expect("get"),
                    None,
                    "step {step}: after delete"
                );
            }
            3 => {
                let Some(n) = next() else { break };
                let mut txn = store.transaction().expect("txn");
                let mut staged = model.clone();
                for _ in 0..n % 8 {
                    let (Some(k), Some(l)) = (next(), next()) else {
                        break;
                    };
                    let key = key_of(k);
                    if l % 4 == 0 {
                        let was = staged
                            .remove(&key)
                            .is_some_and(|(_, e)| !e.is_expired_at(now));
                        assert_eq!(txn.delete(&key).expect("txn delete"), was, "step {step}");
                    } else {
                        let value = value_of(l, k);
                        txn.put(&key, &value).expect("txn put");
                        staged.insert(key.clone(), (value, Expiry::Never));
                    }
                    let want = staged
                        .get(&key)
                        .filter(|(_, e)| !e.is_expired_at(now))
                        .map(|(v, _)| v.to_vec());
                    assert_eq!(
                        txn.get(&key).expect("txn get").map(<[u8]>::to_vec),
                        want,
                        "step {step}: txn reads its writes"
                    );
                }
                if next().is_some_and(|b| b % 2 == 0) {
                    txn.commit().expect("commit");
                    model = staged;
                } else {
                    drop(txn);
                }
            }
            4 => clock.advance(std::time::Duration::from_millis(u64::from(
                next().unwrap_or(1),
            ))),
            5 | 7 => {
                drop(store);
                store = open(op % 8 == 7);
                check_all(&store, &model, now, step);
            }
            _ => {
                store.compact().expect("compact");
                model.retain(|_, (_, e)| !e.is_expired_at(now));
            }
        }
    }
    check_all(&store, &model, clock.now_unix_ms(), step);
}

/// Arbitrary bytes stored where a cache value belongs (a value envelope
/// and its payload), then read back through the cache as several types:
/// whatever is there, a read is a value or a miss, never a panic.
pub fn cache_values(data: &[u8]) {
    use carboy::cache::CacheManager;
    let Ok(manager) = CacheManager::builder().build() else {
        return;
    };
    let Ok(cache) = manager.get_cache("fuzz") else {
        return;
    };
    if cache.backend().set(b"k", data, None).is_err() {
        return;
    }
    let _ = cache.get::<String>("k");
    let _ = cache.get::<Vec<u64>>("k");
    let _ = cache.get::<(u8, Option<String>, i64, bool)>("k");
    let _ = cache.get::<std::collections::BTreeMap<String, Vec<u8>>>("k");
    let _ = cache.get_entry::<Vec<u8>>("k");
    let _ = cache.contains("k");
    let _ = cache.invalidate("k", carboy::cache::Invalidation::Soft);
    let _ = cache.get_entry::<u32>("k");
    let _ = cache.get_or_insert_with("k", || 7u32);
}
