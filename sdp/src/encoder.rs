//! What a WebRTC sender is told directly, because browsers honour only part of the SDP.
//!
//! ## Why these settings exist
//!
//! An SDP answer bounds what the peer may send, but a WebRTC sender configures its
//! encoder mostly from `RTCRtpSender.setParameters()` and the capture track, and takes
//! only some of the SDP into account. What is known at the time of writing (the browser
//! checks of issue 14 are to measure it):
//!
//! - **`a=imageattr`** (RFC 6236) is not implemented by Chrome (libwebrtc): it neither
//!   parses nor applies it, so the sent resolution follows the capture size and the
//!   encoder's own adaptation. [`EncoderSettings::scale_resolution_down_by`] makes the
//!   sender send the negotiated size.
//! - **`a=framerate`** (RFC 8866 §6.8) is informational; no browser caps the encoder's
//!   rate by it. [`EncoderSettings::max_framerate`] does (`maxFramerate`).
//! - **`max-fs` / `max-fr`** of VP8 and VP9 are honoured by Firefox and not by Chrome;
//!   the H.264 level of `profile-level-id` is used by Chrome to match codecs, not to
//!   size the encoder.
//! - **`b=AS` / `b=TIAS`** are applied by Chrome and Firefox as a ceiling of the send
//!   bandwidth, but the encoder can still overshoot a short window and the ceiling covers
//!   every stream of the section; [`EncoderSettings::max_bitrate_bps`]
//!   (`maxBitrate`) bounds the encoding itself.
//!
//! So a sender applies both: the SDP from [`crate::offer()`]/[`crate::answer()`] and,
//! once the transceiver exists, these settings on its single encoding.

use precall_protocol::{CallParams, Capabilities, Direction};

use crate::codec::VideoCodec;
use crate::error::SdpError;

/// The parameters of the sender's one encoding (`RTCRtpEncodingParameters`), and the
/// codec order for the transceiver.
#[derive(Clone, PartialEq, Debug)]
pub struct EncoderSettings {
    /// The codec this end sends.
    pub codec: VideoCodec,
    /// `maxBitrate`, in bit/s: the negotiated bit rate × 1000.
    pub max_bitrate_bps: u64,
    /// `maxFramerate`: the negotiated frame rate.
    pub max_framerate: u16,
    /// The negotiated width and height the encoder should produce.
    pub width: u16,
    /// See [`EncoderSettings::width`].
    pub height: u16,
    /// `scaleResolutionDownBy`: how many times smaller than the capture the sent frame
    /// is on each side, so that the capture (this end's camera at its largest size,
    /// [`Capabilities::camera`]) scales into the negotiated size; `None` when this end
    /// states no camera (then it sends nothing anyway). At least 1.0; the larger of the
    /// two sides' ratios, so both sides fit.
    pub scale_resolution_down_by: Option<f64>,
    /// Codec order for `RTCRtpTransceiver.setCodecPreferences` (by MIME type, e.g.
    /// `video/H264`): the codec this end receives first (the preference orders what it
    /// is willing to receive, as the offer does), then the one it sends, then the rest
    /// of its decode list that this crate maps, in its own order.
    pub codec_preferences: Vec<&'static str>,
}

/// The encoder settings for what this end sends, or `None` when it sends no video
/// (`params.send` is [`Direction::Off`]).
///
/// Errors: [`SdpError::UnknownCodec`] for a negotiated codec token with no payload
/// format.
pub fn encoder_settings(
    own: &Capabilities,
    params: &CallParams,
) -> Result<Option<EncoderSettings>, SdpError> {
    let Direction::Video(send) = &params.send else {
        return Ok(None);
    };
    let codec = VideoCodec::from_token(&send.codec)?;
    let mut prefs: Vec<&'static str> = Vec::new();
    let mut add = |c: VideoCodec| {
        if !prefs.contains(&c.mime_type()) {
            prefs.push(c.mime_type());
        }
    };
    if let Direction::Video(recv) = &params.recv {
        add(VideoCodec::from_token(&recv.codec)?);
    }
    add(codec);
    for c in own.decode() {
        if let Ok(v) = VideoCodec::from_token(c) {
            add(v);
        }
    }
    let scale = own.camera().map(|cam| {
        let w = f64::from(cam.max.long()) / f64::from(send.width.max(1));
        let h = f64::from(cam.max.short()) / f64::from(send.height.max(1));
        w.max(h).max(1.0)
    });
    Ok(Some(EncoderSettings {
        codec,
        max_bitrate_bps: u64::from(send.bitrate_kbps) * 1_000,
        max_framerate: send.fps,
        width: send.width,
        height: send.height,
        scale_resolution_down_by: scale,
        codec_preferences: prefs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use precall_protocol::{Codec, NoVideo, StreamParams};

    fn own(camera: (u16, u16)) -> Capabilities {
        Capabilities::builder()
            .codecs(["vp8", "h264", "theora", "av1"])
            .screen(1920, 1080)
            .camera(camera.0, camera.1, 30)
            .bandwidth(4_000, 4_000)
            .build()
            .expect("valid")
    }

    fn video(codec: &str, width: u16, height: u16) -> Direction {
        Direction::Video(StreamParams {
            codec: Codec::new(codec).expect("valid token"),
            width,
            height,
            fps: 24,
            bitrate_kbps: 1_500,
        })
    }

    #[test]
    fn settings_carry_rate_bit_rate_scale_and_codec_order() {
        let p = CallParams {
            send: video("h264", 1280, 720),
            recv: video("vp8", 640, 360),
        };
        let e = encoder_settings(&own((1920, 1080)), &p)
            .expect("maps")
            .expect("sends video");
        assert_eq!(e.codec, VideoCodec::H264);
        assert_eq!((e.max_bitrate_bps, e.max_framerate), (1_500_000, 24));
        assert_eq!(e.scale_resolution_down_by, Some(1.5));
        // Received codec, sent codec, then the decode list (theora has no mapping).
        assert_eq!(
            e.codec_preferences,
            ["video/VP8", "video/H264", "video/AV1"]
        );
        // A 4:3 camera: 1440/1280 = 1.125 on the long side, 1080/720 = 1.5 on the
        // short one; 1.5 fits both.
        let e = encoder_settings(&own((1440, 1080)), &p)
            .expect("maps")
            .expect("sends video");
        assert_eq!(e.scale_resolution_down_by, Some(1.5));
    }

    #[test]
    fn no_video_sent_is_no_settings_and_an_unknown_codec_an_error() {
        let p = CallParams {
            send: Direction::Off(NoVideo::NoCommonCodec),
            recv: video("vp8", 640, 360),
        };
        assert_eq!(encoder_settings(&own((1280, 720)), &p), Ok(None));
        let p = CallParams {
            send: video("theora", 640, 360),
            recv: video("vp8", 640, 360),
        };
        assert!(matches!(
            encoder_settings(&own((1280, 720)), &p),
            Err(SdpError::UnknownCodec { .. })
        ));
    }
}
