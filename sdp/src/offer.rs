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
