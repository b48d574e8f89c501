//! # precall-sdp-interop
//!
//! Checks that what `precall-sdp` writes works with a real WebRTC stack: str0m, a
//! sans-IO WebRTC implementation. Its tests (`tests/str0m.rs`) run the whole SDP
//! offer/answer between two str0m peers with precall's `m=video` section applied to
//! each side's description (`precall_sdp::apply`), and read back what str0m
//! negotiated: codec, payload type, H.264 `profile-level-id` and direction. They also
//! feed str0m deliberately broken descriptions to show each check can fail.
//!
//! The crate has no code of its own; it exists so that str0m (which needs a newer Rust
//! than the rest of the workspace) stays out of `precall-sdp`'s dependencies.

#![forbid(unsafe_code)]
