//! The value envelope: what the cache stores around every value.
//!
//! Layout, version 1 (all integers little-endian, no padding):
//!
//! | offset | width | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 1 | `version` | 1; any other version reads as a miss |
//! | 1 | 1 | `flags` | bit 0: `ttl_ms` is set; bit 1: the value was soft-invalidated (stale); other bits must be 0 |
//! | 2 | 8 | `created_ms` | when the value was created, Unix ms, by the cache's clock |
//! | 10 | 8 | `ttl_ms` | how long it stays fresh (0 when bit 0 is clear) |
//! | 18 | 8 | `ns_epoch` | the namespace's invalidation epoch when its creation began |
//! | 26 | 8 | `region_epoch` | the region's invalidation epoch when its creation began (0 outside a region) |
//! | 34 | … | `payload` | the value, as the cache's codec encoded it |
//!
//! The expiry is stored with the value (Beaker's rule: a value keeps the
//! lifetime it was created with), and a value is fresh while
//! `now < created_ms + ttl_ms`. A value whose envelope does not decode is a
//! miss, never an error: the next creation overwrites it.

/// The envelope's size before the payload.
pub(crate) const HEADER_LEN: usize = 34;
const VERSION: u8 = 1;
const HAS_TTL: u8 = 1;
const STALE: u8 = 2;

/// An envelope's fields, without the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub created_ms: u64,
    pub ttl_ms: Option<u64>,
    pub stale: bool,
    pub ns_epoch: u64,
    pub region_epoch: u64,
}

impl Meta {
    /// Appends the header of an envelope with these fields to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.ttl_ms.is_some() {
            flags |= HAS_TTL;
        }
        if self.stale {
            flags |= STALE;
        }
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.ttl_ms.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.ns_epoch.to_le_bytes());
        out.extend_from_slice(&self.region_epoch.to_le_bytes());
    }

    /// Splits `bytes` into its fields and payload; `None` for anything that
    /// is not a version-1 envelope.
    pub(crate) fn decode(bytes: &[u8]) -> Option<(Meta, &[u8])> {
        let (head, payload) = bytes.split_at_checked(HEADER_LEN)?;
        if head[0] != VERSION || head[1] & !(HAS_TTL | STALE) != 0 {
            return None;
        }
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?))
        };
        let flags = head[1];
        let ttl = word(10)?;
        if flags & HAS_TTL == 0 && ttl != 0 {
            return None;
        }
        Some((
            Meta {
                created_ms: word(2)?,
                ttl_ms: (flags & HAS_TTL != 0).then_some(ttl),
                stale: flags & STALE != 0,
                ns_epoch: word(18)?,
                region_epoch: word(26)?,
            },
            payload,
        ))
    }

    /// When the value stops being fresh (Unix ms), or `None` for never.
    pub(crate) fn expires_ms(&self) -> Option<u64> {
        self.ttl_ms.map(|t| self.created_ms.saturating_add(t))
    }

    /// True once the value's own expiry has passed at `now_ms`.
    pub(crate) fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms().is_some_and(|at| at <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_other_versions() {
        let meta = Meta {
            created_ms: 1_700_000_000_123,
            ttl_ms: Some(60_000),
            stale: true,
            ns_epoch: 7,
            region_epoch: 9,
        };
        let mut bytes = Vec::new();
        meta.encode_into(&mut bytes);
        assert_eq!(bytes.len(), HEADER_LEN);
        bytes.extend_from_slice(b"payload");
        let (back, payload) = Meta::decode(&bytes).unwrap();
        assert_eq!(back, meta);
        assert_eq!(payload, b"payload");
        assert_eq!(back.expires_ms(), Some(1_700_000_060_123));
        assert!(!back.is_expired_at(1_700_000_060_122));
        assert!(back.is_expired_at(1_700_000_060_123));

        let mut other = bytes.clone();
        other[0] = 2;
        assert!(Meta::decode(&other).is_none());
        let mut flags = bytes.clone();
        flags[1] |= 0x80;
        assert!(Meta::decode(&flags).is_none());
        assert!(Meta::decode(&bytes[..HEADER_LEN - 1]).is_none());
        // Golden bytes: the layout is a stored format.
        assert_eq!(
            &bytes[..HEADER_LEN],
            &[
                1, 3, 0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0, 0, 0x60, 0xea, 0, 0, 0, 0, 0, 0, 7, 0,
                0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }
}
