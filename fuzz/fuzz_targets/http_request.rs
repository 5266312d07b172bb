//! Fuzz target `http_request`: see `clusterdns::fuzzing::http_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::http_request(data));
