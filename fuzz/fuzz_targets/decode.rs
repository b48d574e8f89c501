//! cargo-fuzz target `decode`: the body, and the properties it asserts after every step,
//! are `precall_protocol::fuzz::decode` (replayed on stable by `protocol/tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| precall_protocol::fuzz::decode(data));
