//! Random operation sequences (puts, expiring puts, deletes, committed and
//! dropped transactions, clock moves, reopens with and without an index
//! rebuild, compactions) checked against an in-memory model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| carboy_tests::fuzzing::ops_model(data));
