use std::fmt;

/// Why a byte range is not a valid carboy structure.
///
/// Offsets in these errors are relative to the start of the structure being
/// decoded; the engine adds the file path and absolute offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes do not start with the expected magic number: this is not a
    /// carboy file of the expected kind.
    #[error("not a carboy {what}: magic number is {found}, expected {expected}")]
    BadMagic {
        /// Which structure was expected ("data file", "lock file").
        what: &'static str,
        /// The bytes found, hex-encoded.
        found: Hex,
        /// The bytes expected, hex-encoded.
        expected: Hex,
    },
    /// The file was written by a format version this build cannot read.
    #[error(
        "file was written by carboy format v{found}; this build reads up to v{supported}: \
         upgrade carboy to open it"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Which structure failed ("header", "record", ...).
        what: &'static str,
        /// The CRC32 stored in the structure.
        stored: u32,
        /// The CRC32 computed over the covered bytes.
        computed: u32,
    },
    /// The structure extends past the end of the available bytes.
    #[error("{what} truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Which structure was cut short.
        what: &'static str,
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that were available.
        available: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field}: {value} ({reason})")]
    InvalidField {
        /// The field's name as FORMAT.md spells it.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What the format requires.
        reason: &'static str,
    },
}

/// Bytes shown as hex in error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
