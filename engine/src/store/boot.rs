//! The boot id: which boot of the machine last knew a file's index good
//! (FORMAT.md §2.2, `boot_id_lo`/`boot_id_hi`). A different one means the
//! machine went down since, and the index is rebuilt from the log.

/// Reads the running kernel's boot id, when the platform has one.
pub(crate) fn boot_id() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let lo = u64::from_str_radix(&hex[..16], 16).ok()?;
    let hi = u64::from_str_radix(&hex[16..], 16).ok()?;
    Some((lo, hi))
}
