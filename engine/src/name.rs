//! Mapping of namespace names to file names inside a data directory.
//!
//! Every namespace lives in one file named after it. Namespace names are
//! arbitrary strings, so they are encoded before they are used as file
//! names. The encoding is chosen so that the result is:
//!
//! * **injective** for names that are not hashed (see below): two different
//!   names never give the same file name;
//! * **safe on any filesystem**, including case-insensitive ones: the stem
//!   only contains lowercase ASCII letters, digits, `-`, `_` and (for hashed
//!   names only) `~`, followed by the fixed extension [`EXTENSION`];
//! * **confined to the data directory**: the result never contains `/`, `\`
//!   or NUL, is never empty, `.` or `..`, and is at most 207 bytes long (200
//!   for the stem, 7 for `.carboy`), below the usual 255-byte limit on a
//!   file name.
//!
//! # Scheme
//!
//! The name is taken as its UTF-8 bytes. Bytes in `[a-z0-9-]` are kept as
//! they are; every other byte (uppercase letters, `_`, `.`, `/`, NUL, bytes
//! of non-ASCII characters, …) becomes `_` followed by two lowercase hex
//! digits. Because `_` is the escape character and is itself escaped, the
//! encoding is decodable, see [`decode_file_name`]. Finally `.` and
//! [`EXTENSION`] are appended.
//!
//! # Long names
//!
//! If the encoded stem would be longer than 200 bytes, the stem becomes the
//! first at most 150 bytes of the encoded stem (cut between two escapes,
//! never inside a `_xx`), then `~`, then the first 32 hex digits (128 bits)
//! of the SHA-256 of the name's UTF-8 bytes. `~` never occurs in a stem that
//! was not hashed, so hashed and non-hashed file names can never be equal.
//!
//! Hashed file names are *collision-resistant* rather than strictly
//! injective: two different long names sharing a file name would require a
//! 128-bit SHA-256 prefix collision. To guard against this anyway, the
//! engine stores the full namespace name in the file header and checks it
//! when the file is opened, so a collision is detected instead of silently
//! mixing two namespaces.

use sha2::{Digest, Sha256};

/// The extension (without the leading dot) of every namespace file.
pub const EXTENSION: &str = "carboy";

/// The longest namespace name accepted, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Longest encoded stem that is used as it is; longer stems are hashed.
const MAX_PLAIN_STEM: usize = 200;

/// Length of the encoded prefix kept in front of the hash of a long name.
const HASHED_PREFIX: usize = 150;

/// Number of hex digits of the SHA-256 kept in a hashed stem.
const HASH_HEX_DIGITS: usize = 32;

/// Separates the kept prefix from the hash in a hashed stem.
const HASH_MARK: char = '~';

/// The escape character of the encoding.
const ESCAPE: u8 = b'_';

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The two lowercase hex digits of `byte`.
pub(crate) fn hex_digits(byte: u8) -> [u8; 2] {
    [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0f)]]
}

/// Appends the two lowercase hex digits of `byte` to `out`.
fn push_hex(out: &mut String, byte: u8) {
    out.extend(hex_digits(byte).map(char::from));
}

/// Why a namespace name cannot be turned into a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is the empty string.
    #[error("namespace name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`] UTF-8 bytes.
    #[error("namespace name is {len} bytes long; the limit is 1024")]
    TooLong {
        /// Length of the refused name, in UTF-8 bytes.
        len: usize,
    },
}

/// Whether `byte` is kept as it is by the encoding.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'
}

/// Appends the encoding of one byte of the name to `out`.
fn push_encoded(out: &mut String, byte: u8) {
    if is_plain(byte) {
        out.push(char::from(byte));
    } else {
        out.push(char::from(ESCAPE));
        push_hex(out, byte);
    }
}

/// Number of bytes the encoding of `byte` takes.
fn encoded_len(byte: u8) -> usize {
    if is_plain(byte) { 1 } else { 3 }
}

/// Returns the file name (stem, `.` and [`EXTENSION`]) of the namespace
/// called `name`.
///
/// Bytes in `[a-z0-9-]` are kept and every other byte becomes `_xx` (two
/// lowercase hex digits). If the encoded stem would exceed 200 bytes it is
/// shortened to its first 150 bytes followed by `~` and 32 hex digits of the
/// SHA-256 of `name`; such hashed names are collision-resistant rather than
/// strictly injective, which is why the engine also stores the full name in
/// the file header and checks it on open (see the [module docs](self)).
///
/// # Errors
///
/// [`NameError::Empty`] if `name` is empty, and [`NameError::TooLong`] if it
/// is longer than [`MAX_NAME_BYTES`] UTF-8 bytes.
///
/// # Examples
///
/// ```
/// use carboy::name::{NameError, decode_file_name, file_name};
///
/// assert_eq!(file_name("users").unwrap(), "users.carboy");
/// assert_eq!(file_name("Users").unwrap(), "_55sers.carboy");
/// assert_eq!(file_name("a_b").unwrap(), "a_5fb.carboy");
/// assert_eq!(file_name("../etc").unwrap(), "_2e_2e_2fetc.carboy");
/// assert_eq!(file_name("").unwrap_err(), NameError::Empty);
///
/// // Names that were not hashed can be decoded again.
/// assert_eq!(decode_file_name("_55sers.carboy").as_deref(), Some("Users"));
///
/// // Very long names are shortened with a hash.
/// let long = file_name(&"x".repeat(300)).unwrap();
/// assert!(long.contains('~') && long.len() < 255);
/// ```
pub fn file_name(name: &str) -> Result<String, NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: bytes.len() });
    }

    let stem_len: usize = bytes.iter().map(|&b| encoded_len(b)).sum();
    let mut out = String::with_capacity(stem_len.min(MAX_PLAIN_STEM) + 1 + EXTENSION.len());

    if stem_len <= MAX_PLAIN_STEM {
        for &byte in bytes {
            push_encoded(&mut out, byte);
        }
    } else {
        for &byte in bytes {
            if out.len() + encoded_len(byte) > HASHED_PREFIX {
                break;
            }
            push_encoded(&mut out, byte);
        }
        out.push(HASH_MARK);
        let digest = Sha256::digest(bytes);
        for &byte in digest.iter().take(HASH_HEX_DIGITS / 2) {
            push_hex(&mut out, byte);
        }
    }

    out.push('.');
    out.push_str(EXTENSION);
    Ok(out)
}

/// Value of a lowercase hex digit, `None` for anything else (uppercase hex
/// digits included, since [`file_name`] never writes them).
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Returns the namespace name whose file is called `file`, for file names
/// that [`file_name`] produces without hashing.
///
/// Returns `None` for every string [`file_name`] cannot have produced
/// without hashing: a missing or different extension, a hashed stem (with
/// `~`), characters outside the encoding's alphabet, malformed or
/// non-canonical escapes (such as `_61` for `a`, or uppercase hex digits),
/// or bytes that are not valid UTF-8. So whenever this returns `Some(name)`,
/// `file_name(&name)` gives back exactly `file`.
///
/// # Examples
///
/// ```
/// use carboy::name::decode_file_name;
///
/// assert_eq!(decode_file_name("a_2fb.carboy").as_deref(), Some("a/b"));
/// assert_eq!(decode_file_name("a_2fb.txt"), None);
/// assert_eq!(decode_file_name("_61.carboy"), None); // `a` is never escaped
/// ```
#[must_use]
pub fn decode_file_name(file: &str) -> Option<String> {
    let stem = file.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if stem.is_empty() || stem.len() > MAX_PLAIN_STEM {
        return None;
    }

    let mut decoded = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if is_plain(first) {
            decoded.push(first);
            rest = tail;
        } else if first == ESCAPE {
            let (&hi, &lo) = (tail.first()?, tail.get(1)?);
            let byte = (hex_value(hi)? << 4) | hex_value(lo)?;
            if is_plain(byte) {
                // `file_name` never escapes such a byte.
                return None;
            }
            decoded.push(byte);
            rest = tail.get(2..)?;
        } else {
            return None;
        }
    }

    let name = String::from_utf8(decoded).ok()?;
    // Guards the promise that `file_name(&name) == file`: it holds by
    // construction, and this check keeps it true if the scheme ever changes.
    (file_name(&name).ok()? == file).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Checks everything that must hold for any produced file name.
    fn assert_safe(file: &str) {
        assert!(!file.is_empty());
        assert!(file.len() <= 255, "{file} is {} bytes", file.len());
        assert!(!file.contains('/'), "{file}");
        assert!(!file.contains('\\'), "{file}");
        assert!(!file.contains('\0'), "{file}");
        assert_ne!(file, ".");
        assert_ne!(file, "..");
        let stem = file
            .strip_suffix(".carboy")
            .unwrap_or_else(|| panic!("{file} lacks the extension"));
        assert!(!stem.is_empty());
        assert_ne!(stem, ".");
        assert_ne!(stem, "..");
        assert!(
            stem.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'_'
                || b == b'~'),
            "{file} has a character outside the alphabet"
        );
        assert_eq!(file, file.to_ascii_lowercase());
        let marks = stem.bytes().filter(|&b| b == b'~').count();
        assert!(marks <= 1, "{file}");
        if marks == 1 {
            assert!(stem.len() <= HASHED_PREFIX + 1 + HASH_HEX_DIGITS);
        } else {
            assert!(stem.len() <= MAX_PLAIN_STEM);
        }
    }

    fn encode(name: &str) -> String {
        let file = file_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_safe(&file);
        file
    }

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(encode("users"), "users.carboy");
        assert_eq!(encode("a-b-0123456789"), "a-b-0123456789.carboy");
    }

    #[test]
    fn parent_path_is_escaped() {
        let file = encode("../x");
        assert_eq!(file, "_2e_2e_2fx.carboy");
    }

    #[test]
    fn slash_is_escaped() {
        assert_eq!(encode("a/b"), "a_2fb.carboy");
        assert_eq!(encode("a\\b"), "a_5cb.carboy");
    }

    #[test]
    fn dot_and_dot_dot_are_escaped() {
        assert_eq!(encode("."), "_2e.carboy");
        assert_eq!(encode(".."), "_2e_2e.carboy");
    }

    #[test]
    fn empty_name_is_refused() {
        assert_eq!(file_name(""), Err(NameError::Empty));
        assert_eq!(NameError::Empty.to_string(), "namespace name is empty");
    }

    #[test]
    fn too_long_name_is_refused() {
        let at_limit = "a".repeat(MAX_NAME_BYTES);
        assert!(file_name(&at_limit).is_ok());
        let over = "a".repeat(MAX_NAME_BYTES + 1);
        let err = file_name(&over).unwrap_err();
        assert_eq!(err, NameError::TooLong { len: 1025 });
        assert_eq!(
            err.to_string(),
            "namespace name is 1025 bytes long; the limit is 1024"
        );
        // The limit counts bytes, not characters.
        assert_eq!(
            file_name(&"é".repeat(513)),
            Err(NameError::TooLong { len: 1026 })
        );
    }

    #[test]
    fn nul_is_escaped() {
        let file = encode("a\0b");
        assert_eq!(file, "a_00b.carboy");
        assert_eq!(decode_file_name(&file).as_deref(), Some("a\0b"));
    }

    #[test]
    fn underscore_is_escaped() {
        assert_eq!(encode("_"), "_5f.carboy");
        assert_eq!(encode("a_b"), "a_5fb.carboy");
        // The escape of `_` must not be confused with the literal text.
        assert_ne!(encode("_5f"), encode("_"));
        assert_eq!(encode("_5f"), "_5f5f.carboy");
        assert_eq!(decode_file_name("_5f5f.carboy").as_deref(), Some("_5f"));
    }

    #[test]
    fn case_is_distinguished_and_output_is_lowercase() {
        let lower = encode("abc");
        let upper = encode("ABC");
        let mixed = encode("aBc");
        assert_ne!(lower, upper);
        assert_ne!(lower, mixed);
        assert_ne!(upper, mixed);
        for file in [&lower, &upper, &mixed] {
            assert_eq!(*file, file.to_ascii_lowercase());
        }
        // Distinct even when compared case-insensitively.
        assert!(!lower.eq_ignore_ascii_case(&upper));
        assert_eq!(upper, "_41_42_43.carboy");
    }

    #[test]
    fn long_ascii_name_is_hashed() {
        let name = "x".repeat(300);
        let file = encode(&name);
        let stem = file.strip_suffix(".carboy").unwrap_or_default();
        let (prefix, hash) = stem.split_once('~').unwrap_or_default();
        assert_eq!(prefix, "x".repeat(150));
        // First 32 hex digits of `printf 'x%.0s' $(seq 300) | sha256sum`.
        assert_eq!(hash, "0d4e2ca9e9cbced7a7a5380eb29e1a37");
        assert_eq!(decode_file_name(&file), None);
        // Deterministic, and different from a name with the same prefix.
        assert_eq!(encode(&name), file);
        assert_ne!(encode(&"x".repeat(301)), file);
    }

    #[test]
    fn long_escaped_ascii_name_is_cut_at_whole_escape() {
        // 300 uppercase letters: 900 encoded bytes; 150 = 50 whole escapes.
        let file = encode(&"A".repeat(300));
        let prefix = file.split_once('~').map(|(p, _)| p).unwrap_or_default();
        assert_eq!(prefix, "_41".repeat(50));
        // Mixed widths: the cut must fall before an escape that would cross 150.
        let name = format!("{}{}", "a".repeat(149), "B".repeat(100));
        let file = encode(&name);
        let prefix = file.split_once('~').map(|(p, _)| p).unwrap_or_default();
        assert_eq!(prefix, "a".repeat(149));
    }

    #[test]
    fn long_non_ascii_names_are_hashed() {
        for unit in ["é", "日本"] {
            let name = unit.repeat(300 / unit.chars().count());
            assert_eq!(name.chars().count(), 300);
            let file = encode(&name);
            let (prefix, hash) = file
                .strip_suffix(".carboy")
                .and_then(|s| s.split_once('~'))
                .unwrap_or_default();
            assert!(prefix.len() <= 150);
            assert_eq!(prefix.len() % 3, 0, "cut inside an escape: {prefix}");
            assert_eq!(prefix.len(), 150);
            assert_eq!(hash.len(), 32);
        }
        assert_ne!(encode(&"é".repeat(300)), encode(&"日本".repeat(150)));
    }

    #[test]
    fn threshold_between_plain_and_hashed() {
        let plain = encode(&"a".repeat(200));
        assert_eq!(plain, format!("{}.carboy", "a".repeat(200)));
        assert_eq!(decode_file_name(&plain), Some("a".repeat(200)));
        assert!(encode(&"a".repeat(201)).contains('~'));
        // 66 escapes = 198 bytes, plus 2 plain = 200: not hashed.
        let name = format!("{}ab", "A".repeat(66));
        assert!(!encode(&name).contains('~'));
        let name = format!("{}abc", "A".repeat(66));
        assert!(encode(&name).contains('~'));
    }

    #[test]
    fn hashed_and_plain_never_collide() {
        // A short name cannot spell out a hashed stem, since `~` is escaped.
        let hashed = encode(&"x".repeat(300));
        let stem = hashed.strip_suffix(".carboy").unwrap_or_default();
        assert_ne!(encode(stem), hashed);
        assert!(encode("~").starts_with("_7e"));
    }

    #[test]
    fn round_trip_for_short_names() {
        let names = [
            "a",
            "users",
            "Users",
            "a/b",
            "../x",
            ".",
            "..",
            "_",
            "a_b",
            "with space",
            "tab\there",
            "nul\0byte",
            "é",
            "日本語",
            "emoji 🦀",
            "~tilde~",
            "C:\\windows",
            "CON",
            "a.carboy",
            "-",
            "0",
        ];
        for name in names {
            let file = encode(name);
            assert_eq!(decode_file_name(&file).as_deref(), Some(name), "{file}");
        }
    }

    #[test]
    fn decode_rejects_what_file_name_never_produces() {
        let bad = [
            "",
            ".carboy",
            "carboy",
            "a",
            "a.txt",
            "a.carboy.txt",
            "a.CARBOY",
            "A.carboy",
            "a.b.carboy",
            "a~0123.carboy",
            "_.carboy",
            "_4.carboy",
            "_4g.carboy",
            "_4F.carboy",
            "_61.carboy",
            "_2d.carboy",
            "_30.carboy",
            "_ff.carboy",
            "_c3.carboy",
            "a/b.carboy",
            "a\0.carboy",
            "é.carboy",
        ];
        for file in bad {
            assert_eq!(decode_file_name(file), None, "{file:?}");
        }
        let hashed = encode(&"z".repeat(500));
        assert_eq!(decode_file_name(&hashed), None);
        let too_long = format!("{}.carboy", "a".repeat(201));
        assert_eq!(decode_file_name(&too_long), None);
    }

    /// Deterministic xorshift64 generator.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    /// A random name drawn from an alphabet rich in troublesome characters.
    fn random_name(rng: &mut XorShift) -> String {
        const PIECES: &[&str] = &[
            "a", "b", "z", "0", "9", "-", "_", "_5f", ".", "..", "/", "\\", "\0", "~", " ", "A",
            "B", "Z", "é", "É", "日", "本", "🦀", "\u{7f}", "\u{ffff}", "\n", ":", "*", "%",
        ];
        let len = match rng.below(10) {
            0 => 60 + rng.below(400), // often long enough to be hashed
            _ => 1 + rng.below(12),
        };
        let mut name = String::new();
        for _ in 0..len {
            name.push_str(PIECES[rng.below(PIECES.len())]);
        }
        if name.len() > MAX_NAME_BYTES {
            let mut cut = MAX_NAME_BYTES;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        name
    }

    #[test]
    fn generated_names_are_injective_and_safe() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut hashed = 0;
        for _ in 0..5000 {
            let name = random_name(&mut rng);
            let file = encode(&name);
            assert_eq!(encode(&name), file, "not deterministic");
            if file.contains('~') {
                hashed += 1;
                assert_eq!(decode_file_name(&file), None);
            } else {
                assert_eq!(decode_file_name(&file).as_deref(), Some(name.as_str()));
            }
            // Case-insensitive filesystems: compare folded file names too.
            let key = file.to_ascii_lowercase();
            if let Some(other) = seen.insert(key, name.clone()) {
                assert_eq!(other, name, "{other:?} and {name:?} both give {file}");
            }
        }
        assert!(hashed > 100, "only {hashed} hashed names generated");
        assert!(seen.len() > 4000, "only {} distinct names", seen.len());
    }
}
