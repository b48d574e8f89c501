//! The `a=fmtp` payload format parameters of each codec.
//!
//! Each end states what it is willing to **receive**: the parameters below bound the
//! stream the peer will send it, computed from the negotiated parameters of that
//! direction.

use std::fmt;

use precall_protocol::StreamParams;

use crate::codec::VideoCodec;
use crate::{av1, h264, h265};

/// One `name=value` payload format parameter.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct FmtpParam {
    /// The parameter's name as its RFC spells it (`profile-level-id`, `max-fs`, ...).
    pub name: &'static str,
    /// Its value, as written in SDP (`42e01f`, `3600`, ...).
    pub value: String,
}

/// The parameters of one `a=fmtp` line, in the order they are written.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Fmtp(pub Vec<FmtpParam>);

impl Fmtp {
    fn push(&mut self, name: &'static str, value: impl fmt::Display) {
        self.0.push(FmtpParam {
            name,
            value: value.to_string(),
        });
    }

    /// The value of the parameter `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }

    /// No parameters (then no `a=fmtp` line is written).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `name=value` pairs joined with `;` and no spaces (RFC 8866 §6.15 leaves the format
/// to the payload format; each RFC here uses this one).
impl fmt::Display for Fmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{}={}", p.name, p.value)?;
        }
        Ok(())
    }
}

/// The `a=fmtp` parameters for receiving `codec`, bounded by `stream` (the negotiated
/// parameters of the direction this end receives), or the codec's plain defaults when
/// `None` (an `a=inactive` section).
///
/// - **H.264** (RFC 6184 §8.1): `level-asymmetry-allowed=1`, `packetization-mode=1`
///   (non-interleaved: FU-A fragmentation, which every WebRTC stack sends) and
///   `profile-level-id` = constrained baseline (`42e0`, RFC 7742) at the lowest
///   level of ITU-T H.264 Table A-1 that holds the stream ([`h264::level_for`];
///   level 3.1, `42e01f`, without a stream). `max-fs`, `max-mbps` and `max-br` can
///   only *raise* a receiver's limits above its level (RFC 6184 §8.1: each "MUST be
///   greater than or equal to" the level's value), so they are written only for a
///   stream beyond level 6.2; a stream below its level's limits is bounded by
///   `imageattr`, `framerate`, `b=TIAS` and the encoder settings instead.
/// - **VP8** (RFC 7741 §6.1): `max-fs` (macroblocks per frame) and `max-fr`.
/// - **VP9** (RFC 9628 §6.1): `profile-id=0`, `max-fs` (macroblocks), `max-fr`.
/// - **AV1** (AOM RTP payload format §7.2): `profile=0` (main), `level-idx` from
///   AV1 Annex A.3 ([`av1::level_idx_for`]), `tier=0` (main).
/// - **H.265** (RFC 7798 §7.1): `profile-id=1` (Main), `tier-flag=0`, `level-id`
///   from ITU-T H.265 Table A.8 ([`h265::level_for`]; 6.2 if none holds the stream).
pub fn fmtp_for(codec: VideoCodec, stream: Option<&StreamParams>) -> Fmtp {
    let mut f = Fmtp::default();
    match codec {
        VideoCodec::H264 => {
            f.push("level-asymmetry-allowed", 1);
            f.push("packetization-mode", 1);
            let Some(s) = stream else {
                f.push("profile-level-id", "42e01f");
                return f;
            };
            let found = h264::level_for(s.width, s.height, s.fps, s.bitrate_kbps);
            // The highest level when none holds the stream; then the max-* parameters
            // state what exceeds it, as RFC 6184 intends them.
            let level = found.unwrap_or(h264::LEVELS[h264::LEVELS.len() - 1]);
            f.push(
                "profile-level-id",
                format_args!("{:06x}", h264::profile_level_id(level)),
            );
            let fs = h264::macroblocks(s.width, s.height);
            let mbps = u64::from(fs) * u64::from(s.fps);
            if mbps > u64::from(level.max_mbps) {
                f.push("max-mbps", mbps);
            }
            if fs > level.max_fs {
                f.push("max-fs", fs);
            }
            if s.bitrate_kbps > level.max_br_kbps {
                f.push("max-br", s.bitrate_kbps);
            }
        }
        VideoCodec::Vp8 => {
            if let Some(s) = stream {
                f.push("max-fs", h264::macroblocks(s.width, s.height));
                f.push("max-fr", s.fps);
            }
        }
        VideoCodec::Vp9 => {
            f.push("profile-id", 0);
            if let Some(s) = stream {
                f.push("max-fs", h264::macroblocks(s.width, s.height));
                f.push("max-fr", s.fps);
            }
        }
        VideoCodec::Av1 => {
            if let Some(s) = stream {
                f.push("profile", 0);
                f.push(
                    "level-idx",
                    av1::level_idx_for(s.width, s.height, s.fps, s.bitrate_kbps),
                );
                f.push("tier", 0);
            }
        }
        VideoCodec::H265 => {
            f.push("profile-id", h265::MAIN_PROFILE);
            f.push("tier-flag", 0);
            let level = match stream {
                Some(s) => h265::level_for(s.width, s.height, s.fps, s.bitrate_kbps)
                    .unwrap_or(h265::LEVELS[h265::LEVELS.len() - 1]),
                // Level 3.1, the H.265 counterpart of H.264's 42e01f default.
                None => h265::LEVELS[4],
            };
            f.push("level-id", level.level_idc);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use precall_protocol::Codec;

    fn stream(codec: &str, width: u16, height: u16, fps: u16, bitrate_kbps: u32) -> StreamParams {
        StreamParams {
            codec: Codec::new(codec).expect("valid token"),
            width,
            height,
            fps,
            bitrate_kbps,
        }
    }

    fn text(codec: VideoCodec, s: Option<&StreamParams>) -> String {
        fmtp_for(codec, s).to_string()
    }

    #[test]
    fn h264_states_cb_at_the_level_and_mode_1() {
        let s = stream("h264", 1280, 720, 30, 2_764);
        assert_eq!(
            text(VideoCodec::H264, Some(&s)),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        );
        assert_eq!(
            text(VideoCodec::H264, None),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        );
    }

    /// Beyond level 6.2 (139 264 MB, 16 711 680 MB/s, 800 000 kbit/s) the max-*
    /// parameters state what exceeds it: 16 384² is 1024² = 1 048 576 MB.
    #[test]
    fn h264_beyond_the_highest_level_says_so_with_max_parameters() {
        let s = stream("h264", 16_384, 16_384, 30, 900_000);
        assert_eq!(
            text(VideoCodec::H264, Some(&s)),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e03e;\
             max-mbps=31457280;max-fs=1048576;max-br=900000"
        );
    }

    #[test]
    fn vp8_and_vp9_bound_frame_size_in_macroblocks_and_rate() {
        // 640×360: 40×23 = 920 macroblocks.
        let s = stream("vp8", 640, 360, 30, 760);
        assert_eq!(text(VideoCodec::Vp8, Some(&s)), "max-fs=920;max-fr=30");
        assert_eq!(text(VideoCodec::Vp8, None), "");
        assert_eq!(
            text(VideoCodec::Vp9, Some(&s)),
            "profile-id=0;max-fs=920;max-fr=30"
        );
        assert_eq!(text(VideoCodec::Vp9, None), "profile-id=0");
    }

    #[test]
    fn av1_and_h265_state_profile_level_and_tier() {
        let s = stream("av1", 1280, 720, 30, 1_382);
        assert_eq!(
            text(VideoCodec::Av1, Some(&s)),
            "profile=0;level-idx=5;tier=0"
        );
        assert_eq!(text(VideoCodec::Av1, None), "");
        let s = stream("h265", 1920, 1080, 30, 4_043);
        assert_eq!(
            text(VideoCodec::H265, Some(&s)),
            "profile-id=1;tier-flag=0;level-id=120"
        );
        assert_eq!(
            text(VideoCodec::H265, None),
            "profile-id=1;tier-flag=0;level-id=93"
        );
    }
}
