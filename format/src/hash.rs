//! The keyed bucket hash (FORMAT.md §5): SipHash-1-3 with the file's
//! 128-bit `hash_key`, over the raw key bytes, standard 64-bit output.
//!
//! Written out here rather than taken from a general SipHash crate because
//! every point read hashes its key: [`KeyHasher`] keeps the keyed initial
//! state, so a hash starts from four words instead of re-deriving them, and
//! the message is read 8 bytes at a time with no streaming buffer. The
//! output is pinned by the reference vectors (tests below and
//! `tests/golden.rs`) and checked against the `siphasher` crate on random
//! keys of every length up to 64 bytes.

/// SipHash's initialization constants ("somepseudorandomlygeneratedbytes").
const INIT: [u64; 4] = [
    0x736f_6d65_7073_6575,
    0x646f_7261_6e64_6f6d,
    0x6c79_6765_6e65_7261,
    0x7465_6462_7974_6573,
];

/// The bucket hash of one file, keyed once.
///
/// ```
/// use carboy_format::{KeyHasher, key_hash};
///
/// let hash_key = [7u8; 16];
/// let hasher = KeyHasher::new(&hash_key);
/// assert_eq!(hasher.hash(b"user:1001"), key_hash(&hash_key, b"user:1001"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHasher {
    /// v0..v3 after keying: `k0 ^ INIT[0]`, `k1 ^ INIT[1]`, `k0 ^ INIT[2]`,
    /// `k1 ^ INIT[3]`.
    init: [u64; 4],
}

impl KeyHasher {
    /// Keys the hash with a file's 16-byte `hash_key` (header bytes 16..32):
    /// `k0` = bytes 0..8, `k1` = bytes 8..16, little-endian.
    pub fn new(hash_key: &[u8; 16]) -> KeyHasher {
        let (lo, hi) = hash_key.split_at(8);
        let k0 = u64::from_le_bytes(lo.try_into().unwrap_or_default());
        let k1 = u64::from_le_bytes(hi.try_into().unwrap_or_default());
        KeyHasher {
            init: [k0 ^ INIT[0], k1 ^ INIT[1], k0 ^ INIT[2], k1 ^ INIT[3]],
        }
    }

    /// SipHash-1-3 of `key`.
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        let mut s = Sip(self.init);
        let mut words = key.chunks_exact(8);
        for w in &mut words {
            s.compress(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        // The last block: the remaining 0..7 bytes, little-endian, with the
        // key's length (mod 256) in the top byte.
        let tail = words.remainder();
        let last = tail_word(tail) | ((key.len() as u64) << 56);
        s.compress(last);
        s.finish()
    }
}

/// The SipHash state.
struct Sip([u64; 4]);

impl Sip {
    #[inline(always)]
    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.0;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    /// One message word, one compression round (the "1" of 1-3).
    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.0[3] ^= m;
        self.round();
        self.0[0] ^= m;
    }

    /// Three finalization rounds (the "3" of 1-3).
    #[inline(always)]
    fn finish(mut self) -> u64 {
        self.0[2] ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.0[0] ^ self.0[1] ^ self.0[2] ^ self.0[3]
    }
}

/// Up to 7 bytes as the low bytes of a little-endian word.
#[inline(always)]
fn tail_word(tail: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut at = 0;
    if tail.len() >= 4 {
        word = u64::from(u32::from_le_bytes(tail[..4].try_into().unwrap_or_default()));
        at = 4;
    }
    if tail.len() - at >= 2 {
        let two = u16::from_le_bytes(tail[at..at + 2].try_into().unwrap_or_default());
        word |= u64::from(two) << (8 * at);
        at += 2;
    }
    if let Some(&b) = tail.get(at) {
        word |= u64::from(b) << (8 * at);
    }
    word
}

/// The keyed bucket hash of a key: SipHash-1-3 with the file's 128-bit
/// `hash_key` (header bytes 16..32) as the key and the raw key bytes as the
/// message. This function is part of the format: changing it changes where
/// every key lives. To hash many keys of one file, key a [`KeyHasher`] once.
pub fn key_hash(hash_key: &[u8; 16], key: &[u8]) -> u64 {
    KeyHasher::new(hash_key).hash(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_test_vectors() {
        // The reference SipHash-1-3 vectors (key 00..0f, message 00..(n-1)),
        // as published with the reference implementation. Pinned: these
        // values are part of the on-disk format.
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        let msg: Vec<u8> = (0u8..8).collect();
        assert_eq!(key_hash(&k, &msg[..0]), 0xabac_0158_050f_c4dc);
        assert_eq!(key_hash(&k, &msg[..1]), 0xc9f4_9bf3_7d57_ca93);
        assert_eq!(key_hash(&k, &msg[..3]), 0x8bf8_0ab8_e7dd_f7fb);
        assert_eq!(key_hash(&k, &msg[..7]), 0xd392_7d98_9bb1_1140);
        assert_ne!(
            key_hash(&[0u8; 16], &msg[..3]),
            key_hash(&k, &msg[..3]),
            "the hash must be keyed"
        );
    }

    /// The `siphasher` crate's SipHash-1-3, as the format used before this
    /// module existed, agrees on random keys and messages of every length
    /// from 0 to 64 bytes (each tail length, one and several whole words).
    #[test]
    fn agrees_with_siphasher() {
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for round in 0..50 {
            let mut hash_key = [0u8; 16];
            hash_key[..8].copy_from_slice(&next().to_le_bytes());
            hash_key[8..].copy_from_slice(&next().to_le_bytes());
            let hasher = KeyHasher::new(&hash_key);
            let msg: Vec<u8> = (0..64).map(|_| next() as u8).collect();
            for len in 0..=msg.len() {
                let want = siphasher::sip::SipHasher13::new_with_key(&hash_key).hash(&msg[..len]);
                assert_eq!(
                    hasher.hash(&msg[..len]),
                    want,
                    "round {round}, length {len}"
                );
            }
        }
        // A key longer than 255 bytes: only the length's low byte is mixed in.
        let long = vec![0xA5u8; 1000];
        let want = siphasher::sip::SipHasher13::new_with_key(&[3; 16]).hash(&long);
        assert_eq!(key_hash(&[3; 16], &long), want);
    }
}
