//! Fuzz target `packet`: see `clusterdns::fuzzing::packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::packet(data));
