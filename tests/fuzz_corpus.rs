//! A short, deterministic run of the fuzz targets (fuzz/, see
//! fuzz/README.md) in the normal test suite: every committed corpus file
//! goes through the same checks as under `cargo fuzz`, then a fixed-seed
//! mutation loop derives a few thousand more inputs from them.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// Mutated inputs per target.
const ITERATIONS: usize = 5000;
/// Inputs are cut to this size (libFuzzer's default -max_len is 4096).
const MAX_LEN: usize = 8192;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

/// xorshift64: a fixed seed gives the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values at the protocol's edges: lengths, counts and statuses.
const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    5,
    1000,
    1001,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    0x7fff_ffff,
    u32::MAX,
];
const INTERESTING_U16: [u16; 8] = [0, 99, 100, 599, 999, 1000, 0x8000, u16::MAX];
const INTERESTING_BYTES: [u8; 14] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x13, 0x14, b'\r', b'\n', b'_', 0xff,
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        let at = rng.below(len + 1);
        match rng.below(10) {
            0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => input[at.min(len - 1)] = rng.next() as u8,
            2 => input.insert(at, INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]),
            3 => {
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at.min(end)..end);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let end = (from + 1 + rng.below(64)).min(len);
                let copy = input[from..end].to_vec();
                input.splice(at..at, copy);
            }
            5 if len >= 4 => {
                let at = at.min(len - 4);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                input[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            6 if len >= 2 => {
                let at = at.min(len - 2);
                let v = INTERESTING_U16[rng.below(INTERESTING_U16.len())];
                input[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            7 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(256)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            8 => input.truncate(at),
            _ => input.insert(at, rng.next() as u8),
        }
    }
    input.truncate(MAX_LEN);
}

fn run(target: &str, check: checks::Check, seed: u64) {
    let files = corpus(target);
    for (path, data) in &files {
        if std::panic::catch_unwind(|| check(data)).is_err() {
            panic!("{target}: corpus file {} fails", path.display());
        }
    }
    let mut rng = Rng(seed);
    let mut input = Vec::new();
    for i in 0..ITERATIONS {
        // Mutations stack for a few rounds before starting over from a
        // corpus file, so inputs can wander further from the corpus.
        if i % 8 == 0 || rng.below(3) == 0 {
            input = files[rng.below(files.len())].1.clone();
        }
        let (_, other) = &files[rng.below(files.len())];
        mutate(&mut rng, &mut input, other);
        let result = std::panic::catch_unwind(|| check(&input));
        if result.is_err() {
            panic!("{target}: mutation {i} (seed {seed:#x}) failed on input {input:02x?}");
        }
    }
}

#[test]
fn frame_decoder_corpus() {
    run(
        "frame_decoder",
        checks::frame_decoder,
        0x9e37_79b9_7f4a_7c15,
    );
}

#[test]
fn request_head_roundtrip_corpus() {
    run(
        "request_head_roundtrip",
        checks::request_head_roundtrip,
        0xd1b5_4a32_d192_ed03,
    );
}

#[test]
fn response_head_corpus() {
    run(
        "response_head",
        checks::response_head,
        0x8cb9_2ba7_2f3d_8dd7,
    );
}

#[test]
fn rack_headers_corpus() {
    run("rack_headers", checks::rack_headers, 0x2545_f491_4f6c_dd1d);
}

#[test]
fn every_target_has_a_corpus() {
    for (target, _) in checks::TARGETS {
        assert!(!corpus(target).is_empty());
    }
}
