//! New data files and streaming passes: a file built beside its path
//! and renamed into place ([`NewFile`], [`create_file_with`]), temporary
//! paths and their cleanup, directory syncs, and releasing the pages a
//! pass over a mapping leaves behind ([`ReleaseBehind`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use carboy_format::FORMAT_VERSION;
use carboy_format::header::{HEADER_SIZE, Header, live};
use carboy_format::record::{self, Commit};

use super::boot;
use super::file_state::{FileState, IndexView};
use super::index::{self, Counters};
use super::options::Options;
use crate::error::{Error, Result};
use crate::file::MappedFile;

fn random_bytes() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        op: "read random bytes",
        path: PathBuf::from("getrandom"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

/// A temporary path beside `path`, unique to this process and call.
pub(crate) fn temp_path(path: &Path, what: &str) -> Result<PathBuf> {
    let tag = u64::from_le_bytes(random_bytes()?[..8].try_into().unwrap_or_default());
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{what}-{}-{tag:016x}", std::process::id()));
    Ok(path.with_file_name(name))
}

/// Removes temporary files that a process killed while creating or
/// compacting `path` left beside it. Called with the exclusive lock held:
/// only a lock holder makes such files, so any that exist are stale.
pub(crate) fn remove_stale_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let name = name.to_string_lossy();
    let prefixes = [format!(".{name}.new-"), format!(".{name}.compact-")];
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let stale = prefixes.iter().any(|p| {
            file.strip_prefix(p.as_str()).is_some_and(|rest| {
                // "<pid>-<16 hex digits>", as temp_path makes them.
                rest.split_once('-').is_some_and(|(pid, tag)| {
                    pid.bytes().all(|b| b.is_ascii_digit())
                        && tag.len() == 16
                        && tag.bytes().all(|b| b.is_ascii_hexdigit())
                })
            })
        });
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Syncs the directory holding `path`, so a rename into it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::file::sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates a data file at `path`, atomically: [`NewFile`] builds it beside
/// `path`, `fill` appends its records, and it is renamed into place. The
/// caller holds the exclusive lock (or owns `path` otherwise).
pub(crate) fn create_file_with<T>(
    path: &Path,
    name: &[u8],
    generation: u64,
    opts: &Options,
    fill: impl FnOnce(&mut NewFile) -> Result<T>,
) -> Result<T> {
    let tmp = temp_path(path, "new")?;
    let result = NewFile::create(&tmp, name, generation, opts)
        .and_then(|mut out| {
            let filled = fill(&mut out)?;
            out.finish()?;
            Ok(filled)
        })
        .and_then(|filled| {
            crate::file::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
            sync_dir(path)?;
            Ok(filled)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn create_file(path: &Path, name: &[u8], generation: u64, opts: &Options) -> Result<()> {
    create_file_with(path, name, generation, opts, |_| Ok(()))
}

/// How many bytes [`NewFile`] gathers before it writes them, and how far
/// a streaming pass gets ahead of the pages it releases
/// ([`MappedFile::release`]): the memory a pass over a file of any size
/// costs, besides the structures it needs.
pub(crate) const STREAM_CHUNK: u64 = 1 << 20;

/// The pages a streaming pass over a mapping has left behind, released
/// ([`MappedFile::release`]) a [`STREAM_CHUNK`] at a time.
pub(crate) struct ReleaseBehind {
    released: u64,
}

impl ReleaseBehind {
    /// A pass that starts at `from`.
    pub(crate) fn new(from: u64) -> ReleaseBehind {
        ReleaseBehind { released: from }
    }

    /// The pass has reached `pos` of `map`: releases what lies behind it
    /// once that is a chunk.
    pub(crate) fn reached(&mut self, map: &MappedFile, pos: u64) {
        if pos - self.released >= STREAM_CHUNK {
            map.release(self.released, pos);
            self.released = pos;
        }
    }

    /// The pass ended at `end`: releases the rest.
    pub(crate) fn finish(self, map: &MappedFile, end: u64) {
        map.release(self.released, end);
    }
}

/// A data file being built, streaming: the header page, then put records
/// (position-independent, copied verbatim) appended in order with
/// `pwrite` as one transaction, then, in [`finish`](Self::finish), its
/// commit marker and a fresh index sized for the records.
///
/// The records never go through a mapping while they are written, so
/// building a file costs this process [`STREAM_CHUNK`] bytes of buffer,
/// not the file's size; only the index is built in a mapping (its slots
/// are written at random), and `finish` drops the record pages it reads
/// back to index them as it goes. A write that fails (a full disk) is an
/// error from `pwrite`, never a SIGBUS. The file is not visible to anyone
/// until the caller renames it into place; on an error the caller removes
/// it.
pub(crate) struct NewFile {
    file: File,
    path: PathBuf,
    header: Header,
    expected_keys: u64,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Bytes not yet written, which belong at `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    /// Where the next record goes.
    end: u64,
    records: u64,
    records_crc: crc32fast::Hasher,
}

impl NewFile {
    /// Creates the file at `path` (which must not exist) with a fresh
    /// header: new hash key and file id, `generation`, `name`.
    pub(crate) fn create(
        path: &Path,
        name: &[u8],
        generation: u64,
        opts: &Options,
    ) -> Result<NewFile> {
        let header = Header {
            version: FORMAT_VERSION,
            hash_key: random_bytes()?,
            file_id: random_bytes()?,
            generation,
            created_ms: opts.clock.now_unix_ms(),
            name: name.to_vec(),
        };
        let head = header.encode().map_err(|e| Error::InvalidOption {
            name: "namespace name",
            reason: e.to_string(),
        })?;
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        let mut buf = Vec::with_capacity(STREAM_CHUNK as usize);
        buf.extend_from_slice(&head);
        // The live words and the rest of the header page start zeroed.
        buf.resize(HEADER_SIZE as usize, 0);
        Ok(NewFile {
            file,
            path: path.to_path_buf(),
            header,
            expected_keys: opts.expected_keys,
            clock: std::sync::Arc::clone(&opts.clock),
            buf,
            buf_at: 0,
            end: HEADER_SIZE,
            records: 0,
            records_crc: crc32fast::Hasher::new(),
        })
    }

    /// Appends one put record (a whole, verified block, copied verbatim).
    pub(crate) fn append(&mut self, block: &[u8]) -> Result<()> {
        let crc = block
            .get(..4)
            .ok_or_else(|| Error::corruption(&self.path, self.end, "record block too short"))?;
        self.records_crc.update(crc);
        self.push(block)?;
        self.records += 1;
        Ok(())
    }

    /// Queues `bytes` for the end of the file, writing out what is queued
    /// when the buffer is full (and large blocks directly).
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > STREAM_CHUNK as usize {
            self.flush()?;
        }
        if bytes.len() >= STREAM_CHUNK as usize {
            self.file
                .write_all_at(bytes, self.end)
                .map_err(|e| Error::io("write", &self.path, e))?;
            self.buf_at = self.end + bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.buf_at)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.buf_at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the commit marker and the index, publishes every record in
    /// the index, sets the live words and syncs the file.
    pub(crate) fn finish(mut self) -> Result<()> {
        let path = self.path.clone();
        let now = self.clock.now_unix_ms();
        let records_end = self.end;
        let marker_len = if self.records == 0 {
            0
        } else {
            let marker = Commit {
                txn_id: 1,
                txn_start: HEADER_SIZE,
                unix_ms: now,
                records: u32::try_from(self.records).map_err(|_| {
                    Error::corruption(&path, records_end, "more than 2^32 records in one file")
                })?,
                records_crc: self.records_crc.clone().finalize(),
            };
            let mut buf = [0u8; record::COMMIT_LEN as usize];
            marker
                .encode(&mut buf)
                .map_err(|e| Error::corruption(&path, records_end, e))?;
            self.push(&buf)?;
            record::COMMIT_LEN
        };
        // A new file's index is sized for the keys it is expected to get (at
        // most half full); a compacted one's for the keys it holds, as full as
        // the growth rule allows (3/4), since compaction is about size.
        let log2 = if self.records == 0 {
            index::log2_for(self.expected_keys)
        } else {
            index::log2_for_full(self.records)
        };
        let idx = IndexView {
            offset: self.end,
            log2,
        };
        let index_header = record::encode_index_header(log2)
            .map_err(|e| Error::corruption(&path, idx.offset, e))?;
        self.push(&index_header)?;
        self.flush()?;
        // The slots: allocated zeros (empty), filled through a mapping.
        let end = idx.offset + idx.len();
        let alloc_end = end.next_multiple_of(1 << 16);
        crate::file::allocate(&self.file, self.end, alloc_end)
            .map_err(|e| Error::io("extend (fallocate)", &path, e))?;
        let map = MappedFile::map(self.file, &path, alloc_end)
            .map_err(|e| Error::io("mmap", &path, e))?;
        let fs = FileState::new(map, self.header, (0, 0));
        // Every record, read back in log order (verified again: the bytes
        // went through the kernel since they were checked), with the pages
        // behind released.
        let mut counters = Counters::default();
        let mut pos = HEADER_SIZE;
        let mut behind = ReleaseBehind::new(HEADER_SIZE);
        while pos < records_end {
            let rec = fs.record(pos, records_end)?;
            index::publish_record(
                &fs,
                idx,
                pos,
                &rec,
                fs.hash(rec.key),
                idx.offset,
                &mut counters,
            )?;
            pos += rec.len;
            behind.reached(&fs.map, pos);
        }
        behind.finish(&fs.map, records_end);
        fs.store(live::INDEX_OFFSET, idx.offset);
        fs.store(live::COMMIT_END, end);
        fs.store(live::INDEXED_END, end);
        fs.store(live::TXN_ID, u64::from(marker_len > 0));
        fs.store(live::SYNCED_END, idx.offset);
        fs.store(live::ALLOC_END, alloc_end);
        fs.store(live::LAST_COMMIT_MS, now);
        fs.store(live::LIVE_KEYS, counters.live_keys.max(0) as u64);
        fs.store(live::USED_SLOTS, counters.used_slots.max(0) as u64);
        fs.store(live::EXPIRING_KEYS, counters.expiring_keys.max(0) as u64);
        fs.store(live::DEAD_BYTES, marker_len);
        super::index::set_slot_sum(&fs, counters.slot_sum, u64::from(marker_len > 0));
        if let Some((lo, hi)) = boot::boot_id() {
            fs.store(live::BOOT_ID_LO, lo);
            fs.store(live::BOOT_ID_HI, hi);
        }
        fs.map.sync().map_err(|e| Error::io("fsync", &path, e))?;
        Ok(())
    }
}
