//! The `carboy` command-line tool (see issue 4 for the full tool).
fn main() {}
