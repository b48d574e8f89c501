//! `precall-sdp` over the client's table: the inputs are this terminal's own
//! capabilities ([`Client::capabilities`]) and a peer's entry in the table
//! ([`Client::peer`]: its capabilities and the parameters pre-computed with it). Every
//! computation is `precall-sdp`'s; this module only looks the inputs up.
//!
//! - the caller's offer: [`precall_sdp::offer()`]`(own, params)`;
//! - the callee's answer: [`precall_sdp::answer`]`(own, params, &`[`precall_sdp::offer()`]`(peer_caps, &params.mirrored()))`,
//!   the offer the caller sends, rebuilt from the caller's capabilities in the table
//!   (as the reference client's `incoming_call` does): no capability exchange needed;
//! - a stack's description with one of them in it: [`precall_sdp::apply`];
//! - the sender's settings: [`precall_sdp::encoder_settings`]`(own, params)`.

use precall_protocol::{CallParams, Capabilities, Client, Endpoint, Peer};
use precall_sdp::{EncoderSettings, MediaSection, VIDEO_CLOCK_RATE};
use serde::Serialize;

use crate::error::Error;
use crate::input::SectionKind;

fn own(client: &Client) -> Result<&Capabilities, Error> {
    client.capabilities().ok_or_else(|| {
        Error::new(
            "not_logged_in",
            "not logged in: this terminal's capabilities are not known",
        )
    })
}

fn peer<'c>(client: &'c Client, endpoint: &Endpoint) -> Result<&'c Peer, Error> {
    client.peer(endpoint).ok_or_else(|| {
        Error::new(
            "unknown_peer",
            format!("{endpoint} is not an online contact terminal in the table"),
        )
    })
}

/// The `m=video` section of the offer this terminal sends when it calls `endpoint`.
pub fn offer(client: &Client, endpoint: &Endpoint) -> Result<MediaSection, Error> {
    let params = &peer(client, endpoint)?.params;
    Ok(precall_sdp::offer(own(client)?, params)?)
}

/// The `m=video` section of the answer this terminal returns when `endpoint` calls,
/// with the parameters in the table.
pub fn answer(client: &Client, endpoint: &Endpoint) -> Result<MediaSection, Error> {
    let params = peer(client, endpoint)?.params.clone();
    answer_for(client, endpoint, &params)
}

/// The answer to a call from `from` whose parameters, from this end, are `params` (an
/// `incoming_call`'s): the caller's offer rebuilt from its capabilities in the table.
pub fn answer_for(
    client: &Client,
    from: &Endpoint,
    params: &CallParams,
) -> Result<MediaSection, Error> {
    let own = own(client)?;
    let caller = peer(client, from)?;
    Ok(precall_sdp::callee_answer(
        own,
        &caller.capabilities,
        params,
    )?)
}

/// `stack_sdp` (a whole description a WebRTC stack wrote) with the offer or answer
/// section for `endpoint` in place of its video section.
pub fn apply(
    client: &Client,
    stack_sdp: &str,
    endpoint: &Endpoint,
    kind: SectionKind,
) -> Result<String, Error> {
    let section = match kind {
        SectionKind::Offer => offer(client, endpoint)?,
        SectionKind::Answer => answer(client, endpoint)?,
    };
    Ok(precall_sdp::apply(stack_sdp, &section)?)
}

/// [`EncoderSettings`] as a page hands them to WebRTC: camelCase, the names of
/// `RTCRtpEncodingParameters` where there is one.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Encoder {
    /// The codec this end sends, as `RTCRtpCodec.mimeType` names it (`video/H264`).
    pub mime_type: &'static str,
    /// Its RTP payload type in precall's sections.
    pub payload_type: u8,
    /// Its RTP clock rate (90000).
    pub clock_rate: u32,
    /// `maxBitrate`, bit/s.
    pub max_bitrate: u64,
    /// `maxFramerate`.
    pub max_framerate: u16,
    /// The negotiated width the encoder should produce.
    pub width: u16,
    /// The negotiated height.
    pub height: u16,
    /// `scaleResolutionDownBy` (absent when this terminal states no camera).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_resolution_down_by: Option<f64>,
    /// MIME types for `RTCRtpTransceiver.setCodecPreferences`, most preferred first.
    pub codec_preferences: Vec<&'static str>,
}

impl From<EncoderSettings> for Encoder {
    fn from(s: EncoderSettings) -> Self {
        Self {
            mime_type: s.codec.mime_type(),
            payload_type: s.codec.payload_type(),
            clock_rate: VIDEO_CLOCK_RATE,
            max_bitrate: s.max_bitrate_bps,
            max_framerate: s.max_framerate,
            width: s.width,
            height: s.height,
            scale_resolution_down_by: s.scale_resolution_down_by,
            codec_preferences: s.codec_preferences,
        }
    }
}

/// The encoder settings of what this terminal sends to `endpoint`; `None` when it
/// sends no video.
pub fn encoder(client: &Client, endpoint: &Endpoint) -> Result<Option<Encoder>, Error> {
    let params = &peer(client, endpoint)?.params;
    Ok(precall_sdp::encoder_settings(own(client)?, params)?.map(Encoder::from))
}

#[cfg(test)]
mod tests {
    use precall_protocol::{negotiate_pair, CpuClass, UserId};
    use precall_sdp::VideoCodec;
    use serde_json::json;

    use super::*;

    #[test]
    fn encoder_settings_take_webrtc_names() {
        let settings = EncoderSettings {
            codec: VideoCodec::Vp8,
            max_bitrate_bps: 1_500_000,
            max_framerate: 30,
            width: 1280,
            height: 720,
            scale_resolution_down_by: Some(1.5),
            codec_preferences: vec!["video/VP8", "video/H264"],
        };
        let v = serde_json::to_value(Encoder::from(settings.clone())).unwrap();
        assert_eq!(
            v,
            json!({"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                   "maxBitrate": 1_500_000, "maxFramerate": 30, "width": 1280, "height": 720,
                   "scaleResolutionDownBy": 1.5, "codecPreferences": ["video/VP8", "video/H264"]})
        );
        let none = EncoderSettings {
            scale_resolution_down_by: None,
            ..settings
        };
        let v = serde_json::to_value(Encoder::from(none)).unwrap();
        assert!(v.get("scaleResolutionDownBy").is_none());
    }

    #[test]
    fn without_a_session_or_a_peer_there_is_nothing_to_compute() {
        let client = Client::new(Default::default());
        let bob = Endpoint {
            user: UserId::new("bob").unwrap(),
            session: precall_protocol::SessionId(2),
        };
        assert_eq!(offer(&client, &bob).unwrap_err().code, "unknown_peer");
        let caps = Capabilities::builder()
            .codecs(["h264"])
            .screen(1280, 720)
            .cpu(CpuClass::High)
            .bandwidth(1000, 1000)
            .build()
            .unwrap();
        let params = negotiate_pair(&caps, &caps);
        assert_eq!(
            answer_for(&client, &bob, &params).unwrap_err().code,
            "not_logged_in"
        );
        let e = apply(&client, "v=0\r\n", &bob, SectionKind::Answer).unwrap_err();
        assert_eq!(e.code, "unknown_peer");
        assert_eq!(encoder(&client, &bob).unwrap_err().code, "unknown_peer");
    }
}
