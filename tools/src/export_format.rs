//! The export format: a portable, line-oriented text dump of a namespace's
//! entries, written by `carboy export` and read by `carboy import`.
//!
//! `tools/EXPORT.md` is the specification; this module is its executable
//! form. In short:
//!
//! ```text
//! carboy-export 1                         header: format name and version
//! dXNlcjox<TAB>YWxpY2U=<TAB>-             one entry a line: base64 key,
//! dG9rZW46OQ==<TAB>eHl6<TAB>1767225600000 base64 value, expiry (Unix ms or -)
//! end 2                                   trailer: how many entries
//! ```
//!
//! Base64 is the standard alphabet with padding (RFC 4648 §4), so any bytes
//! round-trip exactly; the trailer makes a dump that was cut short (a full
//! disk, a broken pipe) an error instead of a silently partial import.
//!
//! The [`Reader`] never panics and never allocates more than one line (which
//! it bounds by [`MAX_LINE_LEN`]), whatever its input.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carboy_format::Expiry;
use carboy_format::record::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// The format's name, the first word of the header line.
pub const NAME: &str = "carboy-export";
/// The version this build writes, and the only one it reads.
pub const VERSION: u32 = 1;
/// The first word of the trailer line.
pub const END: &str = "end";

/// Length of the base64 text of `n` bytes, with padding.
const fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The longest line a valid dump can hold (the longest key and value, two
/// tabs, a 20-digit expiry and a carriage return), not counting the
/// newline. A longer line is refused before it is read whole.
pub const MAX_LINE_LEN: usize = base64_len(MAX_KEY_LEN) + base64_len(MAX_VALUE_LEN) + 2 + 20 + 1;

/// One entry of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, exactly.
    pub key: Vec<u8>,
    /// The value, exactly.
    pub value: Vec<u8>,
    /// When it expires.
    pub expiry: Expiry,
}

/// Writes a dump: the header when created, one line per entry, the trailer
/// on [`finish`](Writer::finish).
///
/// ```
/// use carboy_tools::export_format::Writer;
/// use carboy_format::Expiry;
///
/// let mut w = Writer::new(Vec::new())?;
/// w.entry(b"user:1", b"alice", Expiry::Never)?;
/// let dump = w.finish()?;
/// assert_eq!(dump, b"carboy-export 1\ndXNlcjox\tYWxpY2U=\t-\nend 1\n");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    count: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a dump on `out` by writing its header line.
    pub fn new(mut out: W) -> io::Result<Writer<W>> {
        writeln!(out, "{NAME} {VERSION}")?;
        Ok(Writer { out, count: 0 })
    }

    /// Writes one entry's line.
    pub fn entry(&mut self, key: &[u8], value: &[u8], expiry: Expiry) -> io::Result<()> {
        let mut text = String::new();
        BASE64.encode_string(key, &mut text);
        text.push('\t');
        BASE64.encode_string(value, &mut text);
        text.push('\t');
        match expiry {
            Expiry::Never => text.push('-'),
            Expiry::AtUnixMs(ms) => text.push_str(&ms.to_string()),
        }
        text.push('\n');
        self.out.write_all(text.as_bytes())?;
        self.count += 1;
        Ok(())
    }

    /// Entries written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the trailer line, flushes, and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        writeln!(self.out, "{END} {}", self.count)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a dump cannot be read, with the line (counted from 1) where reading
/// stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum ParseError {
    /// The line does not follow the format.
    Malformed {
        /// Line number, from 1.
        line: u64,
        /// What is wrong with it, and what was expected.
        what: String,
    },
    /// Reading the input failed.
    Io {
        /// Line number being read, from 1.
        line: u64,
        /// The underlying error.
        source: io::Error,
    },
}

impl ParseError {
    /// The line number (from 1) where reading stopped.
    pub fn line(&self) -> u64 {
        match self {
            ParseError::Malformed { line, .. } | ParseError::Io { line, .. } => *line,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed { line, what } => write!(f, "line {line}: {what}"),
            ParseError::Io { line, source } => write!(f, "line {line}: reading the dump: {source}"),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseError::Io { source, .. } => Some(source),
            ParseError::Malformed { .. } => None,
        }
    }
}

/// Where a [`Reader`] is in its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The header line is next.
    Header,
    /// Entries (or the trailer) are next.
    Entries,
    /// The trailer was read; only blank lines may follow.
    Ended,
    /// An error was returned, or the input ended: nothing more comes.
    Done,
}

/// Reads a dump as an iterator of entries, checking the header, every
/// line, and the trailer's count. After the first error it yields nothing
/// more.
///
/// ```
/// use carboy_tools::export_format::Reader;
///
/// let dump = b"carboy-export 1\nazE=\t\t-\nend 2\n";
/// let mut r = Reader::new(&dump[..]);
/// assert_eq!(r.next().unwrap().unwrap().key, b"k1");
/// let err = r.next().unwrap().unwrap_err();
/// assert_eq!(err.to_string(), "line 3: the end line counts 2 entries, the dump holds 1");
/// ```
#[derive(Debug)]
pub struct Reader<R: BufRead> {
    input: R,
    max_line: usize,
    line: u64,
    count: u64,
    state: State,
    buf: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    /// A reader of the dump in `input`.
    pub fn new(input: R) -> Reader<R> {
        Reader::with_max_line(input, MAX_LINE_LEN)
    }

    /// A reader that refuses lines longer than `max_line` bytes (not
    /// counting the newline) instead of [`MAX_LINE_LEN`]: a caller that
    /// knows its entries are small can bound its memory more tightly.
    pub fn with_max_line(input: R, max_line: usize) -> Reader<R> {
        Reader {
            input,
            max_line,
            line: 0,
            count: 0,
            state: State::Header,
            buf: Vec::new(),
        }
    }

    /// Number of the last line read (from 1; 0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    fn malformed(&mut self, what: impl Into<String>) -> ParseError {
        self.state = State::Done;
        ParseError::Malformed {
            line: self.line.max(1),
            what: what.into(),
        }
    }

    /// Reads the next line into `self.buf`, without its line ending.
    /// Returns false at the end of the input.
    fn read_line(&mut self) -> Result<bool, ParseError> {
        self.buf.clear();
        let limit = self.max_line as u64 + 1;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| {
                self.state = State::Done;
                ParseError::Io {
                    line: self.line + 1,
                    source,
                }
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > self.max_line {
            let max = self.max_line;
            return Err(self.malformed(format!(
                "longer than {max} bytes, more than any valid line holds"
            )));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(true)
    }

    fn header(&mut self) -> Result<(), ParseError> {
        let expected = format!("{NAME} {VERSION}");
        if !self.read_line()? {
            return Err(self.malformed(format!(
                "the input is empty, not a carboy export (expected `{expected}`)"
            )));
        }
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        let version = line
            .strip_prefix(NAME)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse::<u32>());
        match version {
            Some(Ok(VERSION)) => Ok(()),
            Some(Ok(found)) => Err(self.malformed(format!(
                "the dump is in format version {found}; this carboy reads version {VERSION}: \
                 upgrade carboy to import it"
            ))),
            _ => Err(self.malformed(format!(
                "not a carboy export: expected `{expected}`, found `{}`",
                excerpt(self.buf.as_slice())
            ))),
        }
    }

    fn entry(&mut self) -> Result<Entry, ParseError> {
        let mut fields = self.buf.split(|&b| b == b'\t');
        let (Some(k), Some(v), Some(e), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            let n = self.buf.split(|&b| b == b'\t').count();
            return Err(self.malformed(format!(
                "expected an entry (3 tab-separated fields: key, value, expiry) or `{END} COUNT`, \
                 found {n} field(s): `{}`",
                excerpt(&self.buf)
            )));
        };
        let key = BASE64.decode(k);
        let value = BASE64.decode(v);
        let expiry = parse_expiry(e);
        let key = key.map_err(|err| format!("the key is not valid base64: {err}"));
        let value = value.map_err(|err| format!("the value is not valid base64: {err}"));
        let entry = key.and_then(|key| {
            let value = value?;
            let expiry = expiry?;
            if key.len() > MAX_KEY_LEN {
                return Err(format!(
                    "the key is {} bytes long; the limit is {MAX_KEY_LEN}",
                    key.len()
                ));
            }
            if value.len() > MAX_VALUE_LEN {
                return Err(format!(
                    "the value is {} bytes long; the limit is {MAX_VALUE_LEN}",
                    value.len()
                ));
            }
            Ok(Entry { key, value, expiry })
        });
        entry.map_err(|what| self.malformed(what))
    }

    fn end(&mut self, count: &[u8]) -> Result<(), ParseError> {
        let count = std::str::from_utf8(count)
            .ok()
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u64>().ok());
        match count {
            Some(n) if n == self.count => {
                self.state = State::Ended;
                Ok(())
            }
            Some(n) => {
                let held = self.count;
                Err(self.malformed(format!(
                    "the end line counts {n} entries, the dump holds {held}"
                )))
            }
            None => Err(self.malformed(format!(
                "expected `{END} COUNT` with a decimal count, found `{}`",
                excerpt(&self.buf)
            ))),
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Entry, ParseError>;

    fn next(&mut self) -> Option<Result<Entry, ParseError>> {
        loop {
            match self.state {
                State::Done => return None,
                State::Header => {
                    if let Err(e) = self.header() {
                        return Some(Err(e));
                    }
                    self.state = State::Entries;
                }
                State::Entries => {
                    match self.read_line() {
                        Ok(true) => {}
                        Ok(false) => {
                            let held = self.count;
                            return Some(Err(self.malformed(format!(
                                "the dump ends without its `{END} COUNT` line after {held} \
                                 entries: it was cut short"
                            ))));
                        }
                        Err(e) => return Some(Err(e)),
                    }
                    if self.buf.first() == Some(&b'#') {
                        continue;
                    }
                    if self.buf.is_empty() {
                        return Some(Err(self.malformed(
                            "empty line (an entry with an empty key and value is `<TAB><TAB>-`)",
                        )));
                    }
                    let rest = self
                        .buf
                        .strip_prefix(END.as_bytes())
                        .and_then(|r| r.strip_prefix(b" "))
                        .map(<[u8]>::to_vec);
                    if let Some(count) = rest {
                        if let Err(e) = self.end(&count) {
                            return Some(Err(e));
                        }
                        continue;
                    }
                    return Some(self.entry().inspect(|_| self.count += 1));
                }
                State::Ended => match self.read_line() {
                    Ok(false) => {
                        self.state = State::Done;
                        return None;
                    }
                    Ok(true) if self.buf.iter().all(u8::is_ascii_whitespace) => {}
                    Ok(true) => {
                        return Some(Err(self.malformed(format!("text after the `{END}` line"))));
                    }
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }
}

/// Parses an expiry field: `-` or decimal Unix milliseconds.
fn parse_expiry(field: &[u8]) -> Result<Expiry, String> {
    if field == b"-" {
        return Ok(Expiry::Never);
    }
    std::str::from_utf8(field)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Expiry::AtUnixMs)
        .ok_or_else(|| {
            format!(
                "the expiry must be `-` (never) or Unix milliseconds (0 to {}), found `{}`",
                u64::MAX,
                excerpt(field)
            )
        })
}

/// The start of `bytes` for an error message, with anything unprintable
/// escaped.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let mut out: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(dump: &[u8]) -> Result<Vec<Entry>, String> {
        Reader::new(dump)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    fn write_all(entries: &[Entry]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        for e in entries {
            w.entry(&e.key, &e.value, e.expiry).unwrap();
        }
        w.finish().unwrap()
    }

    fn entry(key: &[u8], value: &[u8], expiry: Expiry) -> Entry {
        Entry {
            key: key.to_vec(),
            value: value.to_vec(),
            expiry,
        }
    }

    #[test]
    fn empty_key_value_and_extreme_expiries_round_trip() {
        let entries = vec![
            entry(b"", b"", Expiry::Never),
            entry(b"\n\t\r", b"\0", Expiry::AtUnixMs(0)),
            entry(&[0xff; 7], b"end 1", Expiry::AtUnixMs(u64::MAX)),
        ];
        let dump = write_all(&entries);
        assert_eq!(read_all(&dump).unwrap(), entries);
        assert!(dump.starts_with(b"carboy-export 1\n\t\t-\n"));
    }

    #[test]
    fn crlf_comments_and_trailing_blank_lines_are_accepted() {
        let dump = b"carboy-export 1\r\n# a note\r\nazE=\tdjE=\t5\r\nend 1\r\n\n";
        assert_eq!(
            read_all(dump).unwrap(),
            vec![entry(b"k1", b"v1", Expiry::AtUnixMs(5))]
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "line 1: the input is empty"),
            (b"carboy-dump 1\n", "line 1: not a carboy export"),
            (
                b"carboy-export 2\n",
                "line 1: the dump is in format version 2",
            ),
            (
                b"carboy-export 1\n",
                "line 1: the dump ends without its `end COUNT`",
            ),
            (
                b"carboy-export 1\nazE=\tdjE=\n",
                "line 2: expected an entry",
            ),
            (
                b"carboy-export 1\nazE=\tdjE=\t-\t\n",
                "line 2: expected an entry",
            ),
            (
                b"carboy-export 1\nazE\tdjE=\t-\n",
                "line 2: the key is not valid base64",
            ),
            (
                b"carboy-export 1\nazE=\tdj!=\t-\n",
                "line 2: the value is not valid base64",
            ),
            (
                b"carboy-export 1\nazE=\tdjE=\t+5\n",
                "line 2: the expiry must be",
            ),
            (
                b"carboy-export 1\nazE=\tdjE=\t\n",
                "line 2: the expiry must be",
            ),
            (
                b"carboy-export 1\nazE=\tdjE=\t99999999999999999999\n",
                "line 2: the expiry must be",
            ),
            (b"carboy-export 1\n\nend 0\n", "line 2: empty line"),
            (
                b"carboy-export 1\n\t\t-\nend 2\n",
                "line 3: the end line counts 2",
            ),
            (b"carboy-export 1\nend x\n", "line 2: expected `end COUNT`"),
            (
                b"carboy-export 1\nend 0\n\t\t-\n",
                "line 3: text after the `end` line",
            ),
            (
                b"carboy-export 1\n\t\t-\n\t\t-",
                "line 3: the dump ends without",
            ),
        ];
        for (dump, expected) in cases {
            let err = read_all(dump).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{:?}: got {err:?}, expected {expected:?}",
                String::from_utf8_lossy(dump)
            );
        }
    }

    #[test]
    fn oversized_keys_and_lines_are_refused_without_reading_them_whole() {
        let long_key = BASE64.encode(vec![b'k'; MAX_KEY_LEN + 1]);
        let dump = format!("carboy-export 1\n{long_key}\t\t-\nend 1\n");
        let err = read_all(dump.as_bytes()).unwrap_err();
        assert!(
            err.starts_with("line 2: the key is 65536 bytes long"),
            "{err}"
        );

        // A line longer than the limit, from an endless reader: refused
        // once the limit is read.
        let endless = io::repeat(b'A');
        let input = io::BufReader::new(b"carboy-export 1\n".chain(endless));
        let err = Reader::with_max_line(input, 1000)
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: longer than 1000 bytes, more than any valid line holds"
        );
        let line = format!("carboy-export 1\n{}\t\t-\nend 1\n", "A".repeat(996));
        assert_eq!(Reader::with_max_line(line.as_bytes(), 1000).count(), 1);
    }

    #[test]
    fn the_spec_example_parses_to_what_it_says() {
        let spec = include_str!("../EXPORT.md");
        let example = spec
            .split("```text\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("EXPORT.md has a ```text example")
            .replace("<TAB>", "\t");
        let entries = read_all(example.as_bytes()).unwrap();
        assert_eq!(
            entries,
            vec![
                entry(b"user:1", b"alice", Expiry::Never),
                entry(b"token:9", b"xyz", Expiry::AtUnixMs(1_767_225_600_000)),
                entry(b"\x00\xff", b"", Expiry::Never),
            ]
        );
        assert_eq!(write_all(&entries), example.as_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_entries_round_trip(
            entries in proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..40),
                    proptest::collection::vec(any::<u8>(), 0..200),
                    proptest::option::of(any::<u64>()),
                ),
                0..20,
            )
        ) {
            let entries: Vec<Entry> = entries
                .into_iter()
                .map(|(key, value, at)| Entry {
                    key,
                    value,
                    expiry: at.map_or(Expiry::Never, Expiry::AtUnixMs),
                })
                .collect();
            prop_assert_eq!(read_all(&write_all(&entries)).unwrap(), entries);
        }

        #[test]
        fn any_input_is_an_error_or_entries_never_a_panic(
            input in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut dump = b"carboy-export 1\n".to_vec();
            dump.extend_from_slice(&input);
            for item in Reader::new(&dump[..]) {
                if item.is_err() {
                    break;
                }
            }
        }
    }
}
