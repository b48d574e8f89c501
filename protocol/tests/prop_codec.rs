//! Property tests of the wire format: message round-trips, the incremental frame
//! decoder under arbitrary chunking, streams of frames, and decoding hostile payloads.
//!
//! Each property is a plain checker function returning `Result<(), String>`, applied by
//! proptest to the real code and, in the `*_catches_*` tests, to a deliberately broken
//! variant, to show the checker can fail.

mod strategies;

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

use precall_protocol::codec::{
    decode_message, encode_frame, encode_payload, FrameDecoder, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use precall_protocol::message::WireMessage;
use precall_protocol::{ClientMessage, DecodeError, FrameError, ServerMessage};

use strategies::*;

// =====================================================================================
// (1) Round-trips
// =====================================================================================

/// How one side encodes and decodes messages of type `M`: the real functions, or a
/// seeded fault.
struct Wire<M> {
    payload: fn(&M) -> Vec<u8>,
    frame: fn(&M) -> Vec<u8>,
    decode: fn(&[u8]) -> Result<M, DecodeError>,
}

fn real_wire<M>() -> Wire<M>
where
    M: Serialize + serde::de::DeserializeOwned,
    WireFns: HasDecode<M>,
{
    Wire {
        payload: |m| encode_payload(m),
        frame: |m| encode_frame(m).to_vec(),
        decode: <WireFns as HasDecode<M>>::decode,
    }
}

/// `decode_message` is bounded by a crate-private trait, so it cannot be called
/// generically from here; this names it once per message type.
struct WireFns;
trait HasDecode<M> {
    fn decode(payload: &[u8]) -> Result<M, DecodeError>;
}
impl HasDecode<ClientMessage> for WireFns {
    fn decode(payload: &[u8]) -> Result<ClientMessage, DecodeError> {
        decode_message::<ClientMessage>(payload)
    }
}
impl HasDecode<ServerMessage> for WireFns {
    fn decode(payload: &[u8]) -> Result<ServerMessage, DecodeError> {
        decode_message::<ServerMessage>(payload)
    }
}

/// Property 1: `decode(payload(m)) == m`, the payload is canonical (re-encoding the
/// decoded message gives the same bytes), and the frame of `m` is a correct header
/// followed by that payload, which [`FrameDecoder`] returns whole and alone.
fn check_round_trip<M: PartialEq + Debug>(wire: &Wire<M>, m: &M) -> Result<(), String> {
    let payload = (wire.payload)(m);
    let decoded = (wire.decode)(&payload)
        .map_err(|e| format!("payload does not decode: {e}; payload {}", show(&payload)))?;
    if decoded != *m {
        return Err(format!("decoded {decoded:?} != original {m:?}"));
    }
    let again = (wire.payload)(&decoded);
    if again != payload {
        return Err(format!(
            "encoding not canonical: {} then {}",
            show(&payload),
            show(&again)
        ));
    }
    let frame = (wire.frame)(m);
    let Some(header) = frame.get(..HEADER_LEN) else {
        return Err("frame shorter than its header".into());
    };
    let announced = u32::from_be_bytes(header.try_into().unwrap()) as usize;
    if announced != frame.len() - HEADER_LEN {
        return Err(format!(
            "header announces {announced} bytes, frame carries {}",
            frame.len() - HEADER_LEN
        ));
    }
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut input = &frame[..];
    let got = d
        .decode(&mut input)
        .map_err(|e| format!("frame error: {e}"))?
        .ok_or("frame decoder wants more bytes than the frame has")?;
    if !input.is_empty() || d.in_frame() {
        return Err(format!("{} bytes left over after the frame", input.len()));
    }
    if got != payload {
        return Err(format!(
            "frame payload {} != message payload {}",
            show(&got),
            show(&payload)
        ));
    }
    match (wire.decode)(&got) {
        Ok(x) if x == *m => Ok(()),
        other => Err(format!("frame payload decodes to {other:?}")),
    }
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn every_client_message_round_trips(m in client_message()) {
        check_round_trip(&real_wire::<ClientMessage>(), &m).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn every_server_message_round_trips(m in server_message()) {
        check_round_trip(&real_wire::<ServerMessage>(), &m).map_err(TestCaseError::fail)?;
    }
}

/// The `type` member of a message's encoding.
fn type_of<M: Serialize>(m: &M) -> String {
    let v: Value = serde_json::from_slice(&encode_payload(m)).unwrap();
    v["type"].as_str().unwrap().to_owned()
}

#[test]
fn message_strategies_cover_every_variant() {
    let mut runner = fault_runner(1);
    let (mut client, mut server) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for _ in 0..2_000 {
        let (c, s) = (
            sample(&client_message(), &mut runner),
            sample(&server_message(), &mut runner),
        );
        // `type_name` names exactly what serde writes as `type`.
        assert_eq!(c.type_name(), type_of(&c));
        assert_eq!(s.type_name(), type_of(&s));
        client.insert(type_of(&c));
        server.insert(type_of(&s));
    }
    assert_eq!(client.len(), CLIENT_TYPES.len(), "{client:?}");
    assert_eq!(server.len(), SERVER_TYPES.len(), "{server:?}");
    assert!(client.iter().all(|t| CLIENT_TYPES.contains(&t.as_str())));
    assert!(server.iter().all(|t| SERVER_TYPES.contains(&t.as_str())));
}

/// Seeded fault: a decoder that loses the last byte of each payload.
fn decode_drop_last_byte(payload: &[u8]) -> Result<ClientMessage, DecodeError> {
    decode_message::<ClientMessage>(&payload[..payload.len().saturating_sub(1)])
}

/// Seeded fault: an encoder that pads the frame's payload with a space (and counts it
/// in the header, so the framing stays intact).
fn frame_with_trailing_space(m: &ServerMessage) -> Vec<u8> {
    let mut payload = encode_payload(m);
    payload.push(b' ');
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

#[test]
fn round_trip_check_catches_a_decoder_that_drops_the_last_byte() {
    let wire = Wire {
        decode: decode_drop_last_byte,
        ..real_wire::<ClientMessage>()
    };
    let found = find_counterexample(64, client_message(), |m| check_round_trip(&wire, &m));
    let (m, why) = found.expect("the checker must reject the broken decoder");
    assert!(why.contains("does not decode"), "{m:?}: {why}");
}

#[test]
fn round_trip_check_catches_an_encoder_that_appends_whitespace() {
    let wire = Wire {
        frame: frame_with_trailing_space,
        ..real_wire::<ServerMessage>()
    };
    let found = find_counterexample(64, server_message(), |m| check_round_trip(&wire, &m));
    let (m, why) = found.expect("the checker must reject the padded encoder");
    assert!(why.contains("frame payload"), "{m:?}: {why}");
}

// =====================================================================================
// (2) The frame decoder under arbitrary chunking
// =====================================================================================

/// The incremental splitter interface, so the checkers run on the real decoder and on
/// seeded faults alike.
trait Splitter {
    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError>;
    fn reserved(&self) -> usize;
}

impl Splitter for FrameDecoder {
    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        FrameDecoder::decode(self, input)
    }
    fn reserved(&self) -> usize {
        FrameDecoder::reserved(self)
    }
}

/// What a splitter made of a byte stream: the payloads, then the error that ended it.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
}

/// Feeds `chunks` in order, calling `decode` until it asks for more input, and checks
/// after every call that the splitter reserves at most `4 + max` bytes. Stops at the
/// first error, after checking that the error is sticky.
fn feed<S: Splitter>(s: &mut S, max: u32, chunks: &[&[u8]]) -> Result<Outcome, String> {
    let bound = HEADER_LEN + max as usize;
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut out = Outcome {
        frames: Vec::new(),
        error: None,
    };
    for chunk in chunks {
        let mut input = *chunk;
        let mut calls = 0usize;
        loop {
            calls += 1;
            if calls > total + 2 {
                return Err("decoder makes no progress".into());
            }
            let r = s.decode(&mut input);
            if s.reserved() > bound {
                return Err(format!(
                    "reserved {} bytes, more than 4 + max_frame = {bound}",
                    s.reserved()
                ));
            }
            match r {
                Ok(Some(p)) => out.frames.push(p),
                Ok(None) if input.is_empty() => break,
                Ok(None) => return Err("asked for more input but left some unread".into()),
                Err(e) => {
                    let mut more: &[u8] = &[0, 0, 0, 1, b'x'];
                    match s.decode(&mut more) {
                        Err(again) if again == e => {}
                        other => return Err(format!("error {e} not sticky: then {other:?}")),
                    }
                    out.error = Some(e);
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The spec's framing, read directly off the whole stream.
fn reference_split(bytes: &[u8], max: u32) -> Outcome {
    let mut out = Outcome {
        frames: Vec::new(),
        error: None,
    };
    let mut rest = bytes;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_be_bytes(rest[..HEADER_LEN].try_into().unwrap());
        if len > max {
            out.error = Some(FrameError::TooLarge { len, max });
            break;
        }
        if len == 0 {
            out.error = Some(FrameError::Empty);
            break;
        }
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len as usize) else {
            break;
        };
        out.frames.push(payload.to_vec());
        rest = &rest[HEADER_LEN + len as usize..];
    }
    out
}

/// Cuts `bytes` into chunks of the given sizes (the rest is the last chunk).
fn chunk<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &n in sizes {
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out.push(rest);
    out
}

/// Property 2: the same frames and errors whatever the chunking, equal to the spec's
/// framing of the whole stream, never more than `4 + max` bytes reserved, no panic.
fn check_chunking<S: Splitter>(
    make: impl Fn(u32) -> S,
    max: u32,
    bytes: &[u8],
    sizes: &[usize],
) -> Result<(), String> {
    let whole = feed(&mut make(max), max, &[bytes]).map_err(|e| format!("whole: {e}"))?;
    let expected = reference_split(bytes, max);
    if whole != expected {
        return Err(format!(
            "fed at once: {whole:?}, but the framing is {expected:?}"
        ));
    }
    let chunks = chunk(bytes, sizes);
    let parts = feed(&mut make(max), max, &chunks).map_err(|e| format!("chunked: {e}"))?;
    if parts != whole {
        return Err(format!("chunked {sizes:?}: {parts:?}, at once: {whole:?}"));
    }
    Ok(())
}

/// A stream of frame-like segments for a decoder with limit `max`: valid frames,
/// empty frames, oversized headers and raw garbage.
fn framed_bytes(max: u32) -> impl Strategy<Value = Vec<u8>> {
    let small = max.min(300);
    let segment = prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 1..=small as usize).prop_map(|p| {
            let mut f = (p.len() as u32).to_be_bytes().to_vec();
            f.extend(p);
            f
        }),
        1 => Just(vec![0, 0, 0, 0]),
        1 => (max.saturating_add(1)..=u32::MAX, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(len, tail)| {
                let mut f = len.to_be_bytes().to_vec();
                f.extend(tail);
                f
            }),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec(segment, 0..8).prop_map(|s| s.concat())
}

fn max_frame() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![1u32, 2, 3, 5, 16, 64, 300]),
        2 => 1u32..=512,
        1 => Just(DEFAULT_MAX_FRAME),
        1 => Just(u32::MAX),
    ]
}

/// A limit, a stream for it (structured or uniformly random), and chunk sizes.
fn chunking_case() -> impl Strategy<Value = (u32, Vec<u8>, Vec<usize>)> {
    max_frame().prop_flat_map(|max| {
        (
            Just(max),
            prop_oneof![
                3 => framed_bytes(max),
                1 => prop::collection::vec(any::<u8>(), 0..200),
            ],
            prop::collection::vec(
                prop_oneof![3 => 0usize..6, 2 => 0usize..40, 1 => 0usize..400],
                0..24,
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    #[test]
    fn frame_decoder_is_independent_of_chunking((max, bytes, sizes) in chunking_case()) {
        check_chunking(FrameDecoder::new, max, &bytes, &sizes).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn frame_decoder_one_byte_at_a_time_into_a_large_limit() {
    // The worst case for buffer growth: a maximal frame trickling in byte by byte.
    for max in [1u32, 7, 100, 4096] {
        let mut bytes = max.to_be_bytes().to_vec();
        bytes.extend((0..max).map(|i| i as u8));
        bytes.extend(bytes.clone());
        let sizes = vec![1; bytes.len()];
        check_chunking(FrameDecoder::new, max, &bytes, &sizes).unwrap();
    }
}

/// Seeded fault: a decoder that buffers whatever arrives and splits frames out of
/// its buffer, the obvious implementation that lets one read fill memory.
struct BufferEverything {
    max: u32,
    buf: Vec<u8>,
    failed: Option<FrameError>,
}

impl BufferEverything {
    fn new(max: u32) -> Self {
        Self {
            max,
            buf: Vec::new(),
            failed: None,
        }
    }
}

impl Splitter for BufferEverything {
    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(input);
        *input = &[];
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..HEADER_LEN].try_into().unwrap());
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
        let end = HEADER_LEN + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(payload))
    }
    fn reserved(&self) -> usize {
        self.buf.capacity()
    }
}

/// Seeded fault: a decoder that forgets a partly received header when a read ends.
struct ForgetsPartialHeader {
    inner: FrameDecoder,
}

impl Splitter for ForgetsPartialHeader {
    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let r = self.inner.decode(input);
        if r == Ok(None) && self.inner.buffered() < HEADER_LEN {
            self.inner = FrameDecoder::new(self.inner.max_frame());
        }
        r
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
}

#[test]
fn chunking_check_catches_a_decoder_that_buffers_everything() {
    let found = find_counterexample(256, chunking_case(), |(max, bytes, sizes)| {
        check_chunking(BufferEverything::new, max, &bytes, &sizes)
    });
    let (case, why) = found.expect("the checker must reject unbounded buffering");
    assert!(why.contains("reserved"), "{case:?}: {why}");
}

#[test]
fn chunking_check_catches_a_decoder_that_forgets_a_partial_header() {
    let found = find_counterexample(256, chunking_case(), |(max, bytes, sizes)| {
        check_chunking(
            |m| ForgetsPartialHeader {
                inner: FrameDecoder::new(m),
            },
            max,
            &bytes,
            &sizes,
        )
    });
    let (case, why) = found.expect("the checker must reject chunk-dependent decoding");
    assert!(why.contains("chunked"), "{case:?}: {why}");
}

// =====================================================================================
// (3) Streams of valid frames
// =====================================================================================

/// Property 3: the concatenated frames of `msgs`, cut at `cuts`, decode to exactly
/// `msgs`, in order.
fn check_stream<S: Splitter>(
    make: impl Fn(u32) -> S,
    msgs: &[AnyMessage],
    cuts: &[Index],
) -> Result<(), String> {
    let stream: Vec<u8> = msgs
        .iter()
        .flat_map(|m| match m {
            AnyMessage::Client(m) => encode_frame(m).to_vec(),
            AnyMessage::Server(m) => encode_frame(m).to_vec(),
        })
        .collect();
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    points.sort_unstable();
    let mut sizes = Vec::with_capacity(points.len());
    let mut last = 0;
    for p in points {
        sizes.push(p - last);
        last = p;
    }
    let chunks = chunk(&stream, &sizes);
    let out = feed(&mut make(DEFAULT_MAX_FRAME), DEFAULT_MAX_FRAME, &chunks)?;
    if let Some(e) = out.error {
        return Err(format!("frame error on valid frames: {e}"));
    }
    if out.frames.len() != msgs.len() {
        return Err(format!(
            "{} frames sent, {} decoded",
            msgs.len(),
            out.frames.len()
        ));
    }
    for (i, (payload, m)) in out.frames.iter().zip(msgs).enumerate() {
        let same = match m {
            AnyMessage::Client(m) => decode_message::<ClientMessage>(payload).as_ref() == Ok(m),
            AnyMessage::Server(m) => decode_message::<ServerMessage>(payload).as_ref() == Ok(m),
        };
        if !same {
            return Err(format!("frame {i} decodes differently: {}", show(payload)));
        }
    }
    Ok(())
}

fn stream_case() -> impl Strategy<Value = (Vec<AnyMessage>, Vec<Index>)> {
    (
        prop::collection::vec(any_message(), 0..8),
        prop::collection::vec(any::<Index>(), 0..12),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn concatenated_frames_split_anywhere_decode_to_the_messages((msgs, cuts) in stream_case()) {
        check_stream(FrameDecoder::new, &msgs, &cuts).map_err(TestCaseError::fail)?;
    }
}

/// Seeded fault: a decoder that loses the last byte of every payload.
struct DropsLastByte {
    inner: FrameDecoder,
}

impl Splitter for DropsLastByte {
    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let mut r = self.inner.decode(input);
        if let Ok(Some(p)) = &mut r {
            p.pop();
        }
        r
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
}

#[test]
fn stream_check_catches_a_decoder_that_drops_the_last_byte() {
    let found = find_counterexample(64, stream_case(), |(msgs, cuts)| {
        check_stream(
            |m| DropsLastByte {
                inner: FrameDecoder::new(m),
            },
            &msgs,
            &cuts,
        )
    });
    let (case, why) = found.expect("the checker must reject the lossy decoder");
    assert!(why.contains("decodes differently"), "{case:?}: {why}");
}

// =====================================================================================
// (4) Decoding hostile payloads
// =====================================================================================

/// Every `type` each side knows, as the codec defines them.
const CLIENT_TYPES: &[&str] = <ClientMessage as WireMessage>::TYPES;
const SERVER_TYPES: &[&str] = <ServerMessage as WireMessage>::TYPES;

/// The members of a JSON object in order, duplicates kept (a `Value` keeps only the
/// last of duplicate keys); only `type` and `version` values are kept, the others are
/// skipped as the decoder skips them.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v = if k == "type" || k == "version" {
                        map.next_value::<Value>()?
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        Value::Null
                    };
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Longest text an error quotes: 64 bytes and an ellipsis.
const MAX_QUOTED: usize = 64 + '…'.len_utf8();

/// How one side decodes, for property 4.
struct Decoder<M> {
    decode: fn(&[u8]) -> Result<M, DecodeError>,
    encode: fn(&M) -> Vec<u8>,
    types: &'static [&'static str],
}

fn real_decoder<M>(types: &'static [&'static str]) -> Decoder<M>
where
    M: Serialize,
    WireFns: HasDecode<M>,
{
    Decoder {
        decode: <WireFns as HasDecode<M>>::decode,
        encode: |m| encode_payload(m),
        types,
    }
}

/// Property 4: decoding any payload returns, without panicking, either a message
/// (decoded from a JSON object) that re-encodes and decodes to itself, or the typed
/// error the documentation
/// promises: `unknown_type` exactly for a JSON object whose one `type` member is a
/// string this side does not know, `unsupported_version` only for another version,
/// and quoted text bounded in length.
fn check_decode_total<M: PartialEq + Debug>(dec: &Decoder<M>, bytes: &[u8]) -> Result<(), String> {
    let r = catch_unwind(AssertUnwindSafe(|| (dec.decode)(bytes)))
        .map_err(|_| format!("decoding panicked on {}", show(bytes)))?;
    // The shape the documentation classifies by: an object with exactly one `type`
    // member, a string, and at most one `version` member.
    let members = serde_json::from_slice::<Members>(bytes).ok();
    let unknown_type = members
        .as_ref()
        .and_then(|Members(members)| {
            let types: Vec<&Value> = members
                .iter()
                .filter(|(k, _)| k == "type")
                .map(|(_, v)| v)
                .collect();
            let versions = members.iter().filter(|(k, _)| k == "version").count();
            match types.as_slice() {
                [Value::String(t)] if versions <= 1 => Some(t.clone()),
                _ => None,
            }
        })
        .filter(|t| !dec.types.contains(&t.as_str()));
    match (&r, &unknown_type) {
        (Ok(m), None) => {
            if members.is_none() {
                return Err(format!("{m:?} decoded from a non-object: {}", show(bytes)));
            }
            let again = (dec.decode)(&(dec.encode)(m));
            if again.as_ref() != Ok(m) {
                return Err(format!("{m:?} re-encodes to {again:?}"));
            }
        }
        (Err(DecodeError::UnknownType(t)), Some(expected)) => {
            let ok = t == expected
                || (t.len() <= MAX_QUOTED
                    && expected.starts_with(t.trim_end_matches('…'))
                    && t.ends_with('…'));
            if !ok {
                return Err(format!("unknown type quoted as {t:?}, sent {expected:?}"));
            }
        }
        (_, Some(expected)) => {
            return Err(format!(
                "object of unknown type {expected:?} decoded as {r:?}: {}",
                show(bytes)
            ))
        }
        (Err(DecodeError::UnknownType(t)), None) => {
            return Err(format!("unknown_type {t:?} for {}", show(bytes)))
        }
        (Err(DecodeError::UnsupportedVersion(v)), None) => {
            if *v == u64::from(precall_protocol::PROTOCOL_VERSION) {
                return Err("unsupported_version for the supported version".into());
            }
        }
        (Err(DecodeError::Malformed(s)), None) => {
            if s.len() > MAX_QUOTED {
                return Err(format!("error quotes {} bytes", s.len()));
            }
        }
        (Err(other), None) => return Err(format!("unexpected decode error {other:?}")),
    }
    Ok(())
}

/// Names a JSON-ish payload is likely to contain.
const FIELD_NAMES: [&str; 24] = [
    "type",
    "version",
    "user",
    "password",
    "with",
    "capabilities",
    "terminal_id",
    "req",
    "to",
    "from",
    "digest",
    "call",
    "session",
    "contacts",
    "code",
    "detail",
    "reason",
    "encode",
    "decode",
    "screen",
    "camera",
    "cpu",
    "bandwidth",
    "caller",
];

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            CLIENT_TYPES
                .iter()
                .chain(SERVER_TYPES.iter())
                .chain(FIELD_NAMES.iter())
                .chain(KNOWN_CODECS.iter())
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        ),
        "[a-z_]{0,12}",
        "[0-9a-f]{32}",
        prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
        Just("x".repeat(200)),
    ]
}

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![0i64, 1, 2, -1, 15, 60, 240, 16_384, 16_385, 65_536])
            .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELD_NAMES.to_vec()).prop_map(str::to_owned),
        1 => json_string(),
    ]
}

/// An object shaped like a message: a `type`, then members with likely names.
fn message_like() -> impl Strategy<Value = Value> {
    (
        json_string(),
        prop::collection::vec((json_key(), json_value()), 0..6),
    )
        .prop_map(|(ty, members)| {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), Value::String(ty));
            obj.extend(members);
            Value::Object(obj)
        })
}

/// An edit of a JSON tree: at the `at`-th object, remove, replace or add a member.
#[derive(Clone, Debug)]
enum Edit {
    Remove(Index, Index),
    Replace(Index, Index, Value),
    Add(Index, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<Index>()).prop_map(|(a, k)| Edit::Remove(a, k)),
        (any::<Index>(), any::<Index>(), json_value()).prop_map(|(a, k, v)| Edit::Replace(a, k, v)),
        (any::<Index>(), json_key(), json_value()).prop_map(|(a, k, v)| Edit::Add(a, k, v)),
    ]
}

fn count_objects(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(count_objects).sum::<usize>(),
        Value::Array(a) => a.iter().map(count_objects).sum(),
        _ => 0,
    }
}

/// Applies `e` to the `at`-th object of `v` in depth-first order.
fn apply(v: &mut Value, e: &Edit) {
    let at = match e {
        Edit::Remove(a, _) | Edit::Replace(a, _, _) | Edit::Add(a, _, _) => a,
    };
    let count = count_objects(v);
    if count > 0 {
        edit_nth(v, at.index(count), &mut 0, e);
    }
}

fn edit_nth(v: &mut Value, want: usize, n: &mut usize, e: &Edit) -> bool {
    match v {
        Value::Object(m) => {
            if *n == want {
                let keys: Vec<String> = m.keys().cloned().collect();
                match e {
                    Edit::Remove(_, k) if !keys.is_empty() => {
                        m.remove(&keys[k.index(keys.len())]);
                    }
                    Edit::Replace(_, k, x) if !keys.is_empty() => {
                        m.insert(keys[k.index(keys.len())].clone(), x.clone());
                    }
                    Edit::Add(_, k, x) => {
                        m.insert(k.clone(), x.clone());
                    }
                    _ => {}
                }
                return true;
            }
            *n += 1;
            m.values_mut().any(|x| edit_nth(x, want, n, e))
        }
        Value::Array(a) => a.iter_mut().any(|x| edit_nth(x, want, n, e)),
        _ => false,
    }
}

/// A valid message of either side, edited a few times: near-misses that reach deep
/// into field validation.
fn edited_message() -> impl Strategy<Value = Value> {
    (any_message(), prop::collection::vec(edit(), 1..4)).prop_map(|(m, edits)| {
        let mut v = match m {
            AnyMessage::Client(m) => serde_json::to_value(&m).unwrap(),
            AnyMessage::Server(m) => serde_json::to_value(&m).unwrap(),
        };
        for e in &edits {
            apply(&mut v, e);
        }
        v
    })
}

/// A byte-level edit of a serialised text.
#[derive(Clone, Debug)]
enum ByteEdit {
    Truncate(Index),
    Insert(Index, u8),
    Overwrite(Index, u8),
    DuplicateType,
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let punct = prop::sample::select(b"{}[]\",:\\ 0123456789-.eEatfnulx\x00\xff".to_vec());
    prop_oneof![
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), punct.clone()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        (any::<Index>(), punct).prop_map(|(i, b)| ByteEdit::Overwrite(i, b)),
        Just(ByteEdit::DuplicateType),
    ]
}

fn apply_bytes(mut text: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        match e {
            ByteEdit::Truncate(i) => text.truncate(i.index(text.len() + 1)),
            ByteEdit::Insert(i, b) => text.insert(i.index(text.len() + 1), *b),
            ByteEdit::Overwrite(i, b) if !text.is_empty() => {
                let at = i.index(text.len());
                text[at] = *b;
            }
            ByteEdit::DuplicateType if text.first() == Some(&b'{') => {
                text.splice(1..1, br#""type":"pong","#.iter().copied());
            }
            _ => {}
        }
    }
    text
}

/// JSON-ish payloads: message-shaped objects, edited valid messages, any JSON value,
/// each possibly damaged at the byte level.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            3 => message_like(),
            3 => edited_message(),
            1 => json_value(),
        ],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(byte_edit(), 1..3),
        ],
    )
        .prop_map(|(v, edits)| apply_bytes(serde_json::to_vec(&v).unwrap(), &edits))
}

fn hostile_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_ish(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decoding_arbitrary_bytes_is_total_and_typed(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decode_total(&real_decoder::<ClientMessage>(CLIENT_TYPES), &bytes)
            .map_err(TestCaseError::fail)?;
        check_decode_total(&real_decoder::<ServerMessage>(SERVER_TYPES), &bytes)
            .map_err(TestCaseError::fail)?;
    }

    #[test]
    fn decoding_json_ish_payloads_is_total_and_typed(bytes in json_ish()) {
        check_decode_total(&real_decoder::<ClientMessage>(CLIENT_TYPES), &bytes)
            .map_err(TestCaseError::fail)?;
        check_decode_total(&real_decoder::<ServerMessage>(SERVER_TYPES), &bytes)
            .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn decoding_deeply_nested_payloads_does_not_overflow_the_stack() {
    for depth in [127usize, 128, 129, 10_000, 200_000] {
        for wrap in [("[", "]"), ("{\"a\":", "}")] {
            let inner = format!("{}1{}", wrap.0.repeat(depth), wrap.1.repeat(depth));
            for payload in [
                inner.clone(),
                format!(r#"{{"type":"ping","x":{inner}}}"#),
                format!(r#"{{"type":"teleport","x":{inner}}}"#),
                format!(r#"{{"type":"login","version":1,"with":{inner}}}"#),
            ] {
                check_decode_total(
                    &real_decoder::<ClientMessage>(CLIENT_TYPES),
                    payload.as_bytes(),
                )
                .unwrap();
                check_decode_total(
                    &real_decoder::<ServerMessage>(SERVER_TYPES),
                    payload.as_bytes(),
                )
                .unwrap();
            }
        }
    }
}

/// Seeded fault: a decoder with an `unreachable!` for types it does not handle.
fn decode_panics_on_unknown(payload: &[u8]) -> Result<ClientMessage, DecodeError> {
    match decode_message::<ClientMessage>(payload) {
        Err(DecodeError::UnknownType(t)) => unreachable!("unhandled message type {t}"),
        r => r,
    }
}

/// Seeded fault: a decoder that reports every failure as malformed (which a server
/// answers with a fatal error, breaking forward compatibility).
fn decode_without_classifying(payload: &[u8]) -> Result<ServerMessage, DecodeError> {
    decode_message::<ServerMessage>(payload).map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[test]
fn decode_check_catches_a_decoder_that_panics() {
    let dec = Decoder {
        decode: decode_panics_on_unknown,
        ..real_decoder::<ClientMessage>(CLIENT_TYPES)
    };
    let found = find_counterexample(256, hostile_payload(), |b| check_decode_total(&dec, &b));
    let (bytes, why) = found.expect("the checker must catch the panic");
    assert!(why.contains("panicked"), "{}: {why}", show(&bytes));
}

#[test]
fn decode_check_catches_a_decoder_that_misclassifies_unknown_types() {
    let dec = Decoder {
        decode: decode_without_classifying,
        ..real_decoder::<ServerMessage>(SERVER_TYPES)
    };
    let found = find_counterexample(256, hostile_payload(), |b| check_decode_total(&dec, &b));
    let (bytes, why) = found.expect("the checker must catch the misclassification");
    assert!(why.contains("unknown type"), "{}: {why}", show(&bytes));
}
