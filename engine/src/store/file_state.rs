//! One opened data file: its mapping, its header, and checked reads of its
//! records and index.

use std::fs::{File, FileType, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use carboy_format::header::{self, HEADER_SIZE, Header, live};
use carboy_format::record::{self, Prefix, Record};

use crate::error::{Error, Result};
use crate::file::MappedFile;

/// An opened data file.
#[derive(Debug)]
pub(crate) struct FileState {
    pub(crate) map: MappedFile,
    pub(crate) header: Header,
    /// (device, inode) of the data file.
    pub(crate) dev_ino: (u64, u64),
    /// The last index block this process verified, packed as
    /// `(offset / 8) << 8 | log2` (0: none). Index blocks never move or
    /// change size, so a verified one stays valid for as long as
    /// `index_offset` names it.
    pub(crate) index_cache: AtomicU64,
    /// The bucket hash, keyed with this file's `hash_key`.
    hasher: carboy_format::KeyHasher,
    /// The record checksum, its implementation chosen once.
    crc: record::Crc,
}

/// The current index block: where it is and how big.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexView {
    pub(crate) offset: u64,
    pub(crate) log2: u32,
}

impl IndexView {
    pub(crate) fn capacity(&self) -> u64 {
        1u64 << self.log2
    }

    pub(crate) fn len(&self) -> u64 {
        record::index_len(self.log2)
    }

    pub(crate) fn slot_offset(&self, bucket: u64) -> u64 {
        self.offset + record::INDEX_HEADER_LEN as u64 + bucket * 8
    }
}

/// Live words read from a header page copy, before the file is mapped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LiveWords {
    pub(crate) commit_end: u64,
    pub(crate) alloc_end: u64,
    pub(crate) index_offset: u64,
}

/// Refuses a path that names an existing FIFO, socket, device or
/// directory (following symbolic links) with [`Error::NotRegularFile`],
/// before anything opens it: opening a FIFO for reading blocks until a
/// writer comes, and opening a device can act on it. A path that does not
/// exist, or cannot be looked at, passes: the open that follows reports it.
pub(crate) fn refuse_special(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) => check_regular(&meta.file_type(), path),
        Err(_) => Ok(()),
    }
}

/// Opens `path` with `options` and `O_NONBLOCK`, so that a FIFO put at the
/// path after [`refuse_special`] looked cannot block the open; pass the
/// file to [`settle_regular`] next.
pub(crate) fn open_nonblocking(options: &OpenOptions, path: &Path) -> std::io::Result<File> {
    let mut options = options.clone();
    options.custom_flags(libc::O_NONBLOCK);
    options.open(path)
}

/// Checks that a file [`open_nonblocking`] opened is a regular file, and
/// clears `O_NONBLOCK` from it again.
pub(crate) fn settle_regular(file: File, path: &Path) -> Result<File> {
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    check_regular(&meta.file_type(), path)?;
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| Error::io("fcntl", path, e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| Error::io("fcntl", path, e.into()))?;
    Ok(file)
}

/// Opens the regular file at `path` for reading only, refusing a FIFO,
/// socket, device or directory without blocking.
pub(crate) fn open_for_reading(path: &Path) -> Result<File> {
    open_regular(File::options().read(true), path)
}

/// Opens the regular file at `path` with `options`, refusing a FIFO,
/// socket, device or directory without blocking; a missing file is
/// [`Error::NotFound`].
fn open_regular(options: &OpenOptions, path: &Path) -> Result<File> {
    refuse_special(path)?;
    let file = open_nonblocking(options, path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            Error::io("open", path, e)
        }
    })?;
    settle_regular(file, path)
}

/// [`Error::NotRegularFile`] unless `kind` is a regular file's.
fn check_regular(kind: &FileType, path: &Path) -> Result<()> {
    if kind.is_file() {
        return Ok(());
    }
    let kind = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "an unknown kind of file"
    };
    Err(Error::NotRegularFile {
        path: path.to_path_buf(),
        kind,
    })
}

impl FileState {
    /// The state of a mapped file whose header is `header`.
    pub(crate) fn new(map: MappedFile, header: Header, dev_ino: (u64, u64)) -> FileState {
        FileState {
            map,
            hasher: carboy_format::KeyHasher::new(&header.hash_key),
            header,
            dev_ino,
            index_cache: AtomicU64::new(0),
            crc: record::Crc::new(),
        }
    }

    /// Opens the data file at `path` for reading and writing, verifies its
    /// header and maps it.
    ///
    /// Returns the state and whether the live words are plausible (when they
    /// are not, the caller rebuilds the index before using it). With
    /// `refuse_cut`, a file that another program truncated below its
    /// committed end during this boot is refused with
    /// [`Error::FileTruncated`] before it is mapped, rather than reported
    /// implausible (a rebuild would silently drop what was cut).
    ///
    /// Anything but a regular file (a FIFO, socket or device) is refused
    /// with [`Error::NotRegularFile`] without blocking: see
    /// [`refuse_special`] and [`open_nonblocking`].
    pub(crate) fn open(path: &Path, refuse_cut: bool) -> Result<(FileState, bool)> {
        let file = open_regular(File::options().read(true).write(true), path)?;
        Self::from_file(file, path, refuse_cut)
    }

    /// Opens the data file at `path` to look at it only: never written.
    /// Returns the state and whether its live words are plausible.
    pub(crate) fn open_read_only(path: &Path) -> Result<(FileState, bool)> {
        Self::from_file_read_only(open_for_reading(path)?, path)
    }

    /// [`open`](Self::open) for a file already opened.
    pub(crate) fn from_file(
        file: File,
        path: &Path,
        refuse_cut: bool,
    ) -> Result<(FileState, bool)> {
        Self::from_file_as(file, path, refuse_cut, true)
    }

    /// [`from_file`](Self::from_file) for a file opened only for reading,
    /// mapped read-only ([`MappedFile::map_read_only`]): for a pass that
    /// only reads bytes of the log (salvage). Such a state never writes:
    /// live words are never stored, and index slots cannot be read (their
    /// atomics are refused), so it must not serve the store.
    pub(crate) fn from_file_read_only(file: File, path: &Path) -> Result<(FileState, bool)> {
        Self::from_file_as(file, path, false, false)
    }

    fn from_file_as(
        file: File,
        path: &Path,
        refuse_cut: bool,
        writable: bool,
    ) -> Result<(FileState, bool)> {
        let stat = || file.metadata().map_err(|e| Error::io("stat", path, e));
        check_regular(&stat()?.file_type(), path)?;
        let mut page = vec![0u8; HEADER_SIZE.min(stat()?.len()) as usize];
        file.read_exact_at(&mut page, 0)
            .map_err(|e| Error::io("read header of", path, e))?;
        // The length is taken after the live words were read: a writer
        // extends the file before it commits past its old end, so the
        // length seen now covers every committed end read before.
        let meta = stat()?;
        let len = meta.len();
        let header = Header::decode(&page).map_err(|source| Error::NotCarboy {
            path: path.to_path_buf(),
            source,
        })?;
        if len < HEADER_SIZE {
            return Err(Error::NotCarboy {
                path: path.to_path_buf(),
                source: carboy_format::FormatError::Truncated {
                    what: "header page",
                    needed: HEADER_SIZE,
                    available: len,
                },
            });
        }
        // The header page is complete (decode checked its length), so every
        // live word can be read from the copy.
        let word =
            |off: usize| u64::from_le_bytes(page[off..off + 8].try_into().unwrap_or_default());
        let words = LiveWords {
            commit_end: word(live::COMMIT_END),
            alloc_end: word(live::ALLOC_END),
            index_offset: word(live::INDEX_OFFSET),
        };
        // A truncation leaves its signature in the live words: the log was
        // committed (and the file allocated) past what is left. In the boot
        // that wrote them the page cache is coherent, so nothing else makes
        // that happen; after a reboot a stale length is a crash artifact and
        // the rebuild handles it.
        let cut = words.commit_end > len
            && words.commit_end <= words.alloc_end
            && words.commit_end.is_multiple_of(8);
        if refuse_cut
            && cut
            && super::boot::boot_id() == Some((word(live::BOOT_ID_LO), word(live::BOOT_ID_HI)))
        {
            return Err(Error::FileTruncated {
                path: path.to_path_buf(),
                len,
                expected: words.commit_end,
            });
        }
        let plausible = words.commit_end >= HEADER_SIZE
            && words.commit_end <= len
            && words.alloc_end <= len
            && words.index_offset >= HEADER_SIZE
            && words.index_offset < words.commit_end
            && words.commit_end.is_multiple_of(8);
        let map = if writable {
            MappedFile::map(file, path, len)
        } else {
            MappedFile::map_read_only(file, path, len)
        }
        .map_err(|e| Error::io("mmap", path, e))?;
        let state = FileState::new(map, header, (meta.dev(), meta.ino()));
        let plausible = plausible && state.index().is_ok();
        Ok((state, plausible))
    }

    pub(crate) fn path(&self) -> &Path {
        self.map.path()
    }

    pub(crate) fn load(&self, word: usize) -> u64 {
        self.map.load(word)
    }

    pub(crate) fn store(&self, word: usize, value: u64) {
        self.map.store(word, value)
    }

    pub(crate) fn commit_end(&self) -> u64 {
        self.load(live::COMMIT_END)
    }

    /// The open file's metadata (`fstat`).
    pub(crate) fn metadata(&self) -> Result<std::fs::Metadata> {
        self.map
            .file()
            .metadata()
            .map_err(|e| Error::io("stat", self.path(), e))
    }

    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash(key)
    }

    pub(crate) fn corruption(&self, offset: u64, detail: impl ToString) -> Error {
        Error::corruption(self.path(), offset, detail)
    }

    /// The current index block, verified.
    pub(crate) fn index(&self) -> Result<IndexView> {
        let offset = self.load(live::INDEX_OFFSET);
        let cached = self.index_cache.load(Ordering::Relaxed);
        if cached != 0 && (cached >> 8) << 3 == offset {
            return Ok(IndexView {
                offset,
                log2: (cached & 0xFF) as u32,
            });
        }
        let bound = self.commit_end();
        let view = self.index_at(offset, bound)?;
        self.index_cache.store(
            ((offset >> 3) << 8) | u64::from(view.log2),
            Ordering::Relaxed,
        );
        Ok(view)
    }

    /// The index block at `offset`, verified against `bound`.
    pub(crate) fn index_at(&self, offset: u64, bound: u64) -> Result<IndexView> {
        if offset < HEADER_SIZE || !offset.is_multiple_of(8) {
            return Err(self.corruption(
                header::live::INDEX_OFFSET as u64,
                format!("index_offset {offset} is not an aligned offset in the log"),
            ));
        }
        let head = self
            .map
            .bytes(offset, record::INDEX_HEADER_LEN as u64, bound)
            .ok_or_else(|| {
                self.corruption(
                    offset,
                    format!("index block lies past the committed end {bound}"),
                )
            })?;
        let log2 = record::decode_index_header(head).map_err(|e| self.corruption(offset, e))?;
        let view = IndexView { offset, log2 };
        if offset.checked_add(view.len()).is_none_or(|end| end > bound) {
            return Err(self.corruption(offset, "index block extends past the committed end"));
        }
        Ok(view)
    }

    /// Reads and verifies the put or delete record at `offset`, which must
    /// lie entirely below `bound`.
    #[inline]
    pub(crate) fn record(&self, offset: u64, bound: u64) -> Result<Record<'_>> {
        let Some(prefix) = self.map.bytes(offset, record::PREFIX_LEN as u64, bound) else {
            return Err(self.past(offset, bound, "record lies past the end"));
        };
        let p = match Prefix::decode(prefix) {
            Ok(p) => p,
            Err(e) => return Err(self.undecodable(offset, e)),
        };
        let Some(bytes) = self.map.bytes(offset, p.covered_len(), bound) else {
            return Err(self.past(offset, bound, "record runs past the end"));
        };
        match record::decode_with_prefix_using(p, bytes, &self.crc) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.undecodable(offset, e)),
        }
    }

    /// "`what` {bound}" as corruption at `offset` (out of line: the read
    /// path only builds errors for damaged files).
    #[cold]
    #[inline(never)]
    fn past(&self, offset: u64, bound: u64, what: &str) -> Error {
        self.corruption(offset, format!("{what} {bound}"))
    }

    /// A block that does not decode, as corruption at `offset`.
    #[cold]
    #[inline(never)]
    fn undecodable(&self, offset: u64, e: carboy_format::FormatError) -> Error {
        self.corruption(offset, e)
    }

    /// The key of the put or delete record at `offset`, below `bound`,
    /// without checking the record's CRC: for a record that was verified
    /// before (bytes below the committed end do not change). Every length
    /// is still checked.
    pub(crate) fn key_at(&self, offset: u64, bound: u64) -> Result<&[u8]> {
        let prefix = self
            .map
            .bytes(offset, record::PREFIX_LEN as u64, bound)
            .ok_or_else(|| self.corruption(offset, format!("record lies past the end {bound}")))?;
        let p = Prefix::decode(prefix).map_err(|e| self.corruption(offset, e))?;
        if !matches!(p.kind, record::Kind::Put | record::Kind::Delete) {
            return Err(self.corruption(offset, "expected a put or delete record"));
        }
        let expiry = if p.flags & record::FLAG_EXPIRES != 0 {
            8
        } else {
            0
        };
        let at = offset + record::PREFIX_LEN as u64 + expiry;
        self.map
            .bytes(at, u64::from(p.key_len), bound)
            .ok_or_else(|| self.corruption(offset, format!("record runs past the end {bound}")))
    }

    /// Raw bytes of the whole block at `offset` (for copying verbatim).
    pub(crate) fn block_bytes(&self, offset: u64, len: u64, bound: u64) -> Result<&[u8]> {
        self.map
            .bytes(offset, len, bound)
            .ok_or_else(|| self.corruption(offset, "block runs past the end"))
    }

    /// The prefix of the block at `offset` (below `bound`): its kind and,
    /// through [`Prefix::block_len`], where the next block starts. What
    /// every walk over the log's blocks reads first.
    pub(crate) fn prefix(&self, offset: u64, bound: u64) -> Result<Prefix> {
        let head = self.block_bytes(offset, record::PREFIX_LEN as u64, bound)?;
        Prefix::decode(head).map_err(|e| self.corruption(offset, e))
    }
}
