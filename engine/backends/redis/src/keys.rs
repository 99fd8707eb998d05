//! Where a namespace's keys live in redis.
//!
//! | what | redis key |
//! |---|---|
//! | a value | `<prefix>{<namespace>}:<key>` |
//! | a value whose redis key would pass `cache.max_key_length` | `<prefix>{<namespace>}#sha256:<hex of SHA-256(key)>` |
//! | a key's creation lock | `<prefix>{<namespace>}#lock:<key>` (or `#lock#sha256:<hex>`) |
//!
//! The namespace is the key's hash tag, so a cluster keeps every key of
//! a namespace in one slot. A namespace whose name holds `{` or `}`, or
//! starts with `=`, is written `{=<hex of the name>}`, so that the tag
//! always ends where the namespace does and two namespaces never share a
//! key.

use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The keys of one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// `<prefix>{<namespace>}`.
    tagged: Vec<u8>,
    max: usize,
}

impl Layout {
    pub(crate) fn new(prefix: &[u8], namespace: &str, max_key_length: usize) -> Layout {
        let mut tagged = prefix.to_vec();
        tagged.push(b'{');
        if namespace.contains(['{', '}']) || namespace.starts_with('=') {
            tagged.push(b'=');
            tagged.extend_from_slice(hex(namespace.as_bytes()).as_bytes());
        } else {
            tagged.extend_from_slice(namespace.as_bytes());
        }
        tagged.push(b'}');
        Layout {
            tagged,
            max: max_key_length,
        }
    }

    fn build(&self, marker: &[u8], hashed_marker: &[u8], key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tagged.len() + marker.len() + key.len());
        out.extend_from_slice(&self.tagged);
        if self.tagged.len() + marker.len() + key.len() <= self.max {
            out.extend_from_slice(marker);
            out.extend_from_slice(key);
        } else {
            out.extend_from_slice(hashed_marker);
            out.extend_from_slice(hex(&Sha256::digest(key)).as_bytes());
        }
        out
    }

    /// `<prefix>{<namespace>}`: the start of every key of the namespace.
    pub(crate) fn tagged(&self) -> &[u8] {
        &self.tagged
    }

    /// The redis key of `key`'s value.
    pub(crate) fn value(&self, key: &[u8]) -> Vec<u8> {
        self.build(b":", b"#sha256:", key)
    }

    /// The redis key of `key`'s creation lock.
    pub(crate) fn lock(&self, key: &[u8]) -> Vec<u8> {
        self.build(b"#lock:", b"#lock#sha256:", key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let l = Layout::new(b"p:", "users", 64);
        assert_eq!(l.value(b"k"), b"p:{users}:k");
        assert_eq!(l.lock(b"k"), b"p:{users}#lock:k");
        let long = vec![b'x'; 100];
        let v = l.value(&long);
        assert!(v.starts_with(b"p:{users}#sha256:"), "{v:?}");
        assert_eq!(v.len(), b"p:{users}#sha256:".len() + 64);
        assert_ne!(l.lock(&long), v);
        // Braces in a namespace cannot end its tag early.
        let odd = Layout::new(b"p:", "a}:x", 1024);
        let plain = Layout::new(b"p:", "a", 1024);
        assert_ne!(odd.value(b"k"), plain.value(b"x}:k"));
        assert_eq!(odd.value(b"k"), b"p:{=617d3a78}:k");
    }
}
