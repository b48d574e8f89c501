//! Shared proptest strategies for the property tests: valid identifiers, capability
//! sets with their edge values, digests, and every client and server message.
//!
//! Every strategy produces *valid* values only (constructors are unwrapped), so a
//! failure of a property is a failure of the code under test, never of the generator.
//! The helpers at the end run a checker programmatically, for the tests that show a
//! checker catches a seeded fault.

// Each test crate uses a different subset of this module.
#![allow(dead_code)]

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use precall_protocol::caps::{
    Bandwidth, CallDigest, Camera, Capabilities, CpuClass, Fingerprint, Size, MAX_CAMERA_FPS,
    MAX_CODECS, MAX_DIMENSION, MAX_KBPS,
};
use precall_protocol::message::{EndReason, LoginWith, Presence};
use precall_protocol::{
    CallId, ClientMessage, Codec, Endpoint, ErrorCode, MediaDescription, Password, ReqId,
    ResumeToken, ServerMessage, SessionId, TerminalId, UserId, PROTOCOL_VERSION,
};

// ----- identifiers ---------------------------------------------------------------

/// Codec tokens this version has a bit-per-pixel figure for.
pub const KNOWN_CODECS: [&str; 5] = ["h264", "vp8", "vp9", "av1", "h265"];

/// A valid user id: 1–64 bytes of `a-z 0-9 . _ - @`.
pub fn user_id() -> impl Strategy<Value = UserId> {
    prop_oneof![
        4 => "[a-z0-9._@-]{1,12}",
        1 => "[a-z0-9._@-]{60,64}",
    ]
    .prop_map(|s| UserId::new(s).expect("valid user id"))
}

/// A valid terminal id: 1–64 bytes of `A-Z a-z 0-9 . _ - :`.
pub fn terminal_id() -> impl Strategy<Value = TerminalId> {
    "[A-Za-z0-9._:-]{1,64}".prop_map(|s| TerminalId::new(s).expect("valid terminal id"))
}

/// A codec token this version does not know (still negotiable as an opaque token).
pub fn unknown_codec() -> impl Strategy<Value = Codec> {
    "[a-z0-9.-]{1,16}"
        .prop_filter("not a known codec", |s| !KNOWN_CODECS.contains(&s.as_str()))
        .prop_map(|s| Codec::new(s).expect("valid codec"))
}

/// A codec token, mostly a known one so that two random lists often intersect.
pub fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        4 => prop::sample::select(&KNOWN_CODECS[..]).prop_map(|s| Codec::new(s).unwrap()),
        1 => unknown_codec(),
    ]
}

/// A valid password: 1–1024 bytes of anything (including control characters and
/// non-ASCII), with the two length edges.
pub fn password() -> impl Strategy<Value = Password> {
    prop_oneof![
        6 => prop::collection::vec(any::<char>(), 1..24)
            .prop_map(|c| c.into_iter().collect::<String>()),
        1 => Just("x".to_owned()),
        1 => Just("p".repeat(Password::MAX_LEN)),
    ]
    .prop_map(|s| Password::new(s).expect("valid password"))
}

/// Any well-formed resume token.
pub fn resume_token() -> impl Strategy<Value = ResumeToken> {
    "[0-9a-f]{32}".prop_map(|s| ResumeToken::new(s).expect("32 hex digits"))
}

pub fn session_id() -> impl Strategy<Value = SessionId> {
    prop_oneof![Just(0u64), Just(u64::MAX), 1u64..1000, any::<u64>()].prop_map(SessionId)
}

pub fn call_id() -> impl Strategy<Value = CallId> {
    prop_oneof![Just(0u64), Just(u64::MAX), 1u64..1000, any::<u64>()].prop_map(CallId)
}

pub fn req_id() -> impl Strategy<Value = ReqId> {
    prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()].prop_map(ReqId)
}

pub fn endpoint() -> impl Strategy<Value = Endpoint> {
    (user_id(), session_id()).prop_map(|(user, session)| Endpoint { user, session })
}

// ----- capabilities --------------------------------------------------------------

/// A codec list: empty, a few entries (possibly unknown tokens), or the maximum of
/// [`MAX_CODECS`] distinct entries, in any order.
pub fn codec_list() -> impl Strategy<Value = Vec<Codec>> {
    prop_oneof![
        1 => Just(Vec::new()),
        8 => prop::collection::vec(codec(), 1..6).prop_map(dedup),
        1 => Just(full_codec_list()).prop_shuffle(),
    ]
}

fn full_codec_list() -> Vec<Codec> {
    let mut v: Vec<Codec> = KNOWN_CODECS
        .iter()
        .map(|c| Codec::new(*c).unwrap())
        .collect();
    let mut i = 0;
    while v.len() < MAX_CODECS {
        v.push(Codec::new(format!("x-{i}")).unwrap());
        i += 1;
    }
    v
}

/// Keeps the first occurrence of each entry.
pub fn dedup(list: Vec<Codec>) -> Vec<Codec> {
    let mut out: Vec<Codec> = Vec::with_capacity(list.len());
    for c in list {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// One side of a screen or camera: the edges of the range, the ladder's sides, or
/// anything in range.
pub fn dimension() -> impl Strategy<Value = u16> {
    prop_oneof![
        2 => prop::sample::select(vec![
            1u16, 2, 89, 90, 91, 160, 180, 270, 320, 360, 480, 540, 640, 720, 960, 1080, 1280,
            1440, 1920, 2160, 2560, 3840, MAX_DIMENSION - 1, MAX_DIMENSION,
        ]),
        1 => 1u16..=200,
        2 => 1u16..=MAX_DIMENSION,
    ]
}

/// A size, landscape or portrait.
pub fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        // A 16:9 size in either orientation, the common case.
        3 => prop::sample::select(vec![
            (160u16, 90u16), (320, 180), (640, 360), (960, 540), (1280, 720), (1920, 1080),
            (2560, 1440), (3840, 2160),
        ])
        .prop_flat_map(|(w, h)| prop_oneof![Just(Size { width: w, height: h }),
                                             Just(Size { width: h, height: w })]),
        2 => (dimension(), dimension()).prop_map(|(width, height)| Size { width, height }),
    ]
}

/// A camera frame rate: the edges of the range, the edges of the negotiation's
/// thresholds, or anything in range.
pub fn camera_fps() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            1u16,
            2,
            14,
            15,
            16,
            25,
            29,
            30,
            59,
            60,
            61,
            MAX_CAMERA_FPS
        ]),
        1u16..=MAX_CAMERA_FPS,
    ]
}

pub fn camera() -> impl Strategy<Value = Camera> {
    (size(), camera_fps()).prop_map(|(max, max_fps)| Camera { max, max_fps })
}

pub fn cpu() -> impl Strategy<Value = CpuClass> {
    prop::sample::select(CpuClass::ALL.to_vec())
}

/// A bandwidth figure in kbit/s: zero, tiny, typical, the 16-bit boundary, the
/// maximum, or anything in range.
pub fn kbps() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => prop::sample::select(vec![0u32, 1, 2, 65_535, 65_536, MAX_KBPS - 1, MAX_KBPS]),
        2 => 0u32..=2_000,
        2 => 0u32..=50_000,
        2 => 0u32..=MAX_KBPS,
    ]
}

pub fn bandwidth() -> impl Strategy<Value = Bandwidth> {
    (kbps(), kbps()).prop_map(|(up_kbps, down_kbps)| Bandwidth { up_kbps, down_kbps })
}

/// A valid capability set. One in five has no camera.
/// A media description (spec 10.8): opaque text of any length the spec allows, with
/// the line breaks and tabs it may hold.
pub fn media() -> impl Strategy<Value = MediaDescription> {
    prop_oneof![
        "[ -~\t\r\n]{1,200}",
        Just("a".repeat(MediaDescription::MAX_LEN)),
    ]
    .prop_map(|s| MediaDescription::new(s).expect("valid media description"))
}

pub fn capabilities() -> impl Strategy<Value = Capabilities> {
    (
        codec_list(),
        codec_list(),
        size(),
        prop::option::weighted(0.8, camera()),
        cpu(),
        bandwidth(),
    )
        .prop_map(|(encode, decode, screen, camera, cpu, bw)| {
            Capabilities::new(encode, decode, screen, camera, cpu, bw).expect("valid caps")
        })
}

/// A valid capability set with a camera.
pub fn capabilities_with_camera() -> impl Strategy<Value = Capabilities> {
    (capabilities(), camera()).prop_map(|(c, cam)| with_camera(&c, Some(cam)))
}

/// `caps` with its camera replaced.
pub fn with_camera(caps: &Capabilities, camera: Option<Camera>) -> Capabilities {
    Capabilities::new(
        caps.encode().to_vec(),
        caps.decode().to_vec(),
        caps.screen(),
        camera,
        caps.cpu(),
        caps.bandwidth(),
    )
    .expect("valid caps")
}

/// `caps` with its codec lists replaced.
pub fn with_codecs(caps: &Capabilities, encode: Vec<Codec>, decode: Vec<Codec>) -> Capabilities {
    Capabilities::new(
        encode,
        decode,
        caps.screen(),
        caps.camera(),
        caps.cpu(),
        caps.bandwidth(),
    )
    .expect("valid caps")
}

/// `caps` with its bandwidth replaced.
pub fn with_bandwidth(caps: &Capabilities, bandwidth: Bandwidth) -> Capabilities {
    Capabilities::new(
        caps.encode().to_vec(),
        caps.decode().to_vec(),
        caps.screen(),
        caps.camera(),
        caps.cpu(),
        bandwidth,
    )
    .expect("valid caps")
}

pub fn fingerprint() -> impl Strategy<Value = Fingerprint> {
    prop_oneof![
        1 => Just(Fingerprint([0; 16])),
        1 => Just(Fingerprint([0xff; 16])),
        6 => any::<[u8; 16]>().prop_map(Fingerprint),
    ]
}

pub fn call_digest() -> impl Strategy<Value = CallDigest> {
    (fingerprint(), fingerprint()).prop_map(|(caller, callee)| CallDigest { caller, callee })
}

// ----- messages ------------------------------------------------------------------

pub fn login_with() -> impl Strategy<Value = LoginWith> {
    prop_oneof![
        capabilities().prop_map(LoginWith::Capabilities),
        terminal_id().prop_map(LoginWith::TerminalId),
    ]
}

/// Every [`ClientMessage`] variant, every field generated. `login` always announces
/// [`PROTOCOL_VERSION`] (another version is refused by design, not a round-trip).
pub fn client_message() -> impl Strategy<Value = ClientMessage> {
    let opt_caps = || prop::option::of(capabilities());
    prop_oneof![
        (user_id(), password(), login_with()).prop_map(|(user, password, with)| {
            ClientMessage::Login {
                version: PROTOCOL_VERSION,
                user,
                password,
                with,
            }
        }),
        (resume_token(), prop::option::of(any::<u64>())).prop_map(|(token, seen)| {
            ClientMessage::Resume {
                version: PROTOCOL_VERSION,
                token,
                seen,
            }
        }),
        Just(ClientMessage::Logout {}),
        Just(ClientMessage::Ping {}),
        (req_id(), capabilities())
            .prop_map(|(req, capabilities)| ClientMessage::UpdateCaps { req, capabilities }),
        (req_id(), user_id()).prop_map(|(req, user)| ClientMessage::AddContact { req, user }),
        (req_id(), user_id()).prop_map(|(req, user)| ClientMessage::RemoveContact { req, user }),
        (
            req_id(),
            endpoint(),
            call_digest(),
            opt_caps(),
            prop::option::of(media())
        )
            .prop_map(
                |(req, to, digest, capabilities, media)| ClientMessage::Call {
                    req,
                    to,
                    digest,
                    capabilities,
                    media,
                }
            ),
        (call_id(), capabilities())
            .prop_map(|(call, capabilities)| ClientMessage::CallRetry { call, capabilities }),
        (call_id(), opt_caps(), prop::option::of(media())).prop_map(
            |(call, capabilities, media)| ClientMessage::Accept {
                call,
                capabilities,
                media
            }
        ),
        call_id().prop_map(|call| ClientMessage::Reject { call }),
        call_id().prop_map(|call| ClientMessage::NeedCaps { call }),
        call_id().prop_map(|call| ClientMessage::Hangup { call }),
        (req_id(), endpoint()).prop_map(|(req, to)| ClientMessage::QueryCaps { req, to }),
        (endpoint(), req_id(), capabilities()).prop_map(|(to, req, capabilities)| {
            ClientMessage::CapsReply {
                to,
                req,
                capabilities,
            }
        }),
    ]
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::FrameTooLarge,
        ErrorCode::Malformed,
        ErrorCode::UnknownMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::NotLoggedIn,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::BadCredentials,
        ErrorCode::UnknownTerminal,
        ErrorCode::TooManySessions,
        ErrorCode::SessionReplaced,
        ErrorCode::NotReachable,
        ErrorCode::UnknownCall,
        ErrorCode::Busy,
        ErrorCode::InvalidState,
        ErrorCode::InvalidContact,
        ErrorCode::RosterFull,
        ErrorCode::IdleTimeout,
        ErrorCode::LoginTimeout,
        ErrorCode::ServerShutdown,
        ErrorCode::Internal,
        ErrorCode::LoginThrottled,
        ErrorCode::RateLimited,
        ErrorCode::TooManyConnections,
        ErrorCode::CapsTooLarge,
        ErrorCode::Unknown,
    ])
}

pub fn end_reason() -> impl Strategy<Value = EndReason> {
    prop::sample::select(vec![
        EndReason::Hangup,
        EndReason::Rejected,
        EndReason::PeerGone,
        EndReason::NotReachable,
        EndReason::Timeout,
        EndReason::Unknown,
    ])
}

pub fn presence() -> impl Strategy<Value = Presence> {
    (user_id(), session_id(), capabilities()).prop_map(|(user, session, capabilities)| Presence {
        user,
        session,
        capabilities,
    })
}

/// Free text for `error.detail`: empty (omitted on the wire), ASCII, or anything.
pub fn detail() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ -~]{0,40}",
        prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
    ]
}

/// Every [`ServerMessage`] variant, every field generated. `login_ok` always
/// announces [`PROTOCOL_VERSION`].
pub fn server_message() -> impl Strategy<Value = ServerMessage> {
    let opt_caps = || prop::option::of(capabilities());
    let opt_req = || prop::option::of(req_id());
    prop_oneof![
        (
            user_id(),
            session_id(),
            capabilities(),
            prop::collection::vec(user_id(), 0..6),
            prop::option::of(resume_token()),
        )
            .prop_map(|(user, session, capabilities, contacts, resume_token)| {
                ServerMessage::LoginOk {
                    version: PROTOCOL_VERSION,
                    user,
                    session,
                    capabilities,
                    contacts,
                    resume_token,
                }
            }),
        (
            session_id(),
            capabilities(),
            any::<u64>(),
            prop::option::of(prop::collection::vec(user_id(), 0..6)),
        )
            .prop_map(
                |(session, capabilities, seq, contacts)| ServerMessage::Resumed {
                    version: PROTOCOL_VERSION,
                    session,
                    capabilities,
                    seq,
                    contacts,
                }
            ),
        Just(ServerMessage::Synced {}),
        presence().prop_map(ServerMessage::Online),
        endpoint().prop_map(ServerMessage::Offline),
        (opt_req(), user_id()).prop_map(|(req, user)| ServerMessage::ContactAdded { req, user }),
        (opt_req(), user_id()).prop_map(|(req, user)| ServerMessage::ContactRemoved { req, user }),
        req_id().prop_map(|req| ServerMessage::CapsAck { req }),
        (req_id(), call_id()).prop_map(|(req, call)| ServerMessage::CallRinging { req, call }),
        (
            call_id(),
            endpoint(),
            call_digest(),
            opt_caps(),
            prop::option::of(media())
        )
            .prop_map(|(call, from, digest, capabilities, media)| {
                ServerMessage::CallIncoming {
                    call,
                    from,
                    digest,
                    capabilities,
                    media,
                }
            }),
        (call_id(), opt_caps(), prop::option::of(media())).prop_map(
            |(call, capabilities, media)| ServerMessage::CallAccepted {
                call,
                capabilities,
                media
            }
        ),
        call_id().prop_map(|call| ServerMessage::CallNeedCaps { call }),
        (call_id(), end_reason())
            .prop_map(|(call, reason)| ServerMessage::CallEnded { call, reason }),
        Just(ServerMessage::Pong {}),
        Just(ServerMessage::LoggedOut {}),
        (endpoint(), req_id()).prop_map(|(from, req)| ServerMessage::CapsQuery { from, req }),
        (req_id(), endpoint(), capabilities()).prop_map(|(req, from, capabilities)| {
            ServerMessage::CapsResult {
                req,
                from,
                capabilities,
            }
        }),
        (
            error_code(),
            opt_req(),
            prop::option::of(call_id()),
            detail(),
            prop::option::of(any::<u64>()),
        )
            .prop_map(
                |(code, req, call, detail, retry_after_ms)| ServerMessage::Error {
                    code,
                    req,
                    call,
                    detail,
                    retry_after_ms,
                }
            ),
    ]
}

/// Either side's message, as a pair of encoders' inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyMessage {
    Client(ClientMessage),
    Server(ServerMessage),
}

pub fn any_message() -> impl Strategy<Value = AnyMessage> {
    prop_oneof![
        client_message().prop_map(AnyMessage::Client),
        server_message().prop_map(AnyMessage::Server),
    ]
}

// ----- running checkers programmatically -----------------------------------------

/// A runner for a property that must hold: `cases` random cases, no regression file
/// (the runner has no source file to put it next to).
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    })
}

/// A deterministic runner for the seeded-fault tests, which must find a
/// counterexample on every run: fixed seed, no regression file, bounded shrinking.
pub fn fault_runner(cases: u32) -> TestRunner {
    let config = Config {
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::with_cases(cases)
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Runs `check` over `cases` deterministic cases of `strategy` and returns the
/// (shrunk) counterexample and the checker's message, or `None` if every case passed.
pub fn find_counterexample<S>(
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), String>,
) -> Option<(S::Value, String)>
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = fault_runner(cases);
    match runner.run(&strategy, |v| check(v).map_err(TestCaseError::fail)) {
        Ok(()) => None,
        Err(TestError::Fail(reason, value)) => Some((value, reason.message().to_owned())),
        Err(TestError::Abort(reason)) => panic!("runner aborted: {reason}"),
    }
}

/// Runs `check` as a property that must hold, panicking with the counterexample.
pub fn assert_property<S>(cases: u32, strategy: S, check: impl Fn(S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = runner(cases);
    if let Err(e) = runner.run(&strategy, |v| check(v).map_err(TestCaseError::fail)) {
        panic!("{e}");
    }
}

/// One value drawn from `strategy` (unshrunk).
pub fn sample<S: Strategy>(strategy: &S, runner: &mut TestRunner) -> S::Value {
    use proptest::strategy::ValueTree;
    strategy
        .new_tree(runner)
        .expect("strategy generates values")
        .current()
}
