//! The export/import line format's parser, with a round trip of whatever it
//! accepts.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| carboy_tests::fuzzing::export_parser(data));
