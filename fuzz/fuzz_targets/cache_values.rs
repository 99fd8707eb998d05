//! Arbitrary bytes as a stored cache value, read back as several types.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| carboy_tests::fuzzing::cache_values(data));
