//! precall's exported SDP and encoder settings in a real browser (issue 14): Debian's
//! headless Chromium with a fake camera opens two `RTCPeerConnection`s in one page, sets
//! them up with the offer and answer precall exports for a negotiated pair (put into the
//! browser's own descriptions by `precall_sdp::apply`) and the encoder settings, lets
//! video flow, and `getStats()` must show the negotiated codec, at most the negotiated
//! resolution, frame rate and bit rate (with a tolerance), each way.
//!
//! The page (`e2e/browser/sdp_check.js`) holds no rule: every section, setting and
//! limit comes from `precall-protocol` and `precall-sdp`. The checks are shown able to
//! fail: exports with a seeded fault (a bit rate too high, no resolution scaling, the
//! wrong codec) are caught by the same checks.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`; the README's test command
//! installs it): without it the tests fail and say so.

use std::sync::Mutex;

use precall_e2e::browser::{write_grainy_y4m, Browser, StaticSite};
use precall_e2e::video_check::{check_direction, Measured, Window};
use precall_e2e::{bail, ensure, Error, Res};
use precall_protocol::{negotiate_pair, CallParams, Capabilities, Direction};
use precall_sdp::{
    answer, apply, encoder_settings, offer, EncoderSettings, MediaSection, SdpError,
};
use serde_json::{json, Value};

/// One browser at a time: video encoding takes both cores, and two runs side by side
/// would measure each other.
static BROWSER: Mutex<()> = Mutex::new(());

/// Video flows this long before the measuring window opens (connection, bandwidth
/// estimate ramp-up, encoder start).
const WARMUP_MS: u64 = 3_000;
/// The fake camera's grain (± luma levels, see `write_grainy_y4m`); `PRECALL_GRAIN`
/// overrides it for experiments.
const GRAIN: u8 = 12;
/// The measuring window for rates.
const WINDOW_MS: u64 = 4_000;

fn caps(
    codecs: &[&str],
    screen: (u16, u16),
    camera: Option<(u16, u16, u16)>,
    kbps: u32,
) -> Capabilities {
    let mut b = Capabilities::builder()
        .codecs(codecs.iter().copied())
        .screen(screen.0, screen.1)
        .bandwidth(kbps, kbps);
    if let Some((w, h, fps)) = camera {
        b = b.camera(w, h, fps);
    }
    b.build().expect("valid capabilities")
}

/// A negotiated pair to try: the caller's and the callee's capabilities.
struct Pair {
    name: &'static str,
    caller: Capabilities,
    callee: Capabilities,
}

fn pairs() -> Vec<Pair> {
    let hd = Some((1280, 720, 30));
    vec![
        Pair {
            name: "h264 720p30 both ways",
            caller: caps(&["h264"], (1920, 1080), hd, 4_000),
            callee: caps(&["h264"], (1280, 720), hd, 4_000),
        },
        Pair {
            name: "vp8 720p both ways",
            caller: caps(&["vp8"], (1280, 720), hd, 4_000),
            callee: caps(&["vp8"], (1280, 720), hd, 4_000),
        },
        Pair {
            name: "vp9",
            caller: caps(&["vp9"], (1280, 720), hd, 4_000),
            callee: caps(&["vp9"], (1280, 720), hd, 4_000),
        },
        Pair {
            name: "av1",
            caller: caps(&["av1"], (1280, 720), Some((640, 360, 30)), 4_000),
            callee: caps(&["av1"], (1280, 720), Some((640, 360, 30)), 4_000),
        },
        Pair {
            name: "h264 low bit rate (300 kbit/s links)",
            caller: caps(&["h264"], (1280, 720), hd, 300),
            callee: caps(&["h264"], (1280, 720), hd, 300),
        },
        Pair {
            name: "vp8 small receiver screen (640x360)",
            caller: caps(&["vp8"], (1280, 720), hd, 4_000),
            callee: caps(&["vp8"], (640, 360), Some((640, 360, 30)), 4_000),
        },
        Pair {
            name: "vp8 one way: the callee has no camera",
            caller: caps(&["vp8"], (1280, 720), Some((640, 360, 30)), 4_000),
            callee: caps(&["vp8"], (1280, 720), None, 4_000),
        },
        Pair {
            name: "different codecs each way (vp8 ->, <- h264)",
            caller: Capabilities::builder()
                .encode(["vp8"])
                .decode(["h264", "vp8"])
                .screen(1280, 720)
                .camera(640, 360, 30)
                .bandwidth(2_000, 2_000)
                .build()
                .expect("valid"),
            callee: Capabilities::builder()
                .encode(["h264"])
                .decode(["vp8", "h264"])
                .screen(1280, 720)
                .camera(640, 360, 30)
                .bandwidth(2_000, 2_000)
                .build()
                .expect("valid"),
        },
    ]
}

/// A seeded fault in what is handed to the browser, to show the checks catch it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    /// The sender is told four times the negotiated bit rate (`b=`, `maxBitrate`).
    BitRateTooHigh,
    /// The sender is not told to scale its capture down.
    NoScaling,
    /// The exported sections name VP8 where H.264 was negotiated.
    WrongCodec,
}

/// Everything precall exports for one pair, from both ends' views.
struct Exports {
    params: CallParams,
    offer: MediaSection,
    answer: MediaSection,
    enc_caller: Option<EncoderSettings>,
    enc_callee: Option<EncoderSettings>,
}

fn export(pair: &Pair, fault: Fault) -> Result<Exports, SdpError> {
    let mut params = negotiate_pair(&pair.caller, &pair.callee);
    let (mut caller, mut callee) = (pair.caller.clone(), pair.callee.clone());
    let honest = params.clone();
    match fault {
        Fault::None | Fault::NoScaling => {}
        Fault::BitRateTooHigh => {
            for d in [&mut params.send, &mut params.recv] {
                if let Direction::Video(s) = d {
                    s.bitrate_kbps *= 4;
                }
            }
        }
        Fault::WrongCodec => {
            for d in [&mut params.send, &mut params.recv] {
                if let Direction::Video(s) = d {
                    s.codec = precall_protocol::Codec::new("vp8").expect("valid");
                }
            }
            caller = caps(
                &["vp8"],
                (1920, 1080),
                caller
                    .camera()
                    .map(|c| (c.max.long(), c.max.short(), c.max_fps)),
                4_000,
            );
            callee = caps(
                &["vp8"],
                (1280, 720),
                callee
                    .camera()
                    .map(|c| (c.max.long(), c.max.short(), c.max_fps)),
                4_000,
            );
        }
    }
    let o = offer(&caller, &params)?;
    let a = answer(&callee, &params.mirrored(), &o)?;
    let mut enc_caller = encoder_settings(&caller, &params)?;
    let enc_callee = encoder_settings(&callee, &params.mirrored())?;
    if fault == Fault::NoScaling {
        if let Some(e) = enc_caller.as_mut() {
            e.scale_resolution_down_by = None;
        }
    }
    // The checks always compare against what was honestly negotiated.
    Ok(Exports {
        params: honest,
        offer: o,
        answer: a,
        enc_caller,
        enc_callee,
    })
}

fn end_spec(caps: &Capabilities, section: &MediaSection, enc: &Option<EncoderSettings>) -> Value {
    let camera = caps
        .camera()
        .map(|c| (c.max.long(), c.max.short(), c.max_fps));
    json!({
        "sends": enc.is_some(),
        "camera": camera.map(|(w, h, fps)| json!({ "width": w, "height": h, "fps": fps })),
        "direction": section.direction.as_str(),
        "preferences": enc.as_ref().map(|e| e.codec_preferences.clone()).unwrap_or_default(),
    })
}

fn enc_json(enc: &Option<EncoderSettings>) -> Value {
    match enc {
        None => Value::Null,
        Some(e) => json!({
            "codec": e.codec.mime_type(),
            "max_bitrate_bps": e.max_bitrate_bps,
            "max_framerate": e.max_framerate,
            "scale_resolution_down_by": e.scale_resolution_down_by,
        }),
    }
}

fn window(end: &Value) -> Window<'_> {
    Window {
        start: &end["start"],
        end: &end["end"],
    }
}

/// The `profile-level-id` the receiver's section exports for the codec negotiated in
/// `neg` (H.264 only): the sender must encode for it.
fn exported_plid(receiver: &MediaSection, neg: &Direction) -> Option<String> {
    let Direction::Video(s) = neg else {
        return None;
    };
    let want = precall_sdp::VideoCodec::from_token(&s.codec).ok()?;
    receiver
        .formats
        .iter()
        .find(|f| f.codec == want)
        .and_then(|f| f.fmtp.get("profile-level-id"))
        .map(str::to_owned)
}

/// What a pair's run gave: measurements per direction and violations.
struct Outcome {
    measured: Vec<Measured>,
    violations: Vec<String>,
    applied: Value,
}

/// Runs one pair in the browser.
fn run_pair(browser: &mut Browser, pair: &Pair, ex: &Exports) -> Res<Outcome> {
    let spec = json!({
        "caller": end_spec(&pair.caller, &ex.offer, &ex.enc_caller),
        "callee": end_spec(&pair.callee, &ex.answer, &ex.enc_callee),
    });
    let stack_offer = browser.eval(&format!("setupPair({spec})"))?;
    let stack_offer = stack_offer
        .as_str()
        .ok_or_else(|| Error("createOffer gave no SDP".into()))?;
    let offer_sdp =
        apply(stack_offer, &ex.offer).map_err(|e| Error(format!("{}: {e}", pair.name)))?;
    let stack_answer = browser
        .eval(&format!("applyOffer({})", json!(offer_sdp)))
        .map_err(|e| Error(format!("{e}\noffer set:\n{offer_sdp}")))?;
    let stack_answer = stack_answer
        .as_str()
        .ok_or_else(|| Error("createAnswer gave no SDP".into()))?;
    let answer_sdp =
        apply(stack_answer, &ex.answer).map_err(|e| Error(format!("{}: {e}", pair.name)))?;
    let r = browser
        .eval(&format!(
            "applyAnswer({}, {}, {}, {WARMUP_MS}, {WINDOW_MS})",
            json!(answer_sdp),
            enc_json(&ex.enc_caller),
            enc_json(&ex.enc_callee)
        ))
        .map_err(|e| Error(format!("{e}\nanswer set:\n{answer_sdp}")))?;
    let mut violations = Vec::new();
    let mut measured = Vec::new();
    measured.extend(check_direction(
        "caller -> callee",
        &ex.params.send,
        exported_plid(&ex.answer, &ex.params.send).as_deref(),
        window(&r["caller"]),
        window(&r["callee"]),
        &mut violations,
    ));
    measured.extend(check_direction(
        "callee -> caller",
        &ex.params.recv,
        exported_plid(&ex.offer, &ex.params.recv).as_deref(),
        window(&r["callee"]),
        window(&r["caller"]),
        &mut violations,
    ));
    browser.eval("closePair()")?;
    Ok(Outcome {
        measured,
        violations,
        applied: json!({ "caller": r["caller"]["applied"], "callee": r["callee"]["applied"] }),
    })
}

/// The browser, the site serving the check page, and the directory holding the fake
/// camera's video (kept as long as the browser runs).
fn open_browser() -> Res<(Browser, StaticSite, tempfile::TempDir)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    // The fake camera plays a grainy picture: it costs an encoder bits, so a sender
    // uses what it is allowed, and a limit that is missing or too high shows.
    let grain = std::env::var("PRECALL_GRAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GRAIN);
    let video = tempfile::Builder::new()
        .prefix("precall-camera-")
        .tempdir()?;
    let y4m = video.path().join("grain.y4m");
    write_grainy_y4m(&y4m, 1280, 720, 10, grain)?;
    let site = StaticSite::serve(vec![
        (
            "/",
            "text/html; charset=utf-8",
            std::fs::read(dir.join("sdp_check.html"))?,
        ),
        (
            "/sdp_check.js",
            "text/javascript; charset=utf-8",
            std::fs::read(dir.join("sdp_check.js"))?,
        ),
    ])?;
    let mut b = Browser::launch_with(&[format!(
        "--use-file-for-fake-video-capture={}",
        y4m.display()
    )])?;
    b.goto(&site.url("/"))?;
    // The module script has run once its functions exist.
    for _ in 0..100 {
        if b.eval("typeof window.applyAnswer")? == "function" {
            return Ok((b, site, video));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("the check page did not load its script:\n{}", b.log())
}

/// Codecs the browser can both send and receive, as `video/...` in lower case.
fn supported(browser: &mut Browser) -> Res<Vec<String>> {
    let s = browser.eval("codecSupport()")?;
    let list = |k: &str| -> Vec<String> {
        s[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let recv = list("recv");
    Ok(list("send")
        .into_iter()
        .filter(|c| recv.contains(c))
        .collect())
}

fn needs(pair: &Pair, ex: &Exports) -> Vec<&'static str> {
    let _ = pair;
    ex.offer
        .formats
        .iter()
        .chain(&ex.answer.formats)
        .map(|f| f.codec.mime_type())
        .collect()
}

#[test]
fn chromium_sends_what_precall_negotiated() -> Res<()> {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let (mut browser, _site, _video) = open_browser()?;
    let have = supported(&mut browser)?;
    println!("Chromium sends and receives: {have:?}");
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for pair in pairs() {
        let ex = export(&pair, Fault::None).map_err(|e| Error(format!("{}: {e}", pair.name)))?;
        let missing: Vec<_> = needs(&pair, &ex)
            .into_iter()
            .filter(|m| !have.contains(&m.to_lowercase()))
            .collect();
        if !missing.is_empty() {
            println!(
                "{:<44} not run: this Chromium has no {missing:?} encoder and decoder",
                pair.name
            );
            continue;
        }
        let o = run_pair(&mut browser, &pair, &ex)?;
        ran += 1;
        for m in &o.measured {
            table.push(format!(
                "| {} | {} | {} | {} {}x{}@{:.0} {:.0} kbit/s |",
                pair.name, m.dir, m.negotiated, m.codec, m.width, m.height, m.fps, m.kbps
            ));
        }
        if !o.violations.is_empty() {
            failures.push(format!(
                "{} (encoder settings applied: {}):\n  {}",
                pair.name,
                o.applied,
                o.violations.join("\n  ")
            ));
        }
    }
    println!(
        "| pair | direction | negotiated | measured (codec, frame, frames/s, payload bit rate) |"
    );
    println!("|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    // H.264, VP8 and at least six pairs must have run: a browser without them is not
    // the one this check is about.
    ensure!(
        have.iter().any(|c| c == "video/h264") && have.iter().any(|c| c == "video/vp8"),
        "this Chromium lacks H.264 or VP8: {have:?}"
    );
    ensure!(
        ran >= 6,
        "only {ran} pairs could run in this Chromium ({have:?})"
    );
    ensure!(
        failures.is_empty(),
        "the browser did not keep to the negotiated parameters:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// The same checks catch exports with a seeded fault.
#[test]
fn the_checks_catch_a_faulty_export() -> Res<()> {
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let (mut browser, _site, _video) = open_browser()?;
    let all = pairs();
    let by_name = |n: &str| {
        all.iter()
            .find(|p| p.name.starts_with(n))
            .expect("pair exists")
    };
    let cases = [
        (
            Fault::BitRateTooHigh,
            by_name("h264 low bit rate"),
            "kbit/s over",
        ),
        (
            Fault::NoScaling,
            by_name("vp8 small receiver screen"),
            "received 1280x720",
        ),
        (
            Fault::WrongCodec,
            by_name("h264 720p30"),
            "sent codec video/VP8",
        ),
    ];
    for (fault, pair, expect) in cases {
        let ex = export(pair, fault).map_err(|e| Error(format!("{fault:?}: {e}")))?;
        let o = run_pair(&mut browser, pair, &ex)?;
        println!("{fault:?} on {}: {:?}", pair.name, o.violations);
        ensure!(
            o.violations.iter().any(|v| v.contains(expect)),
            "the seeded fault {fault:?} on {} went unnoticed (wanted a violation with {expect:?}); measured {:?}",
            pair.name,
            o.measured
        );
    }
    Ok(())
}
