//! The redis backend's change stamp for the invalidation markers (redis's
//! `CLIENT TRACKING`, `BCAST`, redirected to a subscribed listener), on a
//! standalone server and on a cluster: a hit reads no marker while nothing
//! changed (counted with `INFO commandstats`); an invalidation by another
//! manager of the process is seen by the next hit; one by another process
//! is seen once `RedisFactory::sync_invalidations` returns; an expired
//! key under the markers' prefix moves the stamp; a listener connection
//! killed with `CLIENT KILL` (and kept from reconnecting) makes every
//! access read the markers again, so an invalidation made meanwhile is
//! seen, and the stamp holds still again once the listener is back; in a
//! cluster, the listener follows the markers' slot to another master.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carboy::cache::{Backend, BackendConfig, BackendFactory, CacheManager, OpenOptions};
use carboy_redis::RedisFactory;
use carboy_tests::redis_server::{RedisCluster, RedisServer};

const CHILD: &str = env!("CARGO_BIN_EXE_carboy-redis-child");
const PREFIX: &str = "trk:";

fn manager(url: &str, factory: &Arc<RedisFactory>) -> CacheManager {
    CacheManager::builder()
        .backend_factory("redis", Arc::clone(factory) as Arc<dyn BackendFactory>)
        .option("url", url)
        .option("prefix", PREFIX)
        .expire(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The markers namespace as the managers of `factory` opened it (same
/// settings, so the same listener and stamp).
fn markers(url: &str, factory: &RedisFactory) -> Arc<dyn Backend> {
    markers_with(url, factory, &[])
}

/// [`markers`], with further settings (as the manager was given).
fn markers_with(url: &str, factory: &RedisFactory, extra: &[(&str, &str)]) -> Arc<dyn Backend> {
    let mut config = BackendConfig::new("redis");
    config.options.insert("url".into(), url.into());
    config.options.insert("prefix".into(), PREFIX.into());
    for (k, v) in extra {
        config.options.insert((*k).into(), (*v).into());
    }
    let m = factory
        .open("carboy:markers", &config, &OpenOptions::new().pinned(true))
        .unwrap();
    assert!(m.capabilities().change_stamp, "the markers have a stamp");
    m
}

/// True when two reads of the stamp agree: the listener is tracking.
fn steady(m: &dyn Backend) -> bool {
    m.change_stamp().unwrap() == m.change_stamp().unwrap()
}

/// Polls `cond` until it holds (a listener noticing a closed connection,
/// or connecting again), for at most 10 s.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::yield_now();
    }
}

/// Runs the child process (`carboy-redis-child`) to completion.
fn child(url: &str, rest: &[&str]) -> String {
    let out = Command::new(CHILD)
        .args([url, PREFIX, "1000"])
        .args(rest)
        .output()
        .unwrap();
    carboy_tests::stdout_of_success(out, &format!("child {rest:?}"))
        .trim()
        .to_string()
}

/// `GET` calls so far on one server, from `INFO commandstats`.
fn gets_on(server: &RedisServer, auth: Option<&str>) -> u64 {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-p").arg(server.port().to_string());
    if let Some(pass) = auth {
        cmd.args(["--no-auth-warning", "-a", pass]);
    }
    let out = cmd.args(["info", "commandstats"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .map(|rest| rest.split(',').next().unwrap().trim().parse().unwrap())
        .unwrap_or(0)
}

fn tracked(url: &str, gets: &dyn Fn() -> u64, expire_one: &dyn Fn(&str)) {
    let (f1, f2) = (Arc::new(RedisFactory::new()), Arc::new(RedisFactory::new()));
    let (m1, m2) = (manager(url, &f1), manager(url, &f2));
    let (u1, u2) = (
        m1.get_cache("users").unwrap(),
        m2.get_cache("users").unwrap(),
    );
    let marks = markers(url, &f2);
    assert!(steady(&*marks), "tracking from the first open on");

    u1.set("alice", "admin").unwrap();
    assert_eq!(u2.get::<String>("alice").unwrap().as_deref(), Some("admin"));
    f2.sync_invalidations().unwrap();
    // A hit is one GET (the value): the markers stay in memory.
    let before = gets();
    for _ in 0..50 {
        let v = u2
            .get_or_create("alice", || Ok::<_, String>("created".to_string()))
            .unwrap();
        assert_eq!(v, "admin");
    }
    assert_eq!(gets() - before, 50, "one GET per hit, no marker read");

    // Another manager of this process: seen by the very next hit.
    u1.invalidate_all(carboy::cache::Invalidation::Hard)
        .unwrap();
    assert_eq!(u2.get::<String>("alice").unwrap(), None);
    u2.set("alice", "admin 2").unwrap();

    // Another process: seen once sync_invalidations returns.
    assert_eq!(child(url, &["invalidate", "users", "soft"]), "");
    f2.sync_invalidations().unwrap();
    let e = u2.get_entry::<String>("alice").unwrap().unwrap();
    assert!(e.stale, "soft-invalidated by another process: {e:?}");
    assert_eq!(child(url, &["invalidate", "users", "hard"]), "");
    f2.sync_invalidations().unwrap();
    assert_eq!(u2.get::<String>("alice").unwrap(), None);

    // A key under the markers' prefix that expires moves the stamp (and
    // a sync alone does not).
    let s0 = marks.change_stamp().unwrap();
    f2.sync_invalidations().unwrap();
    assert_eq!(marks.change_stamp().unwrap(), s0, "a sync moves nothing");
    expire_one(&format!("{PREFIX}{{carboy:markers}}:expiring"));
    f2.sync_invalidations().unwrap();
    assert_ne!(
        marks.change_stamp().unwrap(),
        s0,
        "an expiry moved the stamp"
    );
}

/// Sets `key` with a 1 ms TTL and reads it until it is gone (a read
/// expires it at once if the active cycle has not yet).
fn expire_on(server: &RedisServer, key: &str) {
    server.cli(&["set", key, "x", "px", "1"]);
    eventually("the key expired", || {
        server.cli(&["exists", key]).trim() == "0"
    });
}

#[test]
fn tracked_standalone() {
    let Some(server) = RedisServer::start("tracked_standalone") else {
        return;
    };
    tracked(&server.url(), &|| gets_on(&server, None), &|k| {
        expire_on(&server, k)
    });
}

#[test]
fn tracked_cluster() {
    let Some(cluster) = RedisCluster::start("tracked_cluster") else {
        return;
    };
    let gets = || cluster.nodes().iter().map(|n| gets_on(n, None)).sum();
    let expire = |key: &str| {
        let slot: u16 = cluster.nodes()[0]
            .cli(&["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        expire_on(&cluster.nodes()[cluster.owner_of(slot)], key);
    };
    tracked(&cluster.url(), &gets, &expire);
}

/// `redis-cli -a <pass>`.
fn cli_auth(server: &RedisServer, pass: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(server.port().to_string())
        .args(["--no-auth-warning", "-a", pass])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_killed_listener_makes_the_cache_read_markers_again() {
    let Some(server) = RedisServer::start("a_killed_listener") else {
        return;
    };
    let url = server.url();
    let factory = Arc::new(RedisFactory::new());
    let m = manager(&url, &factory);
    let users = m.get_cache("users").unwrap();
    let marks = markers(&url, &factory);
    users.set("alice", "admin").unwrap();
    users.set("bob", "editor").unwrap();
    assert!(steady(&*marks));

    // Keep the listener from connecting again (our pooled connection is
    // already authenticated), then kill it.
    let pass = "sekret";
    server.cli(&["config", "set", "requirepass", pass]);
    let list = cli_auth(&server, pass, &["client", "list"]);
    let id = list
        .lines()
        .find(|l| l.contains("name=carboy-tracking"))
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no tracking connection in {list}"))
        .to_string();
    assert_eq!(
        cli_auth(&server, pass, &["client", "kill", "id", &id]).trim(),
        "1"
    );
    eventually("the listener notices", || !steady(&*marks));

    // An invalidation by another process while nobody listens: no
    // message reaches us, and yet the next hit sees it.
    let with_pass = format!("redis://:{pass}@127.0.0.1:{}/0", server.port());
    assert_eq!(child(&with_pass, &["invalidate", "users", "hard"]), "");
    assert_eq!(users.get::<String>("alice").unwrap(), None);
    users.set("bob", "editor 2").unwrap();
    let before = gets_on(&server, Some(pass));
    for _ in 0..10 {
        assert_eq!(
            users.get::<String>("bob").unwrap().as_deref(),
            Some("editor 2")
        );
    }
    assert_eq!(
        gets_on(&server, Some(pass)) - before,
        20,
        "while the listener is down each hit reads the marker too"
    );

    // Back: the stamp holds still again, and a hit is one GET.
    cli_auth(&server, pass, &["config", "set", "requirepass", ""]);
    eventually("the listener connects again", || steady(&*marks));
    factory.sync_invalidations().unwrap();
    // The stamp moved once when tracking came back: one more marker read.
    let before = gets_on(&server, None);
    assert_eq!(
        users.get::<String>("bob").unwrap().as_deref(),
        Some("editor 2")
    );
    assert_eq!(gets_on(&server, None) - before, 2);
    let before = gets_on(&server, None);
    for _ in 0..10 {
        assert_eq!(
            users.get::<String>("bob").unwrap().as_deref(),
            Some("editor 2")
        );
    }
    assert_eq!(gets_on(&server, None) - before, 10);
}

/// The markers' slot moved to another master (`CLUSTER SETSLOT …
/// MIGRATING/IMPORTING`, `MIGRATE`, `SETSLOT … NODE`): the listener, which
/// checks every command timeout that its node still serves the slot,
/// follows it to the new master, and invalidations made there by another
/// process are seen.
#[test]
fn cluster_markers_slot_moved() {
    let Some(cluster) = RedisCluster::start("cluster_markers_slot_moved") else {
        return;
    };
    let url = cluster.url();
    let factory = Arc::new(RedisFactory::new());
    let m = CacheManager::builder()
        .backend_factory("redis", Arc::clone(&factory) as Arc<dyn BackendFactory>)
        .option("url", url.as_str())
        .option("prefix", PREFIX)
        .option("command_timeout_ms", "300")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let users = m.get_cache("users").unwrap();
    let marks = markers_with(&url, &factory, &[("command_timeout_ms", "300")]);
    users.set("alice", "admin").unwrap();
    assert_eq!(
        users.get::<String>("alice").unwrap().as_deref(),
        Some("admin")
    );
    factory.sync_invalidations().unwrap();

    let key = format!("{PREFIX}{{carboy:markers}}:x");
    let nodes = cluster.nodes();
    let slot = nodes[0]
        .cli(&["cluster", "keyslot", &key])
        .trim()
        .to_string();
    let from = cluster.owner_of(slot.parse().unwrap());
    let to = (from + 1) % nodes.len();
    let tracking_on = |i: usize| {
        nodes[i]
            .cli(&["client", "list"])
            .contains("name=carboy-tracking")
    };
    assert!(tracking_on(from) && !tracking_on(to));
    let id = |i: usize| nodes[i].cli(&["cluster", "myid"]).trim().to_string();
    let (from_id, to_id) = (id(from), id(to));
    nodes[to].cli(&["cluster", "setslot", &slot, "importing", &from_id]);
    nodes[from].cli(&["cluster", "setslot", &slot, "migrating", &to_id]);
    let keys = nodes[from].cli(&["cluster", "getkeysinslot", &slot, "1000"]);
    let port = nodes[to].port().to_string();
    for k in keys.lines().filter(|k| !k.is_empty()) {
        nodes[from].cli(&["migrate", "127.0.0.1", &port, k, "0", "5000"]);
    }
    for n in nodes {
        n.cli(&["cluster", "setslot", &slot, "node", &to_id]);
    }
    eventually("the listener follows the slot", || {
        tracking_on(to) && !tracking_on(from)
    });
    eventually("the listener tracks again", || steady(&*marks));
    assert_eq!(child(&url, &["invalidate", "users", "hard"]), "");
    factory.sync_invalidations().unwrap();
    assert_eq!(users.get::<String>("alice").unwrap(), None);
}
