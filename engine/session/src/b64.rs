//! Beaker's base64 utilities: Python's `base64.b64encode(s, altchars)` and
//! `base64.b64decode(s, altchars, validate)`, byte for byte, on the
//! [`base64`] crate.
//!
//! Beaker encodes session payloads and nonces with these (`beaker._compat`
//! wraps them between `str` and ASCII bytes). Sessions written by Beaker
//! decode here exactly as Python decodes them, including Python's leniency:
//!
//! | call | Python 3.11 | here |
//! |---|---|---|
//! | `b64encode(s)` | standard alphabet, `=` padding, no newline | [`b64encode`]`(s, None)` |
//! | `b64encode(s, altchars)` | `+` and `/` replaced by `altchars[0]` and `altchars[1]` | [`b64encode`]`(s, Some(altchars))` |
//! | `b64decode(s)` (`validate=False`) | bytes outside the alphabet are **discarded**; decoding stops at the first complete padding; the data must be a whole number of quads once padded | [`b64decode`] |
//! | `b64decode(s, validate=True)` | `binascii.a2b_base64(s, strict_mode=True)`: any byte outside the alphabet, leading padding, data after the padding or padding inside the data is an error | [`b64decode_validated`] |
//! | `altchars` of any length but 2 | `AssertionError` (the issue text says "at least 2"; Python 3.11 asserts *exactly* 2, and under `python -O` `bytes.maketrans` rejects other lengths anyway) | [`B64Error::AltcharsLength`] |
//!
//! In both decoders the `altchars` bytes are translated to `+` and `/`
//! first (as Python's `bytes.translate` does), so `+` and `/` themselves
//! still decode; when both altchars are the same byte it reads as `/`.
//! Trailing bits of a final partial quad are ignored, as in Python 3.11
//! (`QR==` decodes to `A`).
//!
//! The checks that pick data characters out of the input and place the
//! padding mirror CPython 3.11's `binascii.a2b_base64`; the bits are
//! decoded and encoded by the [`base64`] crate. The test
//! `tests/b64.rs` checks every vector of `tests/data/b64_vectors.json`,
//! generated once from Python 3.11's `base64` module by
//! `tests/data/make_b64_vectors.py`; each error's message begins with
//! Python's.
//!
//! **One difference, by type:** these functions take bytes, as Python's do
//! for `bytes`. Python's `b64decode` also takes a `str`, and raises
//! `ValueError` when it holds non-ASCII characters; pass a Rust `&str` as
//! `s.as_bytes()`, and its non-ASCII bytes are treated like any other
//! byte outside the alphabet (discarded by [`b64decode`], an error from
//! [`b64decode_validated`]).
//!
//! ```
//! use carboy_session::b64::{b64decode, b64encode, B64Error};
//!
//! assert_eq!(b64encode(b"\xfb\xff", None)?, b"+/8=");
//! assert_eq!(b64encode(b"\xfb\xff", Some(b"-_"))?, b"-_8=");
//! assert_eq!(b64decode(b"-_8=", Some(b"-_"))?, b"\xfb\xff");
//! // validate=False: foreign bytes are discarded, as in Python.
//! assert_eq!(b64decode(b"Zm9v\nYmFy\n", None)?, b"foobar");
//! assert!(matches!(b64decode(b"Zm9vYg", None), Err(B64Error::IncorrectPadding)));
//! # Ok::<(), B64Error>(())
//! ```

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// What went wrong in [`b64encode`], [`b64decode`] or
/// [`b64decode_validated`]. The message of each variant starts with the
/// message Python's `binascii.Error` carries for the same input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum B64Error {
    /// `altchars` is not exactly two bytes long (Python: `AssertionError`).
    #[error("altchars must be exactly 2 bytes (the replacements for '+' and '/'), got {len}")]
    AltcharsLength {
        /// The length given.
        len: usize,
    },
    /// The data characters end one past a multiple of four: no encoder
    /// produces that.
    #[error(
        "Invalid base64-encoded string: number of data characters ({data_chars}) cannot be 1 more than a multiple of 4"
    )]
    InvalidLength {
        /// How many alphabet characters the input holds.
        data_chars: usize,
    },
    /// The data characters end two or three past a multiple of four
    /// without the `=` padding that completes them.
    #[error("Incorrect padding")]
    IncorrectPadding,
    /// [`b64decode_validated`] only: the input starts with `=`.
    #[error("Leading padding not allowed")]
    LeadingPadding,
    /// [`b64decode_validated`] only: a byte outside the base64 alphabet.
    #[error("Only base64 data is allowed (byte {byte:#04x} at offset {offset})")]
    NotBase64 {
        /// The byte.
        byte: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// [`b64decode_validated`] only: a data character after a `=`.
    #[error("Discontinuous padding not allowed (data character at offset {offset})")]
    DiscontinuousPadding {
        /// The offset of the data character.
        offset: usize,
    },
    /// [`b64decode_validated`] only: bytes after the padding that
    /// completes the last quad.
    #[error("Excess data after padding (from offset {offset})")]
    ExcessDataAfterPadding {
        /// The offset of the first byte after the padding.
        offset: usize,
    },
}

/// The `base64` crate's engine for the data characters that the scan
/// picked out: standard alphabet, no padding (the scan consumed it), and
/// trailing bits allowed (Python ignores them).
const DATA_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Python's `base64.b64encode(s, altchars)`: `s` in the standard base64
/// alphabet with `=` padding and no newline; with `altchars`, `+` and `/`
/// become `altchars[0]` and `altchars[1]`.
///
/// The result is bytes, as in Python: `altchars` may be any two bytes.
///
/// ```
/// use carboy_session::b64::b64encode;
///
/// assert_eq!(b64encode(b"foo", None)?, b"Zm9v");
/// assert_eq!(b64encode(b"\xfb\xef", Some(b"-_"))?, b"--8=");
/// assert!(b64encode(b"foo", Some(b"-")).is_err());
/// # Ok::<(), carboy_session::b64::B64Error>(())
/// ```
pub fn b64encode(s: &[u8], altchars: Option<&[u8]>) -> Result<Vec<u8>, B64Error> {
    let altchars = altchars.map(check_altchars).transpose()?;
    let mut encoded = DATA_ENGINE.encode(s).into_bytes();
    if let Some([plus, slash]) = altchars {
        for b in &mut encoded {
            match *b {
                b'+' => *b = plus,
                b'/' => *b = slash,
                _ => {}
            }
        }
    }
    Ok(encoded)
}

/// Python's `base64.b64decode(s, altchars)` (`validate=False`, Python's
/// default): bytes outside the alphabet are discarded, decoding stops at
/// the padding that completes the last quad (what follows is ignored),
/// and the data characters must then fill whole quads.
///
/// ```
/// use carboy_session::b64::{b64decode, B64Error};
///
/// assert_eq!(b64decode(b"Zg==", None)?, b"f");
/// assert_eq!(b64decode(b"Z g = = trailing", None)?, b"f");
/// assert_eq!(b64decode(b"Zg", None), Err(B64Error::IncorrectPadding));
/// # Ok::<(), B64Error>(())
/// ```
pub fn b64decode(s: &[u8], altchars: Option<&[u8]>) -> Result<Vec<u8>, B64Error> {
    decode(s, altchars, Mode::Lenient)
}

/// Python's `base64.b64decode(s, altchars, validate=True)`, which is
/// `binascii.a2b_base64(s, strict_mode=True)` in Python 3.11: the input
/// must be data characters then at most the padding; a foreign byte,
/// leading `=`, data after a `=` or bytes after the completing padding are
/// errors.
///
/// ```
/// use carboy_session::b64::{b64decode_validated, B64Error};
///
/// assert_eq!(b64decode_validated(b"Zm9v", None)?, b"foo");
/// assert_eq!(
///     b64decode_validated(b"Zm9v\n", None),
///     Err(B64Error::NotBase64 { byte: b'\n', offset: 4 })
/// );
/// # Ok::<(), B64Error>(())
/// ```
pub fn b64decode_validated(s: &[u8], altchars: Option<&[u8]>) -> Result<Vec<u8>, B64Error> {
    decode(s, altchars, Mode::Strict)
}

/// Python's `validate` flag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Lenient,
    Strict,
}

fn check_altchars(altchars: &[u8]) -> Result<[u8; 2], B64Error> {
    <[u8; 2]>::try_from(altchars).map_err(|_| B64Error::AltcharsLength {
        len: altchars.len(),
    })
}

fn decode(s: &[u8], altchars: Option<&[u8]>, mode: Mode) -> Result<Vec<u8>, B64Error> {
    let data = match altchars {
        Some(altchars) => {
            let [plus, slash] = check_altchars(altchars)?;
            // bytes.maketrans(altchars, b'+/'): the later mapping wins
            // when both altchars are the same byte.
            let translated: Vec<u8> = s
                .iter()
                .map(|&b| match b {
                    _ if b == slash => b'/',
                    _ if b == plus => b'+',
                    _ => b,
                })
                .collect();
            data_characters(&translated, mode)?
        }
        None => data_characters(s, mode)?,
    };
    DATA_ENGINE
        .decode(&data)
        // The scan leaves only alphabet bytes, a length that is not one
        // past a multiple of 4, and no padding: the engine accepts all of
        // those. Should it ever refuse, say so as Python would.
        .map_err(|_| B64Error::IncorrectPadding)
}

/// True for the 64 characters of the standard alphabet.
fn in_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// The data characters of `s` (the alphabet bytes up to the padding that
/// completes the last quad), with CPython 3.11 `binascii.a2b_base64`'s
/// rules for padding and foreign bytes (strict when `mode` is `Strict`).
fn data_characters(s: &[u8], mode: Mode) -> Result<Vec<u8>, B64Error> {
    let strict = mode == Mode::Strict;
    if strict && s.first() == Some(&b'=') {
        return Err(B64Error::LeadingPadding);
    }
    let mut data = Vec::with_capacity(s.len());
    // Position in the current quad, `=` seen since the last data
    // character (counted only from the third character of a quad on, as
    // CPython does), and whether any `=` was seen.
    let mut quad_pos = 0usize;
    let mut pads = 0usize;
    let mut padding_started = false;
    for (offset, &b) in s.iter().enumerate() {
        if b == b'=' {
            padding_started = true;
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    if strict && offset + 1 < s.len() {
                        return Err(B64Error::ExcessDataAfterPadding { offset: offset + 1 });
                    }
                    return Ok(data);
                }
            }
            continue;
        }
        if !in_alphabet(b) {
            if strict {
                return Err(B64Error::NotBase64 { byte: b, offset });
            }
            continue;
        }
        if strict && padding_started {
            return Err(B64Error::DiscontinuousPadding { offset });
        }
        pads = 0;
        data.push(b);
        quad_pos = (quad_pos + 1) % 4;
    }
    match quad_pos {
        0 => Ok(data),
        1 => Err(B64Error::InvalidLength {
            data_chars: data.len(),
        }),
        _ => Err(B64Error::IncorrectPadding),
    }
}
