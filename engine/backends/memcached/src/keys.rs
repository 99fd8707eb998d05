//! carboy keys to memcached keys.
//!
//! A memcached key is at most 250 bytes of printable ASCII without spaces
//! or control characters; a carboy key is any bytes, a namespace name any
//! string. The wire key is
//!
//! ```text
//! <key_prefix> <namespace part> "/" <key part>
//! ```
//!
//! * the **namespace part** is the name itself when it is at most 64
//!   bytes of printable ASCII without `/` and `#`, else `#` and the first
//!   32 hex digits of its SHA-256;
//! * the **key part** of a value is the key itself when it is printable
//!   ASCII, does not start with `#`, and the whole wire key fits in 250
//!   bytes; else `#` and the 64 hex digits of its SHA-256;
//! * the key part of a **creation lock** is `#lock/` and the same.
//!
//! The namespace part holds no `/`, so the first `/` after the prefix ends
//! it; a key part that starts with `#` is a hash (`#` + 64 hex digits) or
//! a lock (`#lock/`, `l` not being a hex digit), and a plain key never
//! starts with `#`: two different (namespace, key, kind) never share a
//! wire key, short of a SHA-256 collision. With a prefix of at most 64
//! bytes the longest wire key is 64 + 33 + 1 + 6 + 65 = 169 bytes.

use sha2::{Digest, Sha256};

/// memcached's longest key.
pub const MAX_KEY: usize = 250;

const HEX: &[u8; 16] = b"0123456789abcdef";

fn printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

/// `<prefix><namespace part>/`: what every key of the namespace starts with.
pub(crate) fn namespace_base(prefix: &str, namespace: &str) -> Vec<u8> {
    let mut base = prefix.as_bytes().to_vec();
    let ns = namespace.as_bytes();
    if ns.len() <= 64
        && !ns.is_empty()
        && ns.iter().all(|&b| printable(b) && b != b'/' && b != b'#')
    {
        base.extend_from_slice(ns);
    } else {
        base.push(b'#');
        push_hex(&mut base, &Sha256::digest(ns)[..16]);
    }
    base.push(b'/');
    base
}

/// The wire key of value `key`.
pub(crate) fn value_key(base: &[u8], key: &[u8]) -> Vec<u8> {
    with_key_part(base, b"", key)
}

/// The wire key of the creation lock of `key`.
pub(crate) fn lock_key(base: &[u8], key: &[u8]) -> Vec<u8> {
    with_key_part(base, b"#lock/", key)
}

fn with_key_part(base: &[u8], tag: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + tag.len() + key.len().min(65));
    out.extend_from_slice(base);
    out.extend_from_slice(tag);
    let plain = out.len() + key.len() <= MAX_KEY
        && !key.is_empty()
        && key[0] != b'#'
        && key.iter().all(|&b| printable(b));
    if plain {
        out.extend_from_slice(key);
    } else {
        out.push(b'#');
        push_hex(&mut out, &Sha256::digest(key));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(key: &[u8]) -> bool {
        key.len() <= MAX_KEY && key.iter().all(|&b| printable(b))
    }

    #[test]
    fn plain_keys_stay_readable() {
        let base = namespace_base("app:", "users");
        assert_eq!(base, b"app:users/");
        assert_eq!(value_key(&base, b"u1"), b"app:users/u1");
        assert_eq!(value_key(&base, b"a/b"), b"app:users/a/b");
        assert_eq!(lock_key(&base, b"u1"), b"app:users/#lock/u1");
    }

    #[test]
    fn every_key_becomes_a_memcached_key_and_none_collide() {
        let long_ns = "n".repeat(300);
        let names = [
            "users",
            "carboy:markers",
            "with space",
            "a/b",
            "#x",
            "é",
            long_ns.as_str(),
        ];
        let long = vec![b'k'; 300];
        let hashed_look = {
            let mut k = b"#".to_vec();
            push_hex(&mut k, &Sha256::digest(b"x"));
            k
        };
        let keys: Vec<&[u8]> = vec![
            b"",
            b"x",
            b"#",
            b"#x",
            b"a b",
            b"\x00\xff",
            b"#lock/x",
            &long,
            &hashed_look,
        ];
        let mut seen = std::collections::HashSet::new();
        for ns in names {
            let base = namespace_base("p", ns);
            for key in &keys {
                for wire in [value_key(&base, key), lock_key(&base, key)] {
                    assert!(ok(&wire), "{ns:?} {key:?}: {wire:?}");
                    assert!(seen.insert(wire.clone()), "{ns:?} {key:?}: {wire:?} twice");
                }
            }
        }
        // Long keys are hashed, deterministically.
        let base = namespace_base("", "n");
        assert_eq!(value_key(&base, &long).len(), 2 + 65);
        assert_eq!(value_key(&base, &long), value_key(&base, &long));
        // The longest prefix still leaves room.
        let prefix = "p".repeat(MAX_KEY.min(64));
        let wire = lock_key(&namespace_base(&prefix, &long_ns), &long);
        assert!(ok(&wire), "{}", wire.len());
    }
}
