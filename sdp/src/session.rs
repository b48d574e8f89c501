//! Putting precall's media section into a WebRTC stack's own session description.
//!
//! A browser's `createOffer()`/`createAnswer()`, or `str0m`'s SDP API, writes a whole
//! session description: ICE credentials, the DTLS fingerprint, `a=mid`, header
//! extensions, SSRCs, and a video section listing every codec the stack has. precall
//! has already decided the codec and limits of each direction, so an application
//! replaces that video section's *media* lines with the section precall exports and
//! keeps the *transport* lines the stack needs. [`apply`] does exactly that:
//!
//! | in the stack's first `m=video` section | becomes |
//! |---|---|
//! | the `m=` line's format list | precall's payload types, in precall's order (port and protocol kept) |
//! | every `a=rtpmap`, `a=fmtp`, per-format `a=rtcp-fb` | precall's `a=rtpmap`/`a=fmtp`, and the stack's `a=rtcp-fb` lines of the same codec renumbered to precall's payload type (RFC 4585 feedback the stack implements: `nack`, `nack pli`, `ccm fir`, `transport-cc`, `goog-remb`) |
//! | `b=` lines | precall's `b=AS` and `b=TIAS` |
//! | the direction attribute | precall's |
//! | `a=imageattr`, `a=framerate` | precall's |
//! | `a=ssrc-group:FID` and the `a=ssrc:` lines of its rtx SSRC | dropped, with the rtx formats |
//! | everything else (`c=`, `a=mid`, `a=ice-*`, `a=fingerprint`, `a=setup`, `a=extmap`, `a=rtcp-mux`, `a=msid`, the media `a=ssrc`, `a=rtcp-fb:*`, ...) | kept, in order |
//!
//! Retransmission formats (`rtx`, `red`, `ulpfec`, `flexfec`) are dropped with the
//! rest of the stack's formats: precall negotiates one codec per direction; so are
//! the retransmission streams (`a=ssrc-group:FID` and the rtx SSRC's `a=ssrc:` lines),
//! so the section names no SSRC without a format. A stack
//! that does not list precall's codec at all cannot send or receive it, which is
//! [`SdpError::CodecNotInStack`]. Other sections (audio, data) are left as they are.

use std::fmt::Write as _;

use crate::codec::VideoCodec;
use crate::error::SdpError;
use crate::offer::MediaSection;

/// The lines of `stack_sdp` (a whole session description written by a WebRTC stack)
/// with its first `m=video` section's formats, bandwidth, direction, `imageattr` and
/// `framerate` replaced by `section`'s, as the [module docs](self) tabulate. Accepts
/// CRLF or LF line ends and writes CRLF.
///
/// Errors: [`SdpError::NoVideoSection`] when the description has no `m=video` line;
/// [`SdpError::CodecNotInStack`] when the stack's section lists no format of a codec
/// precall's section needs (so the stack would not send or receive it).
pub fn apply(stack_sdp: &str, section: &MediaSection) -> Result<String, SdpError> {
    let lines: Vec<&str> = stack_sdp
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("m=video "))
        .ok_or(SdpError::NoVideoSection)?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("m="))
        .map_or(lines.len(), |i| start + 1 + i);
    let video = &lines[start..end];

    let mut out = String::with_capacity(stack_sdp.len() + 256);
    for l in &lines[..start] {
        push_line(&mut out, l);
    }
    out.push_str(&rewrite(video, section)?);
    for l in &lines[end..] {
        push_line(&mut out, l);
    }
    Ok(out)
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push_str("\r\n");
}

/// The payload type an `a=<name>:<pt> ...` line is about, if it is that attribute.
fn attribute_pt<'a>(line: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let rest = line
        .strip_prefix("a=")?
        .strip_prefix(name)?
        .strip_prefix(':')?;
    let (pt, value) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((pt, value))
}

/// The media lines precall owns: formats, bandwidth, direction, imageattr, framerate.
fn precall_owns(line: &str) -> bool {
    const OWNED: [&str; 8] = [
        "a=sendrecv",
        "a=sendonly",
        "a=recvonly",
        "a=inactive",
        "a=imageattr:",
        "a=framerate:",
        "a=rtpmap:",
        "a=fmtp:",
    ];
    line.starts_with("b=")
        || OWNED.iter().any(|p| line.starts_with(p))
        || attribute_pt(line, "rtcp-fb").is_some_and(|(pt, _)| pt != "*")
}

fn rewrite(video: &[&str], section: &MediaSection) -> Result<String, SdpError> {
    // The stack's payload types, by encoding name.
    let stack_pt = |codec: VideoCodec| {
        video.iter().find_map(|l| {
            let (pt, map) = attribute_pt(l, "rtpmap")?;
            let name = map.split('/').next()?;
            name.eq_ignore_ascii_case(codec.encoding_name())
                .then_some(pt)
        })
    };
    let mut feedback = Vec::with_capacity(section.formats.len());
    for f in &section.formats {
        let pt = stack_pt(f.codec).ok_or(SdpError::CodecNotInStack { codec: f.codec })?;
        let lines: Vec<&str> = video
            .iter()
            .filter_map(|l| attribute_pt(l, "rtcp-fb").filter(|(p, _)| *p == pt))
            .map(|(_, fb)| fb)
            .collect();
        feedback.push(lines);
    }

    // The precall section's own lines, split into its b= lines and its a= lines.
    let ours = section.to_string();
    let (ours_b, ours_a): (Vec<&str>, Vec<&str>) = ours
        .lines()
        .filter(|l| l.starts_with("b=") || l.starts_with("a="))
        .partition(|l| l.starts_with("b="));

    let mut out = String::new();
    // m=video <port> <proto> <precall's formats>
    let mut m = video[0].split(' ');
    let (port, proto) = (
        m.nth(1).unwrap_or("9"),
        m.next().unwrap_or("UDP/TLS/RTP/SAVPF"),
    );
    let _ = write!(out, "m=video {port} {proto}");
    for pt in section.payload_types() {
        let _ = write!(out, " {pt}");
    }
    out.push_str("\r\n");
    // RFC 8866 §5 order inside a section: i=, c=, b=, k=, a=.
    // The retransmission streams of the dropped rtx formats: `a=ssrc-group:FID
    // <media> <rtx>` and the rtx SSRC's `a=ssrc:` lines go with them.
    let rtx_ssrcs: Vec<&str> = video
        .iter()
        .filter_map(|l| l.strip_prefix("a=ssrc-group:FID "))
        .flat_map(|g| g.split(' ').skip(1))
        .collect();
    let is_rtx_stream = |l: &str| {
        l.starts_with("a=ssrc-group:FID ")
            || l.strip_prefix("a=ssrc:")
                .and_then(|r| r.split(' ').next())
                .is_some_and(|ssrc| rtx_ssrcs.contains(&ssrc))
    };
    let kept: Vec<&str> = video[1..]
        .iter()
        .copied()
        .filter(|l| !precall_owns(l) && !is_rtx_stream(l))
        .collect();
    let (before_a, attrs): (Vec<&str>, Vec<&str>) = kept.iter().partition(|l| !l.starts_with("a="));
    for l in before_a.iter().filter(|l| !l.starts_with("k=")) {
        push_line(&mut out, l);
    }
    for l in &ours_b {
        push_line(&mut out, l);
    }
    for l in before_a.iter().filter(|l| l.starts_with("k=")) {
        push_line(&mut out, l);
    }
    for l in &attrs {
        push_line(&mut out, l);
    }
    for l in &ours_a {
        push_line(&mut out, l);
        // Each format's feedback right after its rtpmap.
        if let Some((pt, _)) = attribute_pt(l, "rtpmap") {
            if let Some(i) = section
                .formats
                .iter()
                .position(|f| f.payload_type.to_string() == pt)
            {
                for fb in &feedback[i] {
                    let _ = write!(out, "a=rtcp-fb:{pt} {fb}\r\n");
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::{offer, MediaDirection};
    use precall_protocol::{CallParams, Capabilities, Codec, Direction, NoVideo, StreamParams};

    /// A Chrome-like offer: audio first, a video section with VP8, its RTX, H.264 twice
    /// (two profiles) and feedback, then a data section.
    const STACK: &str = "v=0\r\n\
o=- 123 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 127\r\n\
c=IN IP4 0.0.0.0\r\n\
b=AS:30000\r\n\
a=ice-ufrag:abcd\r\n\
a=mid:1\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtcp-fb:* ccm tmmbr\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 transport-cc\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:103 h264/90000\r\n\
a=rtcp-fb:103 goog-remb\r\n\
a=rtpmap:127 red/90000\r\n\
a=ssrc-group:FID 1 2\r\n\
a=ssrc:1 cname:x\r\n\
a=ssrc:2 cname:x\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
a=mid:2\r\n";

    fn video(codec: &str, kbps: u32) -> Direction {
        Direction::Video(StreamParams {
            codec: Codec::new(codec).expect("valid token"),
            width: 640,
            height: 360,
            fps: 30,
            bitrate_kbps: kbps,
        })
    }

    fn caps(codecs: &[&str]) -> Capabilities {
        Capabilities::builder()
            .codecs(codecs.iter().copied())
            .screen(1280, 720)
            .camera(1280, 720, 30)
            .bandwidth(4_000, 4_000)
            .build()
            .expect("valid")
    }

    #[test]
    fn the_video_section_takes_precalls_media_lines_and_keeps_the_transport() {
        let p = CallParams {
            send: video("h264", 691),
            recv: video("h264", 691),
        };
        let ours = offer(&caps(&["h264"]), &p).expect("exports");
        let out = apply(STACK, &ours).expect("applies");
        let video: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("m=video"))
            .take_while(|l| !l.starts_with("m=application"))
            .collect();
        assert_eq!(
            video,
            [
                "m=video 9 UDP/TLS/RTP/SAVPF 100",
                "c=IN IP4 0.0.0.0",
                "b=AS:715",
                "b=TIAS:691000",
                "a=ice-ufrag:abcd",
                "a=mid:1",
                "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                "a=rtcp-mux",
                "a=rtcp-fb:* ccm tmmbr",
                "a=ssrc:1 cname:x",
                "a=sendrecv",
                "a=rtpmap:100 H264/90000",
                // The first H.264 format's feedback, renumbered; 103's is not copied.
                "a=rtcp-fb:100 transport-cc",
                "a=rtcp-fb:100 nack pli",
                "a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01e",
                "a=imageattr:100 send [x=640,y=360] recv [x=640,y=360]",
                "a=framerate:30",
            ]
        );
        // The session part and the other sections are untouched, line ends are CRLF.
        assert!(out.starts_with("v=0\r\no=- 123 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\nm=video"));
        assert!(
            out.ends_with("\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n")
        );
        assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
        // LF-only input gives the same output.
        assert_eq!(apply(&STACK.replace("\r\n", "\n"), &ours), Ok(out));
    }

    #[test]
    fn the_direction_follows_precall_and_two_codecs_keep_their_order() {
        let p = CallParams {
            send: video("h264", 691),
            recv: video("vp8", 760),
        };
        let ours = offer(&caps(&["h264", "vp8"]), &p).expect("exports");
        let out = apply(STACK, &ours).expect("applies");
        assert!(out.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 100\r\n"));
        assert!(out.contains(
            "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=fmtp:96 "
        ));
        assert!(!out.contains("rtx") && !out.contains("red/") && !out.contains("b=AS:30000"));

        let p = CallParams {
            send: Direction::Off(NoVideo::NoCamera),
            recv: video("vp8", 760),
        };
        let ours = offer(&caps(&["vp8"]), &p).expect("exports");
        assert_eq!(ours.direction, MediaDirection::RecvOnly);
        let out = apply(STACK, &ours).expect("applies");
        let video =
            &out[out.find("m=video").expect("video")..out.find("m=application").expect("data")];
        assert!(video.contains("a=recvonly\r\n"));
        assert!(!video.contains("a=sendrecv"));
    }

    #[test]
    fn a_codec_the_stack_lacks_and_a_missing_video_section_are_typed_errors() {
        let p = CallParams {
            send: video("av1", 500),
            recv: video("av1", 500),
        };
        let ours = offer(&caps(&["av1"]), &p).expect("exports");
        assert_eq!(
            apply(STACK, &ours),
            Err(SdpError::CodecNotInStack {
                codec: VideoCodec::Av1
            })
        );
        assert_eq!(
            apply("v=0\r\nm=audio 9 RTP/AVP 0\r\n", &ours),
            Err(SdpError::NoVideoSection)
        );
    }
}
