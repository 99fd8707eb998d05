//! `carboy get`, `put`, `del` and `keys` from the shell: binary-safe keys
//! and values from arguments, files and stdin, in text, hex and base64,
//! expiry, and the exit statuses of absent keys.

mod common;

use carboy::{Expiry, Store};
use common::{FUTURE_MS, carboy, scratch};
use predicates::prelude::*;

#[test]
fn put_creates_the_file_and_get_prints_the_value_exactly() {
    let (_dir, file) = scratch();
    carboy()
        .arg("put")
        .arg(&file)
        .args(["user:1", "alice"])
        .assert()
        .success();
    carboy()
        .arg("get")
        .arg(&file)
        .arg("user:1")
        .assert()
        .success()
        .stdout("alice"); // no newline added
    let store = Store::open(&file).unwrap();
    assert_eq!(
        store.get(b"user:1").unwrap().as_deref(),
        Some(&b"alice"[..])
    );
}

#[test]
fn binary_keys_and_values_through_hex_base64_stdin_and_files() {
    let (dir, file) = scratch();
    let value: Vec<u8> = (0..=255u8).cycle().take(5_000).collect();
    let value_file = dir.path().join("value.bin");
    std::fs::write(&value_file, &value).unwrap();

    // Key as hex, value from a file.
    carboy()
        .args(["put", "--hex"])
        .arg(&file)
        .arg("00ff0a")
        .arg("--value-file")
        .arg(&value_file)
        .assert()
        .success();
    // Key as base64, value from stdin.
    carboy()
        .args(["put", "--base64"])
        .arg(&file)
        .args(["AAE=", "-"])
        .write_stdin(b"\x00line\nbreak\xff".to_vec())
        .assert()
        .success();
    // Key from stdin (byte for byte: the newline is part of it).
    carboy()
        .arg("put")
        .arg(&file)
        .args(["-", "v"])
        .write_stdin(b"key with\nnewline\n".to_vec())
        .assert()
        .success();

    let store = Store::open(&file).unwrap();
    assert_eq!(store.get_owned(b"\x00\xff\n").unwrap(), Some(value.clone()));
    assert_eq!(
        store.get_owned(b"\x00\x01").unwrap().as_deref(),
        Some(&b"\x00line\nbreak\xff"[..])
    );
    assert_eq!(
        store.get_owned(b"key with\nnewline\n").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    drop(store);

    // Raw output is the exact bytes; --hex and --base64 print a line.
    let raw = carboy()
        .args(["get", "--hex"])
        .arg(&file)
        .arg("00ff0a")
        .output()
        .unwrap();
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(String::from_utf8(raw.stdout).unwrap(), format!("{hex}\n"));
    let raw = carboy()
        .args(["get", "--base64"])
        .arg(&file)
        .arg("AAE=")
        .output()
        .unwrap();
    assert_eq!(raw.stdout, b"AGxpbmUKYnJlYWv/\n");
    let raw = carboy()
        .arg("get")
        .arg(&file)
        .arg("-")
        .write_stdin(b"\x00\xff\n".to_vec())
        .output()
        .unwrap();
    assert!(raw.status.success());
    assert_eq!(raw.stdout, value);
}

#[test]
fn absent_keys_exit_1_and_del_force_does_not() {
    let (_dir, file) = scratch();
    carboy()
        .arg("put")
        .arg(&file)
        .args(["a", "1"])
        .assert()
        .success();
    carboy()
        .arg("get")
        .arg(&file)
        .arg("b")
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("no key \"b\""));
    carboy()
        .arg("del")
        .arg(&file)
        .arg("b")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--force"));
    carboy()
        .args(["del", "--force"])
        .arg(&file)
        .arg("b")
        .assert()
        .success();
    carboy().arg("del").arg(&file).arg("a").assert().success();
    carboy().arg("get").arg(&file).arg("a").assert().code(1);
    assert!(Store::open(&file).unwrap().is_empty().unwrap());
}

#[test]
fn ttl_and_expires_at_set_the_expiry() {
    let (_dir, file) = scratch();
    carboy()
        .args(["put", "--ttl", "3600"])
        .arg(&file)
        .args(["t", "x"])
        .assert()
        .success();
    carboy()
        .args(["put", "--expires-at", &FUTURE_MS.to_string()])
        .arg(&file)
        .args(["e", "y"])
        .assert()
        .success();
    let store = Store::open(&file).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let Expiry::AtUnixMs(at) = store.get(b"t").unwrap().unwrap().expiry() else {
        panic!("--ttl stored no expiry");
    };
    assert!(
        (now + 3_590_000..=now + 3_610_000).contains(&at),
        "expiry {at} is not an hour after {now}"
    );
    assert_eq!(
        store.get(b"e").unwrap().unwrap().expiry(),
        Expiry::AtUnixMs(FUTURE_MS)
    );
    drop(store);
    // A past expiry would store an absent value: refused as a usage error.
    carboy()
        .args(["put", "--expires-at", "1000"])
        .arg(&file)
        .args(["p", "z"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has passed"));
}

#[test]
fn keys_lists_live_keys_with_prefix_sort_and_exact_encodings() {
    let (_dir, file) = scratch();
    {
        let store = Store::open(&file).unwrap();
        for k in [&b"user:2"[..], b"user:1", b"group:1", b"user:\n\xff"] {
            store.put(k, b"v").unwrap();
        }
        store.put(b"user:gone", b"v").unwrap();
        store.delete(b"user:gone").unwrap();
        store
            .put_with_expiry(b"user:expired", b"v", Expiry::AtUnixMs(1))
            .unwrap();
    }
    carboy()
        .args(["keys", "--sort", "--prefix", "user:"])
        .arg(&file)
        .assert()
        .success()
        .stdout("user:\\n\\xff\nuser:1\nuser:2\n");
    carboy()
        .args(["keys", "--sort", "--hex", "--prefix", "7573"])
        .arg(&file)
        .assert()
        .success()
        .stdout("757365723a0aff\n757365723a31\n757365723a32\n");
    let out = carboy()
        .args(["keys", "-0", "--sort"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"group:1\0user:\n\xff\0user:1\0user:2\0");
}

#[test]
fn oversized_keys_are_usage_errors() {
    let (_dir, file) = scratch();
    carboy()
        .arg("put")
        .arg(&file)
        .args(["-", "v"])
        .write_stdin(vec![b'k'; 70_000])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the limit is 65535"));
}
