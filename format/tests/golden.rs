//! Golden byte tests: every on-disk encoding of format v1, pinned with
//! literal bytes, plus checks that `FORMAT.md` documents the offsets and
//! example bytes this crate uses.
//!
//! The expected bytes were computed once by running the encoders and checked
//! against an independent implementation of the layout (zlib CRC32, a
//! separate SipHash-1-3). They are literals on purpose: if an encoder
//! changes, these tests fail, and the change needs a new format version.

use carboy_format::{
    Expiry, FORMAT_VERSION, header, header::live, key_hash, lockfile, record, slot,
};

/// 2023-11-14T22:13:20Z, used for every timestamp in the samples.
const T: u64 = 1_700_000_000_000;

/// The document under test.
const DOC: &str = include_str!("../FORMAT.md");

fn put(key: &[u8], value: &[u8], expiry: Expiry) -> Vec<u8> {
    // Pre-fill with garbage so that padding must be written explicitly.
    let mut buf = vec![0xAA; 64];
    let n = record::encode_put(&mut buf, key, value, expiry).unwrap();
    assert_eq!(
        n as u64,
        record::put_len(key.len(), value.len(), expiry).unwrap()
    );
    buf.truncate(n);
    buf
}

const PUT_K_V: [u8; 16] = [
    0x16, 0xb6, 0xd1, 0x34, // crc
    0x01, 0x00, 0x01, 0x00, // kind = put, flags = 0, key_len = 1
    0x01, 0x00, 0x00, 0x00, // value_len = 1
    0x6b, 0x76, 0x00, 0x00, // "k" "v" padding
];

const PUT_K_V_EXPIRING: [u8; 24] = [
    0x1d, 0x8e, 0x2e, 0x5c, // crc
    0x01, 0x01, 0x01, 0x00, // kind = put, flags = EXPIRES, key_len = 1
    0x01, 0x00, 0x00, 0x00, // value_len = 1
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // expires_ms = T
    0x6b, 0x76, 0x00, 0x00, // "k" "v" padding
];

const DELETE_K: [u8; 16] = [
    0x4c, 0x8f, 0xe8, 0xb4, // crc
    0x02, 0x00, 0x01, 0x00, // kind = delete, flags = 0, key_len = 1
    0x00, 0x00, 0x00, 0x00, // value_len = 0
    0x6b, 0x00, 0x00, 0x00, // "k" padding
];

const COMMIT: [u8; 48] = [
    0x52, 0xad, 0x83, 0x3a, // crc
    0x03, 0x00, 0x00, 0x00, // kind = commit, flags = 0, key_len = 0
    0x20, 0x00, 0x00, 0x00, // value_len = 32
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // txn_id = 1
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // txn_start = 4096
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // unix_ms = T
    0x01, 0x00, 0x00, 0x00, // records = 1
    0x16, 0x55, 0x72, 0x2c, // records_crc = CRC32(crc of PUT_K_V)
    0x00, 0x00, 0x00, 0x00, // padding
];

const INDEX_HEADER_LOG2_4: [u8; 16] = [
    0xea, 0xf3, 0x99, 0xfc, // crc (covers bytes 4..16)
    0x04, 0x00, 0x00, 0x00, // kind = index, flags = 0, key_len = 0
    0x04, 0x00, 0x00, 0x00, // value_len = log2 capacity = 4
    0x00, 0x00, 0x00, 0x00, // reserved
];

const HEADER_FIRST_80: [u8; 80] = [
    // magic, format_version = 1, header_size = 4096
    0x89, 0x43, 0x42, 0x59, 0x0d, 0x0a, 0x1a, 0x0a, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    // hash_key
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    // file_id
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
    // generation = 2, created_ms = T
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00,
    // name_len = 5, name = "users", zero fill
    0x05, 0x00, 0x75, 0x73, 0x65, 0x72, 0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

const HEADER_CRC: [u8; 4] = [0x5c, 0xb9, 0x66, 0xad];

const LOCK_PREFIX: [u8; 16] = [
    0x89, 0x43, 0x42, 0x4c, 0x0d, 0x0a, 0x1a, 0x0a, // magic
    0x01, 0x00, 0x00, 0x00, // version = 1
    0x00, 0x00, 0x00, 0x00, // reserved
];

/// `hash_key` of the sample header: 10 11 .. 1f.
fn sample_hash_key() -> [u8; 16] {
    std::array::from_fn(|i| 0x10 + i as u8)
}

fn sample_header() -> header::Header {
    header::Header {
        version: FORMAT_VERSION,
        hash_key: sample_hash_key(),
        file_id: std::array::from_fn(|i| 0xa0 + i as u8),
        generation: 2,
        created_ms: T,
        name: b"users".to_vec(),
    }
}

#[test]
fn put_without_expiry() {
    let b = put(b"k", b"v", Expiry::Never);
    assert_eq!(b, PUT_K_V);
    let r = record::decode(&b).unwrap();
    assert_eq!(
        (r.kind, r.expiry, r.key, r.value, r.len),
        (record::Kind::Put, Expiry::Never, &b"k"[..], &b"v"[..], 16)
    );
    assert_eq!(
        crc32fast::hash(&b[4..14]),
        0x34d1_b616,
        "crc covers 4..end of body"
    );
}

#[test]
fn put_with_expiry() {
    let b = put(b"k", b"v", Expiry::AtUnixMs(T));
    assert_eq!(b, PUT_K_V_EXPIRING);
    let r = record::decode(&b).unwrap();
    assert_eq!(
        (r.expiry, r.key, r.value),
        (Expiry::AtUnixMs(T), &b"k"[..], &b"v"[..])
    );
    assert_eq!(crc32fast::hash(&b[4..22]), 0x5c2e_8e1d);
}

#[test]
fn delete_record() {
    let mut b = vec![0xAA; 64];
    let n = record::encode_delete(&mut b, b"k").unwrap();
    assert_eq!(n as u64, record::delete_len(1).unwrap());
    assert_eq!(b[..n], DELETE_K);
    let r = record::decode(&b[..n]).unwrap();
    assert_eq!(
        (r.kind, r.key, r.value),
        (record::Kind::Delete, &b"k"[..], &b""[..])
    );
}

#[test]
fn commit_marker() {
    let c = record::Commit {
        txn_id: 1,
        txn_start: 4096,
        unix_ms: T,
        records: 1,
        records_crc: crc32fast::hash(&PUT_K_V[..4]),
    };
    assert_eq!(c.records_crc, 0x2c72_5516);
    let mut b = vec![0xAA; 64];
    let n = c.encode(&mut b).unwrap();
    assert_eq!(n as u64, record::COMMIT_LEN);
    assert_eq!(b[..n], COMMIT);
    assert_eq!(record::Commit::decode(&b[..n]).unwrap(), c);
    // An empty transaction's records_crc is the CRC32 of no bytes.
    assert_eq!(crc32fast::hash(&[]), 0);
}

#[test]
fn index_header_log2_4() {
    let h = record::encode_index_header(4).unwrap();
    assert_eq!(h, INDEX_HEADER_LOG2_4);
    assert_eq!(record::decode_index_header(&h).unwrap(), 4);
    assert_eq!(record::index_len(4), 16 + 8 * 16);
    let p = record::Prefix::decode(&h).unwrap();
    assert_eq!((p.covered_len(), p.block_len()), (16, 144));
}

#[test]
fn header_sample() {
    let h = sample_header();
    let b = h.encode().unwrap();
    assert_eq!(b.len(), 1536);
    assert_eq!(b[..80], HEADER_FIRST_80);
    assert!(
        b[80..1532].iter().all(|&x| x == 0),
        "name fill and reserved are zero"
    );
    assert_eq!(b[1532..1536], HEADER_CRC);
    assert_eq!(crc32fast::hash(&b[..1532]), u32::from_le_bytes(HEADER_CRC));
    assert_eq!(header::Header::decode(&b).unwrap(), h);
}

#[test]
fn lock_file_prefix() {
    let b = lockfile::encode();
    assert_eq!(b, LOCK_PREFIX);
    let mut page = vec![0u8; lockfile::SIZE as usize];
    page[..16].copy_from_slice(&b);
    assert!(lockfile::decode(&page).unwrap());
}

#[test]
fn slot_packing() {
    let s = slot::pack(4096, 0xabcd_ef01_2345_6789).unwrap();
    assert_eq!(s, 0xabcd_ef00_0000_0200);
    assert_eq!(
        s.to_le_bytes(),
        [0x00, 0x02, 0x00, 0x00, 0x00, 0xef, 0xcd, 0xab]
    );
    assert_eq!((slot::offset(s), slot::slot_tag(s)), (4096, 0xabcdef));
    assert_eq!(slot::MAX_OFFSET, (1 << 43) - 8);
    assert_eq!(slot::pack(slot::MAX_OFFSET, u64::MAX), Some(u64::MAX));
}

#[test]
fn key_hash_reference_vectors() {
    // SipHash-1-3, key 00..0f, message 00..(n-1).
    const VECTORS: [u64; 8] = [
        0xabac_0158_050f_c4dc,
        0xc9f4_9bf3_7d57_ca93,
        0x82cb_9b02_4dc7_d44d,
        0x8bf8_0ab8_e7dd_f7fb,
        0xcf75_5760_88d3_8328,
        0xdef9_d52f_4953_3b67,
        0xc50d_2b50_c59f_22a7,
        0xd392_7d98_9bb1_1140,
    ];
    let k: [u8; 16] = std::array::from_fn(|i| i as u8);
    let msg: Vec<u8> = (0u8..8).collect();
    for (n, want) in VECTORS.into_iter().enumerate() {
        assert_eq!(key_hash(&k, &msg[..n]), want, "n = {n}");
        assert!(
            DOC.contains(&format!("`{want:#018x}`")),
            "vector n = {n} not in FORMAT.md"
        );
    }
}

#[test]
fn key_hash_carboy_vector() {
    let h = key_hash(&sample_hash_key(), b"user:1001");
    assert_eq!(h, 0xa19b_5b79_3a24_d3c4);
    assert_eq!(slot::tag(h), 0xa19b5b);
    assert_eq!(slot::bucket(h, 4), 4);
    let s = slot::pack(4096, h).unwrap();
    assert_eq!(s, 0xa19b_5b00_0000_0200);
    assert_eq!(
        s.to_le_bytes(),
        [0x00, 0x02, 0x00, 0x00, 0x00, 0x5b, 0x9b, 0xa1]
    );
    for v in ["`0xa19b5b793a24d3c4`", "`0xa19b5b`", "`0xa19b5b0000000200`"] {
        assert!(DOC.contains(v), "{v} not in FORMAT.md");
    }
}

#[test]
fn layout_constants() {
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(header::HEADER_SIZE, 4096);
    assert_eq!(header::IMMUTABLE_LEN, 1536);
    assert_eq!(header::MAX_NAME_LEN, 1024);
    assert_eq!(live::BASE, 1536);
    assert_eq!(live::COMMIT_LINE, 1600);
    assert_eq!(live::COUNTER_LINE, 1664);
    assert_eq!(live::END, 1728);
    assert_eq!(record::PREFIX_LEN, 12);
    assert_eq!(record::OFF_EXPIRES, 12);
    assert_eq!(record::FLAG_EXPIRES, 0x01);
    assert_eq!(record::KNOWN_FLAGS, 0x01);
    assert_eq!(record::COMMIT_BODY_LEN, 32);
    assert_eq!(record::COMMIT_LEN, 48);
    assert_eq!(record::INDEX_HEADER_LEN, 16);
    assert_eq!((record::MIN_INDEX_LOG2, record::MAX_INDEX_LOG2), (4, 36));
    assert_eq!(record::MAX_KEY_LEN, 65535);
    assert_eq!(record::MAX_VALUE_LEN, 1 << 30);
    let kinds = [
        record::Kind::Put,
        record::Kind::Delete,
        record::Kind::Commit,
        record::Kind::Index,
    ];
    assert_eq!(kinds.map(|k| k as u8), [1, 2, 3, 4]);
    assert_eq!(lockfile::SIZE, 4096);
    assert_eq!(lockfile::OFF_GENERATION, 64);
    assert_eq!(lockfile::OFF_WANTED, 72);
    assert_eq!(lockfile::OFF_SYNC_SEQ, 128);
    assert_eq!(lockfile::SYNC_WORDS_END, 160);
    assert_eq!(lockfile::SYNC_LOCK_BYTE, 128);
    // The CRC is IEEE CRC-32 (check value of "123456789").
    assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
}

/// The cells of every table row in FORMAT.md, trimmed.
fn table_rows() -> Vec<Vec<&'static str>> {
    DOC.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// Whether FORMAT.md has a table row starting `| offset | size | type | `name` |`.
fn documented(rows: &[Vec<&str>], offset: usize, size: usize, ty: &str, name: &str) -> bool {
    let want = [
        offset.to_string(),
        size.to_string(),
        ty.to_string(),
        format!("`{name}`"),
    ];
    rows.iter().any(|r| r.len() >= 4 && r[..4] == want)
}

#[test]
fn format_md_documents_the_offsets() {
    use header::*;
    let rows = table_rows();
    let mut missing = Vec::new();
    let mut check = |offset: usize, size: usize, ty: &str, name: &str| {
        if !documented(&rows, offset, size, ty, name) {
            missing.push(format!("| {offset} | {size} | {ty} | `{name}` |"));
        }
    };

    // Header, immutable part: sizes derived from the next field's offset.
    check(OFF_MAGIC, OFF_VERSION - OFF_MAGIC, "bytes", "magic");
    check(
        OFF_VERSION,
        OFF_HEADER_SIZE - OFF_VERSION,
        "u32",
        "format_version",
    );
    check(
        OFF_HEADER_SIZE,
        OFF_HASH_KEY - OFF_HEADER_SIZE,
        "u32",
        "header_size",
    );
    check(
        OFF_HASH_KEY,
        OFF_FILE_ID - OFF_HASH_KEY,
        "bytes",
        "hash_key",
    );
    check(
        OFF_FILE_ID,
        OFF_GENERATION - OFF_FILE_ID,
        "bytes",
        "file_id",
    );
    check(
        OFF_GENERATION,
        OFF_CREATED_MS - OFF_GENERATION,
        "u64",
        "generation",
    );
    check(
        OFF_CREATED_MS,
        OFF_NAME_LEN - OFF_CREATED_MS,
        "u64",
        "created_ms",
    );
    check(OFF_NAME_LEN, OFF_NAME - OFF_NAME_LEN, "u16", "name_len");
    check(OFF_NAME, MAX_NAME_LEN, "bytes", "name");
    check(
        OFF_HEADER_CRC,
        IMMUTABLE_LEN - OFF_HEADER_CRC,
        "u32",
        "header_crc",
    );

    // Live words.
    for (offset, name) in live::ALL {
        check(offset, 8, "u64", name);
    }

    // Block prefix, optional expiry, commit marker body.
    use record::*;
    check(OFF_CRC, OFF_KIND - OFF_CRC, "u32", "crc");
    check(OFF_KIND, OFF_FLAGS - OFF_KIND, "u8", "kind");
    check(OFF_FLAGS, OFF_KEY_LEN - OFF_FLAGS, "u8", "flags");
    check(OFF_KEY_LEN, OFF_VALUE_LEN - OFF_KEY_LEN, "u16", "key_len");
    check(
        OFF_VALUE_LEN,
        PREFIX_LEN - OFF_VALUE_LEN,
        "u32",
        "value_len",
    );
    check(OFF_EXPIRES, 8, "u64", "expires_ms");
    check(PREFIX_LEN, 8, "u64", "txn_id");
    check(PREFIX_LEN + 8, 8, "u64", "txn_start");
    check(PREFIX_LEN + 16, 8, "u64", "unix_ms");
    check(PREFIX_LEN + 24, 4, "u32", "records");
    check(PREFIX_LEN + 28, 4, "u32", "records_crc");

    // Lock file.
    check(lockfile::OFF_MAGIC, 8, "bytes", "magic");
    check(lockfile::OFF_VERSION, 4, "u32", "version");
    check(lockfile::OFF_GENERATION, 8, "u64", "generation");
    check(lockfile::OFF_WANTED, 4, "u32", "wanted");
    check(lockfile::OFF_SYNC_SEQ, 4, "u32", "sync_seq");
    check(lockfile::OFF_SYNC_WAITERS, 4, "u32", "sync_waiters");
    check(lockfile::OFF_SYNC_COMMITS, 4, "u32", "sync_commits");
    check(lockfile::OFF_SYNC_COVERED, 4, "u32", "sync_covered");
    check(lockfile::OFF_SYNC_GROUP, 4, "u32", "sync_group");
    check(lockfile::OFF_SYNC_ACTIVE, 4, "u32", "sync_active");
    check(lockfile::OFF_SYNC_MICROS, 4, "u32", "sync_micros");
    check(lockfile::OFF_GATHERING, 4, "u32", "gathering");

    assert!(
        missing.is_empty(),
        "FORMAT.md lacks rows:\n{}",
        missing.join("\n")
    );

    // Magic numbers, as FORMAT.md spells them.
    for magic in [header::MAGIC, lockfile::MAGIC] {
        let hex: Vec<String> = magic.iter().map(|b| format!("{b:02X}")).collect();
        let hex = hex.join(" ");
        assert!(DOC.contains(&hex), "magic {hex} not in FORMAT.md");
    }
    // The version this build writes, and the version history.
    assert!(
        rows.iter()
            .any(|r| r[..] == ["version this build writes", "1 (`FORMAT_VERSION`)"])
    );
    assert!(
        rows.iter()
            .any(|r| r[..] == [FORMAT_VERSION.to_string().as_str(), "initial"])
    );
}

#[test]
fn format_md_examples_match_the_encoders() {
    // Appendix A writes the bytes as hex with arbitrary spacing and line
    // breaks; compare with all whitespace removed.
    let doc: String = DOC.chars().filter(|c| !c.is_whitespace()).collect();
    let hex = |b: &[u8]| -> String { b.iter().map(|x| format!("{x:02x}")).collect() };
    for (what, bytes) in [
        ("put", &PUT_K_V[..]),
        ("put with expiry", &PUT_K_V_EXPIRING[..]),
        ("delete", &DELETE_K[..]),
        ("commit", &COMMIT[..]),
        ("index header", &INDEX_HEADER_LOG2_4[..]),
        ("lock file prefix", &LOCK_PREFIX[..]),
        ("header crc", &HEADER_CRC[..]),
    ] {
        assert!(
            doc.contains(&hex(bytes)),
            "{what} example in FORMAT.md differs"
        );
    }
    for line in HEADER_FIRST_80.chunks(16) {
        assert!(
            doc.contains(&hex(line)),
            "header example in FORMAT.md differs"
        );
    }
}
