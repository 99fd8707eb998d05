//! Opening, reading, verifying, writing, compacting and salvaging an
//! arbitrary file image.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| carboy_tests::fuzzing::open_image(data));
