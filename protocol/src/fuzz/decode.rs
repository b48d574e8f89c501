//! The `decode` target: arbitrary bytes through the incremental frame decoder, in an
//! arbitrary chunking, and every payload through both message decoders.

use arbitrary::{Result, Unstructured};

use crate::codec::{decode_message, encode_frame, FrameDecoder, DEFAULT_MAX_FRAME, HEADER_LEN};
use crate::error::FrameError;
use crate::message::{ClientMessage, ServerMessage, WireMessage};

/// What a decoder made of a stream: the payloads, then the error that ended it.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    payloads: Vec<Vec<u8>>,
    error: Option<FrameError>,
}

/// Runs the target on one input. Panics when a property breaks.
pub fn decode(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((max, cuts)) = config(&mut u) else {
        return;
    };
    let bytes = u.take_rest();
    let chunked = feed(max, chunks(bytes, &cuts));
    let whole = feed(max, std::iter::once(bytes));
    assert_eq!(chunked, whole, "the chunking changed the outcome");
    for p in &chunked.payloads {
        assert!(
            !p.is_empty() && p.len() <= max as usize,
            "payload outside 1..=max"
        );
        round_trip::<ClientMessage>(p);
        round_trip::<ServerMessage>(p);
    }
}

/// The frame limit (small ones make the limit reachable) and the chunk sizes.
fn config(u: &mut Unstructured<'_>) -> Result<(u32, Vec<u16>)> {
    let max = *u.choose(&[1, 16, 300, 4096, DEFAULT_MAX_FRAME])?;
    let n = u.int_in_range(0..=16)?;
    let cuts = (0..n)
        .map(|_| u.int_in_range(0..=600))
        .collect::<Result<Vec<u16>>>()?;
    Ok((max, cuts))
}

/// Cuts `bytes` into pieces of the given sizes; the rest is the last piece.
fn chunks<'a>(mut bytes: &'a [u8], cuts: &[u16]) -> impl Iterator<Item = &'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    for &c in cuts {
        let (head, tail) = bytes.split_at(usize::from(c).min(bytes.len()));
        pieces.push(head);
        bytes = tail;
    }
    pieces.push(bytes);
    pieces.into_iter()
}

/// Feeds the pieces in order, checking the memory bound after every call
/// (`INV-FRAME-BOUND`) and that an error, once returned, is returned again.
fn feed<'a>(max: u32, pieces: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let bound = HEADER_LEN + max as usize;
    let mut d = FrameDecoder::new(max);
    let mut out = Outcome {
        payloads: Vec::new(),
        error: None,
    };
    for mut piece in pieces {
        loop {
            let before = piece.len();
            let r = d.decode(&mut piece);
            assert!(
                d.reserved() <= bound && d.buffered() <= bound,
                "decoder holds {} and reserves {} bytes; the bound is {bound}",
                d.buffered(),
                d.reserved()
            );
            match r {
                Ok(Some(p)) => out.payloads.push(p),
                Ok(None) => {
                    assert!(piece.is_empty(), "asked for more input with input left");
                    break;
                }
                Err(e) => {
                    let mut more: &[u8] = &[0, 0, 0, 1, b'{'];
                    assert_eq!(d.decode(&mut more), Err(e.clone()), "error not sticky");
                    out.error = Some(e);
                    return out;
                }
            }
            assert!(piece.len() < before || piece.is_empty(), "no progress");
        }
    }
    out
}

/// A payload that decodes as a message re-encodes to a frame whose payload is
/// canonical (encoding it again gives the same bytes) and decodes to the same message.
fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    let Ok(msg) = decode_message::<M>(payload) else {
        return;
    };
    let frame = encode_frame(&msg);
    let mut d = FrameDecoder::new(u32::MAX);
    let mut input = &frame[..];
    let Ok(Some(p)) = d.decode(&mut input) else {
        panic!("the encoder's frame does not split: {frame:?}");
    };
    assert!(input.is_empty(), "the encoder's frame has trailing bytes");
    let again = decode_message::<M>(&p)
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    assert_eq!(again, msg, "re-encoding changed the message");
    assert_eq!(encode_frame(&again), frame, "the encoding is not canonical");
}
