//! The cache backend conformance suite, written once and run against every
//! built-in backend (`memory`, `memory` bounded, `file`): raw backend
//! operations, then the cache semantics on top (expiry against a mock
//! clock, invalidation, misses for values that no longer decode).

use std::sync::Arc;
use std::time::Duration;

use carboy::MockClock;
use carboy::cache::{Backend, BackendConfig, Cache, CacheManager, Invalidation, RegionSettings};
use tempfile::TempDir;

/// One backend under test: how to open it, and what it promises.
struct Kind {
    name: &'static str,
    /// The `cache.type` and its extra settings.
    backend: &'static str,
    options: &'static [(&'static str, &'static str)],
    /// Whether its creation locks exclude across processes (and so
    /// between two guards in one process).
    exclusive_locks: bool,
}

const MEMORY: Kind = Kind {
    name: "memory",
    backend: "memory",
    options: &[],
    exclusive_locks: false,
};
const MEMORY_BOUNDED: Kind = Kind {
    name: "memory, bounded",
    backend: "memory",
    options: &[("max_entries", "100000")],
    exclusive_locks: false,
};
const FILE: Kind = Kind {
    name: "file",
    backend: "file",
    options: &[],
    exclusive_locks: true,
};

struct Fixture {
    _dir: TempDir,
    clock: MockClock,
    manager: CacheManager,
}

impl Fixture {
    fn new(kind: &'static Kind) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = MockClock::new(1_700_000_000_000);
        let mut b = CacheManager::builder()
            .backend(kind.backend)
            .data_dir(dir.path())
            .clock(Arc::new(clock.clone()))
            .region(
                "short_term",
                RegionSettings::new().expire(Duration::from_secs(60)),
            )
            .region(
                "no_stale",
                RegionSettings::new()
                    .expire(Duration::from_secs(60))
                    .serve_stale(false),
            );
        for (k, v) in kind.options {
            b = b.option(k, *v);
        }
        Fixture {
            _dir: dir,
            clock,
            manager: b.build().unwrap(),
        }
    }

    /// A raw backend namespace.
    fn backend(&self, ns: &str) -> Arc<dyn Backend> {
        let cache: Cache = self.manager.get_cache(ns).unwrap();
        Arc::clone(cache.backend())
    }
}

fn raw_operations(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let b = f.backend("raw");
    let ctx = kind.name;
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
    let mut keys = b.keys().unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![b"\x00big\xff".to_vec(), b"a".to_vec(), b"b".to_vec()],
        "{ctx}"
    );
    assert!(b.remove(b"a").unwrap(), "{ctx}");
    assert!(!b.remove(b"a").unwrap(), "{ctx}");
    assert!(b.get(b"a").unwrap().is_none(), "{ctx}");
    b.clear().unwrap();
    assert!(b.keys().unwrap().is_empty(), "{ctx}");
    assert!(b.get(b"b").unwrap().is_none(), "{ctx}");
}

fn ttl_against_the_clock(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let b = f.backend("ttl");
    b.set(b"k", b"v", Some(Duration::from_secs(10))).unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert!(b.get(b"k").unwrap().is_some(), "{}", kind.name);
    f.clock.advance(Duration::from_millis(1));
    assert!(b.get(b"k").unwrap().is_none(), "{}", kind.name);
    assert!(!b.keys().unwrap().contains(&b"k".to_vec()), "{}", kind.name);
}

/// `update` keeps the entry's TTL: a value rewritten in place (as a soft
/// invalidation does) still goes when its `set` said.
fn update_keeps_the_ttl(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let b = f.backend("update-ttl");
    b.set(b"k", b"v", Some(Duration::from_secs(10))).unwrap();
    b.update(b"k", &mut |cur| {
        assert_eq!(cur, Some(&b"v"[..]));
        Some(b"w".to_vec())
    })
    .unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    let now = b.get(b"k").unwrap().map(|v| v.to_vec());
    assert_eq!(now.as_deref(), Some(&b"w"[..]), "{}", kind.name);
    f.clock.advance(Duration::from_millis(1));
    assert!(
        b.get(b"k").unwrap().is_none(),
        "{}: the TTL was lost",
        kind.name
    );
}

fn update_is_atomic(kind: &'static Kind) {
    let f = Fixture::new(kind);
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
    assert_eq!(n, 800, "{}", kind.name);
    b.update(b"n", &mut |_| None).unwrap();
    assert!(b.get(b"n").unwrap().is_none(), "{}", kind.name);
}

fn change_stamp_moves_with_content(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let b = f.backend("stamp");
    let Some(s0) = b.change_stamp().unwrap() else {
        return; // The backend does not offer one; the cache then re-reads.
    };
    assert_eq!(b.change_stamp().unwrap(), Some(s0), "{}", kind.name);
    b.set(b"k", b"v", None).unwrap();
    let s1 = b.change_stamp().unwrap().unwrap();
    assert_ne!(s1, s0, "{}", kind.name);
    b.get(b"k").unwrap();
    assert_eq!(b.change_stamp().unwrap(), Some(s1), "{}", kind.name);
    b.update(b"m", &mut |_| Some(b"x".to_vec())).unwrap();
    let s2 = b.change_stamp().unwrap().unwrap();
    assert_ne!(s2, s1, "{}", kind.name);
    b.remove(b"k").unwrap();
    let s3 = b.change_stamp().unwrap().unwrap();
    assert_ne!(s3, s2, "{}", kind.name);
    b.clear().unwrap();
    assert_ne!(b.change_stamp().unwrap().unwrap(), s3, "{}", kind.name);
}

fn creation_locks(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let b = f.backend("locks");
    let held = b.lock_creation(b"k", 42, true).unwrap();
    assert!(held.is_some(), "{}", kind.name);
    let other = std::thread::scope(|s| {
        s.spawn(|| b.lock_creation(b"k", 42, false).unwrap().is_some())
            .join()
            .unwrap()
    });
    if kind.exclusive_locks {
        assert!(!other, "{}: a second holder got the lock", kind.name);
        drop(held);
        assert!(
            b.lock_creation(b"k", 42, false).unwrap().is_some(),
            "{}",
            kind.name
        );
    } else {
        assert!(other, "{}: in-process locks never refuse", kind.name);
    }
}

fn cache_expiry_and_get_or_create(kind: &'static Kind) {
    let f = Fixture::new(kind);
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
    assert_eq!((v.as_str(), runs), ("alice", 1), "{}", kind.name);
    let entry = c.get_entry::<String>("u1").unwrap().unwrap();
    assert_eq!(entry.created_unix_ms, 1_700_000_000_000);
    assert_eq!(entry.expires_unix_ms, Some(1_700_000_060_000));
    assert!(!entry.stale);
    assert!(c.contains("u1").unwrap(), "{}: a fresh value", kind.name);

    f.clock.advance(Duration::from_millis(59_999));
    assert_eq!(c.get::<String>("u1").unwrap().as_deref(), Some("alice"));
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(c.get::<String>("u1").unwrap(), None, "{}", kind.name);
    assert!(c.get_entry::<String>("u1").unwrap().unwrap().stale);
    assert!(!c.contains("u1").unwrap());
    let v: String = c
        .get_or_create("u1", || Ok::<_, String>("bob".to_string()))
        .unwrap();
    assert_eq!(v, "bob", "{}: an expired value is regenerated", kind.name);
    assert_eq!(c.get::<String>("u1").unwrap().as_deref(), Some("bob"));

    // A creator error stores nothing.
    let err = c
        .get_or_create::<String, _, _>("u2", || Err::<String, _>("down".to_string()))
        .unwrap_err();
    assert!(matches!(err, carboy::cache::CreateError::Creator(ref e) if **e == "down"));
    assert_eq!(c.get::<String>("u2").unwrap(), None);
}

fn cache_invalidation(kind: &'static Kind) {
    let f = Fixture::new(kind);
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

    assert_eq!(items.get::<u32>("a").unwrap(), Some(1), "{}", kind.name);
    c.invalidate("a", Invalidation::Soft).unwrap();
    let a = c.get_entry::<u32>("a").unwrap().unwrap();
    assert!(a.stale && a.value == 1, "{}", kind.name);
    c.invalidate("a", Invalidation::Hard).unwrap();
    assert!(c.get_entry::<u32>("a").unwrap().is_none());

    c.invalidate_all(Invalidation::Soft).unwrap();
    let b = c.get_entry::<u32>("b").unwrap().unwrap();
    assert!(
        b.stale,
        "{}: soft namespace invalidation makes values stale",
        kind.name
    );
    assert_eq!(
        other.get::<u32>("x").unwrap(),
        Some(3),
        "other namespaces untouched"
    );
    // Regenerated after the invalidation: fresh again.
    assert_eq!(c.get_or_insert_with("b", || 20u32).unwrap(), 20);
    assert_eq!(c.get::<u32>("b").unwrap(), Some(20));

    c.invalidate_all(Invalidation::Hard).unwrap();
    assert!(c.get_entry::<u32>("b").unwrap().is_none(), "{}", kind.name);
    assert_eq!(c.get_or_insert_with("b", || 21u32).unwrap(), 21);

    region.invalidate(Invalidation::Soft).unwrap();
    assert!(other.get_entry::<u32>("x").unwrap().unwrap().stale);
    assert!(c.get_entry::<u32>("b").unwrap().unwrap().stale);
    region.invalidate(Invalidation::Hard).unwrap();
    assert!(
        other.get_entry::<u32>("x").unwrap().is_none(),
        "{}",
        kind.name
    );
    assert!(c.get_entry::<u32>("b").unwrap().is_none());
    // A namespace outside the region is not in it.
    assert_eq!(plain.get::<u32>("p").unwrap(), Some(4), "{}", kind.name);
    // Markers are not keys of the namespaces they mark.
    let mut keys = c.keys().unwrap();
    keys.sort();
    assert_eq!(keys, vec![b"b".to_vec()], "{}", kind.name);
}

fn cache_misses_on_what_does_not_decode(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let c = f.manager.get_cache("types").unwrap();
    c.set("k", "a string").unwrap();
    assert_eq!(
        c.get::<u64>("k").unwrap(),
        None,
        "{}: type changed",
        kind.name
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

fn cache_keys_and_settings(kind: &'static Kind) {
    let f = Fixture::new(kind);
    let c = f.manager.get_cache("keys").unwrap();
    let long = "k".repeat(300);
    c.set(long.as_str(), &1u8).unwrap();
    assert_eq!(c.get::<u8>(long.as_str()).unwrap(), Some(1));
    let keys = c.keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0].len(),
        64,
        "{}: long keys are stored hashed",
        kind.name
    );
    // Any bytes are a key, the empty key too.
    c.set(&b"\xFF\x00carboy:anything"[..], &2u8).unwrap();
    c.set("", &3u8).unwrap();
    assert_eq!(
        c.get::<u8>(&b"\xFF\x00carboy:anything"[..]).unwrap(),
        Some(2)
    );
    assert_eq!(c.get::<u8>("").unwrap(), Some(3));
    let err = f.manager.get_cache("carboy:region:x").unwrap_err();
    assert!(matches!(err, carboy::Error::Reserved { .. }), "{err}");
    c.clear().unwrap();
    assert!(c.keys().unwrap().is_empty());

    let off = CacheManager::builder()
        .backend(kind.backend)
        .data_dir(f._dir.path())
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
    assert_eq!(runs, 3, "{}: a disabled cache always creates", kind.name);
    assert_eq!(off.get::<u8>("k").unwrap(), None);
    let _ = BackendConfig::new("x"); // public, constructible
}

macro_rules! suite {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            #[test] fn raw_operations() { super::raw_operations(&$kind) }
            #[test] fn ttl_against_the_clock() { super::ttl_against_the_clock(&$kind) }
            #[test] fn update_is_atomic() { super::update_is_atomic(&$kind) }
            #[test] fn update_keeps_the_ttl() { super::update_keeps_the_ttl(&$kind) }
            #[test] fn change_stamp_moves_with_content() { super::change_stamp_moves_with_content(&$kind) }
            #[test] fn creation_locks() { super::creation_locks(&$kind) }
            #[test] fn cache_expiry_and_get_or_create() { super::cache_expiry_and_get_or_create(&$kind) }
            #[test] fn cache_invalidation() { super::cache_invalidation(&$kind) }
            #[test] fn cache_misses_on_what_does_not_decode() { super::cache_misses_on_what_does_not_decode(&$kind) }
            #[test] fn cache_keys_and_settings() { super::cache_keys_and_settings(&$kind) }
        }
    )*};
}

suite! {
    memory => MEMORY,
    memory_bounded => MEMORY_BOUNDED,
    file => FILE,
}

/// A codec of the test's own: postcard behind a schema byte, so values of
/// another schema (or codec) read as misses.
#[derive(Clone, Copy, Debug)]
struct Schema(u8);

impl carboy::cache::Codec for Schema {
    fn encode<T: serde::Serialize + ?Sized>(&self, v: &T, out: &mut Vec<u8>) -> Result<(), String> {
        out.push(self.0);
        carboy::cache::Postcard.encode(v, out)
    }
    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        match bytes.split_first() {
            Some((s, rest)) if *s == self.0 => carboy::cache::Postcard.decode(rest),
            _ => Err("another schema".into()),
        }
    }
}

fn cache_with_another_codec(kind: &'static Kind) {
    use carboy::cache::Codec;
    let f = Fixture::new(kind);
    let plain = f.manager.get_cache("codec").unwrap();
    let v2 = plain.with_codec(Schema(2));
    let v3 = plain.with_codec(Schema(3));
    v2.set("k", &7u32).unwrap();
    assert_eq!(v2.get::<u32>("k").unwrap(), Some(7), "{}", kind.name);
    assert_eq!(
        v3.get::<u32>("k").unwrap(),
        None,
        "{}: another schema is a miss",
        kind.name
    );
    assert_eq!(
        plain.get::<u32>("k").unwrap(),
        None,
        "{}: postcard sees the tag",
        kind.name
    );
    assert_eq!(v3.get_or_insert_with("k", || 8u32).unwrap(), 8);
    assert_eq!(v2.get::<u32>("k").unwrap(), None, "{}", kind.name);
    let mut raw = Vec::new();
    Schema(3).encode(&8u32, &mut raw).unwrap();
    assert_eq!(raw, vec![3, 8]);
}

mod codecs {
    #[test]
    fn memory() {
        super::cache_with_another_codec(&super::MEMORY)
    }
    #[test]
    fn file() {
        super::cache_with_another_codec(&super::FILE)
    }
}
