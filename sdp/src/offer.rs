//! The `m=video` section of the offer and of the answer (RFC 3264, RFC 8866).

use std::fmt;

use precall_protocol::{CallParams, Capabilities, Direction, StreamParams};

use crate::codec::{VideoCodec, VIDEO_CLOCK_RATE};
use crate::error::SdpError;
use crate::fmtp::{fmtp_for, Fmtp};

/// The direction attribute of a media section (RFC 3264 §5.1, RFC 8866 §6.7).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum MediaDirection {
    /// `a=sendrecv`: video both ways.
    SendRecv,
    /// `a=sendonly`: this end sends, receives nothing (its `recv` is `Off`).
    SendOnly,
    /// `a=recvonly`: this end receives, sends nothing (its `send` is `Off`).
    RecvOnly,
    /// `a=inactive`: no video either way.
    Inactive,
}

impl MediaDirection {
    /// The attribute's name, as written after `a=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction the other end answers with (RFC 3264 §6.1: sendonly is answered
    /// recvonly and the reverse; sendrecv and inactive as themselves).
    pub fn mirrored(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }

    fn of(params: &CallParams) -> Self {
        match (&params.send, &params.recv) {
            (Direction::Video(_), Direction::Video(_)) => Self::SendRecv,
            (Direction::Off(_), Direction::Video(_)) => Self::RecvOnly,
            (Direction::Video(_), Direction::Off(_)) => Self::SendOnly,
            (Direction::Off(_), Direction::Off(_)) => Self::Inactive,
        }
    }
}

/// One payload format of the section: `a=rtpmap` and `a=fmtp`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PayloadFormat {
    /// The codec.
    pub codec: VideoCodec,
    /// Its RTP payload type ([`VideoCodec::payload_type`]).
    pub payload_type: u8,
    /// Its `a=fmtp` parameters (no line when empty).
    pub fmtp: Fmtp,
}

/// `a=imageattr` (RFC 6236): the exact resolution this end sends and the one it is
/// willing to receive, each as `[x=W,y=H]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ImageAttr {
    /// The payload type it applies to, or `None` for `*` (every format of the section).
    pub payload_type: Option<u8>,
    /// Width and height this end sends, if it sends.
    pub send: Option<(u16, u16)>,
    /// Width and height this end is willing to receive, if it receives.
    pub recv: Option<(u16, u16)>,
}

/// `b=TIAS` and `b=AS` (RFC 3890).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SectionBandwidth {
    /// `b=TIAS`: transport-independent application-specific maximum, in **bit/s**
    /// (RTP payload only): the negotiated bit rate × 1000.
    pub tias_bps: u64,
    /// `b=AS`: application-specific maximum in **kbit/s**, which counts the IP, UDP and
    /// RTP headers: see [`as_kbps`].
    pub as_kbps: u64,
}

/// Payload bytes per RTP packet assumed to count packets for `b=AS` (a usual video
/// packet under a 1280-byte path MTU budget).
pub const ASSUMED_PAYLOAD_BYTES: u64 = 1_200;
/// Header bytes per packet counted in `b=AS`: IPv4 (20) + UDP (8) + RTP (12).
pub const HEADER_BYTES: u64 = 40;

/// `b=AS` from `b=TIAS` as RFC 3890 §6.3 relates them: the payload rate plus the
/// headers of the packets carrying it, rounded up to kbit/s. Packets per second
/// assume [`ASSUMED_PAYLOAD_BYTES`] per packet.
pub fn as_kbps(tias_bps: u64) -> u64 {
    let packets = tias_bps.div_ceil(ASSUMED_PAYLOAD_BYTES * 8);
    (tias_bps + packets * HEADER_BYTES * 8).div_ceil(1_000)
}

/// One `m=video` section, as typed values; `Display` writes its SDP lines (CRLF-ended,
/// RFC 8866 order: `m=`, `c=`, `b=`, `a=`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct MediaSection {
    /// The direction attribute.
    pub direction: MediaDirection,
    /// The payload formats, most preferred first (the `m=` line's format list).
    pub formats: Vec<PayloadFormat>,
    /// The bandwidth lines, if video flows either way.
    pub bandwidth: Option<SectionBandwidth>,
    /// `a=imageattr`, if video flows either way.
    pub imageattr: Option<ImageAttr>,
    /// `a=framerate` (RFC 8866 §6.8): the most frames per second wanted, if any.
    pub framerate: Option<u16>,
}

impl fmt::Display for MediaSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Port 9 (discard) and the JSEP profile: the transport comes from ICE.
        f.write_str("m=video 9 UDP/TLS/RTP/SAVPF")?;
        for p in &self.formats {
            write!(f, " {}", p.payload_type)?;
        }
        f.write_str("\r\nc=IN IP4 0.0.0.0\r\n")?;
        if let Some(b) = self.bandwidth {
            write!(f, "b=AS:{}\r\nb=TIAS:{}\r\n", b.as_kbps, b.tias_bps)?;
        }
        write!(f, "a={}\r\n", self.direction.as_str())?;
        for p in &self.formats {
            let pt = p.payload_type;
            write!(
                f,
                "a=rtpmap:{pt} {}/{VIDEO_CLOCK_RATE}\r\n",
                p.codec.encoding_name()
            )?;
            if !p.fmtp.is_empty() {
                write!(f, "a=fmtp:{pt} {}\r\n", p.fmtp)?;
            }
        }
        if let Some(ia) = self.imageattr {
            match ia.payload_type {
                Some(pt) => write!(f, "a=imageattr:{pt}")?,
                None => f.write_str("a=imageattr:*")?,
            }
            if let Some((w, h)) = ia.send {
                write!(f, " send [x={w},y={h}]")?;
            }
            if let Some((w, h)) = ia.recv {
                write!(f, " recv [x={w},y={h}]")?;
            }
            f.write_str("\r\n")?;
        }
        if let Some(fps) = self.framerate {
            write!(f, "a=framerate:{fps}\r\n")?;
        }
        Ok(())
    }
}

impl MediaSection {
    /// The section inside a minimal session description (`v=`, `o=`, `s=`, `t=`;
    /// the section carries its own `c=`), e.g. to hand to a parser or a test.
    pub fn to_session(&self, session_id: u64) -> String {
        format!("v=0\r\no=- {session_id} 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{self}")
    }

    /// The payload types of the `m=` line, in order.
    pub fn payload_types(&self) -> Vec<u8> {
        self.formats.iter().map(|p| p.payload_type).collect()
    }
}

fn mapped(d: &Direction) -> Result<Option<(VideoCodec, &StreamParams)>, SdpError> {
    match d {
        Direction::Video(s) => Ok(Some((VideoCodec::from_token(&s.codec)?, s))),
        Direction::Off(_) => Ok(None),
    }
}

fn format(codec: VideoCodec, stream: Option<&StreamParams>) -> PayloadFormat {
    PayloadFormat {
        codec,
        payload_type: codec.payload_type(),
        fmtp: fmtp_for(codec, stream),
    }
}

/// The section this end writes, offer or answer alike, from its own view of the call.
fn section(own: &Capabilities, params: &CallParams) -> Result<MediaSection, SdpError> {
    let send = mapped(&params.send)?;
    let recv = mapped(&params.recv)?;
    let direction = MediaDirection::of(params);
    let mut formats = Vec::new();
    match (send, recv) {
        (Some((sc, ss)), Some((rc, rs))) => {
            formats.push(format(rc, Some(rs)));
            if sc != rc {
                // Listed as receivable so the peer's answer may pick it (RFC 3264
                // §6.1); only honest if this end decodes it.
                if !own.decode().contains(&ss.codec) {
                    return Err(SdpError::AsymmetricCodecs {
                        send: ss.codec.clone(),
                        recv: rs.codec.clone(),
                    });
                }
                formats.push(format(sc, Some(ss)));
            }
        }
        (None, Some((rc, rs))) => formats.push(format(rc, Some(rs))),
        // RFC 3264 §5.1: a sendonly section lists what the offerer will send.
        (Some((sc, ss)), None) => formats.push(format(sc, Some(ss))),
        (None, None) => {
            let first = own
                .decode()
                .iter()
                .chain(own.encode())
                .find_map(|c| VideoCodec::from_token(c).ok())
                .ok_or(SdpError::NothingToList)?;
            formats.push(format(first, None));
        }
    }
    // What this end receives bounds the section; a sendonly one states what it sends.
    let rate = recv.or(send).map(|(_, s)| s);
    let bandwidth = rate.map(|s| {
        let tias_bps = u64::from(s.bitrate_kbps) * 1_000;
        SectionBandwidth {
            tias_bps,
            as_kbps: as_kbps(tias_bps),
        }
    });
    let imageattr = (send.is_some() || recv.is_some()).then(|| ImageAttr {
        payload_type: match formats.as_slice() {
            [only] => Some(only.payload_type),
            _ => None,
        },
        send: send.map(|(_, s)| (s.width, s.height)),
        recv: recv.map(|(_, s)| (s.width, s.height)),
    });
    Ok(MediaSection {
        direction,
        formats,
        bandwidth,
        imageattr,
        framerate: rate.map(|s| s.fps),
    })
}

/// The `m=video` section of the offer this end (the caller) sends, from its own
/// capabilities and the parameters negotiated with the peer (`params.send` = what it
/// sends, `params.recv` = what it receives).
///
/// The formats are those this end is willing to receive: the codec it receives first,
/// with `a=fmtp` bounded by the received stream; then, when the two directions use
/// different codecs, the codec it sends (so the answer may pick it, RFC 3264 §6.1).
/// A direction that is [`Direction::Off`] makes the section `a=recvonly`,
/// `a=sendonly` or `a=inactive` (RFC 3264 §5.1); an inactive section lists the
/// first mappable codec this end decodes, with default parameters.
///
/// Errors: [`SdpError::UnknownCodec`] for a negotiated codec token with no payload
/// format; [`SdpError::AsymmetricCodecs`]; [`SdpError::NothingToList`].
pub fn offer(own: &Capabilities, params: &CallParams) -> Result<MediaSection, SdpError> {
    section(own, params)
}

/// The `m=video` section of the answer this end (the callee) returns to `offer`,
/// from its own view of the call (its `params` are the caller's mirrored).
///
/// Built as [`offer`] builds the caller's, then checked against the offer (RFC 3264
/// §6.1): the direction must be the offer's mirrored, and every format must be one the
/// offer lists with the same payload type. An inactive answer takes the first format of
/// the offer. A mismatch (the two ends did not negotiate from the same capabilities)
/// is [`SdpError::OfferMismatch`].
pub fn answer(
    own: &Capabilities,
    params: &CallParams,
    offer: &MediaSection,
) -> Result<MediaSection, SdpError> {
    let direction = MediaDirection::of(params);
    if direction != offer.direction.mirrored() {
        return Err(SdpError::OfferMismatch {
            reason: format!(
                "offer is {}, the answer would be {}",
                offer.direction.as_str(),
                direction.as_str()
            ),
        });
    }
    if direction == MediaDirection::Inactive {
        // Nothing flows: echo the offer's first format, whatever this end decodes.
        let first = offer.formats.first().ok_or(SdpError::NothingToList)?;
        return Ok(MediaSection {
            direction,
            formats: vec![format(first.codec, None)],
            bandwidth: None,
            imageattr: None,
            framerate: None,
        });
    }
    let mine = section(own, params)?;
    for p in &mine.formats {
        if !offer
            .formats
            .iter()
            .any(|o| o.codec == p.codec && o.payload_type == p.payload_type)
        {
            return Err(SdpError::OfferMismatch {
                reason: format!(
                    "{} (payload type {}) is not in the offer",
                    p.codec.encoding_name(),
                    p.payload_type
                ),
            });
        }
    }
    Ok(mine)
}

/// The answer section a callee can send as soon as a call arrives, with no exchange:
/// the caller's offer is what [`offer`] gives for the caller's capabilities (which the
/// callee holds since the caller came online) and the caller's view of the call
/// (`params.mirrored()`), and the answer is [`answer`] to it from the callee's own
/// capabilities and view (`params`).
pub fn callee_answer(
    own: &Capabilities,
    caller: &Capabilities,
    params: &CallParams,
) -> Result<MediaSection, SdpError> {
    let offer = section(caller, &params.mirrored())?;
    answer(own, params, &offer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use precall_protocol::{Codec, NoVideo};

    fn caps(codecs: &[&str]) -> Capabilities {
        Capabilities::builder()
            .codecs(codecs.iter().copied())
            .screen(1280, 720)
            .camera(1280, 720, 30)
            .bandwidth(4_000, 4_000)
            .build()
            .expect("valid")
    }

    fn video(codec: &str, width: u16, height: u16, fps: u16, kbps: u32) -> Direction {
        Direction::Video(StreamParams {
            codec: Codec::new(codec).expect("valid token"),
            width,
            height,
            fps,
            bitrate_kbps: kbps,
        })
    }

    fn params(send: Direction, recv: Direction) -> CallParams {
        CallParams { send, recv }
    }

    /// The whole section for 720p30 H.264 both ways, line by line. b=AS: 2 764 000 bit/s
    /// in ceil(2 764 000 / 9600) = 288 packets/s of 40 header bytes: 2 856 160 bit/s,
    /// 2857 kbit/s rounded up.
    #[test]
    fn a_sendrecv_h264_offer_in_full() {
        let p = params(
            video("h264", 1280, 720, 30, 2_764),
            video("h264", 1280, 720, 30, 2_764),
        );
        let o = offer(&caps(&["h264"]), &p).expect("exports");
        assert_eq!(
            o.to_string(),
            "m=video 9 UDP/TLS/RTP/SAVPF 100\r\n\
             c=IN IP4 0.0.0.0\r\n\
             b=AS:2857\r\n\
             b=TIAS:2764000\r\n\
             a=sendrecv\r\n\
             a=rtpmap:100 H264/90000\r\n\
             a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=imageattr:100 send [x=1280,y=720] recv [x=1280,y=720]\r\n\
             a=framerate:30\r\n"
        );
    }

    /// RFC 3264 §5.1: the direction attribute follows which directions carry video, and
    /// the limits follow the received stream (the sent one for sendonly).
    #[test]
    fn direction_attributes_follow_the_off_directions() {
        let own = caps(&["vp8"]);
        let on = || video("vp8", 640, 360, 30, 760);
        let off = || Direction::Off(NoVideo::NoCamera);

        let o = offer(&own, &params(off(), on())).expect("exports");
        assert_eq!(o.direction, MediaDirection::RecvOnly);
        let t = o.to_string();
        assert!(
            t.contains("a=recvonly\r\n") && t.contains("a=imageattr:96 recv [x=640,y=360]\r\n")
        );
        assert!(!t.contains(" send ["));

        let o = offer(&own, &params(on(), off())).expect("exports");
        assert_eq!(o.direction, MediaDirection::SendOnly);
        let t = o.to_string();
        assert!(
            t.contains("a=sendonly\r\n") && t.contains("a=imageattr:96 send [x=640,y=360]\r\n")
        );
        assert!(
            t.contains("a=fmtp:96 max-fs=920;max-fr=30\r\n") && t.contains("b=TIAS:760000\r\n")
        );

        let o = offer(&own, &params(off(), off())).expect("exports");
        assert_eq!(o.direction, MediaDirection::Inactive);
        assert_eq!(
            o.to_string(),
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n"
        );
        let a = answer(&own, &params(off(), off()), &o).expect("answers");
        assert_eq!(a.direction, MediaDirection::Inactive);

        // Sendonly is answered recvonly, with the same format.
        let o = offer(&own, &params(on(), off())).expect("exports");
        let a = answer(&own, &params(off(), on()), &o).expect("answers");
        assert_eq!(a.direction, MediaDirection::RecvOnly);
        assert_eq!(a.payload_types(), o.payload_types());
    }

    #[test]
    fn different_codecs_each_way_list_the_received_one_first() {
        let p = params(
            video("h264", 1280, 720, 30, 2_764),
            video("vp8", 640, 360, 30, 760),
        );
        let o = offer(&caps(&["h264", "vp8"]), &p).expect("exports");
        assert_eq!(o.payload_types(), [96, 100]);
        assert!(o.to_string().contains("a=imageattr:* send"));
        let a = answer(&caps(&["vp8", "h264"]), &p.mirrored(), &o).expect("answers");
        assert_eq!(a.payload_types(), [100, 96]);
        // An end that does not decode its send codec cannot offer it in one section.
        let own = Capabilities::builder()
            .encode(["h264"])
            .decode(["vp8"])
            .screen(1280, 720)
            .camera(1280, 720, 30)
            .bandwidth(4_000, 4_000)
            .build()
            .expect("valid");
        assert!(matches!(
            offer(&own, &p),
            Err(SdpError::AsymmetricCodecs { .. })
        ));
    }

    #[test]
    fn an_unmappable_codec_and_a_mismatched_offer_are_typed_errors() {
        let p = params(
            video("theora", 640, 360, 30, 760),
            video("theora", 640, 360, 30, 760),
        );
        assert!(matches!(
            offer(&caps(&["theora"]), &p),
            Err(SdpError::UnknownCodec { .. })
        ));
        let vp8 = params(
            video("vp8", 640, 360, 30, 760),
            video("vp8", 640, 360, 30, 760),
        );
        let o = offer(&caps(&["vp8"]), &vp8).expect("exports");
        let h264 = params(
            video("h264", 640, 360, 30, 691),
            video("h264", 640, 360, 30, 691),
        );
        assert!(matches!(
            answer(&caps(&["h264"]), &h264, &o),
            Err(SdpError::OfferMismatch { .. })
        ));
        let recv_only = params(
            Direction::Off(NoVideo::NoCamera),
            video("vp8", 640, 360, 30, 760),
        );
        assert!(matches!(
            answer(&caps(&["vp8"]), &recv_only, &o),
            Err(SdpError::OfferMismatch { .. })
        ));
    }

    #[test]
    fn the_callee_answer_answers_the_callers_offer() {
        let p = params(
            video("h264", 1280, 720, 30, 2_764),
            video("vp8", 640, 360, 30, 760),
        );
        let (caller, callee) = (caps(&["h264", "vp8"]), caps(&["vp8", "h264"]));
        let o = offer(&caller, &p).expect("exports");
        let a = callee_answer(&callee, &caller, &p.mirrored()).expect("answers");
        assert_eq!(a, answer(&callee, &p.mirrored(), &o).expect("answers"));
        assert_eq!(a.payload_types(), [100, 96]);
    }

    #[test]
    fn as_counts_the_headers_on_top_of_tias() {
        assert_eq!(as_kbps(0), 0);
        // 1 packet of 40 header bytes: 1000 + 320 bit/s, 2 kbit/s rounded up.
        assert_eq!(as_kbps(1_000), 2);
        assert_eq!(as_kbps(2_764_000), 2_857);
    }
}
