//! Basic behaviour of one store in one process: the API does what its docs say.

use carboy::{Durability, Expiry, MockClock, Options, Store};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn put_get_delete_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.carboy");
    {
        let s = Store::open(&path).unwrap();
        for i in 0..5000u32 {
            s.put(&i.to_le_bytes(), format!("value-{i}").as_bytes())
                .unwrap();
        }
        assert_eq!(s.len().unwrap(), 5000);
        assert!(s.delete(&7u32.to_le_bytes()).unwrap());
        assert!(!s.delete(&7u32.to_le_bytes()).unwrap());
        assert_eq!(s.len().unwrap(), 4999);
        assert!(
            s.verify().unwrap().is_clean(),
            "{:?}",
            s.verify().unwrap().problems
        );
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.get_owned(&9u32.to_le_bytes()).unwrap().unwrap(),
        b"value-9"
    );
    assert!(s.get(&7u32.to_le_bytes()).unwrap().is_none());
    assert_eq!(s.len().unwrap(), 4999);
    let r = s.compact().unwrap();
    assert_eq!(r.keys, 4999);
    assert!(r.bytes_after < r.bytes_before);
    assert_eq!(
        s.get_owned(&9u32.to_le_bytes()).unwrap().unwrap(),
        b"value-9"
    );
    assert_eq!(s.keys().unwrap().len(), 4999);
    assert!(
        s.verify().unwrap().is_clean(),
        "{:?}",
        s.verify().unwrap().problems
    );
    s.put(b"after", b"compaction").unwrap();
    assert_eq!(s.get_owned(b"after").unwrap().unwrap(), b"compaction");
    s.clear().unwrap();
    assert_eq!(s.len().unwrap(), 0);
}

#[test]
fn expiry_with_mock_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_000_000);
    let s = Options::new()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Sync)
        .open(dir.path().join("e.carboy"))
        .unwrap();
    s.put_for(b"k", b"v", Duration::from_secs(10)).unwrap();
    s.put_with_expiry(b"never", b"v", Expiry::Never).unwrap();
    assert!(s.contains(b"k").unwrap());
    assert_eq!(s.len().unwrap(), 2);
    clock.advance(Duration::from_secs(10));
    assert!(!s.contains(b"k").unwrap());
    assert_eq!(s.len().unwrap(), 1);
    let r = s.compact().unwrap();
    assert_eq!(r.expired_dropped, 1);
}

#[test]
fn transaction_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("x.carboy")).unwrap();
    {
        let mut t = s.transaction().unwrap();
        t.put(b"a", b"1").unwrap();
        assert_eq!(t.get(b"a").unwrap(), Some(&b"1"[..]));
        // dropped: discarded
    }
    assert!(s.get(b"a").unwrap().is_none());
    let mut t = s.transaction().unwrap();
    t.put(b"a", b"1").unwrap();
    t.put(b"a", b"2").unwrap();
    t.put(b"b", b"3").unwrap();
    t.commit().unwrap();
    assert_eq!(s.get_owned(b"a").unwrap().unwrap(), b"2");
    assert!(
        s.verify().unwrap().is_clean(),
        "{:?}",
        s.verify().unwrap().problems
    );
}

#[test]
fn namespaces_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open_namespace(dir.path(), "../escape").unwrap();
    a.put(b"k", b"v").unwrap();
    assert!(a.path().starts_with(dir.path()));
    assert!(Store::open_namespace(dir.path(), "").is_err());
}

#[test]
fn calls_that_would_wait_for_the_same_thread_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("r.carboy")).unwrap();
    s.put(b"a", b"1").unwrap();
    s.put_for(b"b", b"2", Duration::from_secs(60)).unwrap();
    {
        let mut iter = s.iter().unwrap();
        assert!(iter.next().is_some());
        // A write while this thread iterates would wait for the iterator.
        let err = s.delete(b"a").unwrap_err();
        assert!(matches!(err, carboy::Error::WouldDeadlock { .. }), "{err}");
        assert!(err.to_string().contains("r.carboy"), "{err}");
        // Reads, and snapshots inside the iteration, are fine.
        assert_eq!(s.len().unwrap(), 2);
        assert_eq!(s.get_owned(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    }
    {
        let txn = s.transaction().unwrap();
        assert!(matches!(
            s.put(b"c", b"3"),
            Err(carboy::Error::WouldDeadlock { .. })
        ));
        assert!(matches!(s.len(), Err(carboy::Error::WouldDeadlock { .. })));
        assert!(matches!(
            s.snapshot(),
            Err(carboy::Error::WouldDeadlock { .. })
        ));
        drop(txn);
    }
    // Once dropped, everything works again, and another thread was never
    // refused: the check is per thread.
    s.delete(b"a").unwrap();
    let iter = s.iter().unwrap();
    std::thread::scope(|t| {
        t.spawn(|| {
            let s2 = s.clone();
            assert!(s2.snapshot().is_ok());
        });
    });
    drop(iter);
    assert_eq!(s.keys().unwrap(), vec![b"b".to_vec()]);
}

#[test]
fn dropping_the_last_handle_gives_the_writer_lock_up() {
    // After a commit the process keeps the writer lock (a lease); dropping
    // the last handle must give it up promptly (the lease thread is woken,
    // it does not wait for its next look).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.carboy");
    let store = Store::open(&path).unwrap();
    store.put(b"k", b"v").unwrap();
    let other = std::fs::File::options()
        .read(true)
        .write(true)
        .open(dir.path().join("l.carboy.lock"))
        .unwrap();
    assert!(
        matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "the lease should still be held while the store is open"
    );
    drop(store);
    let start = std::time::Instant::now();
    loop {
        match other.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the writer lock was not given up after the last handle was dropped"
                );
                std::thread::yield_now();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn get_many_answers_as_get_does() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MockClock::new(1_700_000_000_000);
    let s = Options::new()
        .clock(Arc::new(clock.clone()))
        .open(dir.path().join("many.carboy"))
        .unwrap();
    let mut txn = s.transaction().unwrap();
    for i in 0..2000u32 {
        let key = i.to_le_bytes();
        match i % 5 {
            0 => {} // never written
            1 => txn
                .put_with_expiry(&key, &i.to_be_bytes(), Expiry::AtUnixMs(1_700_000_001_000))
                .unwrap(),
            _ => txn.put(&key, &i.to_be_bytes()).unwrap(),
        }
    }
    txn.commit().unwrap();
    for i in (0..2000u32).step_by(7) {
        s.delete(&i.to_le_bytes()).unwrap();
    }
    clock.advance(Duration::from_secs(2)); // the i % 5 == 1 values expire
    // Keys in a scrambled order, some twice, more than a batch of them.
    let keys: Vec<[u8; 4]> = (0..2500u32)
        .map(|j| (j.wrapping_mul(2_654_435_761) % 2100).to_le_bytes())
        .collect();
    let mut many = Vec::new();
    s.get_many(&keys, |i, v| many.push((i, v.map(<[u8]>::to_vec))))
        .unwrap();
    let each: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i, s.get_owned(k).unwrap()))
        .collect();
    assert_eq!(many, each);
    let found = many.iter().filter(|(_, v)| v.is_some()).count();
    assert!(
        found > 1000 && found < 2000,
        "a mix of hits and misses: {found}"
    );
    let mut calls = 0;
    s.get_many(&[] as &[&[u8]], |_, _| calls += 1).unwrap();
    assert_eq!(calls, 0);
}

#[test]
fn snapshot_iter_borrows_what_iter_copies() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("scan.carboy")).unwrap();
    for i in 0..3000u32 {
        s.put(&i.to_le_bytes(), &vec![i as u8; (i % 200) as usize])
            .unwrap();
    }
    for i in (0..3000u32).step_by(3) {
        s.delete(&i.to_le_bytes()).unwrap();
    }
    let mut owned: Vec<carboy::Entry> = s.iter().unwrap().map(Result::unwrap).collect();
    let snap = s.snapshot().unwrap();
    let mut borrowed: Vec<carboy::Entry> = snap.iter().map(|e| e.unwrap().into()).collect();
    assert_eq!(snap.len().unwrap(), 2000);
    owned.sort_by(|a, b| a.key.cmp(&b.key));
    borrowed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(owned.len(), 2000);
    assert_eq!(borrowed, owned);
}
