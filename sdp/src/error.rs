//! The crate's typed error.

use precall_protocol::Codec;

/// Why a negotiated call could not be turned into SDP or encoder settings.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The codec token has no RTP payload format this crate knows (the protocol treats
    /// codec tokens as opaque, so negotiation can pick one no media stack names).
    #[error("codec `{codec}` has no RTP payload format this crate can map (known: h264, vp8, vp9, av1, h265/hevc)")]
    UnknownCodec {
        /// The token as negotiated.
        codec: Codec,
    },
    /// This end sends with a codec it cannot itself decode while it receives another:
    /// one `m=video` section lists the formats its owner is willing to *receive*, and the
    /// answer may only pick formats from the offer (RFC 3264 §6.1), so the send codec
    /// cannot be offered. (Two unidirectional sections would carry it; not done yet.)
    #[error("this end sends `{send}`, which it cannot decode, and receives `{recv}`: one sendrecv m= section cannot carry both")]
    AsymmetricCodecs {
        /// The codec this end sends.
        send: Codec,
        /// The codec this end receives.
        recv: Codec,
    },
    /// No video flows either way and this end decodes no codec the crate can map, so
    /// there is no payload format to put on an `a=inactive` section.
    #[error("no video either way and no mappable codec to list on an inactive section")]
    NothingToList,
    /// The answer was asked for against an offer it cannot answer: a format the answer
    /// needs is not in the offer, or the offer's direction is not the mirror of the
    /// answerer's (RFC 3264 §6.1).
    #[error("the offer does not match the answerer's view of the call: {reason}")]
    OfferMismatch {
        /// What did not match.
        reason: String,
    },
    /// A WebRTC stack's session description given to
    /// [`session::apply`](crate::session::apply) has no `m=video` section.
    #[error("the session description has no m=video section")]
    NoVideoSection,
    /// The WebRTC stack's video section lists no format of a codec precall's section
    /// needs, so the stack cannot send or receive it (a browser without an AV1 or H.265
    /// encoder, say).
    #[error("the media stack lists no {} format: it cannot send or receive the negotiated codec", codec.encoding_name())]
    CodecNotInStack {
        /// The codec the stack lacks.
        codec: crate::codec::VideoCodec,
    },
}
