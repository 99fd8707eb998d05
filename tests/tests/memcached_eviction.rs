//! An invalidation marker evicted by memcached's LRU never makes a stale
//! value look fresh: a memcached with a tiny memory limit is flooded with
//! items the size of a marker until it evicts the marker of a namespace
//! whose value was invalidated; that value, still stored (its bytes put
//! back as they were, should the flood have evicted it too), reads as a
//! miss in this process and in a fresh one (the cache's lost-marker rule,
//! engine/DESIGN.md "Invalidation markers on a backend that evicts"); a
//! value created after the loss is a hit.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use carboy::cache::{Backend, BackendConfig, CacheManager, Invalidation};
use carboy_memcached::{MemcachedFactory, MemcachedNamespace};
use carboy_tests::memcached_server::{MemcachedServer, ServerOptions};

fn manager(url: &str) -> CacheManager {
    carboy_memcached::register().unwrap();
    CacheManager::builder()
        .backend("memcached")
        .option("url", url)
        .expire(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// A raw namespace on the server, beside the cache's.
fn raw(url: &str, ns: &str) -> Arc<MemcachedNamespace> {
    let mut config = BackendConfig::new("memcached");
    config.options.insert("url".into(), url.into());
    MemcachedFactory::new().open_namespace(ns, &config).unwrap()
}

/// Stores `count` items whose key and value have the lengths given, in
/// one pipelined write (`noreply`), then waits for the server with a
/// `version` round trip.
fn flood(url: &str, round: usize, count: usize, key_len: usize, value_len: usize) {
    let mut stream = TcpStream::connect(url).unwrap();
    let value = vec![b'x'; value_len];
    let mut batch = Vec::new();
    for i in 0..count {
        let key = format!("f{round}-{i}-");
        let key = format!("{key:z<key_len$}");
        batch.extend_from_slice(format!("set {key} 0 0 {value_len} noreply\r\n").as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
    }
    batch.extend_from_slice(b"version\r\n");
    stream.write_all(&batch).unwrap();
    let mut reply = [0u8; 64];
    let n = std::io::Read::read(&mut stream, &mut reply).unwrap();
    assert!(reply[..n].starts_with(b"VERSION"), "{:?}", &reply[..n]);
}

#[test]
fn an_evicted_marker_errs_toward_a_miss() {
    let Some(server) = MemcachedServer::start_with(ServerOptions {
        memory_mb: 2,
        item_size: "1m".into(),
        // Pages stay with their slab class: the flood evicts small items.
        extra: vec!["-o".into(), "slab_reassign,slab_automove=0".into()],
    }) else {
        return;
    };
    let url = server.address();
    let one = manager(&url);
    let users = one.get_cache("evict").unwrap();
    // A big value: its slab class is not the markers'.
    let alice = "a".repeat(20_000);
    users.set("alice", &alice).unwrap();
    // Invalidated: a miss while the marker holds.
    users.invalidate_all(Invalidation::Hard).unwrap();
    assert_eq!(users.get::<String>("alice").unwrap(), None);

    let data = raw(&url, "evict");
    let kept = data
        .get(b"alice")
        .unwrap()
        .expect("the value is stored")
        .to_vec();
    let markers = raw(&url, "carboy:markers");
    let marker = markers
        .get(b"ns:evict")
        .unwrap()
        .expect("the marker is stored");
    let (key_len, value_len) = (markers.wire_key(b"ns:evict").len(), marker.len());
    drop(marker);

    let mut rounds = 0;
    while markers.get(b"ns:evict").unwrap().is_some() {
        rounds += 1;
        assert!(rounds <= 40, "the marker was never evicted");
        flood(&url, rounds, 20_000, key_len, value_len);
    }
    let evictions = server.stat("evictions").unwrap();
    assert!(evictions > 0, "the marker went without an eviction?");
    eprintln!("marker evicted after {rounds} round(s) of 20000 items ({evictions} evictions)");
    // The invalidated value, as it was stored before the flood.
    if data.get(b"alice").unwrap().is_none() {
        data.set(b"alice", &kept, None).unwrap();
    }

    // Not fresh again, here or in a process that never saw the marker.
    assert_eq!(
        users.get::<String>("alice").unwrap(),
        None,
        "this process: an invalidated value came back after its marker was evicted"
    );
    let two = manager(&url);
    let fresh_view = two.get_cache("evict").unwrap();
    assert_eq!(
        fresh_view.get::<String>("alice").unwrap(),
        None,
        "another process: an invalidated value came back after its marker was evicted"
    );
    assert!(
        data.get(b"alice").unwrap().is_some(),
        "the value itself is still there"
    );
    // The marker was written again, and a value created now is a hit.
    assert!(markers.get(b"ns:evict").unwrap().is_some());
    users.set("alice", "alice again").unwrap();
    assert_eq!(
        fresh_view.get::<String>("alice").unwrap().as_deref(),
        Some("alice again")
    );
}
