//! Fuzz target `corefile`: see `clusterdns::fuzzing::corefile`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::corefile(data));
