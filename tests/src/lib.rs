//! Helpers shared by carboy's integration tests: whole-store comparisons,
//! self-checking values for the concurrency tests, the work plan the
//! multi-process tests and their child binary agree on, byte-level
//! surgery on data files, and the one way to run a helper process and talk
//! to it in lines ([`child_process`]).
//!
//! These are test helpers: they panic, with a message saying what and
//! where, on any failure that is not the point of the test.
//!
//! The helpers live in modules; the most used ones are re-exported here.

pub mod big_file;
pub mod cache_child;
mod checks;
pub mod child_process;
pub mod fuzzing;
pub mod group_plan;
pub mod kill_loop;
pub mod memcached_server;
pub mod plan;
pub mod redis_server;
pub mod served;
pub mod signals;
mod surgery;
mod values;

use std::sync::Arc;

use carboy::{MockClock, Options};

pub use checks::{assert_clean, assert_names_path, contents};
pub use surgery::{
    LogBlock, flip_byte, log_blocks, read_live_word, truncate_file, write_live_word, zero_range,
};
pub use values::{decode_counter, encode_counter, parse_versioned, versioned_value};

/// Where every mock clock in these tests starts (November 2023, Unix ms):
/// far from zero, so that "now minus a little" is still a valid time.
pub const CLOCK_START_MS: u64 = 1_700_000_000_000;

/// Default options reading time from `clock`.
pub fn options_with_clock(clock: &MockClock) -> Options {
    Options::new().clock(Arc::new(clock.clone()))
}

/// A byte string, printable, cut short for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    let mut text = bytes.escape_ascii().to_string();
    if text.len() > 48 {
        text.truncate(48);
        text.push_str("...");
    }
    format!("\"{text}\" ({} bytes)", bytes.len())
}

/// splitmix64: reproducible randomness for the crash tests (a failing case
/// names its seed).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stdout of a child process that must have exited successfully; on
/// failure, panics with `what`, its status, stdout and stderr.
pub fn stdout_of_success(out: std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number of cases a property test runs: `PROPTEST_CASES` from the
/// environment when set, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
