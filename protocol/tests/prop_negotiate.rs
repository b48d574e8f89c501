//! Property tests of the negotiation rule over arbitrary capability pairs.
//!
//! Each property is a plain checker over a negotiator `fn(me, them) -> CallParams`
//! (`precall_protocol::properties`, shared with the `negotiate` fuzz target), applied
//! to the real [`negotiate_pair`] and, in the `*_catches_*` tests, to deliberately
//! wrong negotiators, to show the checker finds a counterexample.

mod strategies;

use std::cell::Cell;
use std::collections::BTreeSet;

use proptest::prelude::*;

use precall_protocol::caps::{
    CallParams, Capabilities, Direction, NoVideo, StreamParams, MAX_KBPS,
};
use precall_protocol::negotiate::{
    decode_budget, encode_budget, milli_bits_per_pixel, LADDER, MAX_FPS, MIN_FPS,
};
use precall_protocol::properties::{self, Negotiator};
use precall_protocol::{negotiate, negotiate_pair};

use strategies::*;

// =====================================================================================
// A model of the rule, with switchable faults
// =====================================================================================

/// Deliberate mistakes the model can make.
#[derive(Clone, Copy, Default, Debug)]
struct Faults {
    /// Pick the codec by the receiver's decode preference instead of the sender's.
    codec_by_receiver: bool,
    /// Do not bound the resolution by the receiver's screen.
    ignore_screen: bool,
    /// Do not bound the pixel rate by the CPU budgets.
    ignore_cpu: bool,
    /// Hold the link figure in 16 bits.
    link_in_u16: bool,
    /// Report a missing common codec as a lack of resources.
    no_codec_as_insufficient: bool,
}

/// One direction, `sender` to `receiver`, written from the rule in
/// `spec/protocol.md` ("Negotiation") independently of `negotiate.rs`.
fn model(sender: &Capabilities, receiver: &Capabilities, f: Faults) -> Direction {
    let Some(camera) = sender.camera() else {
        return Direction::Off(NoVideo::NoCamera);
    };
    let codec = if f.codec_by_receiver {
        receiver
            .decode()
            .iter()
            .find(|c| sender.encode().contains(c))
    } else {
        sender
            .encode()
            .iter()
            .find(|c| receiver.decode().contains(c))
    };
    let Some(codec) = codec else {
        return Direction::Off(if f.no_codec_as_insufficient {
            NoVideo::InsufficientResources
        } else {
            NoVideo::NoCommonCodec
        });
    };
    let budget = if f.ignore_cpu {
        u64::MAX
    } else {
        encode_budget(sender.cpu()).min(decode_budget(receiver.cpu()))
    };
    let mut link = u64::from(
        sender
            .bandwidth()
            .up_kbps
            .min(receiver.bandwidth().down_kbps),
    );
    if f.link_in_u16 {
        link = u64::from(link as u16);
    }
    let (cam_long, cam_short) = long_short(camera.max.width, camera.max.height);
    let (scr_long, scr_short) = long_short(receiver.screen().width, receiver.screen().height);
    for (w, h) in LADDER {
        let fits_camera = w <= cam_long && h <= cam_short;
        let fits_screen = f.ignore_screen || (w <= scr_long && h <= scr_short);
        if !fits_camera || !fits_screen {
            continue;
        }
        let pixels = u64::from(w) * u64::from(h);
        let fps = u64::from(camera.max_fps)
            .min(u64::from(MAX_FPS))
            .min(budget / pixels);
        if fps < u64::from(MIN_FPS.min(camera.max_fps)) {
            continue;
        }
        let target = (pixels * fps * milli_bits_per_pixel(codec) / 1_000_000).max(1);
        if 2 * link < target {
            continue;
        }
        return Direction::Video(StreamParams {
            codec: codec.clone(),
            width: w,
            height: h,
            fps: fps as u16,
            bitrate_kbps: target.min(link) as u32,
        });
    }
    Direction::Off(NoVideo::InsufficientResources)
}

fn long_short(a: u16, b: u16) -> (u16, u16) {
    (a.max(b), a.min(b))
}

fn model_pair(me: &Capabilities, them: &Capabilities, f: Faults) -> CallParams {
    CallParams {
        send: model(me, them, f),
        recv: model(them, me, f),
    }
}

/// Wrong: the side that computes picks the codec of what it *receives* by its own
/// decode preference, so the two ends disagree on that direction's codec.
fn receiver_picks_codec(me: &Capabilities, them: &Capabilities) -> CallParams {
    CallParams {
        send: negotiate(me, them),
        recv: model(
            them,
            me,
            Faults {
                codec_by_receiver: true,
                ..Faults::default()
            },
        ),
    }
}

fn ignores_screen(me: &Capabilities, them: &Capabilities) -> CallParams {
    let f = Faults {
        ignore_screen: true,
        ..Faults::default()
    };
    model_pair(me, them, f)
}

fn ignores_cpu(me: &Capabilities, them: &Capabilities) -> CallParams {
    let f = Faults {
        ignore_cpu: true,
        ..Faults::default()
    };
    model_pair(me, them, f)
}

fn link_in_u16(me: &Capabilities, them: &Capabilities) -> CallParams {
    let f = Faults {
        link_in_u16: true,
        ..Faults::default()
    };
    model_pair(me, them, f)
}

fn no_codec_as_insufficient(me: &Capabilities, them: &Capabilities) -> CallParams {
    let f = Faults {
        no_codec_as_insufficient: true,
        ..Faults::default()
    };
    model_pair(me, them, f)
}

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Wrong: hidden state (a call counter) changes the codec choice every other call.
fn stateful(me: &Capabilities, them: &Capabilities) -> CallParams {
    let n = CALLS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let f = Faults {
        codec_by_receiver: n % 2 == 0,
        ..Faults::default()
    };
    model_pair(me, them, f)
}

// =====================================================================================
// Properties
// =====================================================================================

/// The model without faults is the real rule.
fn check_matches_model(a: &Capabilities, b: &Capabilities) -> Result<(), String> {
    let real = negotiate_pair(a, b);
    let model = model_pair(a, b, Faults::default());
    if real != model {
        return Err(format!("negotiate_pair {real:?} != model {model:?}"));
    }
    Ok(())
}

// =====================================================================================
// Strategies
// =====================================================================================

/// Two capability sets: independent, or the second built from the first's codecs
/// reordered (so both ends share several codecs in different preference orders).
fn pair() -> impl Strategy<Value = (Capabilities, Capabilities)> {
    prop_oneof![
        (capabilities(), capabilities()),
        (capabilities(), capabilities()).prop_flat_map(|(a, b)| {
            (
                Just(a.clone()),
                Just(b),
                Just(a.decode().to_vec()).prop_shuffle(),
                Just(a.encode().to_vec()).prop_shuffle(),
            )
                .prop_map(|(a, b, enc, dec)| (a, with_codecs(&b, enc, dec)))
        }),
    ]
}

/// A pair where the first has a camera and no codec it encodes is one the second
/// decodes.
fn disjoint_pair() -> impl Strategy<Value = (Capabilities, Capabilities)> {
    (capabilities_with_camera(), capabilities()).prop_map(|(a, b)| {
        let decode = b
            .decode()
            .iter()
            .filter(|c| !a.encode().contains(c))
            .cloned()
            .collect();
        let b = with_codecs(&b, b.encode().to_vec(), decode);
        (a, b)
    })
}

fn raise() -> impl Strategy<Value = [u32; 4]> {
    prop::array::uniform4(prop_oneof![
        Just(0u32),
        1u32..=100,
        0u32..=100_000,
        0u32..=MAX_KBPS,
    ])
}

// =====================================================================================
// Tests against the real rule
// =====================================================================================

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    #[test]
    fn negotiate_pair_is_the_documented_rule((a, b) in pair()) {
        check_matches_model(&a, &b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn negotiation_is_deterministic((a, b) in pair()) {
        properties::deterministic(negotiate_pair, &a, &b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn negotiation_is_mirror_symmetric((a, b) in pair()) {
        properties::mirror(negotiate_pair, &a, &b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn negotiated_streams_are_within_limits((a, b) in pair()) {
        properties::limits(negotiate_pair, &a, &b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn negotiation_outcomes_are_typed((a, b) in pair()) {
        properties::typed(negotiate_pair, &a, &b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn disjoint_codecs_with_a_camera_give_no_common_codec((a, b) in disjoint_pair()) {
        prop_assert_eq!(negotiate(&a, &b), Direction::Off(NoVideo::NoCommonCodec));
        properties::typed(negotiate_pair, &a, &b).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn no_camera_gives_no_camera((a, b) in pair()) {
        let a = with_camera(&a, None);
        prop_assert_eq!(negotiate(&a, &b), Direction::Off(NoVideo::NoCamera));
        prop_assert_eq!(negotiate_pair(&b, &a).recv, Direction::Off(NoVideo::NoCamera));
    }

    #[test]
    fn more_bandwidth_never_lowers_resolution_or_pixel_rate((a, b) in pair(), r in raise()) {
        properties::monotone(negotiate_pair, &a, &b, r).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn negotiating_with_5000_distinct_peers_completes() {
    // No timing is asserted: this only shows a client can fill a large table, and
    // checks every entry while at it.
    let mut runner = fault_runner(1);
    let me = sample(&capabilities_with_camera(), &mut runner);
    let mut seen = BTreeSet::new();
    let mut peers = Vec::with_capacity(5_000);
    while peers.len() < 5_000 {
        let p = sample(&capabilities(), &mut runner);
        if seen.insert(p.fingerprint()) {
            peers.push(p);
        }
    }
    let mut video = 0;
    for p in &peers {
        let params = negotiate_pair(&me, p);
        properties::direction_limits(&params.send, &me, p).unwrap();
        properties::direction_limits(&params.recv, p, &me).unwrap();
        properties::direction_typed(&params.send, &me, p).unwrap();
        properties::direction_typed(&params.recv, p, &me).unwrap();
        video += usize::from(params.send.video().is_some());
    }
    assert_eq!(seen.len(), 5_000);
    assert!(video > 0, "some peer must get video");
}

// =====================================================================================
// Seeded faults: each checker finds a counterexample in a wrong negotiator
// =====================================================================================

const FAULT_CASES: u32 = 1024;

#[test]
fn model_check_catches_every_seeded_fault() {
    // The model itself would hide faults if it were wrong in the same way; make sure
    // each fault is visible against the real rule.
    for (name, neg) in [
        ("receiver_picks_codec", receiver_picks_codec as Negotiator),
        ("ignores_screen", ignores_screen),
        ("ignores_cpu", ignores_cpu),
        ("link_in_u16", link_in_u16),
        ("no_codec_as_insufficient", no_codec_as_insufficient),
    ] {
        let found = find_counterexample(FAULT_CASES, pair(), |(a, b)| {
            if neg(&a, &b) == negotiate_pair(&a, &b) {
                Ok(())
            } else {
                Err("differs".into())
            }
        });
        assert!(found.is_some(), "{name} never differs from the real rule");
    }
}

#[test]
fn determinism_check_catches_hidden_state() {
    let found = find_counterexample(FAULT_CASES, pair(), |(a, b)| {
        properties::deterministic(stateful, &a, &b)
    });
    let ((a, b), why) = found.expect("the checker must catch the stateful negotiator");
    assert!(why.contains("not deterministic"), "{a:?} {b:?}: {why}");
}

#[test]
fn mirror_check_catches_a_one_sided_codec_choice() {
    let found = find_counterexample(FAULT_CASES, pair(), |(a, b)| {
        properties::mirror(receiver_picks_codec, &a, &b)
    });
    let ((a, b), why) = found.expect("the checker must catch the one-sided codec choice");
    assert!(why.contains("sends"), "{a:?} {b:?}: {why}");
}

#[test]
fn limits_check_catches_a_negotiator_that_ignores_the_screen() {
    let found = find_counterexample(FAULT_CASES, pair(), |(a, b)| {
        properties::limits(ignores_screen, &a, &b)
    });
    let ((a, b), why) = found.expect("the checker must catch the ignored screen");
    assert!(why.contains("screen"), "{a:?} {b:?}: {why}");
}

#[test]
fn limits_check_catches_a_negotiator_that_ignores_the_cpu_budget() {
    let found = find_counterexample(FAULT_CASES, pair(), |(a, b)| {
        properties::limits(ignores_cpu, &a, &b)
    });
    let ((a, b), why) = found.expect("the checker must catch the ignored CPU budget");
    assert!(why.contains("CPU budget"), "{a:?} {b:?}: {why}");
}

#[test]
fn typed_check_catches_a_mislabelled_outcome() {
    let found = find_counterexample(FAULT_CASES, disjoint_pair(), |(a, b)| {
        properties::typed(no_codec_as_insufficient, &a, &b)
    });
    let ((a, b), why) = found.expect("the checker must catch the wrong reason");
    assert!(why.contains("NoCommonCodec"), "{a:?} {b:?}: {why}");
}

#[test]
fn monotonicity_check_catches_a_link_held_in_16_bits() {
    let found = find_counterexample(FAULT_CASES, (pair(), raise()), |((a, b), r)| {
        properties::monotone(link_in_u16, &a, &b, r)
    });
    let (((a, b), r), why) = found.expect("the checker must catch the truncated link");
    assert!(why.contains("more bandwidth"), "{a:?} {b:?} {r:?}: {why}");
}

#[test]
fn pair_strategy_reaches_every_outcome() {
    // The properties above are only as good as the pairs they see: every outcome,
    // and video at several rungs, must be common.
    let mut runner = fault_runner(1);
    let (mut video, mut no_camera, mut no_codec, mut starved) = (0, 0, 0, 0);
    let mut rungs = BTreeSet::new();
    for _ in 0..2_000 {
        let (a, b) = sample(&pair(), &mut runner);
        match negotiate(&a, &b) {
            Direction::Video(p) => {
                video += 1;
                rungs.insert((p.width, p.height));
            }
            Direction::Off(NoVideo::NoCamera) => no_camera += 1,
            Direction::Off(NoVideo::NoCommonCodec) => no_codec += 1,
            Direction::Off(_) => starved += 1,
        }
    }
    let counts = (video, no_camera, no_codec, starved, rungs.len());
    println!("video, no camera, no codec, starved, rungs: {counts:?}");
    assert!(video >= 400 && no_camera >= 100 && no_codec >= 100 && starved >= 100);
    assert!(rungs.len() >= 7, "{rungs:?}");
}
