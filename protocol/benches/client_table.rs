//! The client's parameter table at scale (claim C1): a logged-in [`Client`] whose
//! 5,000 contacts come online, each with distinct capabilities.
//!
//! - `client_table/online_5000_decoded`: `handle_message` on 5,000 decoded `online`
//!   messages until the whole table (capabilities, fingerprint and call parameters of
//!   every peer) is computed, starting from a fresh logged-in client each time;
//! - `client_table/online_5000_frames`: the same from one buffer holding the 5,000
//!   encoded frames, through `Client::receive` (framing and JSON decoding included);
//! - `client_table/update_caps_5000`: `Client::update_caps` on a client holding 5,000
//!   peers, which recomputes the parameters of every one of them.
//!
//! The target is a table of 5,000 contacts computed in under 5 ms. Setup (untimed)
//! asserts that the measured routines really leave 5,000 peers in the table.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use precall_protocol::caps::{Bandwidth, Camera, CpuClass, Size};
use precall_protocol::codec::encode_frame;
use precall_protocol::message::Presence;
use precall_protocol::sim::sample_caps;
use precall_protocol::{
    negotiate_pair, Capabilities, Client, ClientConfig, Codec, LoginWith, Password, ServerMessage,
    SessionId, Time, UserId, PROTOCOL_VERSION,
};

const CONTACTS: usize = 5_000;
const NOW: Time = Time(1_000);

fn contact(i: usize) -> UserId {
    UserId::new(format!("contact{i:05}@example.org")).unwrap()
}

/// The capabilities of contact `i`: codec lists, screen and camera sizes, frame rates,
/// CPU classes and bandwidths vary, and the uplink is unique per contact, so no two
/// contacts share a fingerprint.
fn contact_caps(i: usize) -> Capabilities {
    const CODECS: [&[&str]; 6] = [
        &["h264"],
        &["h264", "vp8"],
        &["vp8", "h264"],
        &["vp9", "h264", "vp8"],
        &["av1", "vp9", "h264"],
        &["vp8"],
    ];
    const WIDTHS: [u16; 5] = [640, 1280, 1920, 2560, 3840];
    const FPS: [u16; 4] = [15, 24, 30, 60];
    let list: Vec<Codec> = CODECS[i % CODECS.len()]
        .iter()
        .map(|c| Codec::new(*c).unwrap())
        .collect();
    let width = WIDTHS[i / 7 % WIDTHS.len()];
    let cam = Size {
        width,
        height: width / 16 * 9,
    };
    // Every 11th contact is on a phone held upright.
    let screen = if i % 11 == 0 {
        Size {
            width: cam.height,
            height: cam.width,
        }
    } else {
        cam
    };
    // Every 13th contact has no camera.
    let camera = (i % 13 != 0).then_some(Camera {
        max: cam,
        max_fps: FPS[i / 3 % FPS.len()],
    });
    let up = 200 + i as u32;
    Capabilities::new(
        list.clone(),
        list,
        screen,
        camera,
        CpuClass::ALL[i / 5 % CpuClass::ALL.len()],
        Bandwidth {
            up_kbps: up,
            down_kbps: 4 * up,
        },
    )
    .unwrap()
}

fn own_caps() -> Capabilities {
    sample_caps(&["h264", "vp8", "vp9"], 1920, 30)
}

/// A client that logged in and received `login_ok` listing the 5,000 contacts, with an
/// empty table.
fn logged_in() -> Client {
    let me = UserId::new("me@example.org").unwrap();
    let mut client = Client::new(ClientConfig::default());
    client
        .login(
            me.clone(),
            Password::new("pw").unwrap(),
            LoginWith::Capabilities(own_caps()),
            Time::ZERO,
        )
        .unwrap();
    client.handle_message(
        ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: me,
            session: SessionId(1),
            capabilities: own_caps(),
            contacts: (0..CONTACTS).map(contact).collect(),
            resume_token: None,
        },
        Time::ZERO,
    );
    while client.poll_transmit().is_some() {}
    while client.poll_event().is_some() {}
    assert_eq!(client.contacts().count(), CONTACTS);
    assert_eq!(client.peers().count(), 0);
    client
}

/// The 5,000 `online` pushes, one per contact, each with its own capabilities.
fn onlines() -> Vec<ServerMessage> {
    let msgs: Vec<ServerMessage> = (0..CONTACTS)
        .map(|i| {
            ServerMessage::Online(Presence {
                user: contact(i),
                session: SessionId(100 + i as u64),
                capabilities: contact_caps(i),
            })
        })
        .collect();
    let fingerprints: BTreeSet<_> = msgs
        .iter()
        .map(|m| match m {
            ServerMessage::Online(p) => p.capabilities.fingerprint(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(fingerprints.len(), CONTACTS, "distinct capabilities");
    msgs
}

/// The measured routine of `online_5000_decoded`.
fn take_decoded(mut client: Client, msgs: Vec<ServerMessage>) -> Client {
    for msg in msgs {
        client.handle_message(msg, NOW);
    }
    client
}

/// The measured routine of `online_5000_frames`.
fn take_frames(mut client: Client, bytes: &[u8]) -> Client {
    client.receive(bytes, NOW).unwrap();
    client
}

/// Asserts that `client` holds the full table, each entry negotiated from its own
/// capabilities and `own`.
fn assert_full_table(client: &Client, own: &Capabilities) {
    assert_eq!(client.peers().count(), CONTACTS, "table incomplete");
    for (endpoint, peer) in client.peers() {
        assert_eq!(
            peer.fingerprint,
            peer.capabilities.fingerprint(),
            "{endpoint}"
        );
        assert_eq!(
            peer.params,
            negotiate_pair(own, &peer.capabilities),
            "{endpoint}"
        );
    }
}

fn table(c: &mut Criterion) {
    let msgs = onlines();
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m).to_vec()).collect();
    let fresh = logged_in();

    // Untimed checks that each routine fills the table.
    let full = take_decoded(fresh.clone(), msgs.clone());
    assert_full_table(&full, &own_caps());
    let from_frames = take_frames(fresh.clone(), &bytes);
    assert_full_table(&from_frames, &own_caps());
    let new_caps = sample_caps(&["av1", "vp9", "h264"], 2560, 60);
    let mut updated = full.clone();
    updated.update_caps(new_caps.clone(), NOW).unwrap();
    assert_full_table(&updated, &new_caps);
    drop((from_frames, updated));

    let mut group = c.benchmark_group("client_table");
    group.throughput(Throughput::Elements(CONTACTS as u64));
    group.sample_size(20);
    group.bench_function("online_5000_decoded", |b| {
        b.iter_batched(
            || (fresh.clone(), msgs.clone()),
            |(client, msgs)| take_decoded(client, msgs),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("online_5000_frames", |b| {
        b.iter_batched(
            || fresh.clone(),
            |client| take_frames(client, black_box(&bytes)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("update_caps_5000", |b| {
        b.iter_batched(
            || (full.clone(), new_caps.clone()),
            |(mut client, caps)| {
                client.update_caps(caps, NOW).unwrap();
                client
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, table);
criterion_main!(benches);
