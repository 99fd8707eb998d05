//! What recovery sets aside: commits that verify past the damage where
//! the kept log ends, copied to a file beside the data file before the
//! space is reused (DESIGN.md, "What recovery keeps, and what it sets
//! aside").

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use carboy_format::header::HEADER_SIZE;
use carboy_format::record;

use super::file_state::FileState;
use super::new_file::STREAM_CHUNK;
use super::scan::Scan;
use super::walk::{Block, Walk};
use crate::error::{Error, Result};

/// Committed data that recovery found past the end of the log it keeps,
/// and copied aside before reusing that space.
///
/// After a crash or power loss recovery keeps the longest prefix of the
/// log that verifies (FORMAT.md §6.3). When a damaged block ends that
/// prefix but commits that verify lie after it, those bytes are copied, at
/// their original offsets and after a copy of the header page, into a
/// sparse file beside the data file, named
/// `<data file>.set-aside-<offset>-<unix ms>`, before recovery zeroes
/// them. `carboy salvage SIDE NEW` reads every record of such a file that
/// still verifies; [`set_aside_files`](crate::set_aside_files) lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetAside {
    /// Where the kept log ends: the first byte set aside.
    pub offset: u64,
    /// How many bytes were set aside (up to the end of the last block
    /// that verifies).
    pub len: u64,
    /// Where the log stopped verifying, and why.
    pub damage: (u64, String),
    /// Commit markers that verify among the bytes set aside.
    pub commits: u64,
    /// Put and delete records that verify among them.
    pub records: u64,
    /// The file they were copied to (`None` in a plan not yet carried
    /// out, see [`inspect_recovery`](crate::inspect_recovery)).
    pub path: Option<PathBuf>,
}

/// Looks past the end of a scan for blocks that verify: commits that
/// recovery must not destroy.
pub(crate) fn find_set_aside(fs: &FileState, scan: &Scan, limit: u64) -> Option<SetAside> {
    // The committed end the header claims (after a crash, possibly stale):
    // records below it were committed even if their marker is damaged.
    let claimed = fs.commit_end();
    let (mut commits, mut records, mut claimed_records, mut end) = (0u64, 0u64, 0u64, scan.end);
    for block in Walk::new(fs, scan.end, limit, true) {
        match block {
            Block::Record(off, rec) => {
                records += 1;
                end = end.max(off + rec.len);
                if off + rec.len <= claimed {
                    claimed_records += 1;
                }
            }
            Block::Commit(off, _) => {
                commits += 1;
                end = end.max(off + record::COMMIT_LEN);
            }
            Block::Index(..) | Block::Damaged(..) => {}
        }
    }
    // Records with no commit marker after them, past the end the header
    // claims, are a torn transaction that never committed: nothing to keep.
    if commits == 0 && claimed_records == 0 {
        return None;
    }
    let damage = match (&scan.stopped, scan.zeros_at) {
        (Some(stopped), _) => stopped.clone(),
        (None, Some(at)) => (at, "zeroed bytes where the log goes on".to_string()),
        (None, None) => (scan.end, "the log ends early".to_string()),
    };
    Some(SetAside {
        offset: scan.end,
        len: end - scan.end,
        damage,
        commits,
        records,
        path: None,
    })
}

/// Copies the header page and the bytes of `aside` (at their offsets)
/// into a new sparse file beside the data file, and makes it durable.
pub(crate) fn write_set_aside(fs: &FileState, aside: &mut SetAside, limit: u64) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let data = fs.path();
    let mut name = data.as_os_str().to_owned();
    name.push(format!(".set-aside-{}-{now}", aside.offset));
    let path = PathBuf::from(name);
    let io = |op, e| Error::io(op, &path, e);
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io("create", e))?;
    let page = fs
        .map
        .bytes(0, HEADER_SIZE, limit)
        .ok_or_else(|| fs.corruption(0, "header page outside the file"))?;
    file.write_all_at(page, 0).map_err(|e| io("write", e))?;
    let end = aside.offset + aside.len;
    let mut at = aside.offset;
    while at < end {
        let step = (end - at).min(STREAM_CHUNK);
        let bytes = fs
            .map
            .bytes(at, step, limit)
            .ok_or_else(|| fs.corruption(at, "set-aside range outside the file"))?;
        file.write_all_at(bytes, at).map_err(|e| io("write", e))?;
        at += step;
    }
    file.sync_all().map_err(|e| io("fsync", e))?;
    super::new_file::sync_dir(&path)?;
    aside.path = Some(path);
    Ok(())
}

/// The set-aside files recovery left beside the data file at `data_path`
/// (see [`SetAside`]), oldest first. Each holds commits that verified but
/// lay past a damaged block when the log was recovered.
pub fn set_aside_files(data_path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let data_path = data_path.as_ref();
    let (Some(dir), Some(stem)) = (data_path.parent(), data_path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = stem.to_owned();
    prefix.push(".set-aside-");
    let prefix = prefix.as_encoded_bytes().to_vec();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(&prefix) {
            found.push(data_path.with_file_name(name));
        }
    }
    // Named ...-<offset>-<unix ms>: by time.
    found.sort_by_key(|p| {
        let name = p.to_string_lossy();
        let ms = name.rsplit('-').next().and_then(|t| t.parse::<u64>().ok());
        (ms, p.clone())
    });
    Ok(found)
}
