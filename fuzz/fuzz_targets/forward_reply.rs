//! Fuzz target `forward_reply`: see `clusterdns::fuzzing::forward_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::forward_reply(data));
