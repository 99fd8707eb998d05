//! Reading a data file without the engine: plain reads through a
//! read-only descriptor, no lock, no writes, and no trust in any byte.
//!
//! `carboy header`, `carboy dump --all` and the slot walk of `carboy stat`
//! use it, so they work on a file the engine refuses to open, and need only
//! read access. Every structure is decoded with carboy-format's checked
//! decoders and every live word is validated as FORMAT.md §2.2 requires
//! before it bounds a read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{self, Commit, Kind, Prefix};
use carboy_format::{Expiry, slot};

/// Bytes read at a time when walking the log or the slots.
const CHUNK: u64 = 1 << 20;

/// A data file opened read-only.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl RawFile {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> anyhow::Result<RawFile> {
        let (file, meta) = crate::open::open_for_reading(path)?;
        Ok(RawFile {
            file,
            path: path.to_path_buf(),
            len: meta.len(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The `len` bytes at `offset`, or `None` when they do not all lie in
    /// the file.
    pub fn read(&self, offset: u64, len: u64) -> anyhow::Result<Option<Vec<u8>>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => return Ok(None),
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .with_context(|| format!("{}: reading {len} bytes at {offset}", self.path.display()))?;
        Ok(Some(buf))
    }

    /// The header page, or as much of it as the file holds.
    pub fn header_page(&self) -> anyhow::Result<Vec<u8>> {
        let len = self.len.min(HEADER_SIZE);
        Ok(self.read(0, len)?.unwrap_or_default())
    }
}

/// A read-ahead window over a [`RawFile`], for walks that move forward.
#[derive(Debug)]
pub struct Window<'a> {
    raw: &'a RawFile,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    /// A window over `raw`, empty until the first read.
    pub fn new(raw: &'a RawFile) -> Window<'a> {
        Window {
            raw,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at `offset`, or `None` when they do not all lie
    /// below `limit` and inside the file.
    pub fn bytes(&mut self, offset: u64, len: u64, limit: u64) -> anyhow::Result<Option<&[u8]>> {
        let limit = limit.min(self.raw.len);
        let Some(end) = offset.checked_add(len).filter(|&e| e <= limit) else {
            return Ok(None);
        };
        let held = offset >= self.start && end <= self.start + self.buf.len() as u64;
        if !held {
            let want = len.max(CHUNK.min(limit - offset));
            self.buf.resize(want as usize, 0);
            self.raw
                .file
                .read_exact_at(&mut self.buf, offset)
                .with_context(|| {
                    format!(
                        "{}: reading {want} bytes at {offset}",
                        self.raw.path.display()
                    )
                })?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(self.buf.get(at..at + len as usize))
    }

    /// Decodes the put or delete record at `offset` (lying below `limit`)
    /// and passes it to `f`; `Ok(Err(why))` when no valid record is there.
    pub fn record_at<T>(
        &mut self,
        offset: u64,
        limit: u64,
        f: impl FnOnce(record::Record<'_>) -> T,
    ) -> anyhow::Result<Result<T, String>> {
        let Some(head) = self.bytes(offset, record::PREFIX_LEN as u64, limit)? else {
            return Ok(Err(format!(
                "offset {offset} is past the committed end {limit}"
            )));
        };
        let prefix = match Prefix::decode(head) {
            Ok(p) if matches!(p.kind, Kind::Put | Kind::Delete) => p,
            Ok(p) => return Ok(Err(format!("a {:?} block, not a record", p.kind))),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let Some(body) = self.bytes(offset, prefix.covered_len(), limit)? else {
            return Ok(Err(format!(
                "the record at {offset} runs past the committed end {limit}"
            )));
        };
        Ok(record::decode(body).map(f).map_err(|e| e.to_string()))
    }
}

/// The live words of a header page (FORMAT.md §2.2), as stored: nothing
/// here is validated until a `check_*` method says so.
#[derive(Clone, Copy, Debug)]
pub struct LiveWords {
    /// `index_offset`.
    pub index_offset: u64,
    /// `commit_end`.
    pub commit_end: u64,
    /// `alloc_end`.
    pub alloc_end: u64,
}

/// Every live word: its offset and its name in FORMAT.md.
pub const LIVE_WORDS: [(usize, &str); 17] = live::ALL;

/// The little-endian `u64` at `offset` of `page`, if the page holds it.
pub fn word(page: &[u8], offset: usize) -> Option<u64> {
    let bytes = page.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Where the current index block is and how big it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLoc {
    /// Offset of the index block.
    pub offset: u64,
    /// Its capacity, as a power of two.
    pub log2: u32,
}

impl IndexLoc {
    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        1u64 << self.log2
    }

    /// Offset of the slot of `bucket`.
    pub fn slot_offset(&self, bucket: u64) -> u64 {
        self.offset + record::INDEX_HEADER_LEN as u64 + bucket * 8
    }
}

/// A log offset word's shape: a multiple of 8, at least 4096.
fn log_offset(value: u64) -> Result<(), String> {
    if value < HEADER_SIZE {
        return Err(format!(
            "{value} is inside the header page (must be ≥ 4096)"
        ));
    }
    if !value.is_multiple_of(8) {
        return Err(format!("{value} is not a multiple of 8"));
    }
    Ok(())
}

impl LiveWords {
    /// The live words of `page`, when it holds them all.
    pub fn read(page: &[u8]) -> Option<LiveWords> {
        Some(LiveWords {
            index_offset: word(page, live::INDEX_OFFSET)?,
            commit_end: word(page, live::COMMIT_END)?,
            alloc_end: word(page, live::ALLOC_END)?,
        })
    }

    /// `commit_end` when valid: a multiple of 8, 4096 ≤ it ≤ `alloc_end`,
    /// and inside a file of `file_len` bytes.
    pub fn check_commit_end(&self, file_len: u64) -> Result<u64, String> {
        log_offset(self.commit_end)?;
        if self.commit_end > self.alloc_end {
            return Err(format!(
                "{} is past alloc_end {}",
                self.commit_end, self.alloc_end
            ));
        }
        if self.commit_end > file_len {
            return Err(format!(
                "{} is past the end of the file ({file_len} bytes)",
                self.commit_end
            ));
        }
        Ok(self.commit_end)
    }

    /// `alloc_end` when valid: `commit_end` ≤ it ≤ `file_len`.
    pub fn check_alloc_end(&self, file_len: u64) -> Result<u64, String> {
        if self.alloc_end > file_len {
            return Err(format!(
                "{} is past the end of the file ({file_len} bytes)",
                self.alloc_end
            ));
        }
        if self.alloc_end < self.commit_end {
            return Err(format!(
                "{} is below commit_end {}",
                self.alloc_end, self.commit_end
            ));
        }
        Ok(self.alloc_end)
    }

    /// `indexed_end` (or `synced_end`, as `value`) when valid: a multiple
    /// of 8, 4096 ≤ it ≤ `commit_end`.
    pub fn check_below_commit_end(&self, value: u64) -> Result<u64, String> {
        log_offset(value)?;
        if value > self.commit_end {
            return Err(format!("{value} is past commit_end {}", self.commit_end));
        }
        Ok(value)
    }

    /// The current index when `index_offset` is valid: a multiple of 8,
    /// ≥ 4096, an index block header that verifies there, and the whole
    /// block below `commit_end`.
    pub fn check_index(&self, raw: &RawFile) -> Result<IndexLoc, String> {
        let offset = self.index_offset;
        log_offset(offset)?;
        let head = raw
            .read(offset, record::INDEX_HEADER_LEN as u64)
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| format!("{offset} is past the end of the file"))?;
        let log2 = record::decode_index_header(&head)
            .map_err(|e| format!("the block at {offset} is no index block: {e}"))?;
        let end = offset.saturating_add(record::index_len(log2));
        if end > self.commit_end {
            return Err(format!(
                "the index block at {offset} ends at {end}, past commit_end {}",
                self.commit_end
            ));
        }
        Ok(IndexLoc { offset, log2 })
    }
}

/// Passes every used slot of the index at `idx` to `f`, as
/// `(bucket, slot value)`, reading the table a chunk at a time.
pub fn for_each_used_slot(
    raw: &RawFile,
    idx: IndexLoc,
    mut f: impl FnMut(u64, u64),
) -> anyhow::Result<()> {
    let per_chunk = CHUNK / 8;
    let mut first = 0;
    while first < idx.capacity() {
        let n = per_chunk.min(idx.capacity() - first);
        let bytes = raw
            .read(idx.slot_offset(first), n * 8)?
            .ok_or_else(|| anyhow!("{}: the index runs past the end", raw.path().display()))?;
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            let s = u64::from_le_bytes(w.try_into().unwrap_or_default());
            if s != slot::EMPTY {
                f(first + i as u64, s);
            }
        }
        first += n;
    }
    Ok(())
}

/// One block of the log, as [`Walk`] finds it.
#[derive(Clone, Debug)]
pub enum Block {
    /// A put or delete record that verifies.
    Record {
        /// Its offset.
        offset: u64,
        /// Put or delete.
        kind: Kind,
        /// Its expiry (puts only).
        expiry: Expiry,
        /// The key.
        key: Vec<u8>,
        /// The value (empty for a delete).
        value: Vec<u8>,
    },
    /// A commit marker that verifies.
    Commit {
        /// Its offset.
        offset: u64,
        /// Its fields.
        commit: Commit,
    },
    /// An index block whose header verifies.
    Index {
        /// Its offset.
        offset: u64,
        /// Its capacity, as a power of two.
        log2: u32,
    },
    /// Bytes that are no valid block, up to the next block that verifies.
    Damaged {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
    },
}

/// Walks the log from the header page to a limit, block by block; where a
/// block does not verify, it moves on 8 bytes at a time until one does,
/// and reports the bytes in between as [`Block::Damaged`].
#[derive(Debug)]
pub struct Walk<'a> {
    window: Window<'a>,
    pos: u64,
    limit: u64,
    stop_at_zeros: bool,
    bad_from: Option<u64>,
    /// Whether the run from `bad_from` is zeros only, so far.
    bad_is_zeros: bool,
    queued: Option<Block>,
    done: bool,
}

impl<'a> Walk<'a> {
    /// A walk of `raw`'s log below `limit`. With `stop_at_zeros`, zeros
    /// that run to `limit` end the walk quietly: that is where the log ends
    /// when `commit_end` cannot be trusted. Zeros followed by a block that
    /// verifies are damage, reported like any other.
    pub fn new(raw: &'a RawFile, limit: u64, stop_at_zeros: bool) -> Walk<'a> {
        Walk {
            window: Window::new(raw),
            pos: HEADER_SIZE,
            limit: limit.min(raw.len()),
            stop_at_zeros,
            bad_from: None,
            bad_is_zeros: false,
            queued: None,
            done: false,
        }
    }

    /// The block at `pos` with its length, if one verifies there.
    fn block_at(&mut self, pos: u64) -> anyhow::Result<Option<(Block, u64)>> {
        let limit = self.limit;
        let Some(head) = self.window.bytes(pos, record::PREFIX_LEN as u64, limit)? else {
            return Ok(None);
        };
        let Ok(prefix) = Prefix::decode(head) else {
            return Ok(None);
        };
        let len = prefix.block_len();
        if pos.checked_add(len).is_none_or(|end| end > limit) {
            return Ok(None);
        }
        let block = match prefix.kind {
            Kind::Put | Kind::Delete => self
                .window
                .record_at(pos, limit, |r| Block::Record {
                    offset: pos,
                    kind: r.kind,
                    expiry: r.expiry,
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                })?
                .ok(),
            Kind::Commit => self
                .window
                .bytes(pos, record::COMMIT_LEN, limit)?
                .and_then(|b| Commit::decode(b).ok())
                .map(|commit| Block::Commit {
                    offset: pos,
                    commit,
                }),
            Kind::Index => self
                .window
                .bytes(pos, record::INDEX_HEADER_LEN as u64, limit)?
                .and_then(|b| record::decode_index_header(b).ok())
                .map(|log2| Block::Index { offset: pos, log2 }),
        };
        Ok(block.map(|b| (b, len)))
    }
}

impl Iterator for Walk<'_> {
    type Item = anyhow::Result<Block>;

    fn next(&mut self) -> Option<anyhow::Result<Block>> {
        if let Some(block) = self.queued.take() {
            return Some(Ok(block));
        }
        while !self.done {
            let pos = self.pos;
            if pos.saturating_add(record::PREFIX_LEN as u64) > self.limit {
                self.done = true;
                let start = self.bad_from.take()?;
                if self.stop_at_zeros && self.bad_is_zeros {
                    return None;
                }
                return Some(Ok(Block::Damaged {
                    offset: start,
                    len: self.limit.max(pos) - start,
                }));
            }
            if self.stop_at_zeros {
                match self.window.bytes(pos, carboy_format::ALIGN, self.limit) {
                    Ok(Some(word)) if word.iter().all(|&b| b == 0) => {
                        if self.bad_from.is_none() {
                            self.bad_from = Some(pos);
                            self.bad_is_zeros = true;
                        }
                        self.pos = pos + carboy_format::ALIGN;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.block_at(pos) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(Some((block, len))) => {
                    self.pos = pos + len;
                    if let Some(start) = self.bad_from.take() {
                        self.queued = Some(block);
                        return Some(Ok(Block::Damaged {
                            offset: start,
                            len: pos - start,
                        }));
                    }
                    return Some(Ok(block));
                }
                Ok(None) => {
                    if self.bad_from.is_none() {
                        self.bad_from = Some(pos);
                    }
                    self.bad_is_zeros = false;
                    self.pos = pos + carboy_format::ALIGN;
                }
            }
        }
        None
    }
}

/// The end of the log to walk, from the header page's `commit_end` when it
/// is valid; otherwise the file's end (walked until zeros), with the reason
/// `commit_end` was not used.
pub fn log_limit(raw: &RawFile, page: &[u8]) -> (u64, bool, Option<String>) {
    match LiveWords::read(page).map(|w| w.check_commit_end(raw.len())) {
        Some(Ok(end)) => (end, false, None),
        Some(Err(why)) => (
            raw.len(),
            true,
            Some(format!("commit_end is invalid: {why}")),
        ),
        None => (
            raw.len(),
            true,
            Some("the header page is cut short".to_string()),
        ),
    }
}
