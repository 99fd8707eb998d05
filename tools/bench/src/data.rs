//! The workload's data: the same seeded keys and values for every engine.
//!
//! Keys and values are computed from their index on the fly instead of
//! being kept in arrays: the harness then adds almost nothing to an
//! engine's peak memory, and fetching the next key never costs a cache miss
//! of its own (a few ALU instructions instead).
//!
//! * key `i` (16 bytes) = `mix(SEED + γ·(2i+1))` ‖ `mix(SEED ^ K + γ·(2i+1))`,
//!   where `mix` is splitmix64's finalizer, a bijection: the first 8 bytes
//!   alone are distinct for distinct `i`, so keys never collide.
//! * value `(i, version)` (100 bytes) = a splitmix64 stream seeded from
//!   `(i, version)`: random, incompressible bytes.

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
pub const SEED: u64 = 0x00ca_4b0f_5eed_2026;
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

pub type Key = [u8; KEY_LEN];
pub type Value = [u8; VALUE_LEN];

/// splitmix64's finalizer: a bijection on u64.
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`-th key of the key space.
#[inline(always)]
pub fn key(i: u64) -> Key {
    let x = SEED.wrapping_add(GAMMA.wrapping_mul(2 * i + 1));
    let a = mix(x);
    let b = mix(x ^ 0x5555_aaaa_3c3c_c3c3);
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&a.to_le_bytes());
    k[8..].copy_from_slice(&b.to_le_bytes());
    k
}

/// Writes version `version` of key `i`'s value into `buf`.
#[inline(always)]
pub fn value(i: u64, version: u64, buf: &mut Value) -> &[u8] {
    let mut s = mix(i ^ (version << 40) ^ 0x0f0f_0f0f_0f0f_0f0f);
    for chunk in buf.chunks_mut(8) {
        s = s.wrapping_add(GAMMA);
        let x = mix(s).to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    &buf[..]
}

/// splitmix64: small, fast, good enough for benchmark choices.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ SEED))
    }

    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is irrelevant here).
    #[inline(always)]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// An endless stream of keys drawn uniformly from `0..n` (all present).
pub struct KeyStream {
    rng: Rng,
    n: u64,
}

impl KeyStream {
    pub fn new(seed: u64, n: u64) -> KeyStream {
        KeyStream {
            rng: Rng::new(seed),
            n,
        }
    }

    #[inline(always)]
    pub fn next_key(&mut self) -> Key {
        key(self.rng.below(self.n))
    }
}

/// What a read loop saw: hits, value bytes, and a checksum of each value's
/// first byte (so that every engine really touches the value).
#[derive(Clone, Copy, Default, Debug)]
pub struct Tally {
    pub found: u64,
    pub bytes: u64,
    pub sum: u64,
}

impl Tally {
    #[inline(always)]
    pub fn see(&mut self, value: &[u8]) {
        self.found += 1;
        self.bytes += value.len() as u64;
        self.sum += u64::from(value.first().copied().unwrap_or(0));
    }
}

/// A stride coprime with `n`: `(start + j·stride) mod n` for `j < n` visits
/// every index of `0..n` once (used for deletes of distinct present keys).
pub fn coprime_stride(n: u64) -> u64 {
    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let mut s = (n / 2 + 1_000_003) | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_stable() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            assert!(seen.insert(key(i)));
        }
        assert_eq!(key(7), key(7));
    }

    #[test]
    fn stride_visits_every_index() {
        for n in [1u64, 2, 10, 1000, 4096, 1_000_000] {
            let s = coprime_stride(n);
            let mut seen = vec![false; n as usize];
            for j in 0..n {
                let i = (j * s) % n;
                assert!(!seen[i as usize]);
                seen[i as usize] = true;
            }
        }
    }
}
