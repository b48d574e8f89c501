//! The negotiation rule's properties (spec section 6.5) as checkers over any negotiator.
//!
//! Each checker takes the negotiator as a plain function, so the same code judges the
//! real [`negotiate_pair`](crate::negotiate_pair) (in `protocol/tests/prop_negotiate.rs`
//! and the `negotiate` fuzz target) and deliberately wrong negotiators (the seeded
//! faults that show each checker can fail). A checker returns a description of the
//! counterexample it found.

use crate::caps::{
    Bandwidth, CallParams, Capabilities, Direction, NoVideo, StreamParams, MAX_KBPS,
};
use crate::negotiate::{decode_budget, encode_budget, MAX_FPS};

/// A negotiator: both directions of a call from `me`'s side.
pub type Negotiator = fn(&Capabilities, &Capabilities) -> CallParams;

/// Every property, with `raise` the bandwidth increases for [`monotone`].
pub fn all(
    neg: Negotiator,
    a: &Capabilities,
    b: &Capabilities,
    raise: [u32; 4],
) -> Result<(), String> {
    deterministic(neg, a, b)?;
    mirror(neg, a, b)?;
    limits(neg, a, b)?;
    typed(neg, a, b)?;
    monotone(neg, a, b, raise)
}

/// Deterministic: the same inputs, twice and as fresh copies, give equal parameters.
pub fn deterministic(neg: Negotiator, a: &Capabilities, b: &Capabilities) -> Result<(), String> {
    let first = neg(a, b);
    let second = neg(a, b);
    let copies = neg(&a.clone(), &b.clone());
    if first != second || first != copies {
        return Err(format!(
            "not deterministic: {first:?}, then {second:?}, then {copies:?}"
        ));
    }
    Ok(())
}

/// Mirror-symmetric: what `a` sends is what `b` receives, both ways.
pub fn mirror(neg: Negotiator, a: &Capabilities, b: &Capabilities) -> Result<(), String> {
    let ab = neg(a, b);
    let ba = neg(b, a);
    if ab.send != ba.recv {
        return Err(format!("a sends {:?} but b expects {:?}", ab.send, ba.recv));
    }
    if ab.recv != ba.send {
        return Err(format!("a expects {:?} but b sends {:?}", ab.recv, ba.send));
    }
    Ok(())
}

fn long_short(a: u16, b: u16) -> (u16, u16) {
    (a.max(b), a.min(b))
}

/// Within both terminals' limits, one direction: the stream fits the sender's codecs
/// and camera, the receiver's codecs and screen, both CPU budgets, and the link.
pub fn direction_limits(
    d: &Direction,
    sender: &Capabilities,
    receiver: &Capabilities,
) -> Result<(), String> {
    let Direction::Video(p) = d else {
        return Ok(());
    };
    let fail = |what: &str| Err(format!("{what}: {p:?}"));
    let Some(cam) = sender.camera() else {
        return fail("video from a sender without a camera");
    };
    if !sender.encode().contains(&p.codec) || !receiver.decode().contains(&p.codec) {
        return fail("codec not encodable by the sender and decodable by the receiver");
    }
    let (cam_long, cam_short) = long_short(cam.max.width, cam.max.height);
    if p.width > cam_long || p.height > cam_short {
        return fail(&format!("larger than the camera {:?}", cam.max));
    }
    let screen = receiver.screen();
    let (scr_long, scr_short) = long_short(screen.width, screen.height);
    if p.width > scr_long || p.height > scr_short {
        return fail(&format!("larger than the receiver's screen {screen:?}"));
    }
    if p.fps == 0 || p.fps > cam.max_fps || p.fps > MAX_FPS {
        return fail(&format!("frame rate outside 1..=min({}, 60)", cam.max_fps));
    }
    let rate = u64::from(p.width) * u64::from(p.height) * u64::from(p.fps);
    let budget = encode_budget(sender.cpu()).min(decode_budget(receiver.cpu()));
    if rate > budget {
        return fail(&format!("pixel rate {rate} over the CPU budget {budget}"));
    }
    let link = sender
        .bandwidth()
        .up_kbps
        .min(receiver.bandwidth().down_kbps);
    if p.bitrate_kbps == 0 || p.bitrate_kbps > link {
        return fail(&format!("bit rate outside 1..={link}"));
    }
    Ok(())
}

/// Within limits, both directions of `neg(a, b)`.
pub fn limits(neg: Negotiator, a: &Capabilities, b: &Capabilities) -> Result<(), String> {
    let p = neg(a, b);
    direction_limits(&p.send, a, b).map_err(|e| format!("a to b: {e}"))?;
    direction_limits(&p.recv, b, a).map_err(|e| format!("b to a: {e}"))
}

/// Typed outcomes, one direction: no camera is `NoCamera`; a camera but no codec in
/// common is `NoCommonCodec`; and each reason is given only in its own case.
pub fn direction_typed(
    d: &Direction,
    sender: &Capabilities,
    receiver: &Capabilities,
) -> Result<(), String> {
    let common = sender
        .encode()
        .iter()
        .any(|c| receiver.decode().contains(c));
    let expected = match (sender.camera(), common) {
        (None, _) => Some(NoVideo::NoCamera),
        (Some(_), false) => Some(NoVideo::NoCommonCodec),
        (Some(_), true) => None,
    };
    match (expected, d) {
        (Some(why), Direction::Off(got)) if *got == why => Ok(()),
        (Some(why), _) => Err(format!("expected Off({why:?}), got {d:?}")),
        (None, Direction::Off(NoVideo::InsufficientResources) | Direction::Video(_)) => Ok(()),
        (None, _) => Err(format!(
            "camera and a common codec, yet {d:?}: only InsufficientResources may stop video"
        )),
    }
}

/// Typed outcomes, both directions of `neg(a, b)`.
pub fn typed(neg: Negotiator, a: &Capabilities, b: &Capabilities) -> Result<(), String> {
    let p = neg(a, b);
    direction_typed(&p.send, a, b).map_err(|e| format!("a to b: {e}"))?;
    direction_typed(&p.recv, b, a).map_err(|e| format!("b to a: {e}"))
}

/// `c` with every bandwidth figure raised by the given amounts, within range.
pub fn raised(c: &Capabilities, up: u32, down: u32) -> Capabilities {
    let bw = c.bandwidth();
    let bandwidth = Bandwidth {
        up_kbps: bw.up_kbps.saturating_add(up).min(MAX_KBPS),
        down_kbps: bw.down_kbps.saturating_add(down).min(MAX_KBPS),
    };
    Capabilities::new(
        c.encode().to_vec(),
        c.decode().to_vec(),
        c.screen(),
        c.camera(),
        c.cpu(),
        bandwidth,
    )
    // Only the bandwidth changed, and it stayed within `0..=MAX_KBPS`.
    .unwrap_or_else(|_| c.clone())
}

fn pixel_rate(p: &StreamParams) -> u64 {
    u64::from(p.width) * u64::from(p.height) * u64::from(p.fps)
}

/// Monotone in bandwidth: with more bandwidth on both terminals (`raise` = a's up and
/// down, b's up and down increases), video never stops, and neither the resolution
/// nor the pixel rate (resolution × frame rate) goes down.
pub fn monotone(
    neg: Negotiator,
    a: &Capabilities,
    b: &Capabilities,
    raise: [u32; 4],
) -> Result<(), String> {
    let before = neg(a, b);
    let (a2, b2) = (raised(a, raise[0], raise[1]), raised(b, raise[2], raise[3]));
    let after = neg(&a2, &b2);
    for (what, x, y) in [
        ("send", &before.send, &after.send),
        ("recv", &before.recv, &after.recv),
    ] {
        let Direction::Video(p) = x else { continue };
        let Direction::Video(q) = y else {
            return Err(format!("{what}: {p:?} became {y:?} with more bandwidth"));
        };
        let (res_p, res_q) = (
            u32::from(p.width) * u32::from(p.height),
            u32::from(q.width) * u32::from(q.height),
        );
        if res_q < res_p || pixel_rate(q) < pixel_rate(p) {
            return Err(format!("{what}: {p:?} became {q:?} with more bandwidth"));
        }
    }
    Ok(())
}
