//! Codec tokens to RTP payload formats: encoding name, clock rate, payload type.

use precall_protocol::Codec;

use crate::error::SdpError;

/// A video codec this crate can describe in SDP.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[non_exhaustive]
pub enum VideoCodec {
    /// H.264 / AVC (RFC 6184), constrained baseline profile (RFC 7742).
    H264,
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628), profile 0.
    Vp9,
    /// AV1 (AOM "RTP Payload Format For AV1"), main profile.
    Av1,
    /// H.265 / HEVC (RFC 7798), main profile.
    H265,
}

/// The RTP clock rate every video payload format here uses, in Hz.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

impl VideoCodec {
    /// Every codec, in a fixed order.
    pub const ALL: [VideoCodec; 5] = [Self::H264, Self::Vp8, Self::Vp9, Self::Av1, Self::H265];

    /// Maps a negotiated codec token (`h264`, `vp8`, `vp9`, `av1`, `h265` or `hevc`).
    pub fn from_token(codec: &Codec) -> Result<Self, SdpError> {
        match codec.as_str() {
            "h264" => Ok(Self::H264),
            "vp8" => Ok(Self::Vp8),
            "vp9" => Ok(Self::Vp9),
            "av1" => Ok(Self::Av1),
            "h265" | "hevc" => Ok(Self::H265),
            _ => Err(SdpError::UnknownCodec {
                codec: codec.clone(),
            }),
        }
    }

    /// The encoding name of `a=rtpmap` (its media subtype, as registered with IANA).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::H264 => "H264",
            Self::Vp8 => "VP8",
            Self::Vp9 => "VP9",
            Self::Av1 => "AV1",
            Self::H265 => "H265",
        }
    }

    /// The MIME type a WebRTC `RTCRtpCodec.mimeType` names it by (for
    /// `setCodecPreferences`).
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::H264 => "video/H264",
            Self::Vp8 => "video/VP8",
            Self::Vp9 => "video/VP9",
            Self::Av1 => "video/AV1",
            Self::H265 => "video/H265",
        }
    }

    /// The dynamic RTP payload type (RFC 3551 §3: 96–127) this crate gives the codec.
    /// Fixed per codec, so the answer reuses the offer's number for the same codec as
    /// RFC 3264 §6.1 recommends, whichever end builds which.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Vp8 => 96,
            Self::Vp9 => 98,
            Self::H264 => 100,
            Self::Av1 => 102,
            Self::H265 => 104,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_and_unknown_ones_are_a_typed_error() {
        let c = |s: &str| Codec::new(s).expect("valid token");
        assert_eq!(VideoCodec::from_token(&c("h264")), Ok(VideoCodec::H264));
        assert_eq!(VideoCodec::from_token(&c("hevc")), Ok(VideoCodec::H265));
        assert_eq!(
            VideoCodec::from_token(&c("theora")),
            Err(SdpError::UnknownCodec { codec: c("theora") })
        );
        // Payload types are distinct and dynamic.
        let mut pts: Vec<u8> = VideoCodec::ALL.iter().map(|v| v.payload_type()).collect();
        pts.sort_unstable();
        pts.dedup();
        assert_eq!(pts.len(), VideoCodec::ALL.len());
        assert!(pts.iter().all(|pt| (96..=127).contains(pt)));
    }
}
