//! Wire test vectors: `spec/vectors/*.json` and their copies in `spec/protocol.md`.
//!
//! Every vector is defined here as a Rust value. The test checks that
//!
//! - each message file holds exactly the canonical payload
//!   [`encode_payload`] produces for the message (no trailing newline), and decodes
//!   back to the same message;
//! - `fingerprint.json` holds a capability set, the layout the fingerprint hashes and
//!   the fingerprint, and [`Capabilities::fingerprint`] agrees;
//! - `negotiate.json` holds negotiation cases whose recorded outcomes [`negotiate`]
//!   reproduces in both directions, and which match hand-computed expectations;
//! - every `<!-- vector: NAME -->` placeholder in `spec/protocol.md` is immediately
//!   followed by a ```` ```json ```` block whose content is exactly
//!   `spec/vectors/NAME.json`, every vector file is shown at least once, and no
//!   placeholder names a missing file.
//!
//! The files are the spec's, read by people and by other implementations, so they are
//! plain payloads, written by hand: when the wire changes, the failing check prints the
//! exact bytes each file and each block must hold. (The crate's other snapshots are
//! insta's, `cargo insta review`; there is no second way to bless.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use precall_protocol::caps::{Bandwidth, Camera, CpuClass, NoVideo, Size};
use precall_protocol::codec::{decode_message, encode_payload};
use precall_protocol::message::{EndReason, Presence, WireMessage};
use precall_protocol::{
    negotiate, CallDigest, CallId, Capabilities, ClientMessage, Codec, Direction, Endpoint,
    ErrorCode, LoginWith, MediaDescription, Password, ReqId, ResumeSecret, ResumeToken,
    ServerMessage, SessionId, StreamParams, TerminalId, UserId, PROTOCOL_VERSION,
};

// ----- locations ------------------------------------------------------

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec")
}

fn vectors_dir() -> PathBuf {
    spec_dir().join("vectors")
}

fn spec_path() -> PathBuf {
    spec_dir().join("protocol.md")
}

/// Asserts `spec/vectors/NAME.json` holds exactly `content`, and returns it.
fn check_file(name: &str, content: &str) -> String {
    let path = vectors_dir().join(format!("{name}.json"));
    let on_disk = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; it must hold exactly (no trailing newline):\n{content}",
            path.display()
        )
    });
    assert!(
        on_disk == content,
        "{} differs from the Rust value{}; it must hold exactly (no trailing newline):\n{content}",
        path.display(),
        first_difference(&on_disk, content),
    );
    on_disk
}

fn first_difference(a: &str, b: &str) -> String {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(" (first difference at byte {at})")
}

// ----- the values ----------------------------------------------------------------------

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn codecs(list: &[&str]) -> Vec<Codec> {
    list.iter().map(|c| Codec::new(*c).unwrap()).collect()
}

fn size(width: u16, height: u16) -> Size {
    Size { width, height }
}

/// Builds a capability set; `camera` is `(width, height, fps)`.
fn caps(
    encode: &[&str],
    decode: &[&str],
    screen: (u16, u16),
    camera: Option<(u16, u16, u16)>,
    cpu: CpuClass,
    (up_kbps, down_kbps): (u32, u32),
) -> Capabilities {
    Capabilities::new(
        codecs(encode),
        codecs(decode),
        size(screen.0, screen.1),
        camera.map(|(w, h, max_fps)| Camera {
            max: size(w, h),
            max_fps,
        }),
        cpu,
        Bandwidth { up_kbps, down_kbps },
    )
    .unwrap()
}

/// Alice's desktop: a 1080p webcam, fast CPU, a good line.
fn alice_desktop() -> Capabilities {
    caps(
        &["h264", "vp8"],
        &["h264", "vp8", "av1"],
        (1920, 1080),
        Some((1920, 1080, 30)),
        CpuClass::High,
        (8000, 20000),
    )
}

/// The same desktop after its network degraded (the `update_caps` example).
fn alice_on_hotel_wifi() -> Capabilities {
    caps(
        &["h264", "vp8"],
        &["h264", "vp8", "av1"],
        (1920, 1080),
        Some((1920, 1080, 30)),
        CpuClass::High,
        (1500, 3000),
    )
}

/// Bob's phone, registered as terminal `bob-phone`: portrait screen, portrait camera.
fn bob_phone() -> Capabilities {
    caps(
        &["vp8", "h264"],
        &["av1", "vp8", "h264"],
        (1080, 2340),
        Some((1080, 1920, 30)),
        CpuClass::Mid,
        (4000, 12000),
    )
}

fn alice_ep() -> Endpoint {
    Endpoint {
        user: user("alice"),
        session: SessionId(1),
    }
}

fn bob_ep() -> Endpoint {
    Endpoint {
        user: user("bob"),
        session: SessionId(2),
    }
}

fn fast_digest() -> CallDigest {
    CallDigest {
        caller: alice_desktop().fingerprint(),
        callee: bob_phone().fingerprint(),
    }
}

/// The digest of a call whose caller includes its capabilities (the optional form of
/// `call` that the reference client never sends, and the `call_retry` path): alice's
/// new fingerprint, which bob does not hold yet.
fn fallback_digest() -> CallDigest {
    CallDigest {
        caller: alice_on_hotel_wifi().fingerprint(),
        callee: bob_phone().fingerprint(),
    }
}

const CALL: CallId = CallId(7);

/// alice's media description for the call (spec 10.8): an SDP offer cut to the lines
/// that matter here, her ICE credentials and one host candidate.
fn alice_media() -> MediaDescription {
    MediaDescription::new(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=candidate:1 1 udp 2122260223 192.0.2.10 49203 typ host\r\n",
    )
    .expect("valid")
}

/// bob's answer to it.
fn bob_media() -> MediaDescription {
    MediaDescription::new(
        "v=0\r\no=- 9 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Zt3q\r\na=ice-pwd:k9Rr0p6pGfH2mW1tQ8dY4sLc\r\na=candidate:1 1 udp 2122260223 192.0.2.20 50411 typ host\r\n",
    )
    .expect("valid")
}

enum Msg {
    C(ClientMessage),
    S(ServerMessage),
}

/// Every message vector, one story: alice (session 1) and bob (session 2, logged in
/// by terminal identifier) are contacts; alice adds and removes carol, changes her
/// capabilities, and calls bob (call 7).
fn messages() -> Vec<(&'static str, Msg)> {
    use Msg::{C, S};
    vec![
        // client to server
        (
            "login_caps",
            C(ClientMessage::Login {
                version: PROTOCOL_VERSION,
                user: user("alice"),
                password: Password::new("correct horse battery staple").unwrap(),
                with: LoginWith::Capabilities(alice_desktop()),
            }),
        ),
        (
            "login_terminal",
            C(ClientMessage::Login {
                version: PROTOCOL_VERSION,
                user: user("bob"),
                password: Password::new("Tr0ub4dor&3").unwrap(),
                with: LoginWith::TerminalId(TerminalId::new("bob-phone").unwrap()),
            }),
        ),
        ("logout", C(ClientMessage::Logout {})),
        ("ping", C(ClientMessage::Ping {})),
        (
            "update_caps",
            C(ClientMessage::UpdateCaps {
                req: ReqId(3),
                capabilities: alice_on_hotel_wifi(),
            }),
        ),
        (
            "add_contact",
            C(ClientMessage::AddContact {
                req: ReqId(1),
                user: user("carol"),
            }),
        ),
        (
            "remove_contact",
            C(ClientMessage::RemoveContact {
                req: ReqId(2),
                user: user("carol"),
            }),
        ),
        (
            "call_fast",
            C(ClientMessage::Call {
                req: ReqId(4),
                to: bob_ep(),
                digest: fast_digest(),
                capabilities: None,
                media: None,
            }),
        ),
        (
            "call_media",
            C(ClientMessage::Call {
                req: ReqId(4),
                to: bob_ep(),
                digest: fast_digest(),
                capabilities: None,
                media: Some(alice_media()),
            }),
        ),
        (
            "call_fallback",
            C(ClientMessage::Call {
                req: ReqId(5),
                to: bob_ep(),
                digest: fallback_digest(),
                capabilities: Some(alice_on_hotel_wifi()),
                media: None,
            }),
        ),
        (
            "call_retry",
            C(ClientMessage::CallRetry {
                call: CALL,
                capabilities: alice_desktop(),
            }),
        ),
        (
            "accept_fast",
            C(ClientMessage::Accept {
                call: CALL,
                capabilities: None,
                media: None,
            }),
        ),
        (
            "accept_caps",
            C(ClientMessage::Accept {
                call: CALL,
                capabilities: Some(bob_phone()),
                media: None,
            }),
        ),
        (
            "accept_media",
            C(ClientMessage::Accept {
                call: CALL,
                capabilities: None,
                media: Some(bob_media()),
            }),
        ),
        ("reject", C(ClientMessage::Reject { call: CALL })),
        ("need_caps", C(ClientMessage::NeedCaps { call: CALL })),
        ("hangup", C(ClientMessage::Hangup { call: CALL })),
        (
            "resume",
            C(ClientMessage::Resume {
                version: PROTOCOL_VERSION,
                token: token(),
                seen: Some(3),
            }),
        ),
        (
            "query_caps",
            C(ClientMessage::QueryCaps {
                req: ReqId(9),
                to: bob_ep(),
            }),
        ),
        (
            "caps_reply",
            C(ClientMessage::CapsReply {
                to: alice_ep(),
                req: ReqId(9),
                capabilities: bob_phone(),
            }),
        ),
        // server to client
        (
            "login_ok",
            S(ServerMessage::LoginOk {
                version: PROTOCOL_VERSION,
                user: user("alice"),
                session: SessionId(1),
                capabilities: alice_desktop(),
                contacts: vec![user("bob")],
                resume_token: Some(token()),
            }),
        ),
        (
            "resumed_delta",
            S(ServerMessage::Resumed {
                version: PROTOCOL_VERSION,
                session: SessionId(1),
                capabilities: alice_desktop(),
                seq: 7,
                contacts: None,
            }),
        ),
        (
            "resumed_snapshot",
            S(ServerMessage::Resumed {
                version: PROTOCOL_VERSION,
                session: SessionId(1),
                capabilities: alice_desktop(),
                seq: 0,
                contacts: Some(vec![user("bob")]),
            }),
        ),
        ("synced", S(ServerMessage::Synced {})),
        (
            "online",
            S(ServerMessage::Online(Presence {
                user: user("bob"),
                session: SessionId(2),
                capabilities: bob_phone(),
            })),
        ),
        ("offline", S(ServerMessage::Offline(bob_ep()))),
        (
            "contact_added",
            S(ServerMessage::ContactAdded {
                req: Some(ReqId(1)),
                user: user("carol"),
            }),
        ),
        (
            "contact_removed",
            S(ServerMessage::ContactRemoved {
                req: Some(ReqId(2)),
                user: user("carol"),
            }),
        ),
        ("caps_ack", S(ServerMessage::CapsAck { req: ReqId(3) })),
        (
            "call_ringing",
            S(ServerMessage::CallRinging {
                req: ReqId(4),
                call: CALL,
            }),
        ),
        (
            "call_incoming_fast",
            S(ServerMessage::CallIncoming {
                call: CALL,
                from: alice_ep(),
                digest: fast_digest(),
                capabilities: None,
                media: None,
            }),
        ),
        (
            "call_incoming_caps",
            S(ServerMessage::CallIncoming {
                call: CALL,
                from: alice_ep(),
                digest: fallback_digest(),
                capabilities: Some(alice_on_hotel_wifi()),
                media: None,
            }),
        ),
        (
            "call_incoming_media",
            S(ServerMessage::CallIncoming {
                call: CALL,
                from: alice_ep(),
                digest: fast_digest(),
                capabilities: None,
                media: Some(alice_media()),
            }),
        ),
        (
            "call_accepted_fast",
            S(ServerMessage::CallAccepted {
                call: CALL,
                capabilities: None,
                media: None,
            }),
        ),
        (
            "call_accepted_caps",
            S(ServerMessage::CallAccepted {
                call: CALL,
                capabilities: Some(bob_phone()),
                media: None,
            }),
        ),
        (
            "call_accepted_media",
            S(ServerMessage::CallAccepted {
                call: CALL,
                capabilities: None,
                media: Some(bob_media()),
            }),
        ),
        (
            "call_need_caps",
            S(ServerMessage::CallNeedCaps { call: CALL }),
        ),
        (
            "call_ended",
            S(ServerMessage::CallEnded {
                call: CALL,
                reason: EndReason::Hangup,
            }),
        ),
        ("pong", S(ServerMessage::Pong {})),
        ("logged_out", S(ServerMessage::LoggedOut {})),
        (
            "caps_query",
            S(ServerMessage::CapsQuery {
                from: alice_ep(),
                req: ReqId(9),
            }),
        ),
        (
            "caps_result",
            S(ServerMessage::CapsResult {
                req: ReqId(9),
                from: bob_ep(),
                capabilities: bob_phone(),
            }),
        ),
        (
            "error",
            S(ServerMessage::Error {
                code: ErrorCode::NotReachable,
                req: Some(ReqId(4)),
                call: None,
                detail: String::new(),
                retry_after_ms: None,
            }),
        ),
        (
            "error_throttled",
            S(ServerMessage::Error {
                code: ErrorCode::LoginThrottled,
                req: None,
                call: None,
                detail: String::new(),
                retry_after_ms: Some(42_000),
            }),
        ),
        (
            "error_caps_throttled",
            S(ServerMessage::Error {
                code: ErrorCode::CapsThrottled,
                req: Some(ReqId(7)),
                call: None,
                detail: String::new(),
                retry_after_ms: Some(12_500),
            }),
        ),
        (
            "error_resume_failed",
            S(ServerMessage::Error {
                code: ErrorCode::ResumeFailed,
                req: None,
                call: None,
                detail: String::new(),
                retry_after_ms: None,
            }),
        ),
    ]
}

/// The token a server with the default (test) secret issues to session 1.
fn token() -> ResumeToken {
    ResumeToken::derive(&ResumeSecret::default(), SessionId(1))
}

fn payload(m: &Msg) -> String {
    let bytes = match m {
        Msg::C(c) => encode_payload(c),
        Msg::S(s) => encode_payload(s),
    };
    String::from_utf8(bytes).expect("canonical JSON is UTF-8")
}

// ----- fingerprint.json ------------------------------------------------------------------

/// The shape of `fingerprint.json`.
#[derive(Deserialize)]
struct FingerprintVector {
    /// The capability set.
    capabilities: Capabilities,
    /// The bytes the fingerprint hashes, in hex, to help implementers debug.
    preimage: String,
    /// The expected fingerprint.
    fingerprint: String,
}

/// A JSON object with one member per line and each value in compact canonical JSON,
/// indented by `indent`: pretty enough for the spec, short enough to read.
fn object_per_line(members: &[(&str, String)], indent: &str) -> String {
    let lines: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{indent}  \"{k}\": {v}"))
        .collect();
    format!("{{\n{}\n{indent}}}", lines.join(",\n"))
}

fn compact<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint's preimage for [`alice_desktop`], written out field by field from
/// the spec's layout, independently of the crate's implementation.
fn alice_desktop_preimage() -> Vec<u8> {
    let mut p = b"precall/1 caps\0".to_vec();
    // encode: 2 codecs, each a length byte and the token
    p.extend([2, 4]);
    p.extend(b"h264");
    p.push(3);
    p.extend(b"vp8");
    // decode: 3 codecs
    p.extend([3, 4]);
    p.extend(b"h264");
    p.push(3);
    p.extend(b"vp8");
    p.push(3);
    p.extend(b"av1");
    // screen 1920x1080, big-endian u16
    p.extend(1920u16.to_be_bytes());
    p.extend(1080u16.to_be_bytes());
    // camera present: 1920x1080 at 30 fps
    p.push(1);
    p.extend(1920u16.to_be_bytes());
    p.extend(1080u16.to_be_bytes());
    p.extend(30u16.to_be_bytes());
    // cpu class high = 2
    p.push(2);
    // bandwidth up 8000, down 20000, big-endian u32
    p.extend(8000u32.to_be_bytes());
    p.extend(20000u32.to_be_bytes());
    p
}

fn fingerprint_vector() -> String {
    let preimage = alice_desktop_preimage();
    let digest = Sha256::digest(&preimage);
    object_per_line(
        &[
            ("capabilities", compact(&alice_desktop())),
            ("preimage", compact(&hex(&preimage))),
            ("fingerprint", compact(&hex(&digest[..16]))),
        ],
        "",
    )
}

// ----- negotiate.json --------------------------------------------------------------------

/// One case of `negotiate.json`.
#[derive(Deserialize)]
struct NegotiateCase {
    name: String,
    a: Capabilities,
    b: Capabilities,
    a_to_b: serde_json::Value,
    b_to_a: serde_json::Value,
}

fn video(codec: &str, width: u16, height: u16, fps: u16, bitrate_kbps: u32) -> Direction {
    Direction::Video(StreamParams {
        codec: Codec::new(codec).unwrap(),
        width,
        height,
        fps,
        bitrate_kbps,
    })
}

fn hd_desktop() -> Capabilities {
    caps(
        &["h264", "vp8"],
        &["h264", "vp8"],
        (1920, 1080),
        Some((1920, 1080, 30)),
        CpuClass::High,
        (8000, 8000),
    )
}

/// The negotiation cases, each with its outcome computed by hand from the rule in
/// `src/negotiate.rs` (budgets: encode high 124_416_000 px/s, mid 27_648_000, low
/// 3_456_000; decode twice that; milli-bits per pixel h264 100, vp8 110, av1 50,
/// h265/hevc/vp9 65, anything else 100).
fn negotiate_cases() -> Vec<(
    &'static str,
    Capabilities,
    Capabilities,
    Direction,
    Direction,
)> {
    vec![
        (
            // 1920x1080 fits camera and screen; fps min(30, 124_416_000/2_073_600 = 60)
            // = 30; 2_073_600*30*100/1e6 = 6220 kbit/s within the 8000 link.
            "two_hd_desktops",
            hd_desktop(),
            hd_desktop(),
            video("h264", 1920, 1080, 30, 6220),
            video("h264", 1920, 1080, 30, 6220),
        ),
        (
            // Each sender's first encode codec the receiver decodes: vp8 one way
            // (921_600*30*110/1e6 = 3041), h264 the other (2764).
            "sender_preference_picks_the_codec",
            caps(
                &["vp8", "h264"],
                &["h264", "vp8"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::Mid,
                (4000, 4000),
            ),
            caps(
                &["h264", "vp8"],
                &["vp8", "h264"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::Mid,
                (4000, 4000),
            ),
            video("vp8", 1280, 720, 30, 3041),
            video("h264", 1280, 720, 30, 2764),
        ),
        (
            // a encodes only vp8, which b cannot decode; b's h264 is fine for a.
            "no_common_codec",
            caps(
                &["vp8"],
                &["vp8", "h264"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::High,
                (8000, 8000),
            ),
            caps(
                &["h264"],
                &["h264"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::High,
                (8000, 8000),
            ),
            Direction::Off(NoVideo::NoCommonCodec),
            video("h264", 1280, 720, 30, 2764),
        ),
        (
            // A receive-only room display: sends nothing, receives b's 1080p30.
            "no_camera",
            caps(
                &[],
                &["av1", "h264"],
                (3840, 2160),
                None,
                CpuClass::Ultra,
                (50000, 50000),
            ),
            hd_desktop(),
            Direction::Off(NoVideo::NoCamera),
            video("h264", 1920, 1080, 30, 6220),
        ),
        (
            // Toward the low-end phone: decode budget 6_912_000 px/s gives 1280x720 7 fps
            // and 960x540 13 fps (< 15), so 640x360 at 30 fps, 691 kbit/s. From it:
            // encode budget 3_456_000 px/s gives 640x360 at exactly 15 fps, 345 kbit/s.
            "low_cpu_receiver_scales_down",
            hd_desktop(),
            caps(
                &["h264"],
                &["h264"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::Low,
                (2000, 4000),
            ),
            video("h264", 640, 360, 30, 691),
            video("h264", 640, 360, 15, 345),
        ),
        (
            // Link 1000 toward b: 1080p (6220) and 720p (2764) exceed twice the link,
            // 960x540 (1555) does not and is capped at 1000. Link 500 back: 640x360 (691)
            // is the first within 1000, capped at 500.
            "tight_bandwidth",
            hd_desktop(),
            caps(
                &["h264", "vp8"],
                &["h264", "vp8"],
                (1920, 1080),
                Some((1920, 1080, 30)),
                CpuClass::High,
                (500, 1000),
            ),
            video("h264", 960, 540, 30, 1000),
            video("h264", 640, 360, 30, 500),
        ),
        (
            // `h266` is not in the bits-per-pixel table: it negotiates like any token,
            // at the default 100 (2764 at 720p30); av1 back uses 50 (1382).
            "unknown_codec_token_default_bpp",
            caps(
                &["h266", "av1"],
                &["h266", "av1"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::High,
                (8000, 8000),
            ),
            caps(
                &["av1", "h266"],
                &["h266", "av1"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::High,
                (8000, 8000),
            ),
            video("h266", 1280, 720, 30, 2764),
            video("av1", 1280, 720, 30, 1382),
        ),
        (
            // vp9 and h265 both need 65 milli-bits per pixel: 921_600*30*65/1e6 = 1797
            // kbit/s at 720p30 each way.
            "vp9_and_h265_bpp",
            caps(
                &["vp9"],
                &["h265"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::High,
                (8000, 8000),
            ),
            caps(
                &["h265"],
                &["vp9"],
                (1280, 720),
                Some((1280, 720, 30)),
                CpuClass::High,
                (8000, 8000),
            ),
            video("vp9", 1280, 720, 30, 1797),
            video("h265", 1280, 720, 30, 1797),
        ),
        (
            // Sizes compare long side with long side: a 1080x2340 portrait screen takes
            // 1920x1080, and a 1080x1920 portrait camera sends 1920x1080 rungs. Back at
            // 60 fps, 1080p needs 12441 > 2*6000, so 1280x720 at 60 fps, 5529 kbit/s.
            "portrait_screen",
            hd_desktop(),
            caps(
                &["h264"],
                &["h264"],
                (1080, 2340),
                Some((1080, 1920, 60)),
                CpuClass::High,
                (6000, 20000),
            ),
            video("h264", 1920, 1080, 30, 6220),
            video("h264", 1280, 720, 60, 5529),
        ),
    ]
}

fn negotiate_vector() -> String {
    let cases: Vec<String> = negotiate_cases()
        .into_iter()
        .map(|(name, a, b, a_to_b, b_to_a)| {
            let obj = object_per_line(
                &[
                    ("name", compact(&name)),
                    ("a", compact(&a)),
                    ("b", compact(&b)),
                    ("a_to_b", compact(&a_to_b)),
                    ("b_to_a", compact(&b_to_a)),
                ],
                "  ",
            );
            format!("  {obj}")
        })
        .collect();
    format!("[\n{}\n]", cases.join(",\n"))
}

/// Every vector file's expected content, by name.
fn all_vectors() -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = messages()
        .iter()
        .map(|(name, m)| (name.to_string(), payload(m)))
        .collect();
    all.insert("fingerprint".into(), fingerprint_vector());
    all.insert("negotiate".into(), negotiate_vector());
    all
}

// ----- the vector tests ------------------------------------------------------------------

#[test]
fn message_vectors_are_canonical_and_decode() {
    for (name, msg) in messages() {
        let expected = payload(&msg);
        let file = check_file(name, &expected);
        assert!(!file.ends_with('\n'), "{name}: no trailing newline");
        assert!(!file.contains('\n'), "{name}: canonical JSON is one line");
        match msg {
            Msg::C(m) => {
                assert_eq!(encode_payload(&m), file.as_bytes(), "{name}: encoding");
                assert_eq!(
                    decode_message::<ClientMessage>(file.as_bytes()).as_ref(),
                    Ok(&m),
                    "{name}: decoding"
                );
            }
            Msg::S(m) => {
                assert_eq!(encode_payload(&m), file.as_bytes(), "{name}: encoding");
                assert_eq!(
                    decode_message::<ServerMessage>(file.as_bytes()).as_ref(),
                    Ok(&m),
                    "{name}: decoding"
                );
            }
        }
    }
}

#[test]
fn message_vectors_cover_every_message_type() {
    let client_types = <ClientMessage as WireMessage>::TYPES;
    let server_types = <ServerMessage as WireMessage>::TYPES;
    let mut seen_client = BTreeSet::new();
    let mut seen_server = BTreeSet::new();
    for (name, msg) in messages() {
        let v: serde_json::Value = serde_json::from_str(&payload(&msg)).unwrap();
        let ty = v["type"].as_str().expect("type member").to_owned();
        assert!(name.starts_with(&ty), "{name} is a {ty}");
        match msg {
            Msg::C(_) => seen_client.insert(ty),
            Msg::S(_) => seen_server.insert(ty),
        };
    }
    let want = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(seen_client, want(client_types));
    assert_eq!(seen_server, want(server_types));
    // A client message is not a server message and the other way round.
    for (name, msg) in messages() {
        let p = payload(&msg);
        let wrong_way = match msg {
            Msg::C(_) => decode_message::<ServerMessage>(p.as_bytes()).is_err(),
            Msg::S(_) => decode_message::<ClientMessage>(p.as_bytes()).is_err(),
        };
        assert!(wrong_way, "{name} decodes in the wrong direction");
    }
}

#[test]
fn fingerprint_vector_matches_capabilities_fingerprint() {
    let expected = fingerprint_vector();
    let file = check_file("fingerprint", &expected);
    let v: FingerprintVector = serde_json::from_str(&file).expect("fingerprint.json");
    // What a third-party implementer checks: the preimage hashes to the fingerprint,
    // and the capabilities' fingerprint is it.
    let preimage: Vec<u8> = (0..v.preimage.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v.preimage[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(hex(&Sha256::digest(&preimage)[..16]), v.fingerprint);
    assert_eq!(v.capabilities.fingerprint().to_string(), v.fingerprint);
    assert_eq!(v.capabilities, alice_desktop());
    // The fingerprint in the message vectors is the same function of the same values.
    assert_eq!(
        fast_digest().caller.to_string(),
        v.fingerprint,
        "call_fast names alice's fingerprint"
    );
}

#[test]
fn negotiate_vectors_match_negotiate() {
    // The hand-computed outcomes hold for this implementation ...
    for (name, a, b, a_to_b, b_to_a) in negotiate_cases() {
        assert_eq!(negotiate(&a, &b), a_to_b, "{name}: a to b");
        assert_eq!(negotiate(&b, &a), b_to_a, "{name}: b to a");
    }
    let expected = negotiate_vector();
    let file = check_file("negotiate", &expected);
    // ... and what a third-party implementer checks against the file alone.
    let cases: Vec<NegotiateCase> = serde_json::from_str(&file).expect("negotiate.json");
    assert_eq!(cases.len(), 9);
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    for c in &cases {
        let ab = serde_json::to_value(negotiate(&c.a, &c.b)).unwrap();
        let ba = serde_json::to_value(negotiate(&c.b, &c.a)).unwrap();
        assert_eq!(ab, c.a_to_b, "{}: a to b", c.name);
        assert_eq!(ba, c.b_to_a, "{}: b to a", c.name);
        // The recorded values are Direction's serde representation.
        let d: Direction = serde_json::from_value(c.a_to_b.clone()).unwrap();
        assert_eq!(d, negotiate(&c.a, &c.b), "{}", c.name);
    }
}

#[test]
fn vector_directory_holds_exactly_the_vectors() {
    let want = all_vectors();
    let on_disk = vector_files();
    if let Some(stray) = on_disk.keys().find(|n| !want.contains_key(*n)) {
        let path = vectors_dir().join(format!("{stray}.json"));
        panic!("{} is not a vector this test defines", path.display());
    }
    let names: BTreeSet<&String> = on_disk.keys().collect();
    assert_eq!(names, want.keys().collect(), "spec/vectors/*.json");
}

/// The vector files on disk, by name (file stem).
fn vector_files() -> BTreeMap<String, String> {
    let dir = vectors_dir();
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let content = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, content)
        })
        .collect()
}

// ----- the spec's copies -----------------------------------------------------------------

/// One `<!-- vector: NAME -->` placeholder and the fenced block after it.
#[derive(Debug)]
struct Block {
    name: String,
    /// 1-based line of the placeholder, for messages.
    line: usize,
    /// Index of the block's first content line (after the opening fence).
    start: usize,
    /// Index of the closing fence.
    end: usize,
}

const OPEN_FENCE: &str = "```json";
const CLOSE_FENCE: &str = "```";

/// Finds every placeholder and its block. Returns the blocks and the placeholders
/// that are not immediately followed by a well-formed ```` ```json ```` block.
fn parse_placeholders(lines: &[&str]) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .trim()
            .strip_prefix("<!-- vector:")
            .and_then(|r| r.strip_suffix("-->"))
            .map(str::trim)
        else {
            i += 1;
            continue;
        };
        let line = i + 1;
        if lines.get(i + 1).map(|l| l.trim_end()) != Some(OPEN_FENCE) {
            problems.push(format!(
                "line {line}: placeholder `{name}` is not immediately followed by a {OPEN_FENCE} line"
            ));
            i += 1;
            continue;
        }
        let start = i + 2;
        let Some(end) = (start..lines.len()).find(|&j| lines[j].trim_end() == CLOSE_FENCE) else {
            problems.push(format!(
                "line {line}: the block of placeholder `{name}` is never closed"
            ));
            break;
        };
        blocks.push(Block {
            name: name.to_owned(),
            line,
            start,
            end,
        });
        i = end + 1;
    }
    (blocks, problems)
}

/// Compares the markdown's vector blocks with the vector files. Returns every
/// problem found; empty means the spec shows every vector exactly.
fn check_spec(md: &str, files: &BTreeMap<String, String>) -> Vec<String> {
    let lines: Vec<&str> = md.split('\n').collect();
    let (blocks, mut problems) = parse_placeholders(&lines);
    for b in &blocks {
        let content = lines[b.start..b.end].join("\n");
        match files.get(&b.name) {
            None => problems.push(format!(
                "line {}: placeholder `{}` names spec/vectors/{}.json, which does not exist",
                b.line, b.name, b.name
            )),
            Some(file) if *file != content => problems.push(format!(
                "line {}: the block of `{}` differs from spec/vectors/{}.json{}; it must read:\n{file}",
                b.line,
                b.name,
                b.name,
                first_difference(&content, file)
            )),
            Some(_) => {}
        }
    }
    let named: BTreeSet<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    for name in files.keys().filter(|n| !named.contains(n.as_str())) {
        problems.push(format!(
            "spec/vectors/{name}.json is not shown: add `<!-- vector: {name} -->` and a {OPEN_FENCE} block"
        ));
    }
    problems
}

/// `md` with the content of every block whose vector exists replaced by the vector (what
/// the checker expects; used by its own tests).
fn fill_blocks(md: &str, files: &BTreeMap<String, String>) -> String {
    let lines: Vec<&str> = md.split('\n').collect();
    let (blocks, _) = parse_placeholders(&lines);
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut next = 0;
    for b in &blocks {
        let Some(file) = files.get(&b.name) else {
            continue;
        };
        out.extend(&lines[next..b.start]);
        if !file.is_empty() {
            out.extend(file.split('\n'));
        }
        next = b.end;
    }
    out.extend(&lines[next..]);
    out.join("\n")
}

fn read_spec() -> String {
    let path = spec_path();
    fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the spec must exist and show every vector in a \
             `<!-- vector: NAME -->` + ```json block",
            path.display()
        )
    })
}

#[test]
fn spec_shows_every_vector_exactly() {
    let md = read_spec();
    let files = vector_files();
    let problems = check_spec(&md, &files);
    assert!(
        problems.is_empty(),
        "spec/protocol.md does not match spec/vectors:\n{}",
        problems.join("\n")
    );
}

#[test]
fn spec_check_catches_a_changed_character() {
    // The spec as the vectors say it must be, computed in memory.
    let files = all_vectors();
    let md = fill_blocks(&read_spec(), &files);
    assert_eq!(check_spec(&md, &files), Vec::<String>::new());
    let lines: Vec<&str> = md.split('\n').collect();
    let (blocks, _) = parse_placeholders(&lines);
    let block = blocks
        .iter()
        .find(|b| b.end > b.start)
        .expect("the spec has a non-empty vector block");
    // Change one character of the block's first line.
    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let target = &mut changed[block.start];
    let pos = target
        .char_indices()
        .find(|(_, c)| c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .expect("a character to change");
    let old = target.as_bytes()[pos];
    let new = if old == b'a' { "b" } else { "a" };
    target.replace_range(pos..pos + 1, new);
    let tampered = changed.join("\n");
    assert_eq!(tampered.len(), md.len(), "exactly one character changed");
    let problems = check_spec(&tampered, &files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&format!("`{}` differs", block.name)),
        "{problems:?}"
    );
}

#[test]
fn spec_check_reports_missing_unshown_and_malformed_blocks() {
    let files: BTreeMap<String, String> = [
        ("ping".to_string(), r#"{"type":"ping"}"#.to_string()),
        ("pong".to_string(), r#"{"type":"pong"}"#.to_string()),
    ]
    .into();
    let md = "# T\n\n<!-- vector: ping -->\n```json\n```\n\n<!-- vector: nope -->\n```json\n{}\n```\n\n<!-- vector: ping -->\nno fence\n";
    let problems = check_spec(md, &files);
    assert!(
        problems.iter().any(|p| p.contains("`ping` differs")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("`nope` names")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("pong.json is not shown")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("not immediately followed")),
        "{problems:?}"
    );
    // Filling the blocks fixes the empty one; the other problems remain.
    let filled = fill_blocks(md, &files);
    assert!(filled.contains("<!-- vector: ping -->\n```json\n{\"type\":\"ping\"}\n```\n"));
    let after = check_spec(&filled, &files);
    assert!(
        !after.iter().any(|p| p.contains("`ping` differs")),
        "{after:?}"
    );
    assert_eq!(after.len(), 3, "{after:?}");
    // Filling is idempotent.
    assert_eq!(fill_blocks(&filled, &files), filled);
}
