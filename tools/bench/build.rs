//! Records, for the report: the versions of the peer crates (from this
//! crate's own Cargo.lock), the compiler, and carboy's git revision.

use std::process::Command;

const CRATES: &[&str] = &[
    "carboy",
    "heed",
    "lmdb-master-sys",
    "redb",
    "rusqlite",
    "libsqlite3-sys",
    "sled",
    "fjall",
    "lsm-tree",
];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let lock = std::fs::read_to_string(format!("{dir}/Cargo.lock")).unwrap_or_default();
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut versions = Vec::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some(n) = name.take()
            && CRATES.contains(&n.as_str())
        {
            versions.push(format!("{n} {}", v.trim_matches('"')));
        }
    }
    println!(
        "cargo:rustc-env=BENCH_CRATE_VERSIONS={}",
        versions.join(", ")
    );

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_v = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=BENCH_RUSTC={rustc_v}");

    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "../../engine",
        "../../format",
    ])
    .is_some_and(|s| !s.is_empty());
    let rev = if dirty {
        format!("{rev} + uncommitted engine changes")
    } else {
        rev
    };
    println!("cargo:rustc-env=BENCH_GIT_REV={rev}");
    // A commit, checkout or reset appends to the HEAD log.
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/logs/HEAD");
    println!("cargo:rerun-if-changed=../../engine/src");
    println!("cargo:rerun-if-changed=../../format/src");
}
