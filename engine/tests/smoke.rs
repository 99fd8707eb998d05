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
