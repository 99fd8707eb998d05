//! Deep verification: every record, commit marker and index slot.

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Kind};
use carboy_format::slot;

use super::Store;
use super::index::{self, Probe};
use super::new_file::ReleaseBehind;
use super::offsets::{NewestByKey, OffsetSet};
use super::walk::{Block, Walk, release_reads_behind};
use crate::error::Result;

/// One problem found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset in the data file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offset {}: {}", self.offset, self.what)
    }
}

/// What [`Store::verify`] checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records (puts and deletes) that verified.
    pub records: u64,
    /// Committed transactions that verified.
    pub transactions: u64,
    /// Index slots checked.
    pub slots: u64,
    /// Live keys found.
    pub live_keys: u64,
    /// Every problem, with its offset.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks every byte carboy can check: every record's and commit
    /// marker's CRC, the transaction chain, every index slot (it must point
    /// at the newest record of its key, reachable by a probe), and the
    /// counters. Holds a shared lock while it runs.
    pub fn verify(&self) -> Result<VerifyReport> {
        let snap = self.snapshot()?;
        let fs = &snap.fs;
        let bound = snap.bound;
        let mut report = VerifyReport::default();
        let problem = |report: &mut VerifyReport, offset: u64, what: String| {
            report.problems.push(Problem { offset, what });
        };

        // 1. The log: every block, the transaction chain, newest record per
        //    key. A transaction's records count once its marker is seen.
        let hint = fs.load(live::USED_SLOTS).min(snap.idx.capacity());
        let mut newest = NewestByKey::with_capacity(hint as usize);
        let mut pending: Vec<(u64, u64)> = Vec::new();
        let mut txn_start = HEADER_SIZE;
        let mut last_txn = 0;
        for block in Walk::new(fs, HEADER_SIZE, bound, false) {
            match block {
                Block::Record(off, rec) => pending.push((off, fs.hash(rec.key))),
                Block::Commit(off, c) => {
                    if c.txn_id != last_txn + 1 || c.txn_start != txn_start {
                        problem(
                            &mut report,
                            off,
                            format!(
                                "commit marker of txn {} (start {}) breaks the chain: expected \
                                 txn {} starting at {}",
                                c.txn_id,
                                c.txn_start,
                                last_txn + 1,
                                txn_start
                            ),
                        );
                    } else if c.records as usize != pending.len() {
                        problem(
                            &mut report,
                            off,
                            format!(
                                "commit marker counts {} records, {} verified",
                                c.records,
                                pending.len()
                            ),
                        );
                    }
                    last_txn = c.txn_id;
                    report.transactions += 1;
                    for (o, hash) in pending.drain(..) {
                        report.records += 1;
                        newest.insert(fs, bound, hash, o)?;
                    }
                    release_reads_behind(fs, &mut newest, off);
                    txn_start = off + record::COMMIT_LEN;
                }
                Block::Index(off, len) => txn_start = off + len,
                Block::Damaged(off, len) => {
                    problem(
                        &mut report,
                        off,
                        format!("{len} bytes that are no valid block"),
                    );
                    pending.clear();
                }
            }
        }
        if !pending.is_empty() {
            problem(
                &mut report,
                pending[0].0,
                format!(
                    "{} records below the committed end have no commit marker",
                    pending.len()
                ),
            );
        }
        drop(pending);
        if last_txn != fs.load(live::TXN_ID) {
            problem(
                &mut report,
                live::TXN_ID as u64,
                format!(
                    "last txn id is {}, the log ends with txn {last_txn}",
                    fs.load(live::TXN_ID)
                ),
            );
        }

        // 2. Each key's newest record, in log order: its key's probe must
        //    find a slot pointing at it (a deleted key may have no slot:
        //    growing the index drops them).
        let idx = snap.idx;
        let mut order = OffsetSet::new(HEADER_SIZE, bound);
        for offset in newest.offsets() {
            order.insert(offset);
        }
        drop(newest);
        // The slots (by their offset) a key's probe found: their records
        // are accounted for.
        let mut seen = OffsetSet::new(idx.slot_offset(0), idx.slot_offset(idx.capacity()));
        let (mut in_log, mut indexed, mut live_keys) = (0u64, 0u64, 0u64);
        let mut count = |rec: &record::Record<'_>| {
            if rec.kind == Kind::Put {
                indexed += 1;
                if !rec.expiry.is_expired_at(snap.now) {
                    live_keys += 1;
                }
            }
        };
        let mut behind = ReleaseBehind::new(HEADER_SIZE);
        for newest_at in order.iter() {
            let rec = fs.record(newest_at, bound)?;
            if rec.kind == Kind::Put {
                in_log += 1;
            }
            let hash = fs.hash(rec.key);
            match index::probe(fs, idx, hash, rec.key, Some(bound)) {
                Ok(Probe::Found {
                    bucket,
                    offset,
                    record: found,
                    ..
                }) => {
                    seen.insert(idx.slot_offset(bucket));
                    count(&found);
                    if offset != newest_at {
                        problem(
                            &mut report,
                            idx.slot_offset(bucket),
                            format!(
                                "slot points at {offset}, the key's newest record is at \
                                 {newest_at}"
                            ),
                        );
                    }
                }
                Ok(Probe::Vacant { .. }) if rec.kind == Kind::Delete => {}
                Ok(Probe::Vacant { .. }) | Ok(Probe::Full) => problem(
                    &mut report,
                    newest_at,
                    "no slot points at this record, the newest of its key".into(),
                ),
                Err(e) => problem(
                    &mut report,
                    newest_at,
                    format!("the probe for the key of this record fails: {e}"),
                ),
            }
            behind.reached(&fs.map, newest_at);
        }
        behind.finish(&fs.map, idx.offset);
        drop(order);

        // 3. The index: every slot no key's probe found is wrong; the
        //    counters must match what the slots hold.
        let (mut used, mut sum) = (0u64, 0u64);
        for b in 0..idx.capacity() {
            let s = index::load_slot(fs, idx, b)?;
            report.slots += 1;
            sum = sum.wrapping_add(s);
            if s == slot::EMPTY {
                continue;
            }
            used += 1;
            let at = idx.slot_offset(b);
            if seen.contains(at) {
                continue;
            }
            let offset = slot::offset(s);
            let rec = match fs.record(offset, bound) {
                Ok(r) => r,
                Err(e) => {
                    problem(&mut report, at, format!("slot points at a bad record: {e}"));
                    continue;
                }
            };
            count(&rec);
            let hash = fs.hash(rec.key);
            if slot::slot_tag(s) != slot::tag(hash) {
                problem(
                    &mut report,
                    at,
                    "slot tag does not match its key's hash".into(),
                );
                continue;
            }
            match index::probe(fs, idx, hash, rec.key, Some(bound)) {
                Ok(Probe::Found { offset: o, .. }) if o == offset => problem(
                    &mut report,
                    at,
                    format!(
                        "slot points at {offset}, not the newest record of its key in a \
                         committed transaction"
                    ),
                ),
                _ => problem(
                    &mut report,
                    at,
                    "slot is not reachable by its key's probe".into(),
                ),
            }
        }
        report.live_keys = live_keys;
        if in_log != indexed {
            problem(
                &mut report,
                idx.offset,
                format!("the log holds {in_log} keys, the index {indexed}"),
            );
        }
        if fs.load(live::LIVE_KEYS) != indexed {
            problem(
                &mut report,
                live::LIVE_KEYS as u64,
                format!(
                    "live_keys says {}, the index holds {indexed}",
                    fs.load(live::LIVE_KEYS)
                ),
            );
        }
        if fs.load(live::SLOT_SUM_TXN) == fs.load(live::TXN_ID) && fs.load(live::SLOT_SUM) != sum {
            problem(
                &mut report,
                live::SLOT_SUM as u64,
                format!(
                    "slot_sum says {:#x}, the slots add up to {sum:#x}",
                    fs.load(live::SLOT_SUM)
                ),
            );
        }
        if fs.load(live::USED_SLOTS) != used {
            problem(
                &mut report,
                live::USED_SLOTS as u64,
                format!(
                    "used_slots says {}, {used} are used",
                    fs.load(live::USED_SLOTS)
                ),
            );
        }
        Ok(report)
    }
}
