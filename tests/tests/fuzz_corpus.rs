//! The fuzz targets run on stable: every file of the checked-in corpora
//! (`fuzz/corpus/<target>/`) replays through the same functions cargo-fuzz
//! calls, and a few thousand seeded mutations of a valid file (flips, zeroed
//! and copied ranges, truncations) go through `open_image`, and 200 random
//! operation sequences through `ops_model`. None may panic.
//! `CARBOY_MUTATIONS` sets the number of mutations (default 1500).

use std::path::PathBuf;

use carboy_tests::fuzzing::{
    cache_values, decode_format, export_parser, open_image, ops_model, seed_image,
};
use carboy_tests::splitmix;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus files", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn decode_format_corpus_replays() {
    for input in corpus("decode_format") {
        decode_format(&input);
    }
}

#[test]
fn cache_values_corpus_replays() {
    for input in corpus("cache_values") {
        cache_values(&input);
    }
}

#[test]
fn open_image_corpus_replays() {
    for input in corpus("open_image") {
        open_image(&input);
    }
}

#[test]
fn export_parser_corpus_replays() {
    for input in corpus("export_parser") {
        export_parser(&input);
    }
}

#[test]
fn ops_model_corpus_replays() {
    for input in corpus("ops_model") {
        ops_model(&input);
    }
}

#[test]
fn random_operation_sequences_agree_with_the_model() {
    let mut rng = 0x0FF5_2026_u64;
    for _ in 0..200 {
        let len = 20 + splitmix(&mut rng) % 300;
        let input: Vec<u8> = (0..len).map(|_| splitmix(&mut rng) as u8).collect();
        ops_model(&input);
    }
}

#[test]
fn mutated_files_never_panic() {
    let seed = seed_image();
    let n: u64 = std::env::var("CARBOY_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut rng = 0xF022_2026_u64;
    for _ in 0..n {
        let mut image = seed.clone();
        for _ in 0..1 + splitmix(&mut rng) % 4 {
            let len = image.len() as u64;
            if len == 0 {
                break;
            }
            let at = (splitmix(&mut rng) % len) as usize;
            match splitmix(&mut rng) % 5 {
                0 => image[at] ^= 1 << (splitmix(&mut rng) % 8),
                1 => image[at] = splitmix(&mut rng) as u8,
                2 => {
                    let end = (at + 1 + (splitmix(&mut rng) % 64) as usize).min(image.len());
                    image[at..end].fill(0);
                }
                3 => {
                    let from = (splitmix(&mut rng) % len) as usize;
                    let n = (1 + splitmix(&mut rng) % 32) as usize;
                    let n = n.min(image.len() - at).min(image.len() - from);
                    image.copy_within(from..from + n, at);
                }
                _ => image.truncate(at),
            }
        }
        decode_format(&image[image.len().min(4096)..]);
        open_image(&image);
    }
}
