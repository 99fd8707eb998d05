//! Mistakes and hostile situations: bad arguments (status 2), missing,
//! foreign and misnamed files and a lock another process holds (status 3,
//! with a message that says what to do), a closed stdout (quiet success),
//! and `--help` with examples on every subcommand.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carboy::Store;
use common::{carboy, scratch};
use predicates::prelude::*;

const SUBCOMMANDS: [&str; 12] = [
    "stat", "dump", "header", "check", "get", "put", "del", "keys", "compact", "export", "import",
    "salvage",
];

#[test]
fn bad_arguments_exit_2_with_usage() {
    let (dir, file) = scratch();
    Store::open(&file).unwrap().put(b"k", b"v").unwrap();
    let f = file.to_str().unwrap();
    let value_file = dir.path().join("v").to_str().unwrap().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frob"],
        vec!["get", f],
        vec!["put", f, "k"],
        vec!["put", f, "k", "v", "--value-file", &value_file],
        vec!["put", f, "k", "v", "--ttl", "soon"],
        vec![
            "put",
            f,
            "k",
            "v",
            "--ttl",
            "5",
            "--expires-at",
            "9999999999999",
        ],
        vec!["put", f, "k", "v", "--ttl", "0"],
        vec!["put", "--hex", f, "k", "v"],
        vec!["get", "--base64", f, "a"],
        vec!["get", "--hex", "--base64", f, "00"],
        vec!["put", f, "-", "-"],
        vec!["keys", "-0", "--hex", f],
        vec!["--wait", "-1", "get", f, "k"],
        vec!["import", "--batch", "many", f],
        vec!["salvage", f],
    ];
    for args in cases {
        carboy()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::is_empty().not());
    }
}

#[test]
fn a_missing_file_is_named_and_not_created() {
    let (dir, file) = scratch();
    for args in [
        &["get", "k"][..],
        &["del", "k"],
        &["stat"],
        &["check"],
        &["dump"],
        &["dump", "--all"],
        &["header"],
        &["keys"],
        &["compact"],
        &["export"],
    ] {
        let (cmd, rest) = args.split_first().unwrap();
        carboy()
            .arg(cmd)
            .arg(&file)
            .args(rest)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(format!(
                "carboy: {}: no such file",
                file.display()
            )))
            .stderr(predicate::str::contains("hint: check the path"));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn foreign_files_lock_files_and_directories_are_refused_untouched() {
    let (dir, file) = scratch();
    let foreign = dir.path().join("notes.txt");
    std::fs::write(
        &foreign,
        "just some text, long enough to hold a magic number\n",
    )
    .unwrap();
    for cmd in [&["get", "k"][..], &["put", "k", "v"], &["stat"], &["check"]] {
        carboy()
            .arg(cmd[0])
            .arg(&foreign)
            .args(&cmd[1..])
            .assert()
            .code(3)
            .stderr(predicate::str::contains("not a carboy data file"));
    }
    assert!(
        !dir.path().join("notes.txt.lock").exists(),
        "no lock file beside a foreign file"
    );

    Store::open(&file).unwrap().put(b"k", b"v").unwrap();
    let lock = dir.path().join("ns.carboy.lock");
    carboy()
        .arg("get")
        .arg(&lock)
        .arg("k")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("this is a carboy lock file"))
        .stderr(predicate::str::contains(format!(
            "pass the data file beside it: {}",
            file.display()
        )));
    carboy()
        .arg("stat")
        .arg(dir.path())
        .assert()
        .code(3)
        .stderr(predicate::str::contains("is a directory"));
    carboy()
        .arg("put")
        .arg(dir.path().join("no/such/dir/x.carboy"))
        .args(["k", "v"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("does not exist"));
}

#[test]
fn a_lock_held_by_another_process_is_waited_for_then_given_up() {
    let (_dir, file) = scratch();
    let store = Store::open(&file).unwrap();
    store.put(b"k", b"v").unwrap();
    let txn = store.transaction().unwrap(); // holds the writer lock
    // Where /proc/locks tells, the message names the holder: this process.
    let me = std::process::id();
    let (who, find) = if std::path::Path::new("/proc/locks").exists() {
        (format!("process {me}"), format!("`ps -p {me}`"))
    } else {
        ("another process".to_string(), "`fuser -v".to_string())
    };
    let start = Instant::now();
    carboy()
        .args(["--wait", "1.5", "put"])
        .arg(&file)
        .args(["k", "w"])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "waiting for the lock {who} holds"
        )))
        .stderr(predicate::str::contains(format!(
            "{who} held the lock for 1.5 s; gave up"
        )))
        .stderr(predicate::str::contains(find));
    assert!(start.elapsed() >= Duration::from_millis(1_500));
    drop(txn);
    // Released: the same command goes through.
    carboy()
        .args(["--wait", "10", "put"])
        .arg(&file)
        .args(["k", "w"])
        .assert()
        .success();
    assert_eq!(store.get(b"k").unwrap().as_deref(), Some(&b"w"[..]));
}

#[test]
fn a_closed_stdout_ends_the_listing_quietly() {
    let (_dir, file) = scratch();
    let store = Store::open(&file).unwrap();
    let mut txn = store.transaction().unwrap();
    for i in 0..20_000u32 {
        txn.put(format!("some/longish/key/{i:08}").as_bytes(), b"v")
            .unwrap();
    }
    txn.commit().unwrap();
    drop(store);
    let mut child = Command::new(env!("CARGO_BIN_EXE_carboy"))
        .arg("keys")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("some/longish/key/"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_subcommand_has_help_with_examples() {
    let top = carboy().arg("--help").output().unwrap();
    assert!(top.status.success());
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("Exit status:"), "{top}");
    for sub in SUBCOMMANDS {
        assert!(
            top.contains(&format!("  {sub} ")),
            "`carboy --help` lists {sub}"
        );
        carboy()
            .arg(sub)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"))
            .stdout(predicate::str::contains(format!("carboy {sub} ")));
    }
}

#[test]
fn a_newer_format_version_says_to_upgrade() {
    use carboy_format::header::{Header, IMMUTABLE_LEN};
    let (_dir, file) = scratch();
    Store::open(&file).unwrap().put(b"k", b"v").unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mut header = Header::decode(&bytes).unwrap();
    header.version = 2;
    bytes[..IMMUTABLE_LEN].copy_from_slice(&header.encode().unwrap());
    std::fs::write(&file, &bytes).unwrap();
    carboy()
        .arg("get")
        .arg(&file)
        .arg("k")
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "file was written by carboy format v2; this build reads up to v1: upgrade carboy",
        ));
    carboy()
        .arg("header")
        .arg(&file)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "format_version  2                         BAD: this build reads versions 1 to 1",
        ));
}

/// Runs `carboy ARGS...` with a deadline: a command that blocks is killed
/// and reported (its status is then a signal, never 3).
fn run_with_deadline(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let start = Instant::now();
    let out = carboy()
        .args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some(),
        "carboy {args:?} was killed after {:?} (it blocked): {out:?}",
        start.elapsed()
    );
    out
}

#[test]
fn fifos_sockets_and_devices_are_refused_without_blocking() {
    let (dir, _) = scratch();
    let fifo = dir.path().join("fifo.carboy");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success(), "mkfifo");
    let socket = dir.path().join("socket.carboy");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let device = dir.path().join("device.carboy");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    let out_file = dir.path().join("out.carboy");
    let dump = dir.path().join("dump");
    std::fs::write(&dump, "carboy-export 1\nend 0\n").unwrap();
    let cases: [(&std::path::Path, &str); 3] = [
        (&fifo, "is a FIFO (named pipe), not a carboy data file"),
        (&socket, "is a socket, not a carboy data file"),
        (&device, "is a character device, not a carboy data file"),
    ];
    for (path, message) in cases {
        for cmd in [
            &["stat"][..],
            &["stat", "--json"],
            &["header"],
            &["dump"],
            &["dump", "--all"],
            &["check"],
            &["get", "k"],
            &["keys"],
            &["export"],
            &["compact"],
            &["put", "k", "v"],
            &["del", "k"],
            &["import", dump.to_str().unwrap()],
            &["salvage", out_file.to_str().unwrap()],
        ] {
            let (sub, rest) = cmd.split_first().unwrap();
            let mut args: Vec<&std::ffi::OsStr> = vec![sub.as_ref(), path.as_os_str()];
            args.extend(rest.iter().map(|a| std::ffi::OsStr::new(*a)));
            let out = run_with_deadline(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "carboy {args:?}: {stderr}");
            assert!(stderr.contains(message), "carboy {args:?}: {stderr}");
            assert!(
                stderr.contains("hint: give the path of a namespace's data file"),
                "carboy {args:?}: {stderr}"
            );
        }
    }
    assert!(!out_file.exists(), "salvage wrote nothing");
    assert!(
        !dir.path().join("fifo.carboy.lock").exists(),
        "no lock file beside a FIFO"
    );
}

#[test]
fn a_fifo_as_the_lock_file_is_refused_without_blocking() {
    let (dir, file) = scratch();
    Store::open(&file).unwrap().put(b"k", b"v").unwrap();
    let lock = dir.path().join("ns.carboy.lock");
    std::fs::remove_file(&lock).unwrap();
    let status = Command::new("mkfifo").arg(&lock).status().unwrap();
    assert!(status.success(), "mkfifo");
    for cmd in [&["get", "k"][..], &["put", "k", "w"], &["stat"], &["check"]] {
        let (sub, rest) = cmd.split_first().unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec![sub.as_ref(), file.as_os_str()];
        args.extend(rest.iter().map(|a| std::ffi::OsStr::new(*a)));
        let out = run_with_deadline(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "carboy {args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{}: is a FIFO, not a regular file",
                lock.display()
            )),
            "carboy {args:?}: {stderr}"
        );
    }
}

#[test]
fn an_over_long_key_is_a_usage_error_shown_shortened() {
    let (_dir, file) = scratch();
    Store::open(&file).unwrap().put(b"k", b"v").unwrap();
    let long = vec![b'k'; 100_000];
    // An argument is at most 128 KiB: 70,000 bytes fit in base64.
    let long_base64 = "a2tr".repeat(70_002 / 3);
    let shown = |len: usize| format!("\"{}\"… ({len} bytes)", "k".repeat(64));
    for (cmd, stdin, len) in [
        (&["get", "-"][..], true, 100_000),
        (&["del", "-"], true, 100_000),
        (&["put", "-", "v"], true, 100_000),
        (&["get", "--base64", &long_base64], false, 70_002),
        (&["del", "--base64", &long_base64], false, 70_002),
        (&["put", "--base64", &long_base64, "dg=="], false, 70_002),
        (
            &["keys", "--base64", "--prefix", &long_base64],
            false,
            70_002,
        ),
    ] {
        let (sub, rest) = cmd.split_first().unwrap();
        let out = carboy()
            .arg(sub)
            .arg(&file)
            .args(rest)
            .write_stdin(if stdin { long.clone() } else { Vec::new() })
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let head: String = stderr.chars().take(300).collect();
        assert_eq!(out.status.code(), Some(2), "{sub}: {head}");
        assert!(stderr.contains(&shown(len)), "{sub}: {head}");
        assert!(stderr.contains("the limit is 65535 bytes"), "{sub}: {head}");
        assert!(
            stderr.len() < 1_000,
            "{sub}: {} bytes on stderr",
            stderr.len()
        );
    }
    // The longest key the format allows is still an ordinary absent key,
    // and the message shows it cut short too.
    let longest = vec![b'k'; 65_535];
    let out = carboy()
        .args(["get"])
        .arg(&file)
        .arg("-")
        .write_stdin(longest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let head: String = stderr.chars().take(300).collect();
    assert_eq!(out.status.code(), Some(1), "{head}");
    assert!(
        stderr.contains(&format!("no key \"{}\"… (65535 bytes)", "k".repeat(64))),
        "{head}"
    );
    // A long argument that is not hex is cut short in its message too.
    let junk = "z".repeat(100_000);
    let out = carboy()
        .args(["get", "--hex"])
        .arg(&file)
        .arg(&junk)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let head: String = stderr.chars().take(300).collect();
    assert_eq!(out.status.code(), Some(2), "{head}");
    assert!(stderr.len() < 1_000, "{} bytes on stderr", stderr.len());
    assert!(stderr.contains("… (100000 bytes) is not hex"), "{head}");
}
