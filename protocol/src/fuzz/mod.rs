//! The bodies of the fuzz targets (feature `arbitrary`).
//!
//! Each target is a function from raw fuzzer bytes to `()` that drives the real state
//! machines and **panics when a property breaks**, checking after every step rather
//! than only at the end. The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line
//! wrappers around these functions, and the stable test `protocol/tests/fuzz_replay.rs`
//! runs every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through
//! them, so a past crash is caught without a nightly toolchain.
//!
//! | Target | Drives | Checks after every step |
//! |---|---|---|
//! | [`decode`] | [`crate::codec::FrameDecoder`] and [`crate::codec::decode_message`] on arbitrary bytes in arbitrary chunkings | chunking does not change the outcome; memory within the frame bound; errors sticky; every accepted message re-encodes canonically to itself |
//! | [`server`] | [`crate::server::Server`] through [`crate::sim::Sim`]: wired clients, hostile raw connections, time, held credential checks | no output to a closed connection (`INV-CONN-OPEN`); capabilities only to entitled sessions (`INV-VISIBILITY`); the client-side invariants; at the end, `INV-ONLINE-EXACT` and no client saw a violation |
//! | [`client`] | [`crate::client::Client`] fed arbitrary server messages and bytes between commands | the spec's rejections exactly (section 8.3), a refused message changes nothing; `INV-PARAMS-FRESH`, `INV-LOGOUT-EMPTY`; the table names only listed contacts |
//! | [`negotiate`] | [`crate::negotiate_pair`] on arbitrary capability pairs | every property of [`crate::properties`] |
//!
//! Inputs are built with [`arbitrary`]: the identifiers' implementations draw mostly
//! from a few sample values ([`input`]), so fuzzed scenarios keep naming the same users,
//! sessions and calls.

pub mod input;

mod client;
mod decode;
mod negotiate;
mod server;

pub use client::client;
pub use decode::decode;
pub use negotiate::negotiate;
pub use server::server;

/// A target's body: fuzzer bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", decode),
    ("server", server),
    ("client", client),
    ("negotiate", negotiate),
];
