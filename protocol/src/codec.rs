//! Framing and message encoding (spec section "Wire format").
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes of
//! payload; the payload is one message in canonical JSON. [`FrameDecoder`] splits a
//! byte stream into payloads incrementally: it accepts input in any chunking, checks the
//! announced length against its limit *before* buffering the payload, and never holds
//! more than `4 + max_frame` bytes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, FrameError};
use crate::message::{WireMessage, PROTOCOL_VERSION};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;
/// Default and recommended largest payload, in bytes (64 KiB).
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024;
/// Smallest limit a conforming receiver may configure (64 KiB): every message a
/// conforming sender produces within the spec's list limits fits in it (the largest is
/// a `login_ok` listing [`crate::server::MAX_CONTACTS`] contacts with 64-byte names).
pub const MIN_MAX_FRAME: u32 = DEFAULT_MAX_FRAME;

/// Incremental frame decoder.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FrameDecoder {
    max: u32,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Payload bytes received so far; `Some` once the header is complete.
    payload: Option<Vec<u8>>,
    /// Announced payload length of the frame in progress.
    want: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads over `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Self {
            max: max_frame,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload: None,
            want: 0,
            failed: None,
        }
    }

    /// Consumes bytes from the front of `input` until one frame is complete, and
    /// returns its payload. Returns `Ok(None)` when `input` is exhausted first (the
    /// partial frame is kept). Once an error is returned the stream is unusable and
    /// every later call returns the same error.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.payload.is_none() {
            let take = (HEADER_LEN - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
            self.header_len += take;
            *input = &input[take..];
            if self.header_len < HEADER_LEN {
                return Ok(None);
            }
            let len = u32::from_be_bytes(self.header);
            let err = if len > self.max {
                Some(FrameError::TooLarge { len, max: self.max })
            } else if len == 0 {
                Some(FrameError::Empty)
            } else {
                None
            };
            if let Some(e) = err {
                self.failed = Some(e.clone());
                return Err(e);
            }
            self.want = len as usize;
            // Allocation bounded by the checked length; grown only as bytes arrive.
            self.payload = Some(Vec::with_capacity(self.want.min(input.len())));
        }
        let Some(buf) = self.payload.as_mut() else {
            return Ok(None);
        };
        let take = (self.want - buf.len()).min(input.len());
        // Grow geometrically, but never past the announced length, so that `reserved`
        // stays within `4 + max_frame` (plain `extend` may double past it).
        if buf.capacity() - buf.len() < take {
            let target = (buf.capacity() * 2).clamp(buf.len() + take, self.want);
            buf.reserve_exact(target - buf.len());
        }
        buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if buf.len() < self.want {
            return Ok(None);
        }
        self.header_len = 0;
        Ok(self.payload.take())
    }

    /// Bytes held for the frame in progress (header and payload).
    pub fn buffered(&self) -> usize {
        self.header_len + self.payload.as_ref().map_or(0, Vec::len)
    }

    /// Bytes of memory the decoder has reserved for the frame in progress.
    pub fn reserved(&self) -> usize {
        HEADER_LEN + self.payload.as_ref().map_or(0, Vec::capacity)
    }

    /// The payload limit.
    pub fn max_frame(&self) -> u32 {
        self.max
    }

    /// Whether a frame is partly received.
    pub fn in_frame(&self) -> bool {
        self.header_len > 0
    }
}

/// Encodes a message as a complete frame: header and canonical JSON payload.
pub fn encode_frame<M: Serialize>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(128);
    buf.put_u32(0);
    // Serialising our own message types cannot fail: every map key is a string and no
    // type has a fallible `Serialize`.
    let mut w = buf.writer();
    let ok = serde_json::to_writer(&mut w, msg).is_ok();
    debug_assert!(ok, "message serialisation failed");
    let mut buf = w.into_inner();
    let len = (buf.len() - HEADER_LEN) as u32;
    buf[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// Encodes a message's payload alone (its canonical JSON), without the frame header.
pub fn encode_payload<M: Serialize>(msg: &M) -> Vec<u8> {
    let frame = encode_frame(msg);
    frame[HEADER_LEN..].to_vec()
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    /// Any JSON value: a message of an unknown type may give `version` any shape.
    #[serde(default)]
    version: Option<serde_json::Value>,
}

/// Decodes one payload into a message of type `M` ([`crate::message::ClientMessage`]
/// or [`crate::message::ServerMessage`]).
///
/// Members the message does not define are ignored. A payload that is a JSON object
/// with a string `type` this version does not know yields
/// [`DecodeError::UnknownType`]; a `login` whose `version` is not
/// [`PROTOCOL_VERSION`] yields [`DecodeError::UnsupportedVersion`] even when the rest
/// of it does not parse; anything else that does not decode is
/// [`DecodeError::Malformed`].
pub fn decode_message<M: WireMessage>(payload: &[u8]) -> Result<M, DecodeError> {
    // A message is a JSON object; serde would also take a message written as an array
    // (`["hangup",5]`), and the probe below would call `["teleport"]` an unknown type.
    let first = payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'));
    if first != Some(&b'{') {
        return Err(DecodeError::Malformed("not a JSON object".into()));
    }
    match serde_json::from_slice::<M>(payload) {
        Ok(msg) => match msg.version() {
            Some(v) if v != PROTOCOL_VERSION => Err(DecodeError::UnsupportedVersion(v.into())),
            _ => Ok(msg),
        },
        // Only a payload that failed to decode is looked at again, to tell an unknown
        // type or version from garbage.
        Err(e) => {
            if let Ok(p) = serde_json::from_slice::<Probe<'_>>(payload) {
                if !M::TYPES.contains(&&*p.ty) {
                    return Err(DecodeError::UnknownType(truncate(&p.ty)));
                }
                let version = p.version.as_ref().and_then(serde_json::Value::as_u64);
                if let Some(v) = version.filter(|v| *v != u64::from(PROTOCOL_VERSION)) {
                    if M::VERSIONED.contains(&&*p.ty) {
                        return Err(DecodeError::UnsupportedVersion(v));
                    }
                }
            }
            Err(DecodeError::Malformed(truncate(&e.to_string())))
        }
    }
}

/// Bounds an attacker-chosen string quoted in an error.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientMessage, ServerMessage};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Section 3.3: unknown members are ignored whatever their values, but a number
    /// beyond an IEEE 754 double's range makes any payload malformed.
    #[test]
    fn unknown_members_are_ignored_within_the_number_range() {
        let ok = decode_message::<ClientMessage>(br#"{"type":"ping","x":1e300}"#);
        assert_eq!(ok, Ok(ClientMessage::Ping {}));
        let big = decode_message::<ClientMessage>(br#"{"type":"ping","x":1e400}"#);
        assert!(matches!(big, Err(DecodeError::Malformed(_))), "{big:?}");
        let nested = br#"{"type":"ping","x":{"y":[1,"z",null,{"w":-2.5e10}]}}"#;
        assert_eq!(
            decode_message::<ClientMessage>(nested),
            Ok(ClientMessage::Ping {})
        );
    }

    /// Sections 3.3 and 4.2.4: `login.with` is the one nested object that is not
    /// extensible; an extra member there is malformed.
    #[test]
    fn login_with_takes_exactly_one_member() {
        let caps = r#"{"encode":["h264"],"decode":["h264"],"screen":{"width":640,"height":360},"cpu":"low","bandwidth":{"up_kbps":500,"down_kbps":500}}"#;
        let login = |with: &str| {
            format!(
                r#"{{"type":"login","version":1,"user":"alice","password":"pw","with":{with}}}"#
            )
        };
        let one = login(&format!(r#"{{"capabilities":{caps}}}"#));
        assert!(
            decode_message::<ClientMessage>(one.as_bytes()).is_ok(),
            "{one}"
        );
        let extra = login(&format!(r#"{{"capabilities":{caps},"x":1}}"#));
        assert!(matches!(
            decode_message::<ClientMessage>(extra.as_bytes()),
            Err(DecodeError::Malformed(_))
        ));
        // An unknown member inside the capabilities object is ignored, as anywhere else.
        let inner = caps.replacen('{', r#"{"future":[1,2],"#, 1);
        let nested = login(&format!(r#"{{"capabilities":{inner}}}"#));
        assert!(
            decode_message::<ClientMessage>(nested.as_bytes()).is_ok(),
            "{nested}"
        );
    }

    #[test]
    fn decodes_byte_by_byte() {
        let mut stream = frame(b"abc");
        stream.extend(frame(b"de"));
        let mut d = FrameDecoder::new(16);
        let mut out = Vec::new();
        for b in &stream {
            let mut input = std::slice::from_ref(b);
            if let Some(p) = d.decode(&mut input).unwrap() {
                out.push(p);
            }
            assert!(input.is_empty());
        }
        assert_eq!(out, vec![b"abc".to_vec(), b"de".to_vec()]);
        assert!(!d.in_frame());
    }

    #[test]
    fn leaves_the_next_frame_in_the_input() {
        let mut stream = frame(b"abc");
        stream.extend(frame(b"de"));
        let mut d = FrameDecoder::new(16);
        let mut input = &stream[..];
        assert_eq!(d.decode(&mut input).unwrap().unwrap(), b"abc");
        assert_eq!(input.len(), 6);
        assert_eq!(d.decode(&mut input).unwrap().unwrap(), b"de");
        assert_eq!(d.decode(&mut input).unwrap(), None);
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(16);
        let mut input: &[u8] = &[0, 0, 0, 17, 1, 2, 3];
        assert_eq!(
            d.decode(&mut input),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        assert!(d.reserved() <= HEADER_LEN);
        let mut more: &[u8] = &[0, 0, 0, 1, b'x'];
        assert!(d.decode(&mut more).is_err(), "errors are sticky");
    }

    #[test]
    fn huge_announced_length_does_not_allocate() {
        let mut d = FrameDecoder::new(u32::MAX);
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(d.decode(&mut input), Ok(None));
        assert!(d.reserved() < 64, "reserved {}", d.reserved());
    }

    /// A frame trickled in a byte at a time grows its buffer geometrically (a
    /// reallocation per doubling, so the copying stays linear in the frame), never past
    /// the announced length (INV-FRAME-BOUND).
    #[test]
    fn a_trickled_frame_grows_its_buffer_geometrically() {
        let payload = vec![b'x'; 10_000];
        let bytes = frame(&payload);
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut sizes = Vec::new();
        let mut done = None;
        for b in &bytes {
            let mut one: &[u8] = std::slice::from_ref(b);
            if let Some(p) = d.decode(&mut one).unwrap() {
                done = Some(p);
            } else if sizes.last() != Some(&d.reserved()) {
                sizes.push(d.reserved());
            }
        }
        assert_eq!(done.as_deref(), Some(payload.as_slice()));
        // 1, 2, 4, … 8192, then the announced 10,000: 15 sizes.
        assert!(
            sizes.len() <= 16,
            "{} reallocations: {sizes:?}",
            sizes.len()
        );
        assert_eq!(sizes.last(), Some(&(HEADER_LEN + 10_000)));
    }

    /// `buffered` counts the header and payload bytes of the frame in progress.
    #[test]
    fn buffered_counts_the_frame_in_progress() {
        let bytes = frame(b"hello");
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(d.buffered(), 0);
        let mut part: &[u8] = &bytes[..2];
        assert_eq!(d.decode(&mut part), Ok(None));
        assert_eq!(d.buffered(), 2, "half a header");
        let mut part: &[u8] = &bytes[2..7];
        assert_eq!(d.decode(&mut part), Ok(None));
        assert_eq!(d.buffered(), 7, "the header and three payload bytes");
        let mut rest: &[u8] = &bytes[7..];
        assert_eq!(d.decode(&mut rest), Ok(Some(b"hello".to_vec())));
        assert_eq!(d.buffered(), 0, "nothing once the frame is out");
    }

    /// `in_frame` is true exactly while a frame is partly received; `max_frame` is the
    /// limit given.
    #[test]
    fn in_frame_while_a_frame_is_partly_received() {
        let bytes = frame(b"hi");
        let mut d = FrameDecoder::new(1_000);
        assert_eq!(d.max_frame(), 1_000);
        assert!(!d.in_frame());
        let mut part: &[u8] = &bytes[..3];
        assert_eq!(d.decode(&mut part), Ok(None));
        assert!(d.in_frame());
        let mut rest: &[u8] = &bytes[3..];
        assert_eq!(d.decode(&mut rest), Ok(Some(b"hi".to_vec())));
        assert!(!d.in_frame());
    }

    /// Spec 13.5: attacker-chosen text quoted in an error is at most 64 bytes, cut at a
    /// character boundary at or before the 64th byte.
    #[test]
    fn quoted_text_is_cut_at_a_boundary_within_64_bytes() {
        // Byte 64 falls inside the first 'é' (bytes 63 and 64).
        let s = format!("{}{}", "a".repeat(63), "é".repeat(10));
        let t = truncate(&s);
        let kept = t.strip_suffix('…').unwrap();
        assert_eq!(kept, "a".repeat(63));
        let short = "b".repeat(64);
        assert_eq!(truncate(&short), short, "64 bytes are kept whole");
    }

    #[test]
    fn empty_frame_is_an_error() {
        let mut d = FrameDecoder::new(16);
        let mut input: &[u8] = &[0, 0, 0, 0];
        assert_eq!(d.decode(&mut input), Err(FrameError::Empty));
    }

    #[test]
    fn unknown_types_versions_and_garbage_are_told_apart() {
        assert_eq!(
            decode_message::<ClientMessage>(br#"{"type":"teleport","x":1}"#),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        assert_eq!(
            decode_message::<ClientMessage>(br#"{"type":"login","version":2,"new":true}"#),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert!(matches!(
            decode_message::<ClientMessage>(b"\xff\xfe"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_message::<ClientMessage>(br#"{"type":"hangup"}"#),
            Err(DecodeError::Malformed(_))
        ));
        // A server message is an unknown type to a server.
        assert_eq!(
            decode_message::<ClientMessage>(br#"{"type":"pong"}"#),
            Err(DecodeError::UnknownType("pong".into()))
        );
        assert_eq!(
            decode_message::<ServerMessage>(br#"{"type":"pong","extra":[1,2]}"#),
            Ok(ServerMessage::Pong {})
        );
    }

    #[test]
    fn long_unknown_type_is_truncated_in_the_error() {
        let payload = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        let Err(DecodeError::UnknownType(t)) = decode_message::<ClientMessage>(payload.as_bytes())
        else {
            panic!()
        };
        assert!(t.len() < 80);
    }
}
