//! What the children of `tests/multiprocess.rs` do, so that the parent can
//! compute what the file must hold afterwards.
//!
//! Operation `i` of child `c`: put [`child_key`]`(c, i % KEYS_PER_CHILD)`
//! = [`versioned_value`]`(c, i)`, then add one to counter
//! `i % COUNTERS` in a read-modify-write transaction.

use crate::versioned_value;

/// Keys each child owns (and rewrites in turn).
pub const KEYS_PER_CHILD: u64 = 16;
/// Counters shared by every child.
pub const COUNTERS: u64 = 4;

/// Key number `slot` of child `child`.
pub fn child_key(child: u32, slot: u64) -> Vec<u8> {
    format!("child{child}/key{slot}").into_bytes()
}

/// Shared counter number `c`.
pub fn counter_key(c: u64) -> Vec<u8> {
    format!("counter{c}").into_bytes()
}

/// The two keys every transaction of `child` sets to the same value.
pub fn batch_keys(child: u32) -> [Vec<u8>; 2] {
    [
        format!("batch{child}/a").into_bytes(),
        format!("batch{child}/b").into_bytes(),
    ]
}

/// The short-lived key `child` puts in op `op` and deletes in the next.
pub fn temp_key(child: u32, op: u64) -> Vec<u8> {
    format!("temp{child}/{}", op % 4).into_bytes()
}

/// Every key of `child` after `ops` operations, with its final value.
pub fn final_values(child: u32, ops: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..KEYS_PER_CHILD.min(ops))
        .map(|slot| {
            let last = slot + KEYS_PER_CHILD * ((ops - 1 - slot) / KEYS_PER_CHILD);
            (child_key(child, slot), versioned_value(child, last))
        })
        .collect()
}

/// Final value of counter `c` after `children` children did `ops`
/// operations each.
pub fn counter_total(children: u64, ops: u64, c: u64) -> u64 {
    let per_child = (0..ops).filter(|i| i % COUNTERS == c).count() as u64;
    children * per_child
}

/// The entries the "handoff" writer process leaves behind.
pub fn handoff_entries(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("handoff/{i}").into_bytes(),
                versioned_value(i, u64::from(i) * 7 + 1),
            )
        })
        .collect()
}
