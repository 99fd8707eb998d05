//! Cache keys: what may be a key, and how long keys are shortened.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Beaker's default `key_length`: keys longer than this many bytes are
/// replaced by their SHA-256 (64 hex digits).
pub const DEFAULT_KEY_LENGTH: usize = 250;

/// Something that names a cache entry: strings, byte strings and integers
/// are keys as they are; any serde type can be one through
/// [`Serialized`].
pub trait CacheKey {
    /// The key's bytes.
    fn key_bytes(&self) -> Cow<'_, [u8]>;
}

impl CacheKey for str {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl CacheKey for String {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl CacheKey for [u8] {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<const N: usize> CacheKey for [u8; N] {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl CacheKey for Vec<u8> {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<T: CacheKey + ?Sized> CacheKey for &T {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        (**self).key_bytes()
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            /// The decimal digits, as Beaker's `str(key)` would give.
            fn key_bytes(&self) -> Cow<'_, [u8]> {
                Cow::Owned(self.to_string().into_bytes())
            }
        }
    )*};
}
int_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// Any serde value as a key, encoded with postcard (so `(user, "en")` or a
/// struct can name an entry).
///
/// ```
/// use carboy::cache::{CacheKey, Serialized};
/// let k = Serialized((42u32, "en"));
/// assert_eq!(&*k.key_bytes(), &[42, 2, b'e', b'n']);
/// ```
#[derive(Clone, Debug)]
pub struct Serialized<T>(pub T);

impl<T: serde::Serialize> CacheKey for Serialized<T> {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        // postcard fails only for what serde cannot encode without a known
        // length (a map or sequence serialized from an iterator of unknown
        // size) or a custom `Serialize` that errors. Such a key gets the
        // error text behind U+FFFD, a prefix no postcard encoding of a
        // successful key shares with it in practice, so it never reads
        // another key's value; `memo::key` reports the error instead.
        match postcard::to_allocvec(&self.0) {
            Ok(v) => Cow::Owned(v),
            Err(e) => Cow::Owned(format!("\u{fffd}unserializable key: {e}").into_bytes()),
        }
    }
}

/// The bytes a key is stored under: the key itself, or its SHA-256 in hex
/// when it is longer than `key_length`. Every key is allowed, the empty
/// one included.
pub(crate) fn stored_key(key: Cow<'_, [u8]>, key_length: usize) -> Cow<'_, [u8]> {
    if key.len() <= key_length {
        return key;
    }
    let digest = Sha256::digest(&key);
    let hex = digest
        .iter()
        .flat_map(|&b| crate::name::hex_digits(b))
        .collect();
    Cow::Owned(hex)
}

/// The hash that picks a stored key's creation lock (its stripe, modulo
/// the lock file's stripes: 1024 for the `file` backend). Stable: the
/// same in every process and every build (FNV-1a), since processes of
/// different builds must agree on it.
///
/// ```
/// assert_eq!(carboy::cache::lock_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn lock_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_hashed() {
        let short = stored_key(Cow::Borrowed(b"abc"), 3);
        assert_eq!(&*short, b"abc");
        let long = stored_key(Cow::Borrowed(b"abcd"), 3);
        assert_eq!(long.len(), 64);
        assert_eq!(
            &*long,
            b"88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn lock_hash_is_fnv1a() {
        assert_eq!(lock_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(lock_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
