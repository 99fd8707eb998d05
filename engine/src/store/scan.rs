//! Reading the log back as recovery does (FORMAT.md §6.3): from the
//! header page, transaction by transaction, up to the first block that
//! does not verify.

use carboy_format::header::HEADER_SIZE;
use carboy_format::record::{self, Commit, Kind, Prefix};

use super::file_state::FileState;
use super::new_file::ReleaseBehind;
use crate::error::Error;

/// What a scan of the log found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// End of the last valid transaction (and of any index blocks right
    /// after it): where new blocks may go.
    pub(crate) end: u64,
    /// Id of the last valid transaction.
    pub(crate) last_txn: u64,
    /// Number of records of every valid transaction.
    pub(crate) records: u64,
    /// Where and why the scan stopped, unless it reached `limit` or a run
    /// of zeros (a clean end).
    pub(crate) stopped: Option<(u64, String)>,
    /// Where it met a run of zeros, if it did: the end of the log, unless
    /// blocks that verify follow (zeroed damage).
    pub(crate) zeros_at: Option<u64>,
}

/// What failed to verify, without the path and advice an [`Error`] adds.
fn what(e: Error) -> String {
    match e {
        Error::Corruption { detail, .. } => detail,
        e => e.to_string(),
    }
}

/// Scans the log from its start up to `limit`, releasing the pages behind
/// it from this process's memory as it goes.
pub(crate) fn scan(fs: &FileState, limit: u64) -> Scan {
    let mut out = Scan {
        end: HEADER_SIZE,
        ..Scan::default()
    };
    let mut pos = HEADER_SIZE;
    let mut txn_start = pos;
    let mut pending = 0u64;
    let mut behind = ReleaseBehind::new(pos);
    let mut crc = crc32fast::Hasher::new();
    let stop = |at: u64, why: String, out: &mut Scan| {
        out.stopped = Some((at, why));
    };
    while pos + record::PREFIX_LEN as u64 <= limit {
        behind.reached(&fs.map, pos);
        let Some(head) = fs.map.bytes(pos, record::PREFIX_LEN as u64, limit) else {
            break;
        };
        if head.iter().all(|&b| b == 0) {
            out.zeros_at = Some(pos);
            break; // a clean end: never-written space (or zeroed damage)
        }
        let prefix = match Prefix::decode(head) {
            Ok(p) => p,
            Err(e) => {
                stop(pos, e.to_string(), &mut out);
                break;
            }
        };
        match prefix.kind {
            Kind::Index => {
                if pending > 0 {
                    stop(pos, "index block inside a transaction".into(), &mut out);
                    break;
                }
                match fs.index_at(pos, limit) {
                    Ok(view) => {
                        pos += view.len();
                        out.end = pos;
                        txn_start = pos;
                    }
                    Err(e) => {
                        stop(pos, what(e), &mut out);
                        break;
                    }
                }
            }
            Kind::Put | Kind::Delete => match fs.record(pos, limit) {
                Ok(rec) => {
                    crc.update(&prefix.crc.to_le_bytes());
                    pending += 1;
                    pos += rec.len;
                }
                Err(e) => {
                    stop(pos, what(e), &mut out);
                    break;
                }
            },
            Kind::Commit => {
                let marker = fs
                    .map
                    .bytes(pos, record::COMMIT_LEN, limit)
                    .ok_or_else(|| "commit marker runs past the end".to_string())
                    .and_then(|b| Commit::decode(b).map_err(|e| e.to_string()));
                let marker = match marker {
                    Ok(m) => m,
                    Err(e) => {
                        stop(pos, e, &mut out);
                        break;
                    }
                };
                let expected_crc = std::mem::take(&mut crc).finalize();
                if marker.txn_id != out.last_txn + 1
                    || marker.txn_start != txn_start
                    || u64::from(marker.records) != pending
                    || marker.records_crc != expected_crc
                {
                    stop(
                        pos,
                        format!(
                            "commit marker does not match its transaction (txn {} at {}, \
                             expected txn {} starting at {} with {} records)",
                            marker.txn_id,
                            marker.txn_start,
                            out.last_txn + 1,
                            txn_start,
                            pending
                        ),
                        &mut out,
                    );
                    break;
                }
                out.last_txn = marker.txn_id;
                out.records += std::mem::take(&mut pending);
                pos += record::COMMIT_LEN;
                out.end = pos;
                txn_start = pos;
            }
        }
    }
    behind.finish(&fs.map, pos);
    out
}
