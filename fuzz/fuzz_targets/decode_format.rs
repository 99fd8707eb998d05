//! Every decoder of carboy-format on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| carboy_tests::fuzzing::decode_format(data));
