//! precall's `m=video` sections through a real WebRTC stack: str0m (sans-IO).
//!
//! For each pair of terminals the test negotiates with
//! [`negotiate_pair`], exports the caller's offer section and the callee's answer
//! section with `precall-sdp`, then runs the SDP offer/answer between two
//! [`str0m::Rtc`]s, A the caller and B the callee:
//!
//! 1. A adds a video media with the direction of precall's offer and writes its offer;
//!    [`precall_sdp::apply`] puts precall's section into it.
//! 2. B accepts that offer. Checked: B took every format of precall's offer (same codec,
//!    same payload type; for H.264 the same profile and packetization mode) with the
//!    mirrored direction, and B's own answer lists exactly those formats.
//! 3. [`precall_sdp::apply`] puts precall's answer section into B's answer, and A
//!    accepts it. Checked: A's direction and formats are precall's answer's, and on
//!    each side the first negotiated format (the one the peer prefers to receive) is
//!    the codec precall says that side sends, at precall's payload type, and the
//!    side's [`str0m::media::Writer`] offers it.
//!
//! The last tests hand str0m deliberately broken descriptions and assert that the
//! check meant for each fault reports it.
//!
//! Both peers run str0m 0.24.1 with its default codecs (VP8, H.264 in seven profile
//! and packetization variants, H.265, VP9 profiles 0 and 2, AV1). Two str0m
//! limitations show, each pinned down by a test that fails once str0m lifts it:
//! str0m parses one `b=` line per media section, so the flow drops precall's `b=TIAS`
//! and keeps `b=AS` ([`one_bandwidth_line`], the only change made to precall's text);
//! and str0m matches AV1 only at `level-idx` 5, so AV1 below level 3.1 does not
//! negotiate (`av1_below_level_3_1_finds_no_match_in_str0m`).
//!
//! `cargo test -p precall-sdp-interop -- --nocapture` prints what str0m made of each
//! pair.

use std::fmt;
use std::time::Instant;

use precall_protocol::{
    negotiate_pair, CallParams, Capabilities, CapabilitiesBuilder, Direction as Flow,
};
use precall_sdp::{MediaDirection, MediaSection, VideoCodec};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::Rtc;

// ---------------------------------------------------------------------------------
// The pairs
// ---------------------------------------------------------------------------------

/// Two terminals, the caller first.
struct Pair {
    name: &'static str,
    caller: Capabilities,
    callee: Capabilities,
    /// The case the pair stands for, as precall's offer shows it: its direction and its
    /// formats' encoding names, in order. Checked before the exchange, so a change in
    /// negotiation cannot quietly turn the pair into another case.
    offer: (MediaDirection, &'static [&'static str]),
}

/// A terminal with a 1280×720 screen, a 1280×720 camera at 30 fps, 4 Mbit/s each way
/// and `codecs` to encode and decode: each pair changes one thing of it.
fn terminal(codecs: &[&str]) -> CapabilitiesBuilder {
    Capabilities::builder()
        .codecs(codecs.iter().copied())
        .screen(1280, 720)
        .camera(1280, 720, 30)
        .bandwidth(4_000, 4_000)
}

fn build(b: CapabilitiesBuilder) -> Capabilities {
    b.build().expect("valid capabilities")
}

/// A pair of two terminals alike, video both ways in `codec` (its encoding name).
fn same(name: &'static str, codec: &'static [&'static str], caps: Capabilities) -> Pair {
    Pair {
        name,
        caller: caps.clone(),
        callee: caps,
        offer: (MediaDirection::SendRecv, codec),
    }
}

/// The pairs the real flow runs, each one a case a deployment meets.
fn pairs() -> Vec<Pair> {
    vec![
        // 1280×720 at 30 fps both ways, 2764 kbit/s: H.264 level 3.1.
        same("h264 720p30", &["H264"], build(terminal(&["h264"]))),
        // 300 kbit/s each way: 480×270 at 30 fps, level 2.1.
        same(
            "h264 300 kbit/s",
            &["H264"],
            build(terminal(&["h264"]).bandwidth(300, 300)),
        ),
        same("vp8 720p30", &["VP8"], build(terminal(&["vp8"]))),
        same("vp9 720p30", &["VP9"], build(terminal(&["vp9"]))),
        // AV1 at 720p30 is level 3.1, `level-idx=5`: str0m's default, see
        // `av1_below_level_3_1_finds_no_match_in_str0m`.
        same("av1 720p30", &["AV1"], build(terminal(&["av1"]))),
        same("h265 720p30", &["H265"], build(terminal(&["h265"]))),
        // The callee renders on a 640×360 screen: the caller sends it 640×360 (level
        // 3.0 in the answer), the callee sends 1280×720 (level 3.1 in the offer).
        Pair {
            name: "h264, callee screen 640x360",
            caller: build(terminal(&["h264"])),
            callee: build(terminal(&["h264"]).screen(640, 360)),
            offer: (MediaDirection::SendRecv, &["H264"]),
        },
        // The caller has no camera: it only receives (offer recvonly, answer sendonly).
        Pair {
            name: "h264, caller without camera",
            caller: build(
                Capabilities::builder()
                    .codecs(["h264"])
                    .screen(1280, 720)
                    .bandwidth(4_000, 4_000),
            ),
            callee: build(terminal(&["h264"])),
            offer: (MediaDirection::RecvOnly, &["H264"]),
        },
        // The callee has no camera: the caller only sends (offer sendonly).
        Pair {
            name: "vp8, callee without camera",
            caller: build(terminal(&["vp8"])),
            callee: build(
                Capabilities::builder()
                    .codecs(["vp8"])
                    .screen(1280, 720)
                    .bandwidth(4_000, 4_000),
            ),
            offer: (MediaDirection::SendOnly, &["VP8"]),
        },
        // The caller encodes only VP8 and the callee only H.264; each decodes both.
        // The caller sends VP8 and receives H.264: the offer lists H.264 then VP8,
        // the answer VP8 then H.264.
        Pair {
            name: "vp8 out, h264 in",
            caller: build(terminal(&[]).encode(["vp8"]).decode(["h264", "vp8"])),
            callee: build(terminal(&[]).encode(["h264"]).decode(["vp8", "h264"])),
            offer: (MediaDirection::SendRecv, &["H264", "VP8"]),
        },
    ]
}

// ---------------------------------------------------------------------------------
// precall's types to str0m's
// ---------------------------------------------------------------------------------

fn str0m_direction(d: MediaDirection) -> Direction {
    match d {
        MediaDirection::SendRecv => Direction::SendRecv,
        MediaDirection::SendOnly => Direction::SendOnly,
        MediaDirection::RecvOnly => Direction::RecvOnly,
        MediaDirection::Inactive => Direction::Inactive,
        other => panic!("no str0m direction for {other:?}"),
    }
}

fn str0m_codec(c: VideoCodec) -> Codec {
    match c {
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Vp8 => Codec::Vp8,
        VideoCodec::Vp9 => Codec::Vp9,
        VideoCodec::Av1 => Codec::Av1,
        VideoCodec::H265 => Codec::H265,
        other => panic!("no str0m codec for {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// What str0m negotiated
// ---------------------------------------------------------------------------------

/// One payload format of the media, as str0m holds it after the exchange.
#[derive(Clone, Debug)]
struct Format {
    pt: u8,
    /// `Codec::Unknown` when the media lists a payload type str0m has no parameters for.
    codec: Codec,
    fmtp: FormatParams,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pt {} [{}]", self.codec, self.pt, self.fmtp)
    }
}

/// One side's view of the video media after the exchange.
#[derive(Clone, Debug)]
struct Side {
    direction: Direction,
    /// The media's payload formats in the order the peer listed them
    /// (`Media::remote_pts`): its most preferred first.
    formats: Vec<Format>,
    /// The payload types the side's `Writer` offers for sending (`Writer::payload_params`).
    writer_pts: Vec<u8>,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.direction)?;
        if self.formats.is_empty() {
            f.write_str(", no formats")?;
        }
        for (i, p) in self.formats.iter().enumerate() {
            write!(f, "{} {p}", if i == 0 { ":" } else { "," })?;
        }
        Ok(())
    }
}

/// The video media `mid` as `rtc` negotiated it, if it has it.
fn side(rtc: &mut Rtc, mid: Mid) -> Option<Side> {
    let media = rtc.media(mid)?;
    let direction = media.direction();
    let pts = media.remote_pts().to_vec();
    let config = rtc.codec_config();
    let formats = pts
        .iter()
        .map(|pt| {
            let p = config.find(|p| p.pt() == *pt);
            Format {
                pt: **pt,
                codec: p.map_or(Codec::Unknown, |p| p.spec().codec),
                fmtp: p.map(|p| p.spec().format).unwrap_or_default(),
            }
        })
        .collect();
    let writer_pts = rtc
        .writer(mid)
        .map(|w| w.payload_params().map(|p| *p.pt()).collect())
        .unwrap_or_default();
    Some(Side {
        direction,
        formats,
        writer_pts,
    })
}

// ---------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------

/// Which check of the flow did not hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    /// `precall_sdp::offer` or `answer` refused the negotiated parameters.
    Export,
    /// `precall_sdp::apply` refused str0m's offer.
    ApplyOffer,
    /// str0m could not parse the offer.
    ParseOffer,
    /// B's `accept_offer` failed.
    AcceptOffer,
    /// B lacks one of precall's offered formats (codec at its payload type).
    CalleeFormats,
    /// B took precall's H.264 format with another profile or packetization mode.
    CalleeH264Profile,
    /// B's media direction is not the offer's mirrored.
    CalleeDirection,
    /// B's answer text does not list exactly the offer's formats, or its direction.
    CalleeAnswerText,
    /// `precall_sdp::apply` refused str0m's answer.
    ApplyAnswer,
    /// str0m could not parse the answer.
    ParseAnswer,
    /// A's `accept_answer` failed.
    AcceptAnswer,
    /// A's media direction is not the offer's.
    CallerDirection,
    /// A's formats are not precall's answer's, in its order.
    CallerFormats,
    /// A side's preferred format is not the codec precall has it send, or its writer
    /// does not offer it.
    SendCodec,
}

/// A check that did not hold, with every SDP text of the exchange so far.
#[derive(Debug)]
struct Failure {
    check: Check,
    detail: String,
    texts: Vec<(&'static str, String)>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "check {:?} failed: {}", self.check, self.detail)?;
        for (title, text) in &self.texts {
            writeln!(f, "----- {title} -----\n{}", text.trim_end())?;
        }
        Ok(())
    }
}

/// The texts of one exchange, collected as it goes, for the failure messages.
#[derive(Default)]
struct Texts(Vec<(&'static str, String)>);

impl Texts {
    fn push(&mut self, title: &'static str, text: &str) {
        self.0.push((title, text.to_owned()));
    }

    fn fail(&self, check: Check, detail: impl Into<String>) -> Failure {
        Failure {
            check,
            detail: detail.into(),
            texts: self.0.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------
// The flow
// ---------------------------------------------------------------------------------

/// Rewrites applied to the texts handed to str0m, after `precall_sdp::apply`: none in
/// the real flow; the tests that show a check can fail break one on purpose.
#[derive(Clone, Copy, Default)]
struct Tamper {
    offer: Option<fn(&str) -> String>,
    answer: Option<fn(&str) -> String>,
}

/// A completed exchange.
struct Outcome {
    params: CallParams,
    offer: MediaSection,
    answer: MediaSection,
    /// B's view, after `accept_offer`.
    callee: Side,
    /// A's view, after `accept_answer`.
    caller: Side,
    /// B's answer as str0m wrote it.
    stack_answer: String,
}

/// Runs the offer/answer of `pair` between two str0m peers with precall's sections
/// applied, and every check; the first check that fails is the error.
fn exchange(pair: &Pair, tamper: Tamper) -> Result<Outcome, Failure> {
    let mut texts = Texts::default();
    let params = negotiate_pair(&pair.caller, &pair.callee);
    let ours_offer = precall_sdp::offer(&pair.caller, &params)
        .map_err(|e| texts.fail(Check::Export, format!("offer: {e}")))?;
    texts.push("precall's offer section", &ours_offer.to_string());
    let ours_answer = precall_sdp::answer(&pair.callee, &params.mirrored(), &ours_offer)
        .map_err(|e| texts.fail(Check::Export, format!("answer: {e}")))?;
    texts.push("precall's answer section", &ours_answer.to_string());

    let now = Instant::now();
    let mut a = Rtc::builder().build(now);
    let mut b = Rtc::builder().build(now);

    // 1. A's offer, with precall's section.
    let mut api = a.sdp_api();
    let mid = api.add_media(
        MediaKind::Video,
        str0m_direction(ours_offer.direction),
        None,
        None,
        None,
    );
    let (stack_offer, pending) = api.apply().expect("a new media needs an offer");
    let stack_offer = stack_offer.to_sdp_string();
    texts.push("A's offer as str0m wrote it", &stack_offer);
    let offer_text = precall_sdp::apply(&stack_offer, &ours_offer)
        .map_err(|e| texts.fail(Check::ApplyOffer, e.to_string()))?;
    let offer_text = one_bandwidth_line(&offer_text); // WORKAROUND, see the function
    let offer_text = tamper.offer.map_or(offer_text.clone(), |f| f(&offer_text));
    texts.push("the offer B is given", &offer_text);
    let offer = SdpOffer::from_sdp_string(&offer_text)
        .map_err(|e| texts.fail(Check::ParseOffer, e.to_string()))?;

    // 2. B accepts it.
    let stack_answer = b
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| texts.fail(Check::AcceptOffer, e.to_string()))?
        .to_sdp_string();
    texts.push("B's answer as str0m wrote it", &stack_answer);
    let callee = side(&mut b, mid)
        .ok_or_else(|| texts.fail(Check::CalleeFormats, format!("B has no media {mid}")))?;
    check_callee(&ours_offer, &callee, &stack_answer, &texts)?;

    // 3. B's answer, with precall's section; A accepts it.
    let answer_text = precall_sdp::apply(&stack_answer, &ours_answer)
        .map_err(|e| texts.fail(Check::ApplyAnswer, e.to_string()))?;
    let answer_text = one_bandwidth_line(&answer_text); // WORKAROUND, see the function
    let answer_text = tamper
        .answer
        .map_or(answer_text.clone(), |f| f(&answer_text));
    texts.push("the answer A is given", &answer_text);
    let answer = SdpAnswer::from_sdp_string(&answer_text)
        .map_err(|e| texts.fail(Check::ParseAnswer, e.to_string()))?;
    a.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| texts.fail(Check::AcceptAnswer, e.to_string()))?;
    let caller = side(&mut a, mid)
        .ok_or_else(|| texts.fail(Check::CallerFormats, format!("A has no media {mid}")))?;
    check_caller(&ours_offer, &ours_answer, &caller, &texts)?;

    check_send("A", &params, &caller, &texts)?;
    check_send("B", &params.mirrored(), &callee, &texts)?;
    Ok(Outcome {
        params,
        offer: ours_offer,
        answer: ours_answer,
        callee,
        caller,
        stack_answer,
    })
}

/// WORKAROUND for a str0m limitation (0.24.1 and 0.25.0 alike), not a precall bug:
/// str0m's SDP parser takes at most one `b=` line per media section
/// (`optional(bandwidth_line())` in its `media_parser`), while RFC 8866 §5.8 allows
/// any number and RFC 3890 §6.7 has `b=AS` and `b=TIAS` side by side, as precall
/// writes them. With both lines str0m stops at the second one and fails with "Media is
/// missing a=mid". This drops the `b=TIAS` lines and keeps `b=AS` (the one every
/// browser reads). `str0m_refuses_two_bandwidth_lines` pins the limitation down, so the
/// workaround goes once str0m lifts it.
fn one_bandwidth_line(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.starts_with("b=TIAS:"))
        .collect()
}

/// Whether `side` lists `codec` at `pt`.
fn has(side: &Side, codec: VideoCodec, pt: u8) -> bool {
    side.formats
        .iter()
        .any(|f| f.pt == pt && f.codec == str0m_codec(codec))
}

/// Step 2: B's view after `accept_offer`, and B's own answer text.
fn check_callee(
    offer: &MediaSection,
    callee: &Side,
    stack_answer: &str,
    texts: &Texts,
) -> Result<(), Failure> {
    for f in &offer.formats {
        if !has(callee, f.codec, f.payload_type) {
            return Err(texts.fail(
                Check::CalleeFormats,
                format!(
                    "precall offered {} at {}; B negotiated {callee}",
                    f.codec.encoding_name(),
                    f.payload_type
                ),
            ));
        }
        if f.codec == VideoCodec::H264 {
            check_h264_profile(f, callee, texts)?;
        }
    }
    let want = str0m_direction(offer.direction.mirrored());
    if callee.direction != want {
        return Err(texts.fail(
            Check::CalleeDirection,
            format!(
                "B's media is {:?}, the offer is {}",
                callee.direction,
                offer.direction.as_str()
            ),
        ));
    }

    // B's answer lists exactly the offered formats, each with its codec's rtpmap, and
    // the mirrored direction.
    let video = video_section(stack_answer);
    let mut listed = m_line_formats(&video);
    let mut offered = offer.payload_types();
    listed.sort_unstable();
    offered.sort_unstable();
    if listed != offered {
        return Err(texts.fail(
            Check::CalleeAnswerText,
            format!("B's answer lists {listed:?}, the offer {offered:?}"),
        ));
    }
    for f in &offer.formats {
        let rtpmap = format!(
            "a=rtpmap:{} {}/90000",
            f.payload_type,
            f.codec.encoding_name()
        );
        if !video.iter().any(|l| l.eq_ignore_ascii_case(&rtpmap)) {
            return Err(texts.fail(
                Check::CalleeAnswerText,
                format!("B's answer lacks `{rtpmap}`"),
            ));
        }
    }
    let direction = format!("a={}", offer.direction.mirrored().as_str());
    if !video.contains(&direction.as_str()) {
        return Err(texts.fail(
            Check::CalleeAnswerText,
            format!("B's answer lacks `{direction}`"),
        ));
    }
    Ok(())
}

/// RFC 6184 §8.2.2: `profile-level-id`'s first two bytes (profile_idc and
/// profile-iop) name the profile and must match; the level byte may differ
/// (`level-asymmetry-allowed=1`; str0m answers with the level it is configured with).
/// `packetization-mode` must match too.
fn check_h264_profile(
    offered: &precall_sdp::PayloadFormat,
    callee: &Side,
    texts: &Texts,
) -> Result<(), Failure> {
    let ours = offered
        .fmtp
        .get("profile-level-id")
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .expect("precall writes profile-level-id for H.264");
    let mode = offered
        .fmtp
        .get("packetization-mode")
        .and_then(|v| v.parse::<u8>().ok())
        .expect("precall writes packetization-mode for H.264");
    let theirs = callee
        .formats
        .iter()
        .find(|f| f.pt == offered.payload_type)
        .expect("checked by the caller");
    let fine = theirs
        .fmtp
        .profile_level_id
        .is_some_and(|v| v >> 8 == ours >> 8)
        && theirs.fmtp.packetization_mode == Some(mode);
    if fine {
        Ok(())
    } else {
        Err(texts.fail(
            Check::CalleeH264Profile,
            format!(
                "precall offered profile-level-id={ours:06x};packetization-mode={mode}, \
                 B took {theirs}"
            ),
        ))
    }
}

/// Step 3: A's view after `accept_answer`.
fn check_caller(
    offer: &MediaSection,
    answer: &MediaSection,
    caller: &Side,
    texts: &Texts,
) -> Result<(), Failure> {
    let want = str0m_direction(offer.direction);
    if caller.direction != want {
        return Err(texts.fail(
            Check::CallerDirection,
            format!(
                "A's media is {:?}, its offer was {}",
                caller.direction,
                offer.direction.as_str()
            ),
        ));
    }
    let got: Vec<(u8, Codec)> = caller.formats.iter().map(|f| (f.pt, f.codec)).collect();
    let want: Vec<(u8, Codec)> = answer
        .formats
        .iter()
        .map(|f| (f.payload_type, str0m_codec(f.codec)))
        .collect();
    if got != want {
        return Err(texts.fail(
            Check::CallerFormats,
            format!("A negotiated {caller}; precall's answer lists {want:?}"),
        ));
    }
    Ok(())
}

/// On the side called `who`, with precall's `params` from its view: when it sends
/// video, the peer's most preferred format (its first) is precall's send codec at
/// precall's payload type, and the side's writer offers it.
fn check_send(who: &str, params: &CallParams, side: &Side, texts: &Texts) -> Result<(), Failure> {
    let Flow::Video(stream) = &params.send else {
        return Ok(());
    };
    let codec = VideoCodec::from_token(&stream.codec).expect("a codec precall exports");
    let pt = codec.payload_type();
    let first = side.formats.first().map(|f| (f.pt, f.codec));
    if first != Some((pt, str0m_codec(codec))) || !side.writer_pts.contains(&pt) {
        return Err(texts.fail(
            Check::SendCodec,
            format!(
                "{who} sends {} at {pt}; str0m's media: {side}; its writer offers {:?}",
                codec.encoding_name(),
                side.writer_pts
            ),
        ));
    }
    Ok(())
}

/// The lines of the first `m=video` section of `sdp`.
fn video_section(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .skip_while(|l| !l.starts_with("m=video "))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
        .map(|(_, l)| l)
        .collect()
}

/// The `m=`, direction, `a=rtpmap` and `a=fmtp` lines of the video section of `sdp`.
fn media_lines(sdp: &str) -> Vec<&str> {
    video_section(sdp)
        .into_iter()
        .filter(|l| {
            l.starts_with("m=")
                || l.starts_with("a=rtpmap:")
                || l.starts_with("a=fmtp:")
                || ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(l)
        })
        .collect()
}

/// The payload types of a section's `m=` line.
fn m_line_formats(section: &[&str]) -> Vec<u8> {
    section
        .first()
        .map(|m| {
            m.split(' ')
                .skip(3)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

/// A stream's parameters in a line: `h264 1280x720@30 2764 kbit/s`, or `off (NoCamera)`.
fn flow(d: &Flow) -> String {
    match d {
        Flow::Video(s) => format!(
            "{} {}x{}@{} {} kbit/s",
            s.codec.as_str(),
            s.width,
            s.height,
            s.fps,
            s.bitrate_kbps
        ),
        Flow::Off(why) => format!("off ({why:?})"),
    }
}

/// The real flow for every pair of [`pairs`]; all pairs run, and the failures are
/// reported together, each with its SDP texts. With `--nocapture` it prints, per pair,
/// the negotiated streams, precall's sections, B's own answer and what each side
/// negotiated.
#[test]
fn every_pair_negotiates_through_two_str0m_peers() {
    let mut failures = Vec::new();
    for pair in pairs() {
        let params = negotiate_pair(&pair.caller, &pair.callee);
        let offer = precall_sdp::offer(&pair.caller, &params).expect("exports");
        let names: Vec<&str> = offer
            .formats
            .iter()
            .map(|f| f.codec.encoding_name())
            .collect();
        assert_eq!(
            (offer.direction, names.as_slice()),
            pair.offer,
            "pair {:?} is no longer the case it stands for: {params:?}",
            pair.name
        );
        match exchange(&pair, Tamper::default()) {
            Ok(o) => {
                let fmts = |s: &MediaSection| {
                    s.formats
                        .iter()
                        .map(|f| {
                            format!(
                                "{} pt {} [{}]",
                                f.codec.encoding_name(),
                                f.payload_type,
                                f.fmtp
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!(
                    "== {}\n   A sends {}, receives {}\n   precall offer  {}: {}\n   \
                     precall answer {}: {}\n   str0m B's own answer: {}\n   \
                     str0m B after accept_offer:  {}\n   str0m A after accept_answer: {}",
                    pair.name,
                    flow(&o.params.send),
                    flow(&o.params.recv),
                    o.offer.direction.as_str(),
                    fmts(&o.offer),
                    o.answer.direction.as_str(),
                    fmts(&o.answer),
                    media_lines(&o.stack_answer).join(" | "),
                    o.callee,
                    o.caller,
                );
            }
            Err(f) => failures.push(format!("== {}\n{f}", pair.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the pairs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// Known str0m limitations, pinned down
// ---------------------------------------------------------------------------------

/// A's offer for `pair` with precall's section applied, as `exchange` builds it
/// before the workaround.
fn applied_offer(pair: &Pair) -> String {
    let params = negotiate_pair(&pair.caller, &pair.callee);
    let ours = precall_sdp::offer(&pair.caller, &params).expect("exports");
    let mut a = Rtc::builder().build(Instant::now());
    let mut api = a.sdp_api();
    api.add_media(
        MediaKind::Video,
        str0m_direction(ours.direction),
        None,
        None,
        None,
    );
    let (offer, _) = api.apply().expect("a new media needs an offer");
    precall_sdp::apply(&offer.to_sdp_string(), &ours).expect("applies")
}

/// The limitation [`one_bandwidth_line`] works around: str0m refuses precall's section
/// as written (`b=AS` and `b=TIAS`) and takes it with `b=AS` alone. When this fails
/// because str0m parses both lines, drop the workaround.
#[test]
fn str0m_refuses_two_bandwidth_lines() {
    let text = applied_offer(&h264());
    assert!(
        text.contains("\r\nb=AS:2857\r\nb=TIAS:2764000\r\n"),
        "{text}"
    );
    let err = SdpOffer::from_sdp_string(&text)
        .expect_err("str0m 0.24 parses one b= line per media section")
        .to_string();
    assert!(err.contains("Media is missing a=mid"), "{err}\n{text}");
    let one = one_bandwidth_line(&text);
    assert!(one.contains("\r\nb=AS:2857\r\n") && !one.contains("b=TIAS"));
    SdpOffer::from_sdp_string(&one).unwrap_or_else(|e| panic!("{e}\n{one}"));
}

/// AV1 below level 3.1 does not negotiate with str0m's default AV1 format: str0m
/// matches AV1 only on an equal `level-idx` (absent means 5, level 3.1; its
/// `match_av1_score`, with a TODO to compare "lesser or equal" by direction as the AOM
/// payload format §7.2.3 has it), so it drops precall's `level-idx=1` format. Not a
/// precall bug: the level is the stream's (AV1 Annex A.3). When this fails because
/// str0m matches, move the pair into [`pairs`].
#[test]
fn av1_below_level_3_1_finds_no_match_in_str0m() {
    // 300 kbit/s: 480×270 at 30 fps, AV1 level 2.1 (level-idx 1).
    let pair = same(
        "av1 300 kbit/s",
        &["AV1"],
        build(terminal(&["av1"]).bandwidth(300, 300)),
    );
    let f = exchange(&pair, Tamper::default())
        .err()
        .expect("str0m drops AV1 level 2.1");
    assert_eq!(f.check, Check::CalleeFormats, "{f}");
    assert!(f.detail.ends_with("no formats"), "{f}");
    let text = f.to_string();
    assert!(
        text.contains("a=fmtp:102 profile=0;level-idx=1;tier=0"),
        "{f}"
    );
    // B rejects the media: port 0 and no format in its answer.
    assert!(text.contains("m=video 0 UDP/TLS/RTP/SAVPF \r\n"), "{f}");
}

// ---------------------------------------------------------------------------------
// Each check can fail: broken descriptions str0m is handed on purpose
// ---------------------------------------------------------------------------------

/// The exchange of `pair` with `tamper`, which must fail; returns the failure.
fn caught(pair: &Pair, tamper: Tamper) -> Failure {
    match exchange(pair, tamper) {
        Ok(o) => panic!(
            "the broken exchange passed every check: B {}, A {}",
            o.callee, o.caller
        ),
        Err(f) => f,
    }
}

fn h264() -> Pair {
    same("h264 720p30", &["H264"], build(terminal(&["h264"])))
}

/// Constrained High (`640c1f`) is no profile str0m's default H.264 formats have
/// (Baseline, Constrained Baseline, Main, High): B keeps no H.264 at 100.
#[test]
fn an_h264_profile_str0m_lacks_is_caught() {
    let offer: fn(&str) -> String =
        |t| t.replace("profile-level-id=42e01f", "profile-level-id=640c1f");
    let f = caught(
        &h264(),
        Tamper {
            offer: Some(offer),
            answer: None,
        },
    );
    assert_eq!(f.check, Check::CalleeFormats, "{f}");
}

/// Baseline (`42001f`) is a profile str0m has: B takes payload type 100 as Baseline,
/// not precall's Constrained Baseline, which the profile check reports.
#[test]
fn another_h264_profile_str0m_has_is_caught() {
    let offer: fn(&str) -> String =
        |t| t.replace("profile-level-id=42e01f", "profile-level-id=42001f");
    let f = caught(
        &h264(),
        Tamper {
            offer: Some(offer),
            answer: None,
        },
    );
    assert_eq!(f.check, Check::CalleeH264Profile, "{f}");
    assert!(f.detail.contains("profile-level-id=42001f"), "{f}");
}

/// Without its `a=rtpmap` line, payload type 100 is no codec: str0m's parser refuses
/// the offer ("Missing a=rtp_map:100").
#[test]
fn a_removed_rtpmap_is_caught() {
    let offer: fn(&str) -> String = |t| t.replace("a=rtpmap:100 H264/90000\r\n", "");
    let f = caught(
        &h264(),
        Tamper {
            offer: Some(offer),
            answer: None,
        },
    );
    assert_eq!(f.check, Check::ParseOffer, "{f}");
    assert!(f.detail.contains("Missing a=rtp_map:100"), "{f}");
}

/// Payload type 100 mapped to an encoding str0m does not know (`H263`): it parses, but
/// B has no codec for it.
#[test]
fn an_encoding_str0m_does_not_know_is_caught() {
    let offer: fn(&str) -> String =
        |t| t.replace("a=rtpmap:100 H264/90000", "a=rtpmap:100 H263/90000");
    let f = caught(
        &h264(),
        Tamper {
            offer: Some(offer),
            answer: None,
        },
    );
    assert_eq!(f.check, Check::CalleeFormats, "{f}");
}

/// An offer turned `a=recvonly`: B answers `a=sendonly`, not precall's mirrored
/// `a=sendrecv`.
#[test]
fn a_changed_offer_direction_is_caught() {
    let offer: fn(&str) -> String = |t| t.replace("a=sendrecv\r\n", "a=recvonly\r\n");
    let f = caught(
        &h264(),
        Tamper {
            offer: Some(offer),
            answer: None,
        },
    );
    assert_eq!(f.check, Check::CalleeDirection, "{f}");
}

/// The answer's payload type 100 renamed to VP8: A accepts it and negotiates VP8 at
/// 100, which is not precall's answer.
#[test]
fn another_codec_in_the_answer_is_caught() {
    let answer: fn(&str) -> String = |t| {
        t.replace("a=rtpmap:100 H264/90000", "a=rtpmap:100 VP8/90000")
            .lines()
            .filter(|l| !l.starts_with("a=fmtp:100 "))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    let f = caught(
        &h264(),
        Tamper {
            offer: None,
            answer: Some(answer),
        },
    );
    assert_eq!(f.check, Check::CallerFormats, "{f}");
}

/// An answer turned `a=recvonly`: A's media becomes send-only, not precall's
/// `a=sendrecv`.
#[test]
fn a_changed_answer_direction_is_caught() {
    let answer: fn(&str) -> String = |t| t.replace("a=sendrecv\r\n", "a=recvonly\r\n");
    let f = caught(
        &h264(),
        Tamper {
            offer: None,
            answer: Some(answer),
        },
    );
    assert_eq!(f.check, Check::CallerDirection, "{f}");
}

/// Two codecs, the offer's formats swapped (VP8 before H.264): B then prefers to
/// receive VP8, but precall has B send H.264. str0m ranks a section's formats by the
/// order of its `a=rtpmap` lines, not by the `m=` line (RFC 8866 §5.14), so both are
/// swapped.
#[test]
fn swapped_formats_are_caught() {
    let pair = pairs()
        .into_iter()
        .find(|p| p.name == "vp8 out, h264 in")
        .expect("the two-codec pair");
    let f = caught(
        &pair,
        Tamper {
            offer: Some(vp8_before_h264),
            answer: None,
        },
    );
    assert_eq!(f.check, Check::SendCodec, "{f}");
    assert!(f.detail.starts_with("B sends H264 at 100"), "{f}");
}

/// The offer with payload type 100's lines (`rtpmap`, `rtcp-fb`, `fmtp`) moved after
/// payload type 96's, and `96` first on the `m=` line.
fn vp8_before_h264(sdp: &str) -> String {
    let is_100 = |l: &&str| {
        ["a=rtpmap:100 ", "a=rtcp-fb:100 ", "a=fmtp:100 "]
            .iter()
            .any(|p| l.starts_with(p))
    };
    let lines: Vec<&str> = sdp.lines().collect();
    let h264: Vec<&str> = lines.iter().copied().filter(is_100).collect();
    let mut rest: Vec<&str> = lines.iter().copied().filter(|l| !is_100(l)).collect();
    let last_96 = rest
        .iter()
        .rposition(|l| l.contains(":96 "))
        .expect("VP8's lines");
    rest.splice(last_96 + 1..last_96 + 1, h264);
    rest.iter()
        .map(|l| {
            l.replace(
                "m=video 9 UDP/TLS/RTP/SAVPF 100 96",
                "m=video 9 UDP/TLS/RTP/SAVPF 96 100",
            ) + "\r\n"
        })
        .collect()
}

/// B's answer text is checked against what B holds: an answer listing a format the
/// offer did not have, or another direction, is reported. (str0m writes its answer from
/// that same state, so only a doctored text shows this check fail.)
#[test]
fn an_answer_text_unlike_the_offer_is_caught() {
    let o = exchange(&h264(), Tamper::default()).unwrap_or_else(|f| panic!("{f}"));
    let texts = Texts::default();
    let extra = o.stack_answer.replace(
        "m=video 9 UDP/TLS/RTP/SAVPF 100\r\n",
        "m=video 9 UDP/TLS/RTP/SAVPF 100 96\r\n",
    );
    assert_ne!(extra, o.stack_answer, "the answer's m= line");
    let f = check_callee(&o.offer, &o.callee, &extra, &texts).expect_err("a format too many");
    assert_eq!(f.check, Check::CalleeAnswerText, "{f}");
    let turned = o.stack_answer.replace("a=sendrecv\r\n", "a=sendonly\r\n");
    assert_ne!(turned, o.stack_answer, "the answer's direction");
    let f = check_callee(&o.offer, &o.callee, &turned, &texts).expect_err("another direction");
    assert_eq!(f.check, Check::CalleeAnswerText, "{f}");
}

/// An answer for another media (its `a=mid` changed) is refused by A.
#[test]
fn an_answer_for_another_mid_is_caught() {
    let answer: fn(&str) -> String = |t| {
        t.lines()
            .map(|l| {
                if l.starts_with("a=mid:") {
                    "a=mid:other".into()
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\r\n")
            .collect()
    };
    let f = caught(
        &h264(),
        Tamper {
            offer: None,
            answer: Some(answer),
        },
    );
    assert_eq!(f.check, Check::AcceptAnswer, "{f}");
}
