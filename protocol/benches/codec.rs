//! Codec benchmarks: encoding every message kind to a frame (`encode/<type>`), decoding
//! each frame's payload back (`decode/<type>`), and the incremental [`FrameDecoder`]
//! splitting a 1 MiB stream of concatenated `online` frames (`frame_decoder/*`,
//! reported as bytes per second).
//!
//! `<type>` is the wire `type` name of the message. Every kind of [`ClientMessage`]
//! and [`ServerMessage`] is covered: the setup asserts that the sample messages name
//! every entry of `WireMessage::TYPES`, and that each one decodes back to itself.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use precall_protocol::caps::{Bandwidth, Camera, CpuClass, Size};
use precall_protocol::codec::HEADER_LEN;
use precall_protocol::codec::{decode_message, encode_frame, FrameDecoder, DEFAULT_MAX_FRAME};
use precall_protocol::message::{EndReason, Presence, WireMessage};
use precall_protocol::sim::sample_caps;
use precall_protocol::{
    CallDigest, CallId, Capabilities, ClientMessage, Codec, Endpoint, ErrorCode, LoginWith,
    Password, ReqId, ResumeSecret, ResumeToken, ServerMessage, SessionId, UserId, PROTOCOL_VERSION,
};

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn endpoint(name: &str, session: u64) -> Endpoint {
    Endpoint {
        user: user(name),
        session: SessionId(session),
    }
}

/// A desktop: the sample capabilities with three codecs.
fn desktop() -> Capabilities {
    sample_caps(&["h264", "vp8", "vp9"], 1920, 30)
}

/// A phone: portrait screen, fewer encoders than decoders, a mid CPU and a mobile link.
fn phone() -> Capabilities {
    let c = |s: &str| Codec::new(s).unwrap();
    Capabilities::new(
        vec![c("h264"), c("vp8")],
        vec![c("h264"), c("vp8"), c("vp9"), c("av1")],
        Size {
            width: 1080,
            height: 2340,
        },
        Some(Camera {
            max: Size {
                width: 1920,
                height: 1080,
            },
            max_fps: 30,
        }),
        CpuClass::Mid,
        Bandwidth {
            up_kbps: 1_500,
            down_kbps: 4_000,
        },
    )
    .unwrap()
}

fn digest() -> CallDigest {
    CallDigest {
        caller: desktop().fingerprint(),
        callee: phone().fingerprint(),
    }
}

/// One realistic instance of every client-to-server message.
fn client_messages() -> Vec<ClientMessage> {
    vec![
        ClientMessage::Login {
            version: PROTOCOL_VERSION,
            user: user("alice@example.org"),
            password: Password::new("correct horse battery staple").unwrap(),
            with: LoginWith::Capabilities(desktop()),
        },
        ClientMessage::Resume {
            version: PROTOCOL_VERSION,
            token: ResumeToken::derive(&ResumeSecret::default(), SessionId(4_210)),
            seen: Some(12),
        },
        ClientMessage::Logout {},
        ClientMessage::Ping {},
        ClientMessage::UpdateCaps {
            req: ReqId(7),
            capabilities: phone(),
        },
        ClientMessage::AddContact {
            req: ReqId(8),
            user: user("bob@example.org"),
        },
        ClientMessage::RemoveContact {
            req: ReqId(9),
            user: user("carol@example.org"),
        },
        ClientMessage::Call {
            req: ReqId(10),
            to: endpoint("bob@example.org", 4_211),
            digest: digest(),
            capabilities: None,
            media: None,
        },
        ClientMessage::CallRetry {
            call: CallId(31),
            capabilities: desktop(),
        },
        ClientMessage::Accept {
            call: CallId(31),
            capabilities: None,
            media: None,
        },
        ClientMessage::Reject { call: CallId(32) },
        ClientMessage::NeedCaps { call: CallId(33) },
        ClientMessage::Hangup { call: CallId(31) },
        ClientMessage::QueryCaps {
            req: ReqId(11),
            to: endpoint("bob@example.org", 4_211),
        },
        ClientMessage::CapsReply {
            to: endpoint("bob@example.org", 4_211),
            req: ReqId(3),
            capabilities: desktop(),
        },
    ]
}

/// One realistic instance of every server-to-client message.
fn server_messages() -> Vec<ServerMessage> {
    let contacts = (0..50)
        .map(|i| user(&format!("contact{i:02}@example.org")))
        .collect();
    vec![
        ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: user("alice@example.org"),
            session: SessionId(4_210),
            capabilities: desktop(),
            contacts,
            resume_token: Some(ResumeToken::derive(
                &ResumeSecret::default(),
                SessionId(4_210),
            )),
        },
        ServerMessage::Resumed {
            version: PROTOCOL_VERSION,
            session: SessionId(4_210),
            capabilities: desktop(),
            seq: 12,
            contacts: None,
        },
        ServerMessage::Synced {},
        ServerMessage::Online(presence()),
        ServerMessage::Offline(endpoint("bob@example.org", 4_211)),
        ServerMessage::ContactAdded {
            req: Some(ReqId(8)),
            user: user("bob@example.org"),
        },
        ServerMessage::ContactRemoved {
            req: Some(ReqId(9)),
            user: user("carol@example.org"),
        },
        ServerMessage::CapsAck { req: ReqId(7) },
        ServerMessage::CallRinging {
            req: ReqId(10),
            call: CallId(31),
        },
        ServerMessage::CallIncoming {
            call: CallId(31),
            from: endpoint("alice@example.org", 4_210),
            digest: digest(),
            capabilities: None,
            media: None,
        },
        ServerMessage::CallAccepted {
            call: CallId(31),
            capabilities: None,
            media: None,
        },
        ServerMessage::CallNeedCaps { call: CallId(33) },
        ServerMessage::CallEnded {
            call: CallId(31),
            reason: EndReason::Hangup,
        },
        ServerMessage::Pong {},
        ServerMessage::LoggedOut {},
        ServerMessage::CapsQuery {
            from: endpoint("alice@example.org", 4_210),
            req: ReqId(11),
        },
        ServerMessage::CapsResult {
            req: ReqId(11),
            from: endpoint("bob@example.org", 4_211),
            capabilities: phone(),
        },
        ServerMessage::Error {
            code: ErrorCode::NotReachable,
            req: Some(ReqId(10)),
            call: None,
            detail: "bob@example.org/4211 is not online".into(),
            retry_after_ms: None,
        },
    ]
}

fn presence() -> Presence {
    Presence {
        user: user("bob@example.org"),
        session: SessionId(4_211),
        capabilities: phone(),
    }
}

/// Checks that `msgs` covers every `type` of `M` and that each message survives a
/// round trip, then benchmarks encoding and decoding each one.
fn bench_messages<M>(c: &mut Criterion, msgs: &[M])
where
    M: WireMessage + PartialEq + std::fmt::Debug,
{
    let covered: BTreeSet<&str> = msgs.iter().map(WireMessage::type_name).collect();
    let all: BTreeSet<&str> = M::TYPES.iter().copied().collect();
    assert_eq!(
        covered, all,
        "the codec bench must cover every message type"
    );
    assert_eq!(covered.len(), msgs.len(), "one sample per message type");
    for msg in msgs {
        let frame = encode_frame(msg);
        let back: M = decode_message(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(&back, msg, "round trip of {}", msg.type_name());
    }

    let mut group = c.benchmark_group("encode");
    for msg in msgs {
        group.bench_with_input(
            BenchmarkId::from_parameter(msg.type_name()),
            msg,
            |b, msg| b.iter(|| encode_frame(black_box(msg))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for msg in msgs {
        let frame = encode_frame(msg);
        group.bench_with_input(
            BenchmarkId::from_parameter(msg.type_name()),
            &frame[HEADER_LEN..],
            |b, payload| b.iter(|| decode_message::<M>(black_box(payload)).unwrap()),
        );
    }
    group.finish();
}

fn messages(c: &mut Criterion) {
    bench_messages(c, &client_messages());
    bench_messages(c, &server_messages());
}

/// Whole `online` frames, concatenated until the stream holds at least 1 MiB.
fn online_stream() -> (Vec<u8>, usize) {
    let mut stream = Vec::with_capacity((1 << 20) + 1024);
    let mut frames = 0;
    let mut i = 0u64;
    while stream.len() < 1 << 20 {
        let msg = ServerMessage::Online(Presence {
            user: user(&format!("contact{:05}@example.org", i % 5_000)),
            session: SessionId(10_000 + i),
            capabilities: if i % 2 == 0 { phone() } else { desktop() },
        });
        stream.extend_from_slice(&encode_frame(&msg));
        frames += 1;
        i += 1;
    }
    (stream, frames)
}

/// Feeds `stream` to a fresh decoder in reads of at most `chunk` bytes and returns the
/// number of payloads it produced.
fn split(stream: &[u8], chunk: usize) -> usize {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut frames = 0;
    for read in stream.chunks(chunk) {
        let mut input = read;
        while !input.is_empty() {
            if let Some(payload) = decoder.decode(&mut input).unwrap() {
                black_box(payload);
                frames += 1;
            }
        }
    }
    frames
}

fn frame_decoder(c: &mut Criterion) {
    let (stream, frames) = online_stream();
    // One read of the whole stream, and reads of one TCP segment's payload each.
    let reads = [
        ("online_1MiB/one_read", stream.len()),
        ("online_1MiB/1460B_reads", 1460),
    ];
    for (_, chunk) in reads {
        assert_eq!(split(&stream, chunk), frames, "every frame is split out");
    }
    let mut group = c.benchmark_group("frame_decoder");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    for (name, chunk) in reads {
        group.bench_function(name, |b| b.iter(|| split(black_box(&stream), chunk)));
    }
    group.finish();
}

criterion_group!(benches, messages, frame_decoder);
criterion_main!(benches);
