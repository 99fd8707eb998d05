//! Byte-level surgery on data files: flipping a byte, zeroing a range,
//! cutting the file,
//! reading and writing header words, and walking the committed log.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use carboy_format::header::{HEADER_SIZE, live};
use carboy_format::record::{Kind, Prefix};

/// XORs the byte at `offset` of the file at `path` with `mask`.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset)
        .unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
    b[0] ^= mask;
    file.write_all_at(&b, offset)
        .unwrap_or_else(|e| panic!("write {} at {offset}: {e}", path.display()));
}

/// Overwrites `len` bytes at `offset` of the file at `path` with zeros.
pub fn zero_range(path: &Path, offset: u64, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&vec![0; len as usize], offset))
        .unwrap_or_else(|e| panic!("zero {} at {offset}: {e}", path.display()));
}

/// Cuts the file at `path` to `len` bytes.
pub fn truncate_file(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {} to {len}: {e}", path.display()));
}

/// Reads the live word at `word` (an offset in the header page, such as
/// `carboy_format::header::live::COMMIT_END`) straight from the file.
pub fn read_live_word(path: &Path, word: usize) -> u64 {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, word as u64)
        .unwrap_or_else(|e| panic!("read {} at {word}: {e}", path.display()));
    u64::from_le_bytes(b)
}

/// Overwrites the live word at `word` in the file at `path` with `value`.
pub fn write_live_word(path: &Path, word: usize, value: u64) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&value.to_le_bytes(), word as u64))
        .unwrap_or_else(|e| panic!("write {} at {word}: {e}", path.display()));
}

/// One block of a data file's committed log, as found by [`log_blocks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBlock {
    /// Offset of the block in the file.
    pub offset: u64,
    /// What it is.
    pub kind: Kind,
    /// Bytes its CRC covers, counted from the block start (the CRC field
    /// itself, bytes 0..4, is checked against them too).
    pub covered: u64,
    /// Length of the whole block, padding (and index slots) included.
    pub len: u64,
}

/// Every block of the committed log of the (undamaged, closed) data file at
/// `path`, walked by prefix from the header page to `commit_end`.
pub fn log_blocks(path: &Path) -> Vec<LogBlock> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let end = read_live_word(path, live::COMMIT_END);
    let mut out = Vec::new();
    let mut pos = HEADER_SIZE;
    while pos < end {
        let at = pos as usize;
        let prefix = bytes
            .get(at..at + carboy_format::record::PREFIX_LEN)
            .and_then(|b| Prefix::decode(b).ok())
            .unwrap_or_else(|| panic!("{}: no valid block at {pos}", path.display()));
        let block = LogBlock {
            offset: pos,
            kind: prefix.kind,
            covered: prefix.covered_len(),
            len: prefix.block_len(),
        };
        out.push(block);
        pos += block.len;
    }
    assert_eq!(pos, end, "{}: the log overruns commit_end", path.display());
    out
}
