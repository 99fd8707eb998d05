//! Keys and values shown to a person: printable UTF-8 as text, everything
//! else escaped, so that any bytes print as one safe line.

use std::fmt::Write as _;

/// `bytes` in double quotes, with `"` and `\` escaped, `\n` `\r` `\t` `\0`
/// for those controls, `\u{..}` for other control and invisible
/// formatting characters (which could reorder or hide text on a terminal),
/// and `\xNN` for each byte that is not valid UTF-8.
///
/// ```text
/// b"user:1"        -> "user:1"
/// b"a\"b\\c\n"     -> "a\"b\\c\n"
/// b"\x00\xff"      -> "\0\xff"
/// ```
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    push_escaped(&mut out, bytes);
    out.push('"');
    out
}

/// Bytes of a key or operand that a message shows before it cuts the rest.
pub const SHOWN: usize = 64;

/// [`quoted`] for a message: at most the first [`SHOWN`] bytes (cut
/// before a UTF-8 sequence rather than inside it), and for a longer input
/// `…` and its length, so that a 100 KB key does not flood the terminal.
///
/// ```text
/// b"user:1"          -> "user:1"
/// [b'k'; 100_000]    -> "kkk…k"… (100000 bytes)   (64 k's)
/// ```
pub fn shortened(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN {
        return quoted(bytes);
    }
    let mut end = SHOWN;
    // Back off to the lead byte of a sequence the cut would split.
    while end > SHOWN - 3 && bytes[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    if bytes[end] & 0xc0 == 0x80 {
        end = SHOWN; // not UTF-8 there anyway: cut where it falls
    }
    format!("{}… ({} bytes)", quoted(&bytes[..end]), bytes.len())
}

/// `bytes` escaped like [`quoted`], without the quotes (so a `"` is left
/// as it is): one line whatever the bytes.
pub fn bare(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '"' {
                out.push(c);
            } else {
                push_char(&mut out, c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

fn push_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if c.is_control() || invisible(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Formatting characters that change how text around them looks:
/// zero-width characters and bidirectional overrides and isolates.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_stays_text() {
        assert_eq!(quoted(b"user:1"), r#""user:1""#);
        assert_eq!(quoted("größe €".as_bytes()), "\"größe €\"");
        assert_eq!(quoted(b""), r#""""#);
    }

    #[test]
    fn everything_else_is_escaped_on_one_line() {
        assert_eq!(quoted(b"a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quoted(b"\x00\xff\x1b[2J"), r#""\0\xff\u{1b}[2J""#);
        assert_eq!(quoted("a\u{202e}b".as_bytes()), r#""a\u{202e}b""#);
        assert_eq!(bare(b"say \"hi\"\t\xc3"), r#"say "hi"\t\xc3"#);
    }

    #[test]
    fn long_input_is_cut_for_messages() {
        assert_eq!(shortened(b"user:1"), r#""user:1""#);
        let exact = vec![b'k'; SHOWN];
        assert_eq!(shortened(&exact), quoted(&exact));
        let long = vec![b'k'; 100_000];
        let shown = shortened(&long);
        assert_eq!(shown, format!("\"{}\"… (100000 bytes)", "k".repeat(SHOWN)));
        // A cut inside a two-byte character moves before it.
        let mut text = vec![b'a'; SHOWN - 1];
        text.extend("é and more".as_bytes());
        assert_eq!(
            shortened(&text),
            format!("\"{}\"… ({} bytes)", "a".repeat(SHOWN - 1), text.len())
        );
        // Binary input is cut where it falls, and escaped.
        let binary = vec![0xff; 200];
        assert_eq!(
            shortened(&binary),
            format!("\"{}\"… (200 bytes)", "\\xff".repeat(SHOWN))
        );
    }
}
