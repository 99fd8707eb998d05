//! Placeholder: the memcached benchmark comes with the next commit.

fn main() {}
