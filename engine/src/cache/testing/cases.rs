//! The suite's cases: one function each, given a fresh [`Fixture`].

use std::time::Duration;

use super::Fixture;
use crate::cache::{Codec, CreateError, Invalidation, Postcard};
use crate::error::Error;

pub(super) fn raw_operations(f: &Fixture) {
    let b = f.backend("raw");
    let ctx = f.name();
    assert!(b.get(b"a").unwrap().is_none(), "{ctx}");
    assert!(!b.contains(b"a").unwrap(), "{ctx}");
    b.set(b"a", b"1", None).unwrap();
    b.set(b"b", b"", None).unwrap();
    let big = vec![0xAB; 1 << 20];
    b.set(b"\x00big\xff", &big, None).unwrap();
    assert_eq!(b.get(b"a").unwrap().as_deref(), Some(&b"1"[..]), "{ctx}");
    assert_eq!(b.get(b"b").unwrap().as_deref(), Some(&b""[..]), "{ctx}");
    assert_eq!(
        b.get(b"\x00big\xff").unwrap().as_deref(),
        Some(&big[..]),
        "{ctx}"
    );
    assert!(b.contains(b"a").unwrap(), "{ctx}");
    b.set(b"a", b"2", None).unwrap();
    assert_eq!(b.get(b"a").unwrap().as_deref(), Some(&b"2"[..]), "{ctx}");
    assert!(b.remove(b"a").unwrap(), "{ctx}");
    assert!(!b.remove(b"a").unwrap(), "{ctx}");
    assert!(b.get(b"a").unwrap().is_none(), "{ctx}");
    assert_eq!(
        b.capabilities(),
        f.caps,
        "{ctx}: capabilities differ between two namespaces opened alike"
    );
}

pub(super) fn listing_and_clearing(f: &Fixture) {
    let b = f.backend("raw");
    let ctx = f.name();
    b.set(b"a", b"2", None).unwrap();
    b.set(b"b", b"", None).unwrap();
    b.set(b"\x00big\xff", &[0xAB; 1 << 20], None).unwrap();
    let mut keys = b.keys().unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![b"\x00big\xff".to_vec(), b"a".to_vec(), b"b".to_vec()],
        "{ctx}"
    );
    b.clear().unwrap();
    assert!(b.keys().unwrap().is_empty(), "{ctx}");
    assert!(b.get(b"b").unwrap().is_none(), "{ctx}");
}

pub(super) fn undeclared_operations_are_unsupported(f: &Fixture) {
    let b = f.backend("unsupported");
    let ctx = f.name();
    let unsupported = |what: &str, r: Result<(), Error>| match r {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("{ctx}: {what} is not declared but answered {other:?}, not Unsupported"),
    };
    if !f.caps.list_keys {
        unsupported("keys", b.keys().map(|_| ()));
        unsupported("clear", b.clear());
    }
    if !f.caps.atomic_update {
        unsupported("update", b.update(b"k", &mut |_| Some(b"v".to_vec())));
        assert!(
            b.get(b"k").unwrap().is_none(),
            "{ctx}: an unsupported update wrote"
        );
    }
    if !f.caps.change_stamp {
        unsupported("change_stamp", b.change_stamp().map(|_| ()));
    }
}

pub(super) fn ttl_against_the_clock(f: &Fixture) {
    let b = f.backend("ttl");
    b.set(b"k", b"v", Some(Duration::from_secs(10))).unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert!(b.get(b"k").unwrap().is_some(), "{}", f.name());
    f.clock.advance(Duration::from_millis(1));
    assert!(b.get(b"k").unwrap().is_none(), "{}", f.name());
    if f.caps.list_keys {
        assert!(!b.keys().unwrap().contains(&b"k".to_vec()), "{}", f.name());
    }
}

/// `update` keeps the entry's TTL: a value rewritten in place (as a soft
/// invalidation does) still goes when its `set` said.
pub(super) fn update_keeps_the_ttl(f: &Fixture) {
    let b = f.backend("update-ttl");
    b.set(b"k", b"v", Some(Duration::from_secs(10))).unwrap();
    b.update(b"k", &mut |cur| {
        assert_eq!(cur, Some(&b"v"[..]));
        Some(b"w".to_vec())
    })
    .unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    let now = b.get(b"k").unwrap().map(|v| v.to_vec());
    assert_eq!(now.as_deref(), Some(&b"w"[..]), "{}", f.name());
    f.clock.advance(Duration::from_millis(1));
    assert!(
        b.get(b"k").unwrap().is_none(),
        "{}: the TTL was lost",
        f.name()
    );
}

pub(super) fn update_is_atomic(f: &Fixture) {
    let b = f.backend("update");
    b.update(b"n", &mut |cur| {
        assert!(cur.is_none());
        Some(0u64.to_le_bytes().to_vec())
    })
    .unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..200 {
                    b.update(b"n", &mut |cur| {
                        let n = u64::from_le_bytes(cur.unwrap().try_into().unwrap());
                        Some((n + 1).to_le_bytes().to_vec())
                    })
                    .unwrap();
                }
            });
        }
    });
    let n = u64::from_le_bytes(b.get(b"n").unwrap().unwrap().to_vec().try_into().unwrap());
    assert_eq!(n, 800, "{}", f.name());
    b.update(b"n", &mut |_| None).unwrap();
    assert!(b.get(b"n").unwrap().is_none(), "{}", f.name());
}

pub(super) fn change_stamp_moves_with_content(f: &Fixture) {
    let b = f.backend("stamp");
    let name = f.name();
    let s0 = b.change_stamp().unwrap();
    assert_eq!(b.change_stamp().unwrap(), s0, "{name}");
    b.set(b"k", b"v", None).unwrap();
    let s1 = b.change_stamp().unwrap();
    assert_ne!(s1, s0, "{name}");
    b.get(b"k").unwrap();
    assert_eq!(b.change_stamp().unwrap(), s1, "{name}");
    if f.caps.atomic_update {
        b.update(b"m", &mut |_| Some(b"x".to_vec())).unwrap();
    } else {
        b.set(b"m", b"x", None).unwrap();
    }
    let s2 = b.change_stamp().unwrap();
    assert_ne!(s2, s1, "{name}");
    b.remove(b"k").unwrap();
    let s3 = b.change_stamp().unwrap();
    assert_ne!(s3, s2, "{name}");
    if f.caps.list_keys {
        b.clear().unwrap();
    } else {
        b.remove(b"m").unwrap();
    }
    assert_ne!(b.change_stamp().unwrap(), s3, "{name}");
}

pub(super) fn creation_locks(f: &Fixture) {
    let b = f.backend("locks");
    let name = f.name();
    let held = b.lock_creation(b"k", 42, true).unwrap();
    assert!(held.is_some(), "{name}");
    let other = std::thread::scope(|s| {
        s.spawn(|| b.lock_creation(b"k", 42, false).unwrap().is_some())
            .join()
            .unwrap()
    });
    if f.caps.creation_locks {
        assert!(!other, "{name}: a second holder got the lock");
        drop(held);
        assert!(
            b.lock_creation(b"k", 42, false).unwrap().is_some(),
            "{name}"
        );
    } else {
        assert!(other, "{name}: in-process locks never refuse");
    }
}

pub(super) fn cache_expiry_and_get_or_create(f: &Fixture) {
    let name = f.name();
    let c = f
        .manager
        .region("short_term")
        .unwrap()
        .cache("users")
        .unwrap();
    let mut runs = 0;
    let v: String = c
        .get_or_create("u1", || {
            runs += 1;
            Ok::<_, String>("alice".to_string())
        })
        .unwrap();
    assert_eq!(v, "alice");
    let v: String = c
        .get_or_create("u1", || {
            runs += 1;
            Ok::<_, String>("other".to_string())
        })
        .unwrap();
    assert_eq!((v.as_str(), runs), ("alice", 1), "{name}");
    let entry = c.get_entry::<String>("u1").unwrap().unwrap();
    assert_eq!(entry.created_unix_ms, 1_700_000_000_000);
    assert_eq!(entry.expires_unix_ms, Some(1_700_000_060_000));
    assert!(!entry.stale);
    assert!(c.contains("u1").unwrap(), "{name}: a fresh value");

    f.clock.advance(Duration::from_millis(59_999));
    assert_eq!(c.get::<String>("u1").unwrap().as_deref(), Some("alice"));
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(c.get::<String>("u1").unwrap(), None, "{name}");
    assert!(c.get_entry::<String>("u1").unwrap().unwrap().stale);
    assert!(!c.contains("u1").unwrap());
    let v: String = c
        .get_or_create("u1", || Ok::<_, String>("bob".to_string()))
        .unwrap();
    assert_eq!(v, "bob", "{name}: an expired value is regenerated");
    assert_eq!(c.get::<String>("u1").unwrap().as_deref(), Some("bob"));

    // A creator error stores nothing.
    let err = c
        .get_or_create::<String, _, _>("u2", || Err::<String, _>("down".to_string()))
        .unwrap_err();
    assert!(matches!(err, CreateError::Creator(ref e) if **e == "down"));
    assert_eq!(c.get::<String>("u2").unwrap(), None);
}

pub(super) fn cache_invalidation(f: &Fixture) {
    let name = f.name();
    // Without an atomic update, soft invalidations are made hard (see
    // `Capabilities::atomic_update`): a miss where a stale value would be.
    let soft_is_stale = f.caps.atomic_update;
    let region = f.manager.region("short_term").unwrap();
    let c = region.cache("items").unwrap();
    let other = region.cache("other").unwrap();
    let plain = f.manager.get_cache("plain").unwrap();
    // The same namespace outside the region is the same stored data.
    let items = f.manager.get_cache("items").unwrap();
    c.set("a", &1u32).unwrap();
    c.set("b", &2u32).unwrap();
    other.set("x", &3u32).unwrap();
    plain.set("p", &4u32).unwrap();

    assert_eq!(items.get::<u32>("a").unwrap(), Some(1), "{name}");
    c.invalidate("a", Invalidation::Soft).unwrap();
    let a = c.get_entry::<u32>("a").unwrap();
    if soft_is_stale {
        let a = a.unwrap();
        assert!(a.stale && a.value == 1, "{name}");
    } else {
        assert!(a.is_none(), "{name}: a soft invalidation without update");
    }
    c.invalidate("a", Invalidation::Hard).unwrap();
    assert!(c.get_entry::<u32>("a").unwrap().is_none());

    c.invalidate_all(Invalidation::Soft).unwrap();
    let b = c.get_entry::<u32>("b").unwrap();
    if soft_is_stale {
        assert!(
            b.unwrap().stale,
            "{name}: soft namespace invalidation makes values stale"
        );
    } else {
        assert!(b.is_none(), "{name}: made hard without update");
    }
    assert_eq!(
        other.get::<u32>("x").unwrap(),
        Some(3),
        "other namespaces untouched"
    );
    // Regenerated after the invalidation: fresh again.
    assert_eq!(c.get_or_insert_with("b", || 20u32).unwrap(), 20);
    assert_eq!(c.get::<u32>("b").unwrap(), Some(20));

    c.invalidate_all(Invalidation::Hard).unwrap();
    assert!(c.get_entry::<u32>("b").unwrap().is_none(), "{name}");
    assert_eq!(c.get_or_insert_with("b", || 21u32).unwrap(), 21);

    region.invalidate(Invalidation::Soft).unwrap();
    if soft_is_stale {
        assert!(other.get_entry::<u32>("x").unwrap().unwrap().stale);
        assert!(c.get_entry::<u32>("b").unwrap().unwrap().stale);
    } else {
        assert!(other.get_entry::<u32>("x").unwrap().is_none(), "{name}");
        assert!(c.get_entry::<u32>("b").unwrap().is_none(), "{name}");
    }
    region.invalidate(Invalidation::Hard).unwrap();
    assert!(other.get_entry::<u32>("x").unwrap().is_none(), "{name}");
    assert!(c.get_entry::<u32>("b").unwrap().is_none());
    // A namespace outside the region is not in it.
    assert_eq!(plain.get::<u32>("p").unwrap(), Some(4), "{name}");
    // Markers are not keys of the namespaces they mark.
    if f.caps.list_keys {
        let mut keys = c.keys().unwrap();
        keys.sort();
        assert_eq!(keys, vec![b"b".to_vec()], "{name}");
    }
}

pub(super) fn cache_misses_on_what_does_not_decode(f: &Fixture) {
    let c = f.manager.get_cache("types").unwrap();
    c.set("k", "a string").unwrap();
    assert_eq!(
        c.get::<u64>("k").unwrap(),
        None,
        "{}: type changed",
        f.name()
    );
    assert_eq!(c.get_or_insert_with("k", || 7u64).unwrap(), 7);
    assert_eq!(c.get::<u64>("k").unwrap(), Some(7));
    // Bytes that are no envelope at all.
    c.backend()
        .set(b"junk", b"\x07not an envelope", None)
        .unwrap();
    assert_eq!(c.get::<u64>("junk").unwrap(), None);
    assert_eq!(c.get_or_insert_with("junk", || 8u64).unwrap(), 8);
}

pub(super) fn cache_keys_and_settings(f: &Fixture) {
    let name = f.name();
    let c = f.manager.get_cache("keys").unwrap();
    let long = "k".repeat(300);
    c.set(long.as_str(), &1u8).unwrap();
    assert_eq!(c.get::<u8>(long.as_str()).unwrap(), Some(1));
    if f.caps.list_keys {
        let keys = c.keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].len(), 64, "{name}: long keys are stored hashed");
    }
    // Any bytes are a key, the empty key too.
    c.set(&b"\xFF\x00carboy:anything"[..], &2u8).unwrap();
    c.set("", &3u8).unwrap();
    assert_eq!(
        c.get::<u8>(&b"\xFF\x00carboy:anything"[..]).unwrap(),
        Some(2)
    );
    assert_eq!(c.get::<u8>("").unwrap(), Some(3));
    let err = f.manager.get_cache("carboy:region:x").unwrap_err();
    assert!(matches!(err, Error::Reserved { .. }), "{err}");
    // Without key listing, clear invalidates through the marker.
    c.clear().unwrap();
    if f.caps.list_keys {
        assert!(c.keys().unwrap().is_empty());
    }
    assert_eq!(c.get::<u8>("").unwrap(), None, "{name}: cleared");

    let off = f
        .suite
        .builder(&f.dir)
        .enabled(false)
        .build()
        .unwrap()
        .get_cache("off")
        .unwrap();
    let mut runs = 0;
    for _ in 0..3 {
        off.get_or_insert_with("k", || {
            runs += 1;
            1u8
        })
        .unwrap();
    }
    assert_eq!(runs, 3, "{name}: a disabled cache always creates");
    assert_eq!(off.get::<u8>("k").unwrap(), None);
    let _ = crate::cache::BackendConfig::new("x"); // public, constructible
}

/// A codec of the suite's own: postcard behind a schema byte, so values of
/// another schema (or codec) read as misses.
#[derive(Clone, Copy, Debug)]
struct Schema(u8);

impl Codec for Schema {
    fn encode<T: serde::Serialize + ?Sized>(&self, v: &T, out: &mut Vec<u8>) -> Result<(), String> {
        out.push(self.0);
        Postcard.encode(v, out)
    }
    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        match bytes.split_first() {
            Some((s, rest)) if *s == self.0 => Postcard.decode(rest),
            _ => Err("another schema".into()),
        }
    }
}

pub(super) fn cache_with_another_codec(f: &Fixture) {
    let name = f.name();
    let plain = f.manager.get_cache("codec").unwrap();
    let v2 = plain.with_codec(Schema(2));
    let v3 = plain.with_codec(Schema(3));
    v2.set("k", &7u32).unwrap();
    assert_eq!(v2.get::<u32>("k").unwrap(), Some(7), "{name}");
    assert_eq!(
        v3.get::<u32>("k").unwrap(),
        None,
        "{name}: another schema is a miss"
    );
    assert_eq!(
        plain.get::<u32>("k").unwrap(),
        None,
        "{name}: postcard sees the tag"
    );
    assert_eq!(v3.get_or_insert_with("k", || 8u32).unwrap(), 8);
    assert_eq!(v2.get::<u32>("k").unwrap(), None, "{name}");
    let mut raw = Vec::new();
    Schema(3).encode(&8u32, &mut raw).unwrap();
    assert_eq!(raw, vec![3, 8]);
}

/// Get, set, remove and update through the backend's native async
/// operations, each seen by the blocking methods and the other way round.
pub(super) fn async_raw_operations(f: &Fixture) {
    let b = f.backend("async-raw");
    let ctx = f.name();
    let Some(a) = b.as_async() else {
        panic!("{ctx}: as_async answered Some once and None now")
    };
    f.block_on(async {
        assert!(a.get(b"a").await.unwrap().is_none(), "{ctx}");
        a.set(b"a", b"1", None).await.unwrap();
        let big = vec![0xAB; 1 << 20];
        a.set(b"\x00big\xff", &big, None).await.unwrap();
        assert_eq!(
            a.get(b"a").await.unwrap().as_deref(),
            Some(&b"1"[..]),
            "{ctx}"
        );
        let got = a.get(b"\x00big\xff").await.unwrap().map(|v| v.to_vec());
        assert_eq!(got.as_deref(), Some(&big[..]), "{ctx}");
        assert_eq!(
            b.get(b"a").unwrap().as_deref(),
            Some(&b"1"[..]),
            "{ctx}: the blocking get does not see the async set"
        );
        b.set(b"b", b"2", None).unwrap();
        assert_eq!(
            a.get(b"b").await.unwrap().as_deref(),
            Some(&b"2"[..]),
            "{ctx}: the async get does not see the blocking set"
        );
        assert!(a.remove(b"a").await.unwrap(), "{ctx}");
        assert!(!a.remove(b"a").await.unwrap(), "{ctx}");
        assert!(b.get(b"a").unwrap().is_none(), "{ctx}");
        let updated = a
            .update(b"b", &mut |cur| {
                assert_eq!(cur, Some(&b"2"[..]));
                Some(b"3".to_vec())
            })
            .await;
        if f.caps.atomic_update {
            updated.unwrap();
            assert_eq!(b.get(b"b").unwrap().as_deref(), Some(&b"3"[..]), "{ctx}");
        } else {
            assert!(
                matches!(updated, Err(Error::Unsupported { .. })),
                "{ctx}: update is not declared but answered {updated:?}"
            );
            assert_eq!(b.get(b"b").unwrap().as_deref(), Some(&b"2"[..]), "{ctx}");
        }
    });
}

/// The native creation lock: without waiting, forever, and up to a time
/// (ended by the backend's own timer), sharing its holders with the
/// blocking lock.
pub(super) fn async_creation_locks(f: &Fixture) {
    use crate::cache::{LockWait, Locked};
    let b = f.backend("async-locks");
    let ctx = f.name();
    let Some(a) = b.as_async() else {
        panic!("{ctx}: as_async answered Some once and None now")
    };
    let blocking_gets_it = || {
        std::thread::scope(|s| {
            s.spawn(|| b.lock_creation(b"k", 42, false).unwrap().is_some())
                .join()
                .unwrap()
        })
    };
    f.block_on(async {
        let held = match a.lock_creation(b"k", 42, LockWait::Forever).await.unwrap() {
            Locked::Held(g) => g,
            other => panic!("{ctx}: a free lock answered {other:?}"),
        };
        if !f.caps.creation_locks {
            assert!(matches!(
                a.lock_creation(b"k", 42, LockWait::No).await.unwrap(),
                Locked::Held(_)
            ));
            return;
        }
        let busy = a.lock_creation(b"k", 42, LockWait::No).await.unwrap();
        assert!(matches!(busy, Locked::Busy), "{ctx}: {busy:?}, not Busy");
        assert!(
            !blocking_gets_it(),
            "{ctx}: a blocking taker got a held lock"
        );
        let bounded = LockWait::UpTo(Duration::from_millis(50));
        let late = a.lock_creation(b"k", 42, bounded).await.unwrap();
        assert!(
            matches!(late, Locked::TimedOut),
            "{ctx}: {late:?}, not TimedOut"
        );
        drop(held);
        assert!(blocking_gets_it(), "{ctx}: the lock was not released");
        // A blocking holder excludes the async taker.
        let blocking = b.lock_creation(b"k", 42, true).unwrap();
        let busy = a.lock_creation(b"k", 42, LockWait::No).await.unwrap();
        assert!(matches!(busy, Locked::Busy), "{ctx}: {busy:?}, not Busy");
        drop(blocking);
        let free = a.lock_creation(b"k", 42, LockWait::No).await.unwrap();
        assert!(matches!(free, Locked::Held(_)), "{ctx}: {free:?}, not Held");
    });
}

/// Get-or-create through the async front (on the native path when the
/// backend has one): created once, then hits, seen by the blocking front.
#[cfg(feature = "async")]
pub(super) fn async_front_get_or_create(f: &Fixture) {
    let ctx = f.name();
    let c = f.manager.get_cache("async-front").unwrap();
    let front = c.to_async();
    f.block_on(async {
        let mut runs = 0;
        for _ in 0..3 {
            let v: String = front
                .get_or_create("u1", || {
                    runs += 1;
                    async { Ok::<_, String>("alice".to_string()) }
                })
                .await
                .unwrap();
            assert_eq!(v, "alice", "{ctx}");
        }
        assert_eq!(runs, 1, "{ctx}: created more than once");
        assert_eq!(
            c.get::<String>("u1").unwrap().as_deref(),
            Some("alice"),
            "{ctx}"
        );
        front.set("u2", "bob").await.unwrap();
        assert_eq!(
            front.get::<String>("u2").await.unwrap().as_deref(),
            Some("bob")
        );
        assert!(front.contains("u2").await.unwrap(), "{ctx}");
        assert!(front.remove("u2").await.unwrap(), "{ctx}");
        assert_eq!(c.get::<String>("u2").unwrap(), None, "{ctx}");
    });
}
