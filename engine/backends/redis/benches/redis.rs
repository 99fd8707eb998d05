//! The redis backend benchmark (written below).
fn main() {}
