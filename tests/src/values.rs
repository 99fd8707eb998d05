//! Self-checking values for the concurrency and multi-process tests:
//! versioned values that name their key and version (a torn or foreign
//! read shows), and counters.

use crate::show;

/// Length of one stamp in a versioned value: key id (u32 LE) and version
/// (u64 LE).
const STAMP_LEN: usize = 12;

/// Number of stamps a versioned value of `version` holds. Lengths vary with
/// the version, so that a read mixing two versions shows up as a length or
/// content mismatch.
fn stamps_for(version: u64) -> usize {
    1 + (version % 23) as usize
}

/// A value that names its key and version and checks itself: the stamp
/// (`key_id`, `version`) repeated a version-dependent number of times.
pub fn versioned_value(key_id: u32, version: u64) -> Vec<u8> {
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..4].copy_from_slice(&key_id.to_le_bytes());
    stamp[4..].copy_from_slice(&version.to_le_bytes());
    stamp.repeat(stamps_for(version))
}

/// Decodes a [`versioned_value`] into (key id, version), or says why the
/// bytes are not one (a torn or foreign value).
pub fn parse_versioned(bytes: &[u8]) -> Result<(u32, u64), String> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(STAMP_LEN) {
        return Err(format!(
            "{} is not a whole number of {STAMP_LEN}-byte stamps",
            show(bytes)
        ));
    }
    let (first, _) = bytes.split_at(STAMP_LEN);
    if let Some(i) = bytes.chunks(STAMP_LEN).position(|c| c != first) {
        return Err(format!(
            "torn value: stamp {i} differs from stamp 0 in {}",
            show(bytes)
        ));
    }
    let key_id = u32::from_le_bytes(first[..4].try_into().unwrap_or_default());
    let version = u64::from_le_bytes(first[4..].try_into().unwrap_or_default());
    if bytes.len() / STAMP_LEN != stamps_for(version) {
        return Err(format!(
            "torn value: {} stamps, version {version} has {}",
            bytes.len() / STAMP_LEN,
            stamps_for(version)
        ));
    }
    Ok((key_id, version))
}

/// Encodes a counter value.
pub fn encode_counter(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

/// Decodes a counter value; an absent counter is 0.
pub fn decode_counter(bytes: Option<&[u8]>) -> Result<u64, String> {
    match bytes {
        None => Ok(0),
        Some(b) => b
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| format!("counter value {} is not 8 bytes", show(b))),
    }
}
