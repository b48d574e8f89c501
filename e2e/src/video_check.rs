//! What a browser's WebRTC stats must show for one direction of a call, against the
//! parameters precall negotiated for it: the codec, the decoded size, the frame rate
//! and the payload bit rate. Shared by the SDP-in-the-browser test
//! (`tests/browser_sdp.rs`) and the web page's call test (`tests/browser_call.rs`).
//!
//! The stats are the JSON both pages' `videoStats` give: `{outbound: {bytesSent,
//! frameWidth, frameHeight, framesPerSecond, codec: {mimeType, sdpFmtpLine},
//! timestamp, ...}, inbound: {bytesReceived, framesDecoded, ...}}`, taken at the start
//! and the end of a measuring window.

use precall_protocol::Direction;
use serde_json::Value;

/// Frames per second the decoded rate (averaged over the window) may exceed the
/// negotiated rate by: a camera's clock and the browser's timestamps are not exact.
pub const FPS_TOLERANCE: f64 = 2.0;

/// How far the measured payload bit rate may exceed the negotiated one over the window
/// (encoders overshoot briefly around key frames).
pub const BITRATE_TOLERANCE: f64 = 0.15;

/// The stats of one end at the start and the end of the measuring window.
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    /// At the window's start.
    pub start: &'a Value,
    /// At the window's end.
    pub end: &'a Value,
}

/// What one direction measured, beside what was negotiated.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The direction's name, as the caller gave it.
    pub dir: &'static str,
    /// What was negotiated, as text.
    pub negotiated: String,
    /// The codec sent (its MIME type).
    pub codec: String,
    /// The decoded width.
    pub width: u64,
    /// The decoded height.
    pub height: u64,
    /// The decoded frame rate, averaged over the window.
    pub fps: f64,
    /// The payload bit rate sent over the window, kbit/s.
    pub kbps: f64,
}

/// The checks of one direction: `from` sent, `to` received, `neg` was negotiated for
/// it, `profile_level_id` is what the receiver's section exports for an H.264 stream.
/// Returns the measurement (none for a direction negotiated off) and pushes every
/// violation found onto `violations`.
pub fn check_direction(
    dir: &'static str,
    neg: &Direction,
    profile_level_id: Option<&str>,
    from: Window<'_>,
    to: Window<'_>,
    violations: &mut Vec<String>,
) -> Option<Measured> {
    let out_end = &from.end["outbound"];
    let out_start = &from.start["outbound"];
    let inb = &to.end["inbound"];
    let Direction::Video(s) = neg else {
        let sent = out_end["bytesSent"].as_f64().unwrap_or(0.0);
        if sent > 0.0 {
            violations.push(format!("{dir}: negotiated off, but {sent} bytes were sent"));
        }
        return None;
    };
    let codec = out_end["codec"]["mimeType"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    let want = precall_sdp::VideoCodec::from_token(&s.codec)
        .map(|c| c.mime_type())
        .unwrap_or("?");
    if !codec.eq_ignore_ascii_case(want) {
        violations.push(format!("{dir}: sent codec {codec}, negotiated {want}"));
    }
    // H.264: the sender encodes for the profile and level the receiver's section
    // states (its codec's sdpFmtpLine is what was negotiated).
    if let Some(plid) = profile_level_id {
        let line = out_end["codec"]["sdpFmtpLine"].as_str().unwrap_or("");
        if !line.contains(&format!("profile-level-id={plid}")) {
            violations.push(format!(
                "{dir}: sent with fmtp {line:?}, the receiver's section says profile-level-id={plid}"
            ));
        }
    }
    let in_codec = inb["codec"]["mimeType"].as_str().unwrap_or("none");
    if !in_codec.eq_ignore_ascii_case(want) {
        violations.push(format!(
            "{dir}: received codec {in_codec}, negotiated {want}"
        ));
    }
    let (w, h) = (
        inb["frameWidth"].as_u64().unwrap_or(0),
        inb["frameHeight"].as_u64().unwrap_or(0),
    );
    if w == 0 || inb["framesDecoded"].as_u64().unwrap_or(0) == 0 {
        violations.push(format!("{dir}: no video decoded"));
    }
    if w > u64::from(s.width) || h > u64::from(s.height) {
        violations.push(format!(
            "{dir}: received {w}x{h}, negotiated {}x{}",
            s.width, s.height
        ));
    }
    // Frames decoded over the window (steadier than the browser's one-second
    // `framesPerSecond` estimate, which is the fallback).
    let inb_start = &to.start["inbound"];
    let frames = inb["framesDecoded"].as_f64().unwrap_or(0.0)
        - inb_start["framesDecoded"].as_f64().unwrap_or(0.0);
    let span =
        inb["timestamp"].as_f64().unwrap_or(0.0) - inb_start["timestamp"].as_f64().unwrap_or(0.0);
    let fps = if span > 0.0 && frames > 0.0 {
        frames * 1000.0 / span
    } else {
        inb["framesPerSecond"].as_f64().unwrap_or(0.0)
    };
    if fps > f64::from(s.fps) + FPS_TOLERANCE {
        violations.push(format!("{dir}: {fps:.1} frames/s, negotiated {}", s.fps));
    }
    // Payload bit rate over the window: RTP payload bytes (bytesSent excludes headers).
    let bytes = out_end["bytesSent"].as_f64().unwrap_or(0.0)
        - out_start["bytesSent"].as_f64().unwrap_or(0.0);
    let ms = out_end["timestamp"].as_f64().unwrap_or(0.0)
        - out_start["timestamp"].as_f64().unwrap_or(0.0);
    let kbps = if ms > 0.0 { bytes * 8.0 / ms } else { 0.0 };
    let limit = f64::from(s.bitrate_kbps) * (1.0 + BITRATE_TOLERANCE);
    if kbps > limit {
        violations.push(format!(
            "{dir}: sent {kbps:.0} kbit/s over {ms:.0} ms, negotiated {} (+{:.0}%)",
            s.bitrate_kbps,
            BITRATE_TOLERANCE * 100.0
        ));
    }
    Some(Measured {
        dir,
        negotiated: format!(
            "{} {}x{}@{} {} kbit/s",
            s.codec.as_str(),
            s.width,
            s.height,
            s.fps,
            s.bitrate_kbps
        ),
        codec,
        width: w,
        height: h,
        fps,
        kbps,
    })
}
