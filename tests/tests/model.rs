//! Model-based test: random sequences of puts (with and without expiry),
//! deletes, transactions, clock moves, reopens, compactions and clears give
//! the same answers from a `Store` as from a `HashMap` with the same expiry
//! semantics (a value that expires at T is absent once now >= T), through
//! every read API: `get`, `get_many`, `contains`, the owned `iter()` and a
//! snapshot's borrowed `iter()`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use carboy::{Expiry, MockClock, Store};
use carboy_tests::{
    CLOCK_START_MS, assert_clean, contents, options_with_clock, proptest_cases, show,
};
use proptest::prelude::*;
use tempfile::TempDir;

/// The common keys: few, so that overwrites and deletes of present keys
/// are common. The empty key and a non-UTF-8 key are valid keys.
const COMMON_KEYS: &[&[u8]] = &[
    b"",
    b"a",
    b"b",
    b"ab",
    b"user:1",
    b"\x00\xff\x00",
    b"a-somewhat-longer-key-than-the-rest",
    b"z",
];

/// Rarer keys, enough of them to make the index grow past its 16 slots.
const RARE_KEYS: usize = 40;

/// Every key a test case may use: the common ones, then the rare ones.
fn all_keys() -> Vec<Vec<u8>> {
    COMMON_KEYS
        .iter()
        .map(|k| k.to_vec())
        .chain((0..RARE_KEYS).map(|i| format!("rare/{i}").into_bytes()))
        .collect()
}

/// How a put says when its value expires.
#[derive(Clone, Debug)]
enum Expire {
    /// `put` / `put_with_expiry(Expiry::Never)`.
    Never,
    /// `put_for(ttl)`: `ttl` milliseconds from now (0 = already expired).
    For(u64),
    /// `put_with_expiry(AtUnixMs(now + delta))`; a negative delta is a time
    /// already past.
    At(i64),
}

#[derive(Clone, Debug)]
enum TxnOp {
    Put {
        key: usize,
        value: Vec<u8>,
        expire: Expire,
    },
    Delete {
        key: usize,
    },
    Get {
        key: usize,
    },
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: Vec<u8>,
        expire: Expire,
    },
    Delete {
        key: usize,
    },
    Txn {
        ops: Vec<TxnOp>,
        commit: bool,
    },
    Advance {
        ms: u64,
    },
    /// Drop every handle and open the file again (rebuilding the index
    /// from the log if `rebuild`).
    Reopen {
        rebuild: bool,
    },
    Compact,
    Clear,
}

impl Op {
    /// A one-line description for assertion messages (values by length).
    fn describe(&self, keys: &[Vec<u8>]) -> String {
        match self {
            Op::Put { key, value, expire } => format!(
                "put {} = {} bytes, expiry {expire:?}",
                show(&keys[*key]),
                value.len()
            ),
            Op::Delete { key } => format!("delete {}", show(&keys[*key])),
            Op::Txn { ops, commit } => format!(
                "transaction of {} ops, {}",
                ops.len(),
                if *commit { "committed" } else { "dropped" }
            ),
            other => format!("{other:?}"),
        }
    }
}

/// An index into [`all_keys`], mostly a common key.
fn key() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..COMMON_KEYS.len(),
        1 => COMMON_KEYS.len()..COMMON_KEYS.len() + RARE_KEYS,
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn expire() -> impl Strategy<Value = Expire> {
    prop_oneof![
        3 => Just(Expire::Never),
        2 => (0u64..5_000).prop_map(Expire::For),
        1 => (-2_000i64..5_000).prop_map(Expire::At),
    ]
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        3 => (key(), value(), expire()).prop_map(|(key, value, expire)| TxnOp::Put { key, value, expire }),
        1 => key().prop_map(|key| TxnOp::Delete { key }),
        1 => key().prop_map(|key| TxnOp::Get { key }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (key(), value(), expire()).prop_map(|(key, value, expire)| Op::Put { key, value, expire }),
        10 => key().prop_map(|key| Op::Delete { key }),
        10 => (prop::collection::vec(txn_op(), 0..8), any::<bool>())
            .prop_map(|(ops, commit)| Op::Txn { ops, commit }),
        8 => (0u64..3_000).prop_map(|ms| Op::Advance { ms }),
        4 => any::<bool>().prop_map(|rebuild| Op::Reopen { rebuild }),
        3 => Just(Op::Compact),
        1 => Just(Op::Clear),
    ]
}

/// The reference: key to (value, expiry), expired entries included until
/// compaction or a delete removes them.
#[derive(Clone, Debug, Default)]
struct Model {
    map: HashMap<Vec<u8>, (Vec<u8>, Expiry)>,
}

impl Model {
    fn get(&self, key: &[u8], now: u64) -> Option<&(Vec<u8>, Expiry)> {
        self.map
            .get(key)
            .filter(|(_, expiry)| !expiry.is_expired_at(now))
    }

    /// Removes `key`; returns whether it was visible.
    fn delete(&mut self, key: &[u8], now: u64) -> bool {
        let visible = self.get(key, now).is_some();
        self.map.remove(key);
        visible
    }

    fn live(&self, now: u64) -> BTreeMap<Vec<u8>, (Vec<u8>, Expiry)> {
        self.map
            .iter()
            .filter(|(_, (_, expiry))| !expiry.is_expired_at(now))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

struct Harness {
    _dir: TempDir,
    keys: Vec<Vec<u8>>,
    path: std::path::PathBuf,
    clock: MockClock,
    store: Option<Store>,
    model: Model,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.carboy");
        let clock = MockClock::new(CLOCK_START_MS);
        // The smallest index, so that it grows as keys arrive.
        let store = options_with_clock(&clock)
            .expected_keys(1)
            .open(&path)
            .unwrap();
        Harness {
            _dir: dir,
            keys: all_keys(),
            path,
            clock,
            store: Some(store),
            model: Model::default(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn now(&self) -> u64 {
        use carboy::Clock;
        self.clock.now_unix_ms()
    }

    fn expiry_of(&self, expire: &Expire) -> Expiry {
        match *expire {
            Expire::Never => Expiry::Never,
            Expire::For(ms) => Expiry::AtUnixMs(self.now() + ms),
            Expire::At(delta) => Expiry::AtUnixMs(self.now().saturating_add_signed(delta)),
        }
    }

    /// The store and the model agree on `key`, through `get` and `contains`.
    fn check_key(&self, key: &[u8], after: &str) {
        let now = self.now();
        let want = self.model.get(key, now);
        let got = self
            .store()
            .get(key)
            .unwrap_or_else(|e| panic!("after {after}: get({}) failed: {e}", show(key)));
        match (&got, want) {
            (None, None) => {}
            (Some(v), Some((value, expiry))) => {
                assert_eq!(
                    &v[..],
                    &value[..],
                    "after {after}: get({}) returned the wrong value",
                    show(key)
                );
                assert_eq!(
                    v.expiry(),
                    *expiry,
                    "after {after}: get({}) returned the wrong expiry",
                    show(key)
                );
            }
            _ => panic!(
                "after {after}: get({}) = {:?}, the model has {:?} (now {now})",
                show(key),
                got.as_deref().map(show),
                want.map(|(v, e)| (show(v), e))
            ),
        }
        drop(got);
        assert_eq!(
            self.store().contains(key).unwrap(),
            want.is_some(),
            "after {after}: contains({})",
            show(key)
        );
    }

    /// The store and the model agree on everything: contents, length, and
    /// the store verifies clean.
    fn check_all(&self, after: &str) {
        let now = self.now();
        let want = self.model.live(now);
        let got = contents(self.store());
        assert_eq!(
            got.keys().map(|k| show(k)).collect::<Vec<_>>(),
            want.keys().map(|k| show(k)).collect::<Vec<_>>(),
            "after {after}: iter() yields other keys than the model holds (now {now})"
        );
        assert_eq!(got, want, "after {after}: iter() values or expiries differ");
        // The borrowed iteration of a snapshot yields the same entries.
        let snap = self.store().snapshot().unwrap();
        let mut borrowed = BTreeMap::new();
        for entry in snap.iter() {
            let e = entry.unwrap_or_else(|e| panic!("after {after}: snapshot.iter(): {e}"));
            let dup = borrowed.insert(e.key.to_vec(), (e.value.to_vec(), e.expiry));
            assert!(
                dup.is_none(),
                "after {after}: snapshot.iter() yielded {} twice",
                show(e.key)
            );
        }
        drop(snap);
        assert_eq!(
            borrowed, want,
            "after {after}: snapshot.iter() differs from iter()"
        );
        // get_many answers every key as get does, in order.
        let mut many = Vec::new();
        self.store()
            .get_many(&self.keys, |i, v| many.push((i, v.map(<[u8]>::to_vec))))
            .unwrap_or_else(|e| panic!("after {after}: get_many failed: {e}"));
        let each: Vec<_> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (i, self.store().get_owned(k).unwrap()))
            .collect();
        assert_eq!(many, each, "after {after}: get_many differs from get");
        assert_eq!(
            self.store().len().unwrap(),
            want.len() as u64,
            "after {after}: len()"
        );
        assert_eq!(self.store().is_empty().unwrap(), want.is_empty());
        for key in &self.keys {
            self.check_key(key, after);
        }
        assert_clean(self.store());
    }

    fn reopen(&mut self, rebuild: bool) {
        self.store = None; // the only handle: the namespace is closed now
        self.store = Some(
            options_with_clock(&self.clock)
                .rebuild_index(rebuild)
                .create(false)
                .open(&self.path)
                .unwrap_or_else(|e| panic!("reopen (rebuild: {rebuild}) failed: {e}")),
        );
    }

    fn apply(&mut self, step: usize, op: &Op) {
        let after = format!("step {step} ({})", op.describe(&self.keys));
        match op {
            Op::Put { key, value, expire } => {
                let k: &[u8] = &self.keys[*key].clone();
                let expiry = self.expiry_of(expire);
                match *expire {
                    Expire::Never => self.store().put(k, value),
                    Expire::For(ms) => self.store().put_for(k, value, Duration::from_millis(ms)),
                    Expire::At(_) => self.store().put_with_expiry(k, value, expiry),
                }
                .unwrap_or_else(|e| panic!("{after}: put failed: {e}"));
                self.model.map.insert(k.to_vec(), (value.clone(), expiry));
                self.check_key(k, &after);
            }
            Op::Delete { key } => {
                let k: &[u8] = &self.keys[*key].clone();
                let existed = self.store().delete(k).unwrap();
                let now = self.now();
                assert_eq!(
                    existed,
                    self.model.delete(k, now),
                    "{after}: delete's return value"
                );
                self.check_key(k, &after);
            }
            Op::Txn { ops, commit } => self.transaction(ops, *commit, &after),
            Op::Advance { ms } => {
                self.clock.advance(Duration::from_millis(*ms));
                for key in &self.keys {
                    self.check_key(key, &after);
                }
            }
            Op::Reopen { rebuild } => {
                self.reopen(*rebuild);
                self.check_all(&after);
            }
            Op::Compact => {
                let now = self.now();
                let before = self.model.map.len();
                self.model.map.retain(|_, (_, e)| !e.is_expired_at(now));
                let report = self.store().compact().unwrap();
                assert_eq!(
                    report.keys,
                    self.model.map.len() as u64,
                    "{after}: keys kept"
                );
                assert_eq!(
                    report.expired_dropped,
                    (before - self.model.map.len()) as u64,
                    "{after}: expired keys dropped"
                );
                self.check_all(&after);
            }
            Op::Clear => {
                self.store().clear().unwrap();
                self.model.map.clear();
                self.check_all(&after);
            }
        }
    }

    fn transaction(&mut self, ops: &[TxnOp], commit: bool, after: &str) {
        let now = self.now();
        let mut pending = self.model.clone();
        let store = self.store.as_ref().expect("store is open");
        let mut txn = store.transaction().unwrap();
        for (i, op) in ops.iter().enumerate() {
            let k = match op {
                TxnOp::Put { key, value, expire } => {
                    let k = self.keys[*key].clone();
                    let expiry = self.expiry_of(expire);
                    txn.put_with_expiry(&k, value, expiry).unwrap();
                    pending.map.insert(k.to_vec(), (value.clone(), expiry));
                    k
                }
                TxnOp::Delete { key } => {
                    let k = self.keys[*key].clone();
                    assert_eq!(
                        txn.delete(&k).unwrap(),
                        pending.delete(&k, now),
                        "{after}: op {i}: transaction delete's return value"
                    );
                    k
                }
                TxnOp::Get { key } => self.keys[*key].clone(),
            };
            // Reads inside the transaction see its own writes.
            assert_eq!(
                txn.get(&k).unwrap().map(show),
                pending.get(&k, now).map(|(v, _)| show(v)),
                "{after}: op {i}: transaction get({})",
                show(&k)
            );
        }
        if commit {
            txn.commit().unwrap();
            self.model = pending;
        } else {
            drop(txn);
        }
        for key in &self.keys {
            self.check_key(key, after);
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(256),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn store_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        for (step, op) in ops.iter().enumerate() {
            h.apply(step, op);
        }
        h.check_all("the last step");
        h.reopen(false);
        h.check_all("the final reopen");
    }
}
