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
