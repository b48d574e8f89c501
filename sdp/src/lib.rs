//! # precall-sdp
//!
//! From precall's negotiated call parameters to what a media stack takes: the
//! `m=video` section of an SDP offer and answer (RFC 3264, RFC 8866), and the encoder
//! settings of a WebRTC sender. Pure like `precall-protocol`: no I/O, no clock, no
//! randomness; the same inputs always give the same text.
//!
//! ## The inputs
//!
//! A terminal's own [`Capabilities`](precall_protocol::Capabilities) and the
//! [`CallParams`](precall_protocol::CallParams) it negotiated with a peer, from its
//! own view: `send` is what it sends, `recv` what it receives. The peer computes the
//! same parameters mirrored ([`CallParams::mirrored`](precall_protocol::CallParams::mirrored)),
//! so the caller's [`offer()`] and the callee's [`answer()`] agree without another
//! round trip.
//!
//! ## The mapping, in a page
//!
//! Each section states what its writer is willing to **receive** (RFC 3264 §5.1), so
//! its limits come from `recv`:
//!
//! | negotiated | SDP | source |
//! |---|---|---|
//! | codec token (`h264`, `vp8`, `vp9`, `av1`, `h265`/`hevc`) | `m=video` format, `a=rtpmap:<pt> <NAME>/90000` with a fixed dynamic payload type per codec | RFC 8866 §6.6, RFC 3551 |
//! | H.264 size × rate × bit rate | `a=fmtp` `profile-level-id=42e0xx` (constrained baseline, level from ITU-T H.264 Table A-1), `packetization-mode=1`, `level-asymmetry-allowed=1` | RFC 6184 §8.1, RFC 7742 |
//! | VP8 size, rate | `max-fs` (macroblocks), `max-fr` | RFC 7741 §6.1 |
//! | VP9 size, rate | `profile-id=0`, `max-fs`, `max-fr` | RFC 9628 |
//! | AV1 size × rate × bit rate | `profile=0`, `level-idx` (AV1 Annex A.3), `tier=0` | AOM AV1 RTP payload §7.2 |
//! | H.265 size × rate × bit rate | `profile-id=1`, `tier-flag=0`, `level-id` (H.265 Table A.8) | RFC 7798 §7.1 |
//! | width × height, each way | `a=imageattr:<pt> send [x=W,y=H] recv [x=W,y=H]` | RFC 6236 |
//! | frame rate received | `a=framerate:<fps>` | RFC 8866 §6.8 |
//! | bit rate received | `b=TIAS:<bit/s>` and `b=AS:<kbit/s>` (with IP/UDP/RTP headers) | RFC 3890 |
//! | a direction `Off` | `a=recvonly` (send off), `a=sendonly` (recv off), `a=inactive` (both) | RFC 3264 §5.1, §6.1 |
//!
//! When the two directions use different codecs the section lists the received codec
//! first and the sent one second, so the answer can pick it from the offer
//! (RFC 3264 §6.1). H.264's `max-fs`/`max-mbps`/`max-br` can only raise a receiver's
//! limits above its level (RFC 6184 §8.1), so they appear only beyond level 6.2; below
//! the level's limits the stream is bounded by `imageattr`, `framerate`, `b=` and the
//! encoder settings. See [`fmtp::fmtp_for`] for each codec's parameters.
//!
//! Browsers ignore part of this (Chrome does not implement `imageattr`; `framerate` is
//! informational): [`encoder_settings()`] gives what a sender sets directly
//! (`maxBitrate`, `maxFramerate`, `scaleResolutionDownBy`, codec preferences). The
//! [`encoder`] module says which attribute each setting makes up for.
//!
//! ## Example
//!
//! ```
//! use precall_protocol::{negotiate_pair, Capabilities};
//!
//! let alice = Capabilities::builder().codecs(["h264"]).screen(1920, 1080)
//!     .camera(1920, 1080, 30).bandwidth(4_000, 8_000).build()?;
//! let bob = Capabilities::builder().codecs(["h264", "vp8"]).screen(1280, 720)
//!     .camera(1280, 720, 30).bandwidth(4_000, 8_000).build()?;
//! let params = negotiate_pair(&alice, &bob);
//!
//! let offer = precall_sdp::offer(&alice, &params)?;
//! let answer = precall_sdp::answer(&bob, &params.mirrored(), &offer)?;
//! let text = offer.to_string();
//! // Alice receives 1280×720@30 from Bob's camera: H.264 level 3.1.
//! assert!(text.contains("a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"));
//! assert!(text.contains("a=sendrecv"));
//! // Bob receives 1280×720 too (his screen bounds it); Alice scales her 1080p camera by 1.5.
//! assert!(answer.to_string().contains("a=imageattr:100 send [x=1280,y=720] recv [x=1280,y=720]"));
//! let enc = precall_sdp::encoder_settings(&alice, &params)?.expect("Alice sends video");
//! assert_eq!(enc.scale_resolution_down_by, Some(1.5));
//! assert_eq!(enc.max_bitrate_bps, 2_764_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Modules
//!
//! - [`codec`] maps codec tokens to encoding names and payload types;
//! - [`h264`], [`av1`] and [`h265`] hold the level tables and pick a stream's level;
//! - [`fmtp`] writes each codec's `a=fmtp` parameters;
//! - [`mod@offer`] builds the section, offer and answer, and its SDP text;
//! - [`encoder`] gives the sender's settings and why they exist;
//! - [`session`] puts a section into a WebRTC stack's own session description;
//! - [`error`] holds [`SdpError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod av1;
pub mod codec;
pub mod encoder;
pub mod error;
pub mod fmtp;
pub mod h264;
pub mod h265;
pub mod offer;
pub mod session;

pub use codec::{VideoCodec, VIDEO_CLOCK_RATE};
pub use encoder::{encoder_settings, EncoderSettings};
pub use error::SdpError;
pub use fmtp::{Fmtp, FmtpParam};
pub use offer::{
    answer, callee_answer, offer, ImageAttr, MediaDirection, MediaSection, PayloadFormat,
    SectionBandwidth,
};
pub use session::apply;
