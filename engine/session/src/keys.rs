//! Keys from Beaker's `secret`, `validate_key` and `encrypt_key` settings,
//! with rotation: each setting is a list, newest first; the newest key
//! signs or encrypts, every key verifies or decrypts.
//!
//! A secret string becomes a [`cookie::Key`] as `Key::derive_from(SHA-256(
//! label ‖ 0 ‖ secret))`: the label keeps the keys of the different uses
//! apart, and `derive_from` (HKDF-SHA256) expands the 32 bytes into
//! cookie's signing and encryption halves. Signing is cookie's `SignedJar`
//! (HMAC-SHA256), encryption its `PrivateJar` (AES-256-GCM, the cookie
//! name as associated data). Nothing here is hand-written crypto.

use cookie::{Cookie, CookieJar, Key};
use sha2::{Digest, Sha256};

/// The shortest secret accepted, in bytes.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// A list of keys, newest first (never empty).
#[derive(Clone)]
pub(crate) struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

/// What opening a value with a ring gave.
pub(crate) struct Opened {
    pub value: String,
    /// True when a key other than the newest opened it: re-seal it with
    /// the newest when it is next written.
    pub by_old_key: bool,
}

impl KeyRing {
    /// The ring of `secrets` (newest first) for use `label`; `None` when
    /// there are none.
    pub(crate) fn derive(label: &str, secrets: &[String]) -> Option<KeyRing> {
        if secrets.is_empty() {
            return None;
        }
        let keys = secrets
            .iter()
            .map(|s| {
                let mut h = Sha256::new();
                h.update(label.as_bytes());
                h.update([0]);
                h.update(s.as_bytes());
                Key::derive_from(&h.finalize())
            })
            .collect();
        Some(KeyRing { keys })
    }

    /// `value` signed with the newest key (the cookie's signed form:
    /// base64 HMAC-SHA256 followed by the value).
    pub(crate) fn sign(&self, name: &str, value: String) -> String {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.keys[0])
            .add(Cookie::new(name.to_string(), value));
        jar.get(name)
            .map(|c| c.value().to_string())
            .unwrap_or_default()
    }

    /// The value `signed` carries, if any key of the ring signed it.
    pub(crate) fn verify(&self, name: &str, signed: &str) -> Option<Opened> {
        let jar = CookieJar::new();
        self.keys.iter().enumerate().find_map(|(i, key)| {
            let c = Cookie::new(name.to_string(), signed.to_string());
            jar.signed(key).verify(c).map(|c| Opened {
                value: c.value().to_string(),
                by_old_key: i > 0,
            })
        })
    }

    /// `value` encrypted and authenticated with the newest key, bound to
    /// `name` (associated data).
    pub(crate) fn seal(&self, name: &str, value: String) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.keys[0])
            .add(Cookie::new(name.to_string(), value));
        jar.get(name)
            .map(|c| c.value().to_string())
            .unwrap_or_default()
    }

    /// The plaintext of `sealed`, if a key of the ring sealed it for
    /// `name`.
    pub(crate) fn open(&self, name: &str, sealed: &str) -> Option<Opened> {
        let jar = CookieJar::new();
        self.keys.iter().enumerate().find_map(|(i, key)| {
            let c = Cookie::new(name.to_string(), sealed.to_string());
            jar.private(key).decrypt(c).map(|c| Opened {
                value: c.value().to_string(),
                by_old_key: i > 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secrets: &[&str]) -> KeyRing {
        let s: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        KeyRing::derive("test", &s).unwrap()
    }

    #[test]
    fn newest_signs_every_key_verifies_unknown_keys_do_not() {
        let old = ring(&["old secret, sixteen+"]);
        let rotated = ring(&["new secret, sixteen+", "old secret, sixteen+"]);
        let signed_old = old.sign("c", "v".into());
        let opened = rotated.verify("c", &signed_old).unwrap();
        assert_eq!(opened.value, "v");
        assert!(opened.by_old_key);
        let signed_new = rotated.sign("c", "v".into());
        assert!(!rotated.verify("c", &signed_new).unwrap().by_old_key);
        assert!(old.verify("c", &signed_new).is_none());
        let mut tampered = signed_new.clone();
        tampered.push('x');
        assert!(rotated.verify("c", &tampered).is_none());
        assert!(rotated.verify("c", &signed_new[..10]).is_none());
    }

    #[test]
    fn sealed_values_open_with_any_ring_key_for_their_name_only() {
        let rotated = ring(&["new secret, sixteen+", "old secret, sixteen+"]);
        let old = ring(&["old secret, sixteen+"]);
        let sealed = old.seal("c", "secret value".into());
        assert!(!sealed.contains("secret value"));
        assert_eq!(rotated.open("c", &sealed).unwrap().value, "secret value");
        assert!(rotated.open("other", &sealed).is_none());
        assert!(ring(&["unrelated secret 16"]).open("c", &sealed).is_none());
        // Labels separate uses: the same secret under another label fails.
        let other_use = KeyRing::derive("other", &["old secret, sixteen+".to_string()]).unwrap();
        assert!(other_use.open("c", &sealed).is_none());
    }
}
