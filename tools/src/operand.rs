//! Keys and values on the command line: where they come from (an
//! argument, a file, stdin) and how they are spelled (text, hex, base64).
//!
//! The rule, the same for every subcommand: `--hex` and `--base64` apply to
//! keys and values given as arguments and to keys and values carboy
//! prints; a file (`--value-file`) or stdin (`-`) is taken byte for byte.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carboy_format::record::MAX_KEY_LEN;

use crate::failure::{UsageError, advise};

/// The `--hex` and `--base64` options.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct EncodingArgs {
    /// Keys and values given as arguments are hex (`00ff`), and those
    /// printed are too.
    #[arg(long, conflicts_with = "base64")]
    pub hex: bool,
    /// Keys and values given as arguments are base64 (standard alphabet,
    /// padded), and those printed are too.
    #[arg(long)]
    pub base64: bool,
}

/// How keys and values are spelled on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The argument's bytes as they are.
    Text,
    /// Two hex digits a byte.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl EncodingArgs {
    /// The encoding these options select.
    pub fn encoding(&self) -> Encoding {
        if self.hex {
            Encoding::Hex
        } else if self.base64 {
            Encoding::Base64
        } else {
            Encoding::Text
        }
    }
}

impl Encoding {
    /// The bytes an argument spells; `what` names it in errors ("KEY").
    pub fn decode(self, arg: &OsStr, what: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = arg.as_bytes();
        match self {
            Encoding::Text => Ok(bytes.to_vec()),
            Encoding::Hex => decode_hex(bytes).ok_or_else(|| {
                advise(
                    UsageError(format!(
                        "{what} {} is not hex",
                        crate::escape::shortened(bytes)
                    )),
                    "with --hex, give two hex digits per byte, such as 00ff",
                )
            }),
            Encoding::Base64 => BASE64.decode(bytes).map_err(|e| {
                advise(
                    UsageError(format!(
                        "{what} {} is not base64: {e}",
                        crate::escape::shortened(bytes)
                    )),
                    "with --base64, use the standard alphabet with = padding, such as AP8=",
                )
            }),
        }
    }

    /// `bytes` spelled in this encoding for printing; `None` for
    /// [`Encoding::Text`], which prints bytes as they are.
    pub fn encode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Encoding::Text => None,
            Encoding::Hex => Some(crate::open::hex(bytes)),
            Encoding::Base64 => Some(BASE64.encode(bytes)),
        }
    }
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

/// Where the bytes of a key or value come from.
#[derive(Debug)]
pub enum Source<'a> {
    /// A command-line argument, spelled in the chosen encoding (`-` is
    /// stdin).
    Arg(&'a OsStr),
    /// A file, taken byte for byte.
    File(&'a Path),
}

/// Reads a key or value (`what` names it in errors). At most one operand
/// of a command may come from stdin; `stdin_taken` tracks it.
pub fn read(
    source: Source<'_>,
    encoding: Encoding,
    what: &str,
    stdin_taken: &mut bool,
) -> anyhow::Result<Vec<u8>> {
    match source {
        Source::Arg(arg) if arg == "-" => {
            if *stdin_taken {
                return Err(UsageError(format!(
                    "{what} is `-` too, but stdin was already read for another operand; only \
                     one can come from stdin"
                ))
                .into());
            }
            *stdin_taken = true;
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {what} from stdin"))?;
            Ok(bytes)
        }
        Source::Arg(arg) => encoding.decode(arg, what),
        Source::File(path) => std::fs::read(path).map_err(|e| crate::open::missing_or_io(path, e)),
    }
}

/// Reads a key like [`read`] and refuses one longer than the format
/// allows (status 2), whatever the command: no such key can be stored, so
/// `get` and `del` could only call it absent.
pub fn read_key(
    source: Source<'_>,
    encoding: Encoding,
    stdin_taken: &mut bool,
) -> anyhow::Result<Vec<u8>> {
    let key = read(source, encoding, "KEY", stdin_taken)?;
    if key.len() > MAX_KEY_LEN {
        return Err(advise(
            UsageError(format!(
                "KEY {} is too long: the limit is {MAX_KEY_LEN} bytes",
                crate::escape::shortened(&key)
            )),
            "no key that long can be stored",
        ));
    }
    Ok(key)
}

/// Refuses a `--prefix` longer than any key can be (status 2): it would
/// match nothing.
pub fn check_prefix(prefix: &[u8]) -> anyhow::Result<()> {
    if prefix.len() > MAX_KEY_LEN {
        return Err(UsageError(format!(
            "PREFIX {} is longer than any key can be (the limit is {MAX_KEY_LEN} bytes)",
            crate::escape::shortened(prefix)
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_decode_exactly_and_refuse_junk() {
        let hex = Encoding::Hex;
        assert_eq!(
            hex.decode(OsStr::new("00fF7a"), "KEY").unwrap(),
            b"\x00\xff\x7a"
        );
        assert_eq!(hex.decode(OsStr::new(""), "KEY").unwrap(), b"");
        assert!(hex.decode(OsStr::new("0"), "KEY").is_err());
        assert!(hex.decode(OsStr::new("0g"), "KEY").is_err());
        assert!(hex.decode(OsStr::new("+1"), "KEY").is_err());
        let b64 = Encoding::Base64;
        assert_eq!(b64.decode(OsStr::new("AP8="), "KEY").unwrap(), b"\x00\xff");
        assert!(b64.decode(OsStr::new("AP8"), "KEY").is_err());
        assert_eq!(hex.encode(b"\x00\xff").as_deref(), Some("00ff"));
        assert_eq!(b64.encode(b"\x00\xff").as_deref(), Some("AP8="));
        assert_eq!(Encoding::Text.encode(b"x"), None);
    }
}
