//! What the group-commit test (`tests/group_commit.rs`) and its child
//! processes (`sync-*` modes of the child binary) agree on: each child
//! commits versions of its own key and increments one shared counter, with
//! `Durability::Sync`, and acknowledges each commit on stdout once it
//! returned; at the end it reports its [`carboy::SyncStats`].

use super::versioned_value;

/// The counter every commit of every child increments.
pub const COUNTER: &[u8] = b"gc/counter";

/// Child `child`'s own key.
pub fn key(child: u32) -> Vec<u8> {
    format!("gc/{child}").into_bytes()
}

/// What child `child` stores in its key at `version`.
pub fn value(child: u32, version: u64) -> Vec<u8> {
    versioned_value(child, version)
}

/// The line a child prints once commit `version` returned.
pub fn ack(version: u64) -> String {
    format!("ack {version}")
}

/// The version of an acknowledgement line.
pub fn parse_ack(line: &str) -> Option<u64> {
    line.strip_prefix("ack ")?.parse().ok()
}

/// The line a child ends with: its Sync commits and its fsyncs.
pub fn stats(s: carboy::SyncStats) -> String {
    format!("stats commits={} fsyncs={}", s.commits, s.fsyncs)
}

/// (commits, fsyncs) from a stats line.
pub fn parse_stats(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("stats commits=")?;
    let (commits, fsyncs) = rest.split_once(" fsyncs=")?;
    Some((commits.parse().ok()?, fsyncs.parse().ok()?))
}
