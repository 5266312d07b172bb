//! Fuzz target `kubernetes_json`: see `clusterdns::fuzzing::kubernetes_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterdns::fuzzing::kubernetes_json(data));
