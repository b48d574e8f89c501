//! Every exported section parses with Mozilla's `webrtc-sdp` (Firefox's SDP parser),
//! warnings treated as errors, and what it reads back equals what was exported and
//! what was negotiated.

use precall_protocol::{
    negotiate_pair, CallParams, Capabilities, CpuClass, Direction, StreamParams,
};
use precall_sdp::{answer, encoder_settings, offer, MediaDirection, MediaSection, SdpError};
use proptest::prelude::*;
use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeFmtpParameters, SdpAttributeImageAttrSetList,
    SdpAttributeImageAttrXyRange, SdpAttributePayloadType,
};
use webrtc_sdp::media_type::{SdpFormatList, SdpMediaValue};
use webrtc_sdp::SdpBandwidth;

/// ITU-T H.264 Table A-1 again, transcribed separately from the crate's (level_idc,
/// MaxMBPS, MaxFS, MaxBR), to judge the exported level independently.
const H264_A1: [(u32, u64, u64, u64); 19] = [
    (10, 1485, 99, 64),
    (11, 3000, 396, 192),
    (12, 6000, 396, 384),
    (13, 11880, 396, 768),
    (20, 11880, 396, 2000),
    (21, 19800, 792, 4000),
    (22, 20250, 1620, 4000),
    (30, 40500, 1620, 10000),
    (31, 108000, 3600, 14000),
    (32, 216000, 5120, 20000),
    (40, 245760, 8192, 20000),
    (41, 245760, 8192, 50000),
    (42, 522240, 8704, 50000),
    (50, 589824, 22080, 135000),
    (51, 983040, 36864, 240000),
    (52, 2073600, 36864, 240000),
    (60, 4177920, 139264, 240000),
    (61, 8355840, 139264, 480000),
    (62, 16711680, 139264, 800000),
];

fn h264_level_holds(row: (u32, u64, u64, u64), s: &StreamParams) -> bool {
    let (_, max_mbps, max_fs, max_br) = row;
    let (w, h) = (
        u64::from(s.width).div_ceil(16),
        u64::from(s.height).div_ceil(16),
    );
    w * h <= max_fs
        && w.max(h).pow(2) <= 8 * max_fs
        && w * h * u64::from(s.fps) <= max_mbps
        && u64::from(s.bitrate_kbps) <= max_br
}

fn rtp_name(token: &str) -> &'static str {
    match token {
        "h264" => "H264",
        "vp8" => "VP8",
        "vp9" => "VP9",
        "av1" => "AV1",
        "h265" | "hevc" => "H265",
        _ => "?",
    }
}

/// The value `webrtc-sdp` read for the fmtp parameter `name`, as text; `None` if it
/// does not know the parameter and did not keep it as an unknown token.
fn read_param(p: &SdpAttributeFmtpParameters, name: &str) -> Option<String> {
    let n = |v: u32| Some(v.to_string());
    match name {
        "profile-level-id" => Some(format!("{:06x}", p.profile_level_id)),
        "packetization-mode" => n(p.packetization_mode),
        "level-asymmetry-allowed" => n(u32::from(p.level_asymmetry_allowed)),
        "max-fs" => n(p.max_fs),
        "max-fr" => n(p.max_fr),
        "max-mbps" => n(p.max_mbps),
        "max-br" => n(p.max_br),
        "profile" => p.profile.map(|v| v.to_string()),
        "level-idx" => p.level_idx.map(|v| v.to_string()),
        "tier" => p.tier.map(|v| v.to_string()),
        _ => p.unknown_tokens.iter().find_map(|t| {
            t.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_owned)
        }),
    }
}

/// Parses `text` (strictly: a warning is an error) and checks it against the section
/// the exporter says it wrote (`exported`) and against the negotiated `params` it came
/// from. Returns every discrepancy found.
fn check(text: &str, exported: &MediaSection, params: &CallParams) -> Result<(), Vec<String>> {
    let mut bad = Vec::new();
    let session = match webrtc_sdp::parse_sdp(text, true) {
        Ok(s) => s,
        Err(e) => return Err(vec![format!("webrtc-sdp refused it: {e}")]),
    };
    let [media] = session.media.as_slice() else {
        return Err(vec![format!("{} media sections", session.media.len())]);
    };
    if !matches!(media.get_type(), SdpMediaValue::Video) {
        bad.push("not m=video".into());
    }
    let pts = exported.payload_types();
    match media.get_formats() {
        SdpFormatList::Integers(f) if f.iter().copied().eq(pts.iter().map(|&p| u32::from(p))) => {}
        _ => bad.push(format!("m= formats differ from {pts:?}")),
    }
    let attrs = media.get_attributes();

    // Direction, exported and negotiated.
    let dir = attrs.iter().find_map(|a| match a {
        SdpAttribute::Sendrecv => Some(MediaDirection::SendRecv),
        SdpAttribute::Sendonly => Some(MediaDirection::SendOnly),
        SdpAttribute::Recvonly => Some(MediaDirection::RecvOnly),
        SdpAttribute::Inactive => Some(MediaDirection::Inactive),
        _ => None,
    });
    let negotiated = match (&params.send, &params.recv) {
        (Direction::Video(_), Direction::Video(_)) => MediaDirection::SendRecv,
        (Direction::Video(_), Direction::Off(_)) => MediaDirection::SendOnly,
        (Direction::Off(_), Direction::Video(_)) => MediaDirection::RecvOnly,
        (Direction::Off(_), Direction::Off(_)) => MediaDirection::Inactive,
    };
    if dir != Some(exported.direction) || dir != Some(negotiated) {
        bad.push(format!(
            "direction {dir:?}, exported {:?}, negotiated {negotiated:?}",
            exported.direction
        ));
    }

    // rtpmap and fmtp of each format.
    for f in &exported.formats {
        let pt = f.payload_type;
        let rtpmaps: Vec<_> = attrs
            .iter()
            .filter_map(|a| match a {
                SdpAttribute::Rtpmap(r) if r.payload_type == pt => Some(r),
                _ => None,
            })
            .collect();
        match rtpmaps.as_slice() {
            [r] if r.codec_name == f.codec.encoding_name() && r.frequency == 90_000 => {}
            [r] => bad.push(format!("rtpmap {pt}: {}/{}", r.codec_name, r.frequency)),
            _ => bad.push(format!("{} rtpmap lines for {pt}", rtpmaps.len())),
        }
        let fmtps: Vec<_> = attrs
            .iter()
            .filter_map(|a| match a {
                SdpAttribute::Fmtp(x) if x.payload_type == pt => Some(&x.parameters),
                _ => None,
            })
            .collect();
        match (fmtps.as_slice(), f.fmtp.is_empty()) {
            ([], true) => {}
            ([p], false) => {
                for param in &f.fmtp.0 {
                    let read = read_param(p, param.name);
                    if read.as_deref() != Some(param.value.as_str()) {
                        bad.push(format!(
                            "fmtp {pt} {}: exported {}, read {read:?}",
                            param.name, param.value
                        ));
                    }
                }
            }
            (x, _) => bad.push(format!(
                "{} fmtp lines for {pt}, exported {:?}",
                x.len(),
                f.fmtp
            )),
        }
    }

    // The stream this section bounds: what its writer receives, else what it sends.
    let bound = params.recv.video().or(params.send.video());
    if let (Some(first), Some(s)) = (exported.formats.first(), bound) {
        if first.codec.encoding_name() != rtp_name(s.codec.as_str()) {
            bad.push(format!(
                "first format {} but the stream is {}",
                first.codec.encoding_name(),
                s.codec.as_str()
            ));
        }
        if first.codec.encoding_name() == "H264" {
            // The lowest level of Table A-1 that holds the stream, constrained baseline.
            let want = H264_A1
                .iter()
                .find(|r| h264_level_holds(**r, s))
                .map(|r| 0x42e000 | r.0);
            let got = first
                .fmtp
                .get("profile-level-id")
                .and_then(|v| u32::from_str_radix(v, 16).ok());
            if want.is_some() && got != want {
                bad.push(format!(
                    "H.264 profile-level-id {got:x?}, Table A-1 says {want:x?}"
                ));
            }
        }
    }

    // Bandwidth, exported and negotiated.
    let mut as_kbps = None;
    let mut tias = None;
    for b in media.get_bandwidth() {
        match b {
            SdpBandwidth::As(v) => as_kbps = Some(u64::from(*v)),
            SdpBandwidth::Tias(v) => tias = Some(u64::from(*v)),
            other => bad.push(format!("unexpected b={other}")),
        }
    }
    let want_tias = bound.map(|s| u64::from(s.bitrate_kbps) * 1000);
    if tias != exported.bandwidth.map(|b| b.tias_bps) || tias != want_tias {
        bad.push(format!("b=TIAS {tias:?}, negotiated {want_tias:?}"));
    }
    if as_kbps != exported.bandwidth.map(|b| b.as_kbps)
        || as_kbps.zip(tias).is_some_and(|(a, t)| a * 1000 < t)
    {
        bad.push(format!("b=AS {as_kbps:?} (must cover TIAS {tias:?})"));
    }

    // Frame rate.
    let fr: Vec<f64> = attrs
        .iter()
        .filter_map(|a| match a {
            SdpAttribute::FrameRate(x) => Some(*x),
            _ => None,
        })
        .collect();
    let want_fr = bound.map(|s| f64::from(s.fps));
    if fr.first().copied() != want_fr
        || fr.len() > 1
        || exported.framerate.map(f64::from) != want_fr
    {
        bad.push(format!("a=framerate {fr:?}, negotiated {want_fr:?}"));
    }

    // imageattr: send and recv sets of exactly one [x=W,y=H] each, as negotiated.
    let set = |l: &SdpAttributeImageAttrSetList| -> Option<(u32, u32)> {
        match l {
            SdpAttributeImageAttrSetList::Sets(s) => match s.as_slice() {
                [one] => match (&one.x, &one.y) {
                    (
                        SdpAttributeImageAttrXyRange::DiscreteValues(x),
                        SdpAttributeImageAttrXyRange::DiscreteValues(y),
                    ) if x.len() == 1 && y.len() == 1 => Some((x[0], y[0])),
                    _ => None,
                },
                _ => None,
            },
            SdpAttributeImageAttrSetList::Wildcard => None,
        }
    };
    let dims = |d: &Direction| d.video().map(|s| (u32::from(s.width), u32::from(s.height)));
    let ia: Vec<_> = attrs
        .iter()
        .filter_map(|a| match a {
            SdpAttribute::ImageAttr(x) => Some(x),
            _ => None,
        })
        .collect();
    match (ia.as_slice(), exported.imageattr) {
        ([], None) if bound.is_none() => {}
        ([x], Some(e)) => {
            let pt_ok = match (&x.pt, e.payload_type) {
                (SdpAttributePayloadType::PayloadType(p), Some(q)) => *p == q,
                (SdpAttributePayloadType::Wildcard, None) => true,
                _ => false,
            };
            let (send, recv) = (set(&x.send), set(&x.recv));
            let widen = |o: Option<(u16, u16)>| o.map(|(w, h)| (u32::from(w), u32::from(h)));
            if !pt_ok
                || send != widen(e.send)
                || recv != widen(e.recv)
                || send != dims(&params.send)
                || recv != dims(&params.recv)
            {
                bad.push(format!(
                    "imageattr send {send:?} recv {recv:?}, negotiated send {:?} recv {:?}",
                    dims(&params.send),
                    dims(&params.recv)
                ));
            }
        }
        (x, e) => bad.push(format!("{} imageattr lines, exported {e:?}", x.len())),
    }

    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Exports the offer of `caller` and the answer of `callee`, and checks both.
fn check_pair(caller: &Capabilities, callee: &Capabilities) -> Result<(), TestCaseError> {
    let params = negotiate_pair(caller, callee);
    let theirs = params.mirrored();
    let o = match offer(caller, &params) {
        Ok(o) => o,
        Err(SdpError::AsymmetricCodecs { send, .. }) => {
            // The documented limit: only when this end cannot decode what it sends.
            prop_assert!(!caller.decode().contains(&send));
            return Ok(());
        }
        Err(SdpError::NothingToList) => {
            // Only for an inactive section when the caller names no codec at all.
            prop_assert!(params.send.video().is_none() && params.recv.video().is_none());
            prop_assert!(caller.encode().is_empty() && caller.decode().is_empty());
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("offer: {e}"))),
    };
    let text = o.to_session(1);
    if let Err(bad) = check(&text, &o, &params) {
        return Err(TestCaseError::fail(format!("offer {bad:?}\n{text}")));
    }
    let a = match answer(callee, &theirs, &o) {
        Ok(a) => a,
        Err(SdpError::AsymmetricCodecs { send, .. }) => {
            prop_assert!(!callee.decode().contains(&send));
            return Ok(());
        }
        Err(e) => return Err(TestCaseError::fail(format!("answer: {e}\noffer:\n{text}"))),
    };
    let text = a.to_session(2);
    if let Err(bad) = check(&text, &a, &theirs) {
        return Err(TestCaseError::fail(format!("answer {bad:?}\n{text}")));
    }
    // The answer picks only from the offer, with the offer's payload types.
    for f in &a.formats {
        prop_assert!(o
            .formats
            .iter()
            .any(|g| g.codec == f.codec && g.payload_type == f.payload_type));
    }
    // The encoder settings say what was negotiated for sending.
    match (encoder_settings(caller, &params), &params.send) {
        (Ok(Some(e)), Direction::Video(s)) => {
            prop_assert_eq!(e.max_bitrate_bps, u64::from(s.bitrate_kbps) * 1000);
            prop_assert_eq!(
                (e.max_framerate, e.width, e.height),
                (s.fps, s.width, s.height)
            );
            prop_assert_eq!(e.codec.encoding_name(), rtp_name(s.codec.as_str()));
            let k = e.scale_resolution_down_by.unwrap_or(0.0);
            let cam = caller.camera().map(|c| c.max);
            prop_assert!(k >= 1.0, "scale {}", k);
            if let Some(cam) = cam {
                // Scaling the capture by k fits the negotiated size on both sides.
                prop_assert!(f64::from(cam.long()) / k <= f64::from(s.width) + 1e-9);
                prop_assert!(f64::from(cam.short()) / k <= f64::from(s.height) + 1e-9);
            }
        }
        (Ok(None), Direction::Off(_)) => {}
        (other, _) => {
            return Err(TestCaseError::fail(format!(
                "encoder settings {other:?} for {:?}",
                params.send
            )))
        }
    }
    Ok(())
}

const CODECS: [&str; 5] = ["h264", "vp8", "vp9", "av1", "h265"];

fn codec_list() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(CODECS.to_vec(), 0..=CODECS.len()).prop_shuffle()
}

prop_compose! {
    fn caps()(
        // Mostly the same list both ways, as a browser has; sometimes different ones.
        same in proptest::bool::weighted(0.8),
        encode in codec_list(),
        decode in codec_list(),
        screen in (90u16..=4096, 90u16..=4096),
        camera in proptest::option::weighted(0.85, (90u16..=4096, 90u16..=4096, 1u16..=120)),
        cpu in proptest::sample::select(CpuClass::ALL.to_vec()),
        up in 0u32..=20_000,
        down in 0u32..=20_000,
    ) -> Capabilities {
        let mut b = Capabilities::builder()
            .encode(encode.clone())
            .decode(if same { encode } else { decode })
            .screen(screen.0, screen.1)
            .cpu(cpu)
            .bandwidth(up, down);
        if let Some((w, h, fps)) = camera {
            b = b.camera(w, h, fps);
        }
        b.build().expect("the strategy only makes valid capabilities")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every offer and answer of every negotiated pair parses with webrtc-sdp and
    /// reads back as exported and as negotiated.
    #[test]
    fn every_export_parses_and_reads_back(caller in caps(), callee in caps()) {
        check_pair(&caller, &callee)?;
    }
}

fn hd(codecs: &[&str]) -> Capabilities {
    Capabilities::builder()
        .codecs(codecs.iter().copied())
        .screen(1280, 720)
        .camera(1280, 720, 30)
        .bandwidth(4_000, 4_000)
        .build()
        .expect("valid")
}

/// The pairs the property always meets, named (one per direction kind and codec).
#[test]
fn fixed_pairs_pass() {
    let no_camera = Capabilities::builder()
        .codecs(["vp8"])
        .screen(640, 360)
        .bandwidth(1_000, 1_000)
        .build()
        .expect("valid");
    let pairs = [
        (hd(&["h264"]), hd(&["h264"])),
        (hd(&["vp8"]), hd(&["vp8"])),
        (hd(&["vp9"]), hd(&["vp9"])),
        (hd(&["av1"]), hd(&["av1"])),
        (hd(&["h265"]), hd(&["h265"])),
        (hd(&["h264", "vp8"]), hd(&["vp8", "h264"])),
        (hd(&["vp8"]), no_camera.clone()),
        (no_camera.clone(), hd(&["vp8"])),
        (no_camera.clone(), no_camera),
        (hd(&["h264"]), hd(&["vp8"])),
    ];
    for (a, b) in &pairs {
        check_pair(a, b).expect("checks");
    }
}

// ---- The check can fail: wrong exports are caught. ----

fn sample() -> (MediaSection, CallParams) {
    let (a, b) = (hd(&["h264"]), hd(&["h264"]));
    let params = negotiate_pair(&a, &b);
    (offer(&a, &params).expect("exports"), params)
}

fn errors_of(text: &str, exported: &MediaSection, params: &CallParams) -> String {
    match check(text, exported, params) {
        Ok(()) => panic!("the checker accepted a wrong export:\n{text}"),
        Err(bad) => bad.join("; "),
    }
}

#[test]
fn the_sample_itself_passes() {
    let (o, params) = sample();
    assert!(o.to_string().contains("profile-level-id=42e01f"));
    check(&o.to_session(1), &o, &params).expect("a right export passes");
}

/// An exporter that wrote a wrong level (3.0 for 1280×720@30, which needs 3.1), both in
/// its text and in its own account of it, is caught against Table A-1.
#[test]
fn a_wrong_level_is_caught() {
    let (mut o, params) = sample();
    for f in &mut o.formats {
        for p in &mut f.fmtp.0 {
            if p.name == "profile-level-id" {
                p.value = "42e01e".into();
            }
        }
    }
    let text = o.to_session(1);
    assert!(errors_of(&text, &o, &params).contains("Table A-1"));
}

/// Text that says something other than what the exporter claims is caught.
#[test]
fn text_that_differs_from_the_export_is_caught() {
    let (o, params) = sample();
    let text = o
        .to_session(1)
        .replace("profile-level-id=42e01f", "profile-level-id=42e029");
    assert!(errors_of(&text, &o, &params).contains("profile-level-id"));
}

#[test]
fn a_missing_rtpmap_is_caught() {
    let (o, params) = sample();
    let text: String = o
        .to_session(1)
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=rtpmap"))
        .collect();
    assert!(errors_of(&text, &o, &params).contains("rtpmap"));
}

#[test]
fn a_bit_rate_too_high_is_caught() {
    let (mut o, params) = sample();
    if let Some(b) = &mut o.bandwidth {
        b.tias_bps += 1_000;
    }
    let text = o.to_session(1);
    assert!(errors_of(&text, &o, &params).contains("b=TIAS"));
}

#[test]
fn a_wrong_direction_and_a_wrong_imageattr_are_caught() {
    let (mut o, params) = sample();
    o.direction = MediaDirection::RecvOnly;
    if let Some(ia) = &mut o.imageattr {
        ia.recv = Some((1920, 1080));
    }
    let e = errors_of(&o.to_session(1), &o, &params);
    assert!(e.contains("direction") && e.contains("imageattr"), "{e}");
}

#[test]
fn unparsable_text_is_caught() {
    let (o, params) = sample();
    let text = o
        .to_session(1)
        .replace("a=fmtp:100 ", "a=fmtp:100 packetization-mode=7;");
    assert!(errors_of(&text, &o, &params).contains("refused"));
}
