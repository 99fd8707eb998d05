//! Session ids: 128 bits from the operating system's random generator,
//! written as 22 characters of URL-safe base64 (no padding).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How many random bytes an id carries (128 bits).
pub const ID_BYTES: usize = 16;
/// How many characters an id is written with.
pub const ID_CHARS: usize = 22;

/// A session id: 128 random bits, as 22 URL-safe base64 characters.
///
/// Made only by [`SessionId::generate`] (the OS generator, through
/// `getrandom`) or by [`SessionId::parse`] of exactly such a string; a
/// client-supplied id is parsed, never adopted unless the store holds it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id from the operating system's random generator.
    pub fn generate() -> Result<SessionId, carboy::Error> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| carboy::Error::InvalidOption {
            name: "session id",
            reason: format!("the operating system's random generator failed: {e}"),
        })?;
        Ok(SessionId(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// `text` as an id, if it is one: 22 URL-safe base64 characters that
    /// decode to 16 bytes (and encode back to the same text).
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != ID_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        (bytes.len() == ID_BYTES && URL_SAFE_NO_PAD.encode(&bytes) == text)
            .then(|| SessionId(text.to_string()))
    }

    /// The id as written in cookies and storage keys.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for SessionId {
    /// Only a prefix: a log line must not hand out a live session id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({}…)", &self.0[..6.min(self.0.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_22_url_safe_chars_distinct_and_parse_back() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), ID_CHARS);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(SessionId::parse(a.as_str()), Some(a.clone()));
    }

    #[test]
    fn anything_else_is_not_an_id() {
        let a = SessionId::generate().unwrap();
        for bad in [
            "",
            &a.as_str()[..21],
            &format!("{}A", a.as_str()),
            "!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAA+",
            // 22 chars whose last one carries bits past 128: not canonical.
            "AAAAAAAAAAAAAAAAAAAAAB",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }
}
