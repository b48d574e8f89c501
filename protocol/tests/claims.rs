//! One test per claim C1–C18 of patent CN103037195A (restated in the spec's
//! traceability table), plus the server core's answers to bad input.
//!
//! - C1–C9 (methods) run through the whole system: [`Sim`] wires the real server to
//!   real clients and an in-memory credential store and terminal registry; the tests
//!   inspect the frames the server sent (`sim.sent`) and the clients' tables, and end
//!   with `settle()`, which checks `INV-ONLINE-EXACT`.
//! - C10–C14 (terminal apparatus) drive one [`Client`] alone with hand-made server
//!   frames.
//! - C15–C18 (server apparatus) drive one [`Server`] alone with raw client frames and
//!   hand-written credential verdicts.

use std::time::Duration;

use bytes::Bytes;
use precall_protocol::caps::{Bandwidth, Camera, CpuClass, Size};
use precall_protocol::client::{CallState, ClientError, Status, Violation};
use precall_protocol::codec::{
    decode_message, encode_frame, encode_payload, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use precall_protocol::invariant;
use precall_protocol::message::{EndReason, Presence};
use precall_protocol::server::{AuthRequest, AuthVerdict, ServerError};
use precall_protocol::sim::{sample_caps, Directory, Sim};
use precall_protocol::{
    negotiate_pair, CallDigest, CallId, Capabilities, Client, ClientConfig, ClientEvent,
    ClientMessage, Codec, ConnId, Endpoint, ErrorCode, LoginWith, MediaDescription, ReqId,
    ResumeSecret, ResumeToken, Server, ServerConfig, ServerEvent, ServerMessage, SessionId,
    SetupPath, Time, UserId, PROTOCOL_VERSION,
};

mod common;
use common::*;

// ----- helpers used throughout this file ------------------------------------------------------------------

/// Alice's desktop.
fn caps_a() -> Capabilities {
    sample_caps(&["h264", "vp8"], 1920, 30)
}

/// Bob's phone (registered as `bob-phone`).
fn caps_b() -> Capabilities {
    sample_caps(&["vp8", "h264"], 1280, 30)
}

/// A third capability set, e.g. a second terminal or a changed one.
fn caps_c() -> Capabilities {
    sample_caps(&["av1", "h264"], 3840, 60)
}

/// A low-end terminal whose parameters differ visibly from the others'.
fn caps_low() -> Capabilities {
    let size = Size {
        width: 640,
        height: 360,
    };
    Capabilities::new(
        vec![Codec::new("h264").unwrap()],
        vec![Codec::new("h264").unwrap()],
        size,
        Some(Camera {
            max: size,
            max_fps: 15,
        }),
        CpuClass::Low,
        Bandwidth {
            up_kbps: 500,
            down_kbps: 1000,
        },
    )
    .unwrap()
}

fn presence(user: &str, session: u64, caps: Capabilities) -> ServerMessage {
    ServerMessage::Online(Presence {
        user: u(user),
        session: SessionId(session),
        capabilities: caps,
    })
}

fn json_of(frame: &[u8]) -> serde_json::Value {
    serde_json::from_slice(&frame[HEADER_LEN..]).unwrap()
}

/// A frame around an arbitrary payload.
fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

// ----- the simulated system (C1–C9) ------------------------------------------------------

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const DAVE: usize = 3;
const BOB2: usize = 4;
const ALICE2: usize = 5;

/// alice and bob list each other; carol lists bob but bob does not list carol (a
/// one-sided roster); dave lists nobody. `bob-phone` is registered to bob with
/// [`caps_b`], `alice-tablet` to alice with [`caps_c`]. Six terminals: alice, bob,
/// carol, dave, bob's second terminal, alice's second terminal.
fn world() -> Sim {
    world_with(ServerConfig::default())
}

/// A server configuration without resumable sessions.
fn no_resume() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.resume.grace = Duration::ZERO;
    config
}

fn world_with(config: ServerConfig) -> Sim {
    let mut d = Directory::default();
    for n in ["alice", "bob", "carol", "dave"] {
        d.add_user(&u(n), "pw");
    }
    d.befriend(&u("alice"), &u("bob"));
    lists(&mut d, &u("carol"), &u("bob"));
    d.register(&tid("bob-phone"), &u("bob"), caps_b());
    d.register(&tid("alice-tablet"), &u("alice"), caps_c());
    Sim::new(d, 6, config)
}

fn login_caps(sim: &mut Sim, i: usize, user: &str, caps: Capabilities) {
    sim.login(i, &u(user), "pw", LoginWith::Capabilities(caps));
}

fn conn(sim: &Sim, i: usize) -> ConnId {
    sim.terminals[i].conn.expect("terminal is connected")
}

/// Whether any frame since `mark`, to anyone, mentions `user`'s presence.
fn presence_of_sent_to(sim: &Sim, mark: usize, conn: ConnId, user: &str) -> bool {
    sent_since(sim, mark, conn).iter().any(|m| match m {
        ServerMessage::Online(p) => p.user.as_str() == user,
        ServerMessage::Offline(e) => e.user.as_str() == user,
        _ => false,
    })
}

fn has_error(msgs: &[ServerMessage], want: ErrorCode) -> bool {
    msgs.iter()
        .any(|m| matches!(m, ServerMessage::Error { code, .. } if *code == want))
}

#[test]
fn c01_online_push_carries_caps_and_sets_params() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, CAROL, "carol", caps_c());
    login_caps(&mut sim, DAVE, "dave", caps_c());
    sim.settle().unwrap();
    let (alice, carol, dave) = (conn(&sim, ALICE), conn(&sim, CAROL), conn(&sim, DAVE));
    assert_eq!(sim.client(ALICE).peers().count(), 0);
    let alice_before = sim.client(ALICE).clone();

    let mark = sim.sent.len();
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    let bob = sim.endpoint(BOB).unwrap();

    // The status update alice received is one `online` carrying bob's capabilities.
    let frames = frames_since(&sim, mark, alice);
    assert_eq!(frames.len(), 1, "{:?}", sent_since(&sim, mark, alice));
    assert_eq!(
        decode_server(&frames[0]),
        presence("bob", bob.session.0, caps_b())
    );

    // Delivered alone to alice's terminal, that one frame sets the call parameters
    // at once, without sending anything.
    let mut probe = alice_before;
    probe.receive(&frames[0], sim.now).unwrap();
    let expected = negotiate_pair(&caps_a(), &caps_b());
    let peer = probe
        .peer(&bob)
        .expect("bob is in the table after the push");
    assert_eq!(peer.capabilities, caps_b());
    assert_eq!(peer.fingerprint, caps_b().fingerprint());
    assert_eq!(peer.params, expected);
    assert!(peer.params.send.video().is_some(), "a real video call");
    assert!(probe.poll_transmit().is_none(), "no message is needed");
    assert_eq!(
        probe.poll_event(),
        Some(ClientEvent::PeerOnline {
            endpoint: bob.clone(),
            params: expected.clone(),
        })
    );
    // The running system holds the same.
    assert_eq!(sim.client(ALICE).peer(&bob).unwrap().params, expected);

    // Users who may not see bob (one-sided roster, no roster) got nothing about him.
    assert!(!presence_of_sent_to(&sim, mark, carol, "bob"));
    assert!(!presence_of_sent_to(&sim, mark, dave, "bob"));
    assert_eq!(sim.client(CAROL).peers().count(), 0);
    assert_eq!(sim.client(DAVE).peers().count(), 0);

    // Every offline-to-online change repeats it (0108): bob comes back on another
    // terminal with other capabilities, and the parameters follow them.
    let now = sim.now;
    sim.client_mut(BOB).logout(now).unwrap();
    sim.settle().unwrap();
    assert!(sim.client(ALICE).peer(&bob).is_none());
    login_caps(&mut sim, BOB, "bob", caps_low());
    sim.settle().unwrap();
    let bob_again = sim.endpoint(BOB).unwrap();
    assert_ne!(bob_again, bob, "a new session");
    let params = &sim.client(ALICE).peer(&bob_again).unwrap().params;
    assert_eq!(*params, negotiate_pair(&caps_a(), &caps_low()));
    assert_ne!(*params, expected);
    no_violations(&sim);
}

#[test]
fn c02_login_request_carries_capabilities() {
    let mut sim = world();
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    // The login request as it leaves alice's terminal.
    let frame = sim
        .client_mut(ALICE)
        .poll_transmit()
        .expect("login request");
    assert!(sim.client_mut(ALICE).poll_transmit().is_none());
    assert_eq!(
        decode_client(&frame),
        ClientMessage::Login {
            version: PROTOCOL_VERSION,
            user: u("alice"),
            password: pw("pw"),
            with: LoginWith::Capabilities(caps_a()),
        }
    );
    let json = json_of(&frame);
    assert_eq!(json["type"], "login");
    assert_eq!(json["password"], "pw", "authentication information");
    assert_eq!(
        json["with"]["capabilities"],
        serde_json::to_value(caps_a()).unwrap()
    );
    // Sent on its way, it is all the server needs: the session and bob's push carry
    // exactly these capabilities.
    let mark = sim.sent.len();
    sim.inject(ALICE, &frame);
    sim.settle().unwrap();
    let alice = sim.endpoint(ALICE).expect("logged in");
    let view = sim.server.sessions().find(|s| s.endpoint == alice).unwrap();
    assert_eq!(*view.capabilities, caps_a());
    assert_eq!(view.terminal, None);
    assert_eq!(
        sent_since(&sim, mark, conn(&sim, BOB)),
        vec![presence("alice", alice.session.0, caps_a())]
    );
    no_violations(&sim);
}

#[test]
fn c03_login_request_carries_terminal_id() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    sim.settle().unwrap();
    sim.login(
        BOB,
        &u("bob"),
        "pw",
        LoginWith::TerminalId(tid("bob-phone")),
    );
    let frame = sim.client_mut(BOB).poll_transmit().expect("login request");
    assert_eq!(
        decode_client(&frame),
        ClientMessage::Login {
            version: PROTOCOL_VERSION,
            user: u("bob"),
            password: pw("pw"),
            with: LoginWith::TerminalId(tid("bob-phone")),
        }
    );
    let json = json_of(&frame);
    assert_eq!(
        json["with"],
        serde_json::json!({"terminal_id": "bob-phone"})
    );
    let text = std::str::from_utf8(&frame[HEADER_LEN..]).unwrap();
    assert!(
        !text.contains("capabilities") && !text.contains("encode"),
        "the identifier replaces the capabilities: {text}"
    );
    let mark = sim.sent.len();
    sim.inject(BOB, &frame);
    sim.settle().unwrap();
    // The terminal learns its registered capabilities from login_ok, and its
    // contacts receive them.
    let bob = sim.endpoint(BOB).expect("logged in");
    assert_eq!(sim.client(BOB).capabilities(), Some(&caps_b()));
    assert_eq!(
        sent_since(&sim, mark, conn(&sim, ALICE)),
        vec![presence("bob", bob.session.0, caps_b())]
    );
    assert_eq!(
        sim.client(ALICE).peer(&bob).unwrap().params,
        negotiate_pair(&caps_a(), &caps_b())
    );
    no_violations(&sim);
}

#[test]
fn c04_offline_push_deletes_caps_and_params() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, BOB, "bob", caps_b());
    login_caps(&mut sim, BOB2, "bob", caps_c());
    sim.settle().unwrap();
    let (bob1, bob2) = (sim.endpoint(BOB).unwrap(), sim.endpoint(BOB2).unwrap());
    let alice = conn(&sim, ALICE);
    assert_eq!(sim.client(ALICE).peers().count(), 2);
    let kept = sim.client(ALICE).peer(&bob2).unwrap().clone();
    let alice_before = sim.client(ALICE).clone();

    let mark = sim.sent.len();
    let now = sim.now;
    sim.client_mut(BOB).logout(now).unwrap();
    sim.settle().unwrap();
    let frames = frames_since(&sim, mark, alice);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        decode_server(&frames[0]),
        ServerMessage::Offline(bob1.clone())
    );

    // That frame alone deletes the capabilities and parameters of that terminal, and
    // only of that terminal.
    let mut probe = alice_before;
    probe.receive(&frames[0], now).unwrap();
    assert!(probe.peer(&bob1).is_none());
    assert_eq!(probe.peer(&bob2), Some(&kept));
    assert_eq!(
        probe.poll_event(),
        Some(ClientEvent::PeerOffline {
            endpoint: bob1.clone()
        })
    );
    assert!(probe.poll_transmit().is_none());
    // A repeated offline changes nothing.
    probe.receive(&frames[0], now).unwrap();
    assert_eq!(probe.peers().count(), 1);
    assert_eq!(probe.poll_event(), None);

    assert!(sim.client(ALICE).peer(&bob1).is_none());
    assert_eq!(sim.client(ALICE).peer(&bob2), Some(&kept));
    no_violations(&sim);
}

#[test]
fn c05_own_logout_deletes_everything() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, BOB, "bob", caps_b());
    login_caps(&mut sim, BOB2, "bob", caps_c());
    sim.settle().unwrap();
    let bob = sim.endpoint(BOB).unwrap();
    // An established call, so that there is a call to delete as well.
    let now = sim.now;
    sim.client_mut(ALICE).place_call(&bob, now).unwrap();
    sim.settle().unwrap();
    let call = sim.terminals[BOB]
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .expect("incoming call");
    sim.client_mut(BOB).answer(call, true, now).unwrap();
    sim.settle().unwrap();
    let c = sim.client(ALICE);
    assert_eq!(c.peers().count(), 2);
    assert_eq!(c.calls().count(), 1);
    assert!(c.contacts().count() > 0);

    // The logout trigger deletes everything at once, before the server answers.
    sim.client_mut(ALICE).logout(now).unwrap();
    let c = sim.client(ALICE);
    assert_eq!(c.status(), Status::LoggingOut);
    assert_eq!(c.peers().count(), 0);
    assert_eq!(c.calls().count(), 0);
    assert_eq!(c.contacts().count(), 0);
    assert_eq!(c.capabilities(), None);
    assert_eq!(c.endpoint(), None);
    invariant::logout_empty(c).unwrap();

    // A push still in flight is not stored.
    let mut late = sim.client(ALICE).clone();
    late.receive(&encode_frame(&presence("bob", 99, caps_c())), now)
        .unwrap();
    assert_eq!(late.peers().count(), 0);

    sim.settle().unwrap();
    assert_eq!(sim.client(ALICE).status(), Status::Idle);
    assert_eq!(
        sim.terminals[ALICE].events.last(),
        Some(&ClientEvent::LoggedOut)
    );
    invariant::logout_empty(sim.client(ALICE)).unwrap();
    // The other side learns the call ended and alice left.
    assert!(sim.terminals[BOB].events.contains(&ClientEvent::CallEnded {
        call,
        reason: EndReason::PeerGone
    }));
    assert_eq!(sim.client(BOB).peers().count(), 0);
    assert_eq!(sim.client(BOB).calls().count(), 0);

    // A connection that dies is not a logout: the session is detached and resumable,
    // the table kept (spec "Resumable sessions"); giving it up deletes everything.
    login_caps(&mut sim, ALICE, "alice", caps_a());
    sim.settle().unwrap();
    assert_eq!(sim.client(ALICE).peers().count(), 2);
    sim.drop_connection(ALICE);
    invariant::logout_empty(sim.client(ALICE)).unwrap();
    assert_eq!(sim.client(ALICE).status(), Status::Detached);
    assert_eq!(sim.client(ALICE).peers().count(), 2);
    let now = sim.now;
    sim.client_mut(ALICE).abandon(now);
    invariant::logout_empty(sim.client(ALICE)).unwrap();
    assert_eq!(sim.client(ALICE).peers().count(), 0);
    sim.settle().unwrap();
    no_violations(&sim);

    // With resumption disabled, a dying connection deletes everything at once.
    let mut sim = world_with(no_resume());
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    assert_eq!(sim.client(ALICE).peers().count(), 1);
    sim.drop_connection(ALICE);
    invariant::logout_empty(sim.client(ALICE)).unwrap();
    assert_eq!(sim.client(ALICE).status(), Status::Idle);
    assert_eq!(sim.client(ALICE).peers().count(), 0);
}

#[test]
fn c06_server_pushes_online_with_caps_to_entitled_contacts() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, ALICE2, "alice", caps_c());
    login_caps(&mut sim, CAROL, "carol", caps_c());
    login_caps(&mut sim, DAVE, "dave", caps_c());
    sim.settle().unwrap();
    let (a1, a2, carol, dave) = (
        conn(&sim, ALICE),
        conn(&sim, ALICE2),
        conn(&sim, CAROL),
        conn(&sim, DAVE),
    );
    let mark = sim.sent.len();
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    let bob = sim.endpoint(BOB).unwrap();
    let push = presence("bob", bob.session.0, caps_b());
    // Every terminal of every user who may see bob gets the push with his
    // capabilities, byte for byte the same.
    let f1 = frames_since(&sim, mark, a1);
    let f2 = frames_since(&sim, mark, a2);
    assert_eq!(f1.len(), 1);
    assert_eq!(decode_server(&f1[0]), push);
    assert_eq!(f1, f2);
    // Carol lists bob but bob does not list carol; dave lists nobody: nothing.
    assert!(sent_since(&sim, mark, carol).is_empty());
    assert!(sent_since(&sim, mark, dave).is_empty());
    // Bob's own snapshot shows alice's two terminals, not carol.
    let snapshot = sent_since(&sim, mark, conn(&sim, BOB));
    let online: Vec<&str> = snapshot
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Online(p) => Some(p.user.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(online, ["alice", "alice"]);
    assert_eq!(snapshot.last(), Some(&ServerMessage::Synced {}));
    // A capability change while online is pushed the same way.
    let mark = sim.sent.len();
    let now = sim.now;
    sim.client_mut(BOB).update_caps(caps_low(), now).unwrap();
    sim.settle().unwrap();
    let push = presence("bob", bob.session.0, caps_low());
    assert_eq!(sent_since(&sim, mark, a1), vec![push.clone()]);
    assert_eq!(sent_since(&sim, mark, a2), vec![push]);
    assert!(sent_since(&sim, mark, carol).is_empty());
    assert_eq!(
        sim.client(ALICE).peer(&bob).unwrap().params,
        negotiate_pair(&caps_a(), &caps_low())
    );
    // The other direction of the one-sided roster: carol (who lists bob) comes
    // online again; bob, who does not list her, is not told.
    sim.drop_connection(CAROL);
    sim.settle().unwrap();
    let mark = sim.sent.len();
    login_caps(&mut sim, CAROL, "carol", caps_c());
    sim.settle().unwrap();
    assert!(sent_since(&sim, mark, conn(&sim, BOB)).is_empty());
    assert!(!presence_of_sent_to(&sim, mark, conn(&sim, CAROL), "bob"));
    assert_eq!(
        sim.client(BOB).peers().count(),
        2,
        "alice's two terminals only"
    );
    no_violations(&sim);
}

#[test]
fn c07_server_accepts_login_with_capabilities() {
    let mut sim = world();
    sim.hold_auth = true;
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.run().unwrap();
    assert!(sim.release_auth());
    sim.settle().unwrap();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    sim.run().unwrap();
    let alice = conn(&sim, ALICE);
    // The server received the login and asks for a credential check of it.
    let req = sim.pending_auth.front().expect("credential check").clone();
    assert_eq!((req.user.as_str(), req.password.expose()), ("alice", "pw"));
    assert_eq!(req.terminal, None);
    assert_eq!(req.conn, alice);
    assert!(
        sent_since(&sim, 0, alice).is_empty(),
        "nothing before the verdict"
    );
    let mark = sim.sent.len();
    assert!(sim.release_auth());
    sim.settle().unwrap();
    let to_alice = sent_since(&sim, mark, alice);
    let me = sim.endpoint(ALICE).unwrap();
    assert!(matches!(
        &to_alice[0],
        ServerMessage::LoginOk { user, session, capabilities, .. }
            if *user == u("alice") && *session == me.session && *capabilities == caps_a()
    ));
    let view = sim.server.sessions().find(|s| s.endpoint == me).unwrap();
    assert_eq!(*view.capabilities, caps_a());
    // Wrong credentials are refused and the connection closes.
    let mark = sim.sent.len();
    sim.login(
        CAROL,
        &u("carol"),
        "wrong",
        LoginWith::Capabilities(caps_c()),
    );
    sim.run().unwrap();
    let carol = conn(&sim, CAROL);
    assert!(sim.release_auth());
    sim.settle().unwrap();
    assert_eq!(
        sent_since(&sim, mark, carol),
        vec![ServerMessage::error(ErrorCode::BadCredentials)]
    );
    assert_eq!(sim.terminals[CAROL].conn, None, "closed");
    assert_eq!(sim.client(CAROL).status(), Status::Idle);
    assert!(sim.server.sessions().all(|s| s.endpoint.user != u("carol")));
    no_violations(&sim);
}

#[test]
fn c08_server_looks_up_registered_terminal_caps() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    sim.settle().unwrap();
    let alice = conn(&sim, ALICE);
    let mark = sim.sent.len();
    sim.login(
        BOB,
        &u("bob"),
        "pw",
        LoginWith::TerminalId(tid("bob-phone")),
    );
    sim.settle().unwrap();
    let bob = sim.endpoint(BOB).unwrap();
    let view = sim.server.sessions().find(|s| s.endpoint == bob).unwrap();
    assert_eq!(*view.capabilities, caps_b(), "the registered capabilities");
    assert_eq!(view.terminal, Some(&tid("bob-phone")));
    assert_eq!(
        sent_since(&sim, mark, alice),
        vec![presence("bob", bob.session.0, caps_b())]
    );

    // An identifier nobody registered, and one registered to somebody else, are both
    // refused with unknown_terminal, and the connection closes.
    for id in ["no-such-terminal", "alice-tablet"] {
        let mark = sim.sent.len();
        let sessions = sim.server.sessions().count();
        sim.login(BOB2, &u("bob"), "pw", LoginWith::TerminalId(tid(id)));
        let c = conn(&sim, BOB2);
        sim.run().unwrap();
        assert_eq!(
            sent_since(&sim, mark, c),
            vec![ServerMessage::error(ErrorCode::UnknownTerminal)],
            "{id}"
        );
        sim.settle().unwrap();
        assert_eq!(sim.terminals[BOB2].conn, None, "{id}: closed");
        assert_eq!(sim.client(BOB2).status(), Status::Idle);
        assert_eq!(sim.server.sessions().count(), sessions, "{id}: no session");
        assert!(sent_since(&sim, mark, alice).is_empty(), "{id}: no push");
    }
    no_violations(&sim);
}

#[test]
fn c09_server_pushes_offline_on_logout_and_on_drop() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, CAROL, "carol", caps_c());
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    let (alice, carol) = (conn(&sim, ALICE), conn(&sim, CAROL));

    // Logout.
    let bob = sim.endpoint(BOB).unwrap();
    let mark = sim.sent.len();
    let now = sim.now;
    sim.client_mut(BOB).logout(now).unwrap();
    sim.settle().unwrap();
    assert_eq!(
        sent_since(&sim, mark, alice),
        vec![ServerMessage::Offline(bob.clone())]
    );
    assert!(
        sent_since(&sim, mark, carol).is_empty(),
        "carol never saw bob"
    );
    assert!(sim.client(ALICE).peer(&bob).is_none());

    // A connection that dies without a logout: bob is offline once his session's
    // resume grace runs out, not before (spec "Resumable sessions").
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    let bob = sim.endpoint(BOB).unwrap();
    assert!(sim.client(ALICE).peer(&bob).is_some());
    let mark = sim.sent.len();
    sim.drop_connection(BOB);
    sim.settle().unwrap();
    assert!(sent_since(&sim, mark, alice).is_empty(), "still resumable");
    let grace = sim.server.config().resume.grace;
    let step = Duration::from_secs(5);
    // In steps, so that the others' pings keep their own sessions alive.
    for _ in 1..grace.as_secs() / step.as_secs() {
        sim.advance(step);
        sim.settle().unwrap();
    }
    sim.advance(step - Duration::from_millis(1));
    sim.settle().unwrap();
    let offline = ServerMessage::Offline(bob.clone());
    assert!(
        !sent_since(&sim, mark, alice).contains(&offline),
        "resumable"
    );
    sim.advance(Duration::from_millis(1));
    sim.settle().unwrap();
    let to_alice = sent_since(&sim, mark, alice);
    assert_eq!(to_alice.iter().filter(|m| **m == offline).count(), 1);
    assert!(to_alice
        .iter()
        .all(|m| *m == offline || *m == ServerMessage::Pong {}));
    assert!(sent_since(&sim, mark, carol)
        .iter()
        .all(|m| *m == ServerMessage::Pong {}));
    assert!(sim.client(ALICE).peer(&bob).is_none());
    no_violations(&sim);

    // With resumption disabled, at once.
    let mut sim = world_with(no_resume());
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    let (alice, bob) = (conn(&sim, ALICE), sim.endpoint(BOB).unwrap());
    let mark = sim.sent.len();
    sim.drop_connection(BOB);
    sim.settle().unwrap();
    assert_eq!(
        sent_since(&sim, mark, alice),
        vec![ServerMessage::Offline(bob.clone())]
    );
    no_violations(&sim);
}

// ----- the terminal apparatus alone (C10–C14) --------------------------------------------

const T0: Time = Time(0);

fn feed(c: &mut Client, msg: &ServerMessage) {
    c.receive(&encode_frame(msg), T0).expect("framing is fine");
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn transmitted(c: &mut Client) -> Vec<ClientMessage> {
    std::iter::from_fn(|| c.poll_transmit())
        .map(|f| decode_client(&f))
        .collect()
}

/// A client logged in as `user` (session 1) with `own` capabilities and `contacts`.
fn client_online(user: &str, own: Capabilities, contacts: &[&str]) -> Client {
    let mut c = Client::new(ClientConfig::default());
    c.login(u(user), pw("pw"), LoginWith::Capabilities(own.clone()), T0)
        .unwrap();
    transmitted(&mut c);
    feed(
        &mut c,
        &ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: u(user),
            session: SessionId(1),
            capabilities: own,
            contacts: users(contacts),
            resume_token: None,
        },
    );
    feed(&mut c, &ServerMessage::Synced {});
    assert_eq!(
        events(&mut c),
        [
            ClientEvent::LoggedIn {
                session: SessionId(1)
            },
            ClientEvent::Synced
        ]
    );
    c
}

#[test]
fn c10_terminal_apparatus_sets_params_on_online_push() {
    let mut c = client_online("alice", caps_a(), &["bob", "carol"]);
    let bob = ep("bob", 2);
    feed(&mut c, &presence("bob", 2, caps_b()));
    let params = negotiate_pair(&caps_a(), &caps_b());
    assert_eq!(
        events(&mut c),
        [ClientEvent::PeerOnline {
            endpoint: bob.clone(),
            params: params.clone()
        }]
    );
    let peer = c.peer(&bob).unwrap();
    assert_eq!(
        (&peer.capabilities, peer.fingerprint, &peer.params),
        (&caps_b(), caps_b().fingerprint(), &params)
    );
    assert!(transmitted(&mut c).is_empty(), "nothing sent to set them");

    // Every terminal that comes online gets its own entry.
    feed(&mut c, &presence("bob", 3, caps_low()));
    assert_eq!(c.peers().count(), 2);
    assert_eq!(
        c.peer(&ep("bob", 3)).unwrap().params,
        negotiate_pair(&caps_a(), &caps_low())
    );
    // A new push for the same terminal replaces its capabilities and parameters.
    feed(&mut c, &presence("bob", 2, caps_c()));
    let params_c = negotiate_pair(&caps_a(), &caps_c());
    assert_eq!(
        events(&mut c),
        [
            ClientEvent::PeerOnline {
                endpoint: ep("bob", 3),
                params: negotiate_pair(&caps_a(), &caps_low())
            },
            ClientEvent::PeerUpdated {
                endpoint: bob.clone(),
                params: params_c.clone()
            }
        ]
    );
    assert_eq!(c.peer(&bob).unwrap().params, params_c);

    // A call then uses the pre-computed parameters: the request carries two
    // fingerprints and no capabilities.
    let req = c.place_call(&bob, T0).unwrap();
    assert_eq!(
        transmitted(&mut c),
        [ClientMessage::Call {
            req,
            to: bob.clone(),
            digest: CallDigest {
                caller: caps_a().fingerprint(),
                callee: caps_c().fingerprint()
            },
            capabilities: None,
            media: None
        }]
    );
    feed(
        &mut c,
        &ServerMessage::CallRinging {
            req,
            call: CallId(1),
        },
    );
    let (_, call) = c.calls().next().unwrap();
    assert_eq!(call.params.as_ref(), Some(&params_c));

    // Refused: presence of a user who is not a contact, and of oneself.
    let before: Vec<_> = c.peers().map(|(e, p)| (e.clone(), p.clone())).collect();
    events(&mut c);
    feed(&mut c, &presence("dave", 4, caps_c()));
    feed(&mut c, &presence("alice", 5, caps_c()));
    assert_eq!(
        events(&mut c),
        [
            ClientEvent::Violation(Violation::NotAContact(u("dave"))),
            ClientEvent::Violation(Violation::NotAContact(u("alice")))
        ]
    );
    let after: Vec<_> = c.peers().map(|(e, p)| (e.clone(), p.clone())).collect();
    assert_eq!(after, before, "nothing stored");
    // And before login, nothing is stored either.
    let mut idle = Client::new(ClientConfig::default());
    feed(&mut idle, &presence("bob", 2, caps_b()));
    assert_eq!(
        events(&mut idle),
        [ClientEvent::Violation(Violation::NotOnline("online"))]
    );
    assert_eq!(idle.peers().count(), 0);
}

#[test]
fn c11_terminal_apparatus_sends_caps_in_login() {
    let mut c = Client::new(ClientConfig::default());
    c.login(
        u("alice"),
        pw("s3cret"),
        LoginWith::Capabilities(caps_a()),
        T0,
    )
    .unwrap();
    assert_eq!(c.status(), Status::LoggingIn);
    let frames: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        decode_client(&frames[0]),
        ClientMessage::Login {
            version: PROTOCOL_VERSION,
            user: u("alice"),
            password: pw("s3cret"),
            with: LoginWith::Capabilities(caps_a()),
        }
    );
    assert_eq!(
        json_of(&frames[0])["with"]["capabilities"],
        serde_json::to_value(caps_a()).unwrap()
    );
    // A second login while one is pending is refused and sends nothing.
    assert_eq!(
        c.login(u("alice"), pw("x"), LoginWith::Capabilities(caps_b()), T0),
        Err(ClientError::AlreadyLoggedIn)
    );
    assert!(c.poll_transmit().is_none());
    // The session runs on the capabilities it announced.
    feed(
        &mut c,
        &ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: u("alice"),
            session: SessionId(1),
            capabilities: caps_a(),
            contacts: users(&["bob"]),
            resume_token: None,
        },
    );
    assert_eq!(c.capabilities(), Some(&caps_a()));
}

#[test]
fn c12_terminal_apparatus_sends_terminal_id_in_login() {
    let mut c = Client::new(ClientConfig::default());
    c.login(
        u("bob"),
        pw("pw"),
        LoginWith::TerminalId(tid("bob-phone")),
        T0,
    )
    .unwrap();
    let frames: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        decode_client(&frames[0]),
        ClientMessage::Login {
            version: PROTOCOL_VERSION,
            user: u("bob"),
            password: pw("pw"),
            with: LoginWith::TerminalId(tid("bob-phone")),
        }
    );
    assert_eq!(
        json_of(&frames[0])["with"],
        serde_json::json!({"terminal_id": "bob-phone"})
    );
    // The registered capabilities come back in login_ok, and the parameters are
    // computed from them.
    feed(
        &mut c,
        &ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: u("bob"),
            session: SessionId(2),
            capabilities: caps_b(),
            contacts: users(&["alice"]),
            resume_token: None,
        },
    );
    assert_eq!(c.capabilities(), Some(&caps_b()));
    feed(&mut c, &presence("alice", 1, caps_a()));
    assert_eq!(
        c.peer(&ep("alice", 1)).unwrap().params,
        negotiate_pair(&caps_b(), &caps_a())
    );

    // Refused identifier: the session never starts and nothing is held.
    let mut c = Client::new(ClientConfig::default());
    c.login(u("bob"), pw("pw"), LoginWith::TerminalId(tid("ghost")), T0)
        .unwrap();
    transmitted(&mut c);
    feed(&mut c, &ServerMessage::error(ErrorCode::UnknownTerminal));
    assert_eq!(c.status(), Status::Idle);
    assert_eq!(
        events(&mut c),
        [
            ClientEvent::ServerError {
                code: ErrorCode::UnknownTerminal,
                req: None,
                call: None,
                retry_after: None,
                detail: String::new(),
            },
            ClientEvent::LoggedOut
        ]
    );
    invariant::logout_empty(&c).unwrap();
}

#[test]
fn c13_terminal_apparatus_deletes_on_offline_push() {
    let mut c = client_online("alice", caps_a(), &["bob", "carol"]);
    feed(&mut c, &presence("bob", 2, caps_b()));
    feed(&mut c, &presence("bob", 3, caps_c()));
    feed(&mut c, &presence("carol", 4, caps_low()));
    events(&mut c);
    let bob3 = c.peer(&ep("bob", 3)).unwrap().clone();
    let carol = c.peer(&ep("carol", 4)).unwrap().clone();

    feed(&mut c, &ServerMessage::Offline(ep("bob", 2)));
    assert_eq!(
        events(&mut c),
        [ClientEvent::PeerOffline {
            endpoint: ep("bob", 2)
        }]
    );
    assert!(
        c.peer(&ep("bob", 2)).is_none(),
        "capabilities and params gone"
    );
    assert_eq!(
        c.peer(&ep("bob", 3)),
        Some(&bob3),
        "the other terminal stays"
    );
    assert_eq!(c.peer(&ep("carol", 4)), Some(&carol));
    assert!(transmitted(&mut c).is_empty());
    // An offline for a terminal not held changes nothing and reports nothing.
    feed(&mut c, &ServerMessage::Offline(ep("bob", 2)));
    feed(&mut c, &ServerMessage::Offline(ep("dave", 9)));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.peers().count(), 2);
    // Each online/offline change repeats it (0109).
    feed(&mut c, &presence("bob", 5, caps_b()));
    feed(&mut c, &ServerMessage::Offline(ep("bob", 5)));
    assert!(c.peer(&ep("bob", 5)).is_none());
    assert_eq!(c.peers().count(), 2);
    invariant::params_fresh(&c).unwrap();
}

#[test]
fn c14_terminal_apparatus_deletes_all_on_logout() {
    let mut c = client_online("alice", caps_a(), &["bob", "carol"]);
    feed(&mut c, &presence("bob", 2, caps_b()));
    feed(&mut c, &presence("carol", 3, caps_c()));
    let req = c.place_call(&ep("bob", 2), T0).unwrap();
    feed(
        &mut c,
        &ServerMessage::CallRinging {
            req,
            call: CallId(1),
        },
    );
    feed(
        &mut c,
        &ServerMessage::CallAccepted {
            call: CallId(1),
            capabilities: None,
            media: None,
        },
    );
    assert_eq!(c.calls().next().unwrap().1.state, CallState::Established);
    // A second call still dialing.
    let req2 = c.place_call(&ep("carol", 3), T0).unwrap();
    transmitted(&mut c);
    events(&mut c);
    assert_eq!(c.peers().count(), 2);
    assert_eq!(c.dialing(), 1);

    c.logout(T0).unwrap();
    assert_eq!(transmitted(&mut c), [ClientMessage::Logout {}]);
    assert_eq!(c.status(), Status::LoggingOut);
    assert_eq!(c.peers().count(), 0, "all received capabilities and params");
    assert_eq!(c.calls().count(), 0);
    assert_eq!(c.dialing(), 0);
    assert_eq!(c.contacts().count(), 0);
    assert_eq!(c.capabilities(), None);
    assert!(!c.is_synced());
    invariant::logout_empty(&c).unwrap();
    // Pushes still in flight are dropped, not stored.
    feed(&mut c, &presence("bob", 4, caps_b()));
    feed(
        &mut c,
        &ServerMessage::CallRinging {
            req: req2,
            call: CallId(2),
        },
    );
    assert_eq!(c.peers().count() + c.calls().count(), 0);
    feed(&mut c, &ServerMessage::LoggedOut {});
    assert_eq!(c.status(), Status::Idle);
    assert_eq!(events(&mut c), [ClientEvent::LoggedOut]);
    invariant::logout_empty(&c).unwrap();
    assert_eq!(c.logout(T0), Err(ClientError::NotLoggedIn));

    // Losing the connection deletes everything too.
    let mut c = client_online("alice", caps_a(), &["bob"]);
    feed(&mut c, &presence("bob", 2, caps_b()));
    c.connection_closed(T0);
    assert_eq!(c.status(), Status::Idle);
    invariant::logout_empty(&c).unwrap();
    assert_eq!(c.peers().count(), 0);
}

// ----- the server apparatus alone (C15–C18) ----------------------------------------------

fn closed(ev: &[ServerEvent], conn: ConnId) -> bool {
    ev.iter()
        .any(|e| matches!(e, ServerEvent::Close { conn: c } if *c == conn))
}

/// Connects `conn`, sends a login and returns the credential check it caused.
fn begin_login(
    s: &mut Server,
    conn: ConnId,
    user: &str,
    with: LoginWith,
    now: Time,
) -> AuthRequest {
    s.connect(conn, now).unwrap();
    s.receive(conn, &login_frame(user, "pw", with), now);
    match drain(s).as_slice() {
        [ServerEvent::Authenticate(req)] => req.clone(),
        other => panic!("expected one credential check, got {other:?}"),
    }
}

/// Logs `user` in on `conn` with `caps` and `contacts`; returns the session and the
/// events that followed the verdict.
fn log_in(
    s: &mut Server,
    conn: ConnId,
    user: &str,
    caps: Capabilities,
    contacts: &[&str],
    now: Time,
) -> (SessionId, Vec<ServerEvent>) {
    let req = begin_login(s, conn, user, LoginWith::Capabilities(caps), now);
    s.complete_auth(req.ticket, accepted(contacts, None), now)
        .unwrap();
    let ev = drain(s);
    (s.session_of(conn).expect("logged in"), ev)
}

/// The connection the bad-input tests send from.
const C9: ConnId = ConnId(9);

#[test]
fn c15_server_apparatus_pushes_online_with_caps() {
    let mut s = Server::new(ServerConfig::default());
    let (sa, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    log_in(&mut s, C3, "carol", caps_c(), &["bob"], T0); // bob does not list carol
    log_in(&mut s, C4, "dave", caps_c(), &[], T0);
    let (sb, ev) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    let push = presence("bob", sb.0, caps_b());
    assert_eq!(msgs_to(&ev, C1), vec![push.clone()]);
    let frame = ev.iter().find_map(|e| match e {
        ServerEvent::Transmit { conn, frame } if *conn == C1 => Some(frame.clone()),
        _ => None,
    });
    assert_eq!(frame, Some(encode_frame(&push)), "canonical encoding");
    assert!(msgs_to(&ev, C3).is_empty(), "one-sided roster: nothing");
    assert!(msgs_to(&ev, C4).is_empty());
    // Bob's login: his snapshot holds alice with her capabilities, not carol.
    let to_bob = msgs_to(&ev, C2);
    assert!(matches!(&to_bob[0], ServerMessage::LoginOk { session, .. } if *session == sb));
    assert_eq!(
        to_bob[1..],
        [presence("alice", sa.0, caps_a()), ServerMessage::Synced {}]
    );
    // A capability change while online is pushed to the same watchers.
    let update = encode_frame(&ClientMessage::UpdateCaps {
        req: ReqId(1),
        capabilities: caps_low(),
    });
    s.receive(C2, &update, T0);
    let ev = drain(&mut s);
    assert_eq!(msgs_to(&ev, C1), vec![presence("bob", sb.0, caps_low())]);
    assert_eq!(
        msgs_to(&ev, C2),
        vec![ServerMessage::CapsAck { req: ReqId(1) }]
    );
    assert!(msgs_to(&ev, C3).is_empty() && msgs_to(&ev, C4).is_empty());
    // A user who lists bob, logging in after him, is not pushed to bob, and does not
    // see him either.
    let (_, ev) = log_in(&mut s, C5, "erin", caps_c(), &["bob"], T0);
    assert!(msgs_to(&ev, C2).is_empty(), "bob does not list erin");
    assert!(msgs_to(&ev, C1).is_empty());
    let to_erin = msgs_to(&ev, C5);
    assert_eq!(to_erin.len(), 2, "login_ok and synced only: {to_erin:?}");
    assert_eq!(to_erin[1], ServerMessage::Synced {});
}

#[test]
fn c16_server_apparatus_receives_login_with_caps() {
    let mut s = Server::new(ServerConfig::default());
    s.connect(C1, T0).unwrap();
    s.receive(
        C1,
        &login_frame("alice", "pw", LoginWith::Capabilities(caps_a())),
        T0,
    );
    let ev = drain(&mut s);
    let [ServerEvent::Authenticate(req)] = ev.as_slice() else {
        panic!("expected only a credential check: {ev:?}")
    };
    assert_eq!(req.conn, C1);
    assert_eq!(req.user, u("alice"));
    assert_eq!(req.password.expose(), "pw");
    assert_eq!(req.terminal, None, "capabilities came with the login");
    let ticket = req.ticket;
    assert!(s.session_of(C1).is_none());

    // The check is asynchronous: while it runs, other connections are served.
    let (sb, ev) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    assert!(matches!(msgs_to(&ev, C2)[0], ServerMessage::LoginOk { .. }));
    assert!(
        msgs_to(&ev, C1).is_empty(),
        "nothing for alice before her verdict"
    );

    // Even if the store had capabilities registered, the ones in the login count.
    s.complete_auth(ticket, accepted(&["bob"], Some(caps_low())), T0)
        .unwrap();
    let ev = drain(&mut s);
    let sa = s.session_of(C1).expect("alice logged in");
    let to_alice = msgs_to(&ev, C1);
    assert_eq!(
        to_alice,
        vec![
            ServerMessage::LoginOk {
                version: PROTOCOL_VERSION,
                user: u("alice"),
                session: sa,
                capabilities: caps_a(),
                contacts: users(&["bob"]),
                resume_token: Some(ResumeToken::derive(&ResumeSecret::default(), sa)),
            },
            presence("bob", sb.0, caps_b()),
            ServerMessage::Synced {},
        ]
    );
    assert_eq!(msgs_to(&ev, C2), vec![presence("alice", sa.0, caps_a())]);
    let view = s.sessions().find(|v| v.conn == Some(C1)).unwrap();
    assert_eq!(*view.capabilities, caps_a());
    // A verdict is used once.
    assert_eq!(
        s.complete_auth(ticket, accepted(&[], None), T0),
        Err(ServerError::UnknownTicket(ticket))
    );

    // Invalid capabilities in a login are refused before any credential check.
    s.connect(C3, T0).unwrap();
    let mut bad = serde_json::to_value(ClientMessage::Login {
        version: PROTOCOL_VERSION,
        user: u("carol"),
        password: pw("pw"),
        with: LoginWith::Capabilities(caps_c()),
    })
    .unwrap();
    bad["with"]["capabilities"]["camera"]["max_fps"] = 0.into();
    s.receive(C3, &raw_frame(&serde_json::to_vec(&bad).unwrap()), T0);
    let ev = drain(&mut s);
    assert!(has_error(&msgs_to(&ev, C3), ErrorCode::Malformed));
    assert!(closed(&ev, C3));
    assert!(!ev.iter().any(|e| matches!(e, ServerEvent::Authenticate(_))));
    assert_alive(&mut s, C1, T0);
}

#[test]
fn c17_server_apparatus_resolves_terminal_id() {
    let mut s = Server::new(ServerConfig::default());
    let (_, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    let req = begin_login(
        &mut s,
        C2,
        "bob",
        LoginWith::TerminalId(tid("bob-phone")),
        T0,
    );
    assert_eq!(
        req.terminal,
        Some(tid("bob-phone")),
        "the embedder must look it up"
    );
    s.complete_auth(req.ticket, accepted(&["alice"], Some(caps_b())), T0)
        .unwrap();
    let ev = drain(&mut s);
    let sb = s.session_of(C2).expect("bob logged in");
    assert!(matches!(
        &msgs_to(&ev, C2)[0],
        ServerMessage::LoginOk { capabilities, .. } if *capabilities == caps_b()
    ));
    assert_eq!(msgs_to(&ev, C1), vec![presence("bob", sb.0, caps_b())]);
    let view = s.sessions().find(|v| v.conn == Some(C2)).unwrap();
    assert_eq!(*view.capabilities, caps_b());
    assert_eq!(view.terminal, Some(&tid("bob-phone")));

    // No capabilities registered for that identifier and user: unknown_terminal, the
    // connection closes, no session starts, nobody is told.
    let req = begin_login(&mut s, C3, "bob", LoginWith::TerminalId(tid("ghost")), T0);
    s.complete_auth(req.ticket, accepted(&["alice"], None), T0)
        .unwrap();
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C3),
        vec![ServerMessage::error(ErrorCode::UnknownTerminal)]
    );
    assert!(closed(&ev, C3));
    assert_eq!(s.session_of(C3), None);
    assert!(msgs_to(&ev, C1).is_empty());
    assert_eq!(s.sessions().count(), 2);
    assert_alive(&mut s, C1, T0);
    assert_alive(&mut s, C2, T0);
}

#[test]
fn c18_server_apparatus_pushes_offline() {
    let mut config = ServerConfig::default();
    // Longer than the resume grace, so the watchers' connections outlive it here.
    config.idle_timeout = config.resume.grace * 2;
    let idle = config.idle_timeout;
    let mut s = Server::new(config);
    let (sa, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    log_in(&mut s, C3, "carol", caps_c(), &["bob"], T0);

    // On logout.
    let (sb, _) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    s.receive(C2, &encode_frame(&ClientMessage::Logout {}), T0);
    let ev = drain(&mut s);
    assert_eq!(msgs_to(&ev, C2), vec![ServerMessage::LoggedOut {}]);
    assert!(closed(&ev, C2));
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::Offline(ep("bob", sb.0))]
    );
    assert!(msgs_to(&ev, C3).is_empty(), "carol may not see bob");

    // On a dropped connection, once the resume grace is over.
    let grace = s.config().resume.grace;
    let (sb, _) = log_in(&mut s, C4, "bob", caps_b(), &["alice"], T0);
    s.connection_closed(C4, T0);
    assert!(
        msgs_to(&drain(&mut s), C1).is_empty(),
        "detached, resumable"
    );
    assert_eq!(s.detached_count(), 1);
    s.handle_timeout(T0.after(grace));
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::Offline(ep("bob", sb.0))]
    );
    assert!(msgs_to(&ev, C3).is_empty());
    assert_eq!(s.session_of(C4), None);
    assert_eq!(s.detached_count(), 0);

    // On idle timeout: bob logs in at 10 s and stays silent; alice pings at 50 s;
    // carol has been silent since 0 s.
    let t10 = Time(10_000);
    let (sb, _) = log_in(&mut s, C5, "bob", caps_b(), &["alice"], t10);
    let t50 = Time(50_000);
    s.receive(C1, &encode_frame(&ClientMessage::Ping {}), t50);
    assert_eq!(msgs_to(&drain(&mut s), C1), vec![ServerMessage::Pong {}]);
    s.handle_timeout(T0.after(idle));
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C3),
        vec![ServerMessage::error(ErrorCode::IdleTimeout)]
    );
    assert!(closed(&ev, C3));
    assert!(msgs_to(&ev, C1).is_empty(), "alice never saw carol");
    assert_eq!(
        s.poll_timeout(),
        Some(t10.after(idle)),
        "bob's deadline is next"
    );
    s.handle_timeout(Time(t10.after(idle).0 - 1));
    assert!(drain(&mut s).is_empty(), "not a millisecond early");
    s.handle_timeout(t10.after(idle));
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C5),
        vec![ServerMessage::error(ErrorCode::IdleTimeout)]
    );
    assert!(closed(&ev, C5));
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::Offline(ep("bob", sb.0))]
    );
    assert_eq!(s.session_of(C1), Some(sa), "alice's pings kept her online");
    assert_alive(&mut s, C1, t10.after(idle));
}

// ----- bad input at the server core ------------------------------------------------------

/// The session on `conn` is still served: a ping gets its pong.
fn assert_alive(s: &mut Server, conn: ConnId, now: Time) {
    assert!(s.session_of(conn).is_some(), "{conn:?} is still logged in");
    s.receive(conn, &encode_frame(&ClientMessage::Ping {}), now);
    assert_eq!(
        msgs_to(&drain(s), conn),
        vec![ServerMessage::Pong {}],
        "{conn:?} is still served"
    );
}

/// alice on C1 and bob on C2, contacts of each other, logged in at time zero.
fn two_online() -> (Server, SessionId, SessionId) {
    let mut s = Server::new(ServerConfig::default());
    let (sa, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    let (sb, _) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    (s, sa, sb)
}

fn error_code(msgs: &[ServerMessage]) -> Vec<ErrorCode> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn bad_input_garbage_bytes_are_malformed_and_close() {
    let (mut s, _, sb) = two_online();
    // Garbage inside a well-formed frame, from a connection that never logged in.
    s.connect(C9, T0).unwrap();
    s.receive(C9, &raw_frame(b"\x00\xffgarbage{"), T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C9)), [ErrorCode::Malformed]);
    assert!(closed(&ev, C9));
    assert_eq!(s.connection_count(), 2);
    // An empty frame is malformed too.
    s.connect(C3, T0).unwrap();
    s.receive(C3, &[0, 0, 0, 0], T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C3)), [ErrorCode::Malformed]);
    assert!(closed(&ev, C3));
    // Garbage from a logged-in terminal ends its session like a drop: its contacts
    // are told.
    s.receive(C2, &raw_frame(b"[1,2,3]"), T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C2)), [ErrorCode::Malformed]);
    assert!(closed(&ev, C2));
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::Offline(ep("bob", sb.0))]
    );
    assert_alive(&mut s, C1, T0);
    // Bytes for the closed connection are ignored.
    s.receive(C2, &encode_frame(&ClientMessage::Ping {}), T0);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn bad_input_oversized_frame_is_refused_and_closes() {
    let (mut s, _, _) = two_online();
    s.connect(C9, T0).unwrap();
    let mut input = (DEFAULT_MAX_FRAME + 1).to_be_bytes().to_vec();
    input.extend_from_slice(b"{\"type\":\"ping\"");
    s.receive(C9, &input, T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C9)), [ErrorCode::FrameTooLarge]);
    assert!(closed(&ev, C9));
    // A stray HTTP request reads as a huge length prefix.
    s.connect(C3, T0).unwrap();
    s.receive(C3, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C3)), [ErrorCode::FrameTooLarge]);
    assert!(closed(&ev, C3));
    // A frame of exactly the limit is not refused for its size.
    s.connect(C4, T0).unwrap();
    let mut big = br#"{"type":"ping","pad":""#.to_vec();
    big.resize(DEFAULT_MAX_FRAME as usize - 2, b'x');
    big.extend_from_slice(br#""}"#);
    s.receive(C4, &raw_frame(&big), T0);
    assert_eq!(msgs_to(&drain(&mut s), C4), vec![ServerMessage::Pong {}]);
    assert_alive(&mut s, C1, T0);
    assert_alive(&mut s, C2, T0);
}

#[test]
fn bad_input_unknown_message_type_keeps_the_connection() {
    let (mut s, _, _) = two_online();
    s.receive(C2, &raw_frame(br#"{"type":"teleport","to":"mars"}"#), T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C2)), [ErrorCode::UnknownMessage]);
    assert!(!closed(&ev, C2));
    assert!(msgs_to(&ev, C1).is_empty());
    // A server-to-client type is unknown to the server as well.
    s.receive(C2, &raw_frame(br#"{"type":"pong"}"#), T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C2)), [ErrorCode::UnknownMessage]);
    assert!(!closed(&ev, C2));
    assert_alive(&mut s, C2, T0);
    assert_alive(&mut s, C1, T0);
}

#[test]
fn bad_input_login_with_version_2_is_unsupported_and_closes() {
    let (mut s, _, _) = two_online();
    s.connect(C9, T0).unwrap();
    let mut login = serde_json::to_value(ClientMessage::Login {
        version: PROTOCOL_VERSION,
        user: u("carol"),
        password: pw("pw"),
        with: LoginWith::Capabilities(caps_c()),
    })
    .unwrap();
    login["version"] = 2.into();
    s.receive(C9, &raw_frame(&serde_json::to_vec(&login).unwrap()), T0);
    let ev = drain(&mut s);
    assert_eq!(
        error_code(&msgs_to(&ev, C9)),
        [ErrorCode::UnsupportedVersion]
    );
    assert!(closed(&ev, C9));
    assert!(!ev.iter().any(|e| matches!(e, ServerEvent::Authenticate(_))));
    // Even when the rest of a version-2 login does not parse as version 1.
    s.connect(C3, T0).unwrap();
    s.receive(
        C3,
        &raw_frame(br#"{"type":"login","version":2,"token":"abc"}"#),
        T0,
    );
    let ev = drain(&mut s);
    assert_eq!(
        error_code(&msgs_to(&ev, C3)),
        [ErrorCode::UnsupportedVersion]
    );
    assert!(closed(&ev, C3));
    // `resume` is versioned too (sections 3.5, 4.3.15, 5).
    let c10 = ConnId(10);
    s.connect(c10, T0).unwrap();
    s.receive(
        c10,
        &raw_frame(br#"{"type":"resume","version":2,"token":"00000000000000000000000000000000"}"#),
        T0,
    );
    let ev = drain(&mut s);
    assert_eq!(
        error_code(&msgs_to(&ev, c10)),
        [ErrorCode::UnsupportedVersion]
    );
    assert!(closed(&ev, c10));
    assert_alive(&mut s, C1, T0);
}

#[test]
fn bad_input_call_before_login_is_not_logged_in() {
    let (mut s, _, sb) = two_online();
    s.connect(C9, T0).unwrap();
    let call = encode_frame(&ClientMessage::Call {
        req: ReqId(42),
        to: ep("bob", sb.0),
        digest: CallDigest {
            caller: caps_c().fingerprint(),
            callee: caps_b().fingerprint(),
        },
        capabilities: None,
        media: None,
    });
    s.receive(C9, &call, T0);
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C9),
        vec![ServerMessage::Error {
            code: ErrorCode::NotLoggedIn,
            req: Some(ReqId(42)),
            call: None,
            detail: String::new(),
            retry_after_ms: None,
        }]
    );
    assert!(!closed(&ev, C9), "not fatal");
    assert!(msgs_to(&ev, C2).is_empty(), "bob is not rung");
    assert_eq!(s.call_count(), 0);
    // The connection may still log in.
    s.receive(
        C9,
        &login_frame("carol", "pw", LoginWith::Capabilities(caps_c())),
        T0,
    );
    let ev = drain(&mut s);
    assert!(matches!(ev.as_slice(), [ServerEvent::Authenticate(_)]));
    assert_alive(&mut s, C1, T0);
    assert_alive(&mut s, C2, T0);
}

#[test]
fn bad_input_wrong_password_is_bad_credentials_and_closes() {
    let (mut s, _, _) = two_online();
    s.connect(C9, T0).unwrap();
    s.receive(
        C9,
        &login_frame("bob", "guess", LoginWith::Capabilities(caps_c())),
        T0,
    );
    let ev = drain(&mut s);
    let [ServerEvent::Authenticate(req)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    s.complete_auth(req.ticket, AuthVerdict::Rejected, T0)
        .unwrap();
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C9),
        vec![ServerMessage::error(ErrorCode::BadCredentials)]
    );
    assert!(closed(&ev, C9));
    assert!(
        msgs_to(&ev, C1).is_empty(),
        "alice is not told of a failed login"
    );
    assert_eq!(s.sessions().count(), 2);
    assert_alive(&mut s, C1, T0);
    assert_alive(&mut s, C2, T0);
}

#[test]
fn bad_input_call_to_non_contact_or_offline_is_not_reachable() {
    let (mut s, sa, sb) = two_online();
    // carol lists alice, alice does not list carol.
    let (sc, _) = log_in(&mut s, C3, "carol", caps_c(), &["alice"], T0);
    let call_to = |to: Endpoint| {
        encode_frame(&ClientMessage::Call {
            req: ReqId(7),
            to,
            digest: CallDigest {
                caller: caps_a().fingerprint(),
                callee: caps_c().fingerprint(),
            },
            capabilities: None,
            media: None,
        })
    };
    let mut answers = Vec::new();
    for target in [
        ep("carol", sc.0), // online, but not a mutual contact
        ep("bob", 999),    // a contact's session that does not exist
        ep("dave", 4),     // a user not online at all
        ep("carol", sb.0), // bob's session under another user's name
        ep("alice", sa.0), // the caller itself
    ] {
        s.receive(C1, &call_to(target.clone()), T0);
        let ev = drain(&mut s);
        let to_alice: Vec<Bytes> = ev
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Transmit { conn, frame } if *conn == C1 => Some(frame.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(to_alice.len(), 1, "{target}");
        assert!(!closed(&ev, C1));
        assert!(msgs_to(&ev, C2).is_empty() && msgs_to(&ev, C3).is_empty());
        answers.push(to_alice[0].clone());
    }
    assert_eq!(
        decode_server(&answers[0]),
        ServerMessage::Error {
            code: ErrorCode::NotReachable,
            req: Some(ReqId(7)),
            call: None,
            detail: String::new(),
            retry_after_ms: None,
        }
    );
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "the same bytes whether offline or not a contact"
    );
    // The other way round: carol calling alice is refused the same way.
    s.receive(C3, &call_to(ep("alice", 1)), T0);
    let ev = drain(&mut s);
    assert_eq!(msgs_to(&ev, C3), vec![decode_server(&answers[0])]);
    assert_eq!(s.call_count(), 0);
    assert_alive(&mut s, C1, T0);
    assert_alive(&mut s, C2, T0);
}

#[test]
fn bad_input_truncated_frame_then_silence_times_out() {
    let config = ServerConfig::default();
    let (login_timeout, idle) = (config.login_timeout, config.idle_timeout);
    let mut s = Server::new(config);
    let (sa, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    let (sb, _) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    // A connection that sends half a header and then nothing.
    let t1 = Time(1_000);
    s.connect(C9, t1).unwrap();
    s.receive(C9, &[0, 0], t1);
    // Bob sends half a frame at 5 s and then nothing.
    let t5 = Time(5_000);
    let ping = encode_frame(&ClientMessage::Ping {});
    s.receive(C2, &ping[..ping.len() - 2], t5);
    assert!(drain(&mut s).is_empty(), "nothing to answer yet");
    // Alice keeps talking.
    let keep_alive = |s: &mut Server, at: Time| {
        s.receive(C1, &encode_frame(&ClientMessage::Ping {}), at);
        assert_eq!(msgs_to(&drain(s), C1), vec![ServerMessage::Pong {}]);
    };
    keep_alive(&mut s, Time(20_000));
    s.handle_timeout(Time(t1.after(login_timeout).0 - 1));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t1.after(login_timeout));
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C9)), [ErrorCode::LoginTimeout]);
    assert!(closed(&ev, C9));
    keep_alive(&mut s, Time(50_000));
    // Bob's half frame at 5 s is not activity: his deadline still runs from his last
    // complete frame (the login at time zero).
    s.handle_timeout(Time(T0.after(idle).0 - 1));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(T0.after(idle));
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C2)), [ErrorCode::IdleTimeout]);
    assert!(closed(&ev, C2));
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::Offline(ep("bob", sb.0))]
    );
    assert_eq!(s.session_of(C1), Some(sa));
    assert_alive(&mut s, C1, T0.after(idle));
}

#[test]
fn bad_input_trickled_partial_frame_does_not_hold_a_session_open() {
    let idle = ServerConfig::default().idle_timeout;
    let (mut s, _sa, sb) = two_online();
    // Bob announces a 60,000-byte frame and sends one byte of it every 10 s.
    let mut header = 60_000u32.to_be_bytes().to_vec();
    header.push(b'{');
    s.receive(C2, &header, Time(1_000));
    let mut t = Time(1_000);
    while t < T0.after(idle) {
        t = Time(t.0 + 10_000);
        s.receive(C2, b" ", Time(t.0.min(T0.after(idle).0 - 1)));
        s.receive(C1, &encode_frame(&ClientMessage::Ping {}), t);
    }
    s.handle_timeout(T0.after(idle));
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C2)), [ErrorCode::IdleTimeout]);
    assert!(closed(&ev, C2));
    assert!(msgs_to(&ev, C1).contains(&ServerMessage::Offline(ep("bob", sb.0))));
}

// ----- limits and timers -------------------------------------------------------------

/// alice (C1) calls bob (C2) on the fast path; returns the call id.
fn ring(s: &mut Server, sa: SessionId, sb: SessionId, now: Time) -> CallId {
    let digest = CallDigest {
        caller: caps_a().fingerprint(),
        callee: caps_b().fingerprint(),
    };
    let call = ClientMessage::Call {
        req: ReqId(1),
        to: ep("bob", sb.0),
        digest,
        capabilities: None,
        media: None,
    };
    s.receive(C1, &encode_frame(&call), now);
    let ev = drain(s);
    let _ = sa;
    match msgs_to(&ev, C1).as_slice() {
        [ServerMessage::CallRinging { call, .. }] => *call,
        other => panic!("expected call_ringing, got {other:?}"),
    }
}

#[test]
fn unanswered_call_ends_after_the_ring_timeout() {
    let ring_timeout = std::time::Duration::from_secs(20);
    let mut s = Server::new({
        let mut config = ServerConfig::default();
        config.ring_timeout = ring_timeout;
        config
    });
    let (sa, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    let (sb, _) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    let t = Time(1_000);
    let call = ring(&mut s, sa, sb, t);
    s.handle_timeout(Time(t.after(ring_timeout).0 - 1));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.call_count(), 1);
    s.handle_timeout(t.after(ring_timeout));
    let ev = drain(&mut s);
    let ended = ServerMessage::CallEnded {
        call,
        reason: EndReason::Timeout,
    };
    assert_eq!(msgs_to(&ev, C1), vec![ended.clone()]);
    assert_eq!(msgs_to(&ev, C2), vec![ended]);
    assert_eq!(s.call_count(), 0);
    // Both sessions are untouched.
    assert_alive(&mut s, C1, t.after(ring_timeout));
    assert_alive(&mut s, C2, t.after(ring_timeout));
}

#[test]
fn an_accepted_call_does_not_ring_out() {
    let ring_timeout = ServerConfig::default().ring_timeout;
    let (mut s, sa, sb) = two_online();
    let call = ring(&mut s, sa, sb, T0);
    let accept = ClientMessage::Accept {
        call,
        capabilities: None,
        media: None,
    };
    s.receive(C2, &encode_frame(&accept), T0);
    drain(&mut s);
    // Keep both sessions active past the ring timeout.
    let later = T0.after(ring_timeout);
    for c in [C1, C2] {
        s.receive(c, &encode_frame(&ClientMessage::Ping {}), later);
    }
    drain(&mut s);
    s.handle_timeout(later);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.call_count(), 1);
}

#[test]
fn callee_cannot_send_call_retry() {
    let (mut s, sa, sb) = two_online();
    let call = ring(&mut s, sa, sb, T0);
    s.receive(C2, &encode_frame(&ClientMessage::NeedCaps { call }), T0);
    drain(&mut s);
    let retry = ClientMessage::CallRetry {
        call,
        capabilities: caps_b(),
    };
    s.receive(C2, &encode_frame(&retry), T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C2)), [ErrorCode::InvalidState]);
    assert!(msgs_to(&ev, C1).is_empty());
}

#[test]
fn admin_roster_change_respects_the_contact_limit() {
    let config = {
        let mut config = ServerConfig::default();
        config.max_contacts = 2;
        config
    };
    let mut s = Server::new(config);
    log_in(&mut s, C1, "alice", caps_a(), &["bob", "carol"], T0);
    assert_eq!(
        s.change_roster(&u("alice"), &u("dave"), true, T0),
        Err(ServerError::RosterFull(u("alice")))
    );
    assert!(drain(&mut s).is_empty(), "nothing applied");
    assert_eq!(s.contacts_of(&u("alice")).unwrap().len(), 2);
    // Removing, then adding, stays within the limit.
    s.change_roster(&u("alice"), &u("carol"), false, T0)
        .unwrap();
    s.change_roster(&u("alice"), &u("dave"), true, T0).unwrap();
    assert!(s.contacts_of(&u("alice")).unwrap().contains(&u("dave")));
}

#[test]
fn duplicate_stored_contacts_do_not_use_up_the_limit() {
    let config = {
        let mut config = ServerConfig::default();
        config.max_contacts = 2;
        config
    };
    let mut s = Server::new(config);
    log_in(
        &mut s,
        C1,
        "alice",
        caps_a(),
        &["bob", "bob", "bob", "carol"],
        T0,
    );
    let contacts = s.contacts_of(&u("alice")).unwrap();
    assert_eq!(
        contacts.iter().collect::<Vec<_>>(),
        [&u("bob"), &u("carol")]
    );
}

#[test]
fn largest_login_ok_fits_the_minimum_frame_limit() {
    use precall_protocol::codec::MIN_MAX_FRAME;
    use precall_protocol::server::MAX_CONTACTS;
    let contacts: Vec<UserId> = (0..MAX_CONTACTS).map(|i| u(&format!("{i:0>64}"))).collect();
    let codecs: Vec<Codec> = (0..16)
        .map(|i| Codec::new(format!("{i:x>16}")).unwrap())
        .collect();
    let big = Size {
        width: 16_384,
        height: 16_384,
    };
    let caps = Capabilities::new(
        codecs.clone(),
        codecs,
        big,
        Some(Camera {
            max: big,
            max_fps: 240,
        }),
        CpuClass::Ultra,
        Bandwidth {
            up_kbps: 10_000_000,
            down_kbps: 10_000_000,
        },
    )
    .unwrap();
    // Spec 13.6: the default `max_caps_bytes` admits the largest valid document.
    let caps_bytes = precall_protocol::codec::encode_payload(&caps).len();
    println!("largest valid capability document: {caps_bytes} bytes");
    assert!(
        caps_bytes <= precall_protocol::server::Limits::default().max_caps_bytes,
        "{caps_bytes} bytes"
    );
    let msg = ServerMessage::LoginOk {
        version: PROTOCOL_VERSION,
        user: u(&"u".repeat(64)),
        session: SessionId(u64::MAX),
        capabilities: caps,
        contacts,
        resume_token: Some(ResumeToken::derive(
            &ResumeSecret::default(),
            SessionId(u64::MAX),
        )),
    };
    let frame = encode_frame(&msg);
    assert!(
        frame.len() - HEADER_LEN <= MIN_MAX_FRAME as usize,
        "largest login_ok is {} bytes",
        frame.len() - HEADER_LEN
    );
    // And a server whose limit is set higher than the protocol's is clamped.
    let config = {
        let mut config = ServerConfig::default();
        config.max_contacts = 10_000;
        config
    };
    let mut s = Server::new(config);
    let many: Vec<String> = (0..MAX_CONTACTS + 10).map(|i| format!("user{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    log_in(&mut s, C1, "alice", caps_a(), &many, T0);
    assert_eq!(s.contacts_of(&u("alice")).unwrap().len(), MAX_CONTACTS);
}

#[test]
fn a_server_frame_limit_below_the_minimum_acts_as_the_minimum() {
    let mut s = Server::new({
        let mut config = ServerConfig::default();
        config.max_frame = 10;
        config
    });
    let frame = login_frame("alice", "pw", LoginWith::Capabilities(caps_a()));
    assert!(frame.len() > 10);
    s.connect(C1, T0).unwrap();
    s.receive(C1, &frame, T0);
    assert!(matches!(
        drain(&mut s).as_slice(),
        [ServerEvent::Authenticate(_)]
    ));
}

/// Section 11.1: a login by registered terminal identifier replaces only a session of
/// the *same* identifier; the user's other terminals (another identifier, or
/// capabilities sent inline) stay online.
#[test]
fn only_the_same_registered_terminal_replaces_a_session() {
    let mut sim = world();
    sim.directory
        .register(&tid("alice-phone"), &u("alice"), caps_b());
    sim.login(
        0,
        &u("alice"),
        "pw",
        LoginWith::TerminalId(tid("alice-tablet")),
    );
    sim.run().unwrap();
    login_caps(&mut sim, 1, "alice", caps_a());
    sim.run().unwrap();
    sim.login(
        2,
        &u("alice"),
        "pw",
        LoginWith::TerminalId(tid("alice-phone")),
    );
    sim.run().unwrap();
    for i in 0..3 {
        assert_eq!(sim.client(i).status(), Status::Online, "terminal {i}");
    }
    // The tablet again, on another connection: only the old tablet session goes.
    sim.login(
        3,
        &u("alice"),
        "pw",
        LoginWith::TerminalId(tid("alice-tablet")),
    );
    sim.run().unwrap();
    let online: Vec<Status> = (0..4).map(|i| sim.client(i).status()).collect();
    assert_eq!(
        online,
        [Status::Idle, Status::Online, Status::Online, Status::Online]
    );
}

// ----- calls: who may do what (spec 9.8), found by mutation testing ----------------------

/// alice, bob and carol, mutual contacts, all with `caps_a`, on C1, C2, C3.
fn three_online(config: ServerConfig) -> (Server, [SessionId; 3]) {
    let mut s = Server::new(config);
    let (a, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob", "carol"], T0);
    let (b, _) = log_in(&mut s, C2, "bob", caps_a(), &["alice", "carol"], T0);
    let (c, _) = log_in(&mut s, C3, "carol", caps_a(), &["alice", "bob"], T0);
    (s, [a, b, c])
}

/// `from` (on `conn`) calls `to`; returns the server's answers to `conn`.
fn dial(s: &mut Server, conn: ConnId, to: &str, session: SessionId) -> Vec<ServerMessage> {
    let fp = caps_a().fingerprint();
    let call = ClientMessage::Call {
        req: ReqId(7),
        to: ep(to, session.0),
        digest: CallDigest {
            caller: fp,
            callee: fp,
        },
        capabilities: None,
        media: None,
    };
    s.receive(conn, &encode_frame(&call), T0);
    msgs_to(&drain(s), conn)
}

fn rung(answers: &[ServerMessage]) -> CallId {
    match answers {
        [ServerMessage::CallRinging { call, .. }] => *call,
        other => panic!("expected call_ringing, got {other:?}"),
    }
}

fn send(s: &mut Server, conn: ConnId, msg: ClientMessage) -> Vec<ServerMessage> {
    s.receive(conn, &encode_frame(&msg), T0);
    msgs_to(&drain(s), conn)
}

#[test]
fn removing_a_contact_ends_exactly_the_calls_between_the_two_users() {
    let (mut s, [a, b, c]) = three_online(ServerConfig::default());
    let alice_bob = rung(&dial(&mut s, C1, "bob", b));
    let bob_alice = rung(&dial(&mut s, C2, "alice", a));
    rung(&dial(&mut s, C1, "carol", c));
    rung(&dial(&mut s, C2, "carol", c));
    rung(&dial(&mut s, C3, "alice", a));
    assert_eq!(s.call_count(), 5);
    // alice removes bob: the two calls between them end, either way round; alice's and
    // bob's calls with carol, in either direction, go on.
    s.change_roster(&u("alice"), &u("bob"), false, T0).unwrap();
    let ev = drain(&mut s);
    for call in [alice_bob, bob_alice] {
        let ended = ServerMessage::CallEnded {
            call,
            reason: EndReason::NotReachable,
        };
        assert!(msgs_to(&ev, C1).contains(&ended), "{call} ended for alice");
        assert!(msgs_to(&ev, C2).contains(&ended), "{call} ended for bob");
    }
    assert_eq!(s.call_count(), 3, "the calls with carol go on");
    assert!(msgs_to(&ev, C3).is_empty(), "carol hears nothing");
}

#[test]
fn a_call_is_busy_when_either_end_is_at_its_limit() {
    let config = {
        let mut config = ServerConfig::default();
        config.max_calls_per_session = 1;
        config
    };
    let (mut s, [_, b, c]) = three_online(config);
    rung(&dial(&mut s, C1, "bob", b));
    // Only the callee (bob) is at the limit.
    assert_eq!(error_code(&dial(&mut s, C3, "bob", b)), [ErrorCode::Busy]);
    // Only the caller (alice) is.
    assert_eq!(error_code(&dial(&mut s, C1, "carol", c)), [ErrorCode::Busy]);
    assert_eq!(s.call_count(), 1);
}

#[test]
fn only_the_two_parties_may_act_on_a_call() {
    let (mut s, [_, b, _]) = three_online(ServerConfig::default());
    let call = rung(&dial(&mut s, C1, "bob", b));
    let unknown = ServerMessage::Error {
        code: ErrorCode::UnknownCall,
        req: None,
        call: Some(call),
        detail: String::new(),
        retry_after_ms: None,
    };
    // carol is neither caller nor callee: to her the call does not exist.
    for msg in [
        ClientMessage::Hangup { call },
        ClientMessage::Accept {
            call,
            capabilities: None,
            media: None,
        },
        ClientMessage::Reject { call },
    ] {
        assert_eq!(send(&mut s, C3, msg), std::slice::from_ref(&unknown));
    }
    assert_eq!(s.call_count(), 1, "the call is untouched");
}

#[test]
fn the_caller_cannot_accept_or_reject_its_own_call_nor_the_callee_reject_an_established_one() {
    let (mut s, [_, b, _]) = three_online(ServerConfig::default());
    let call = rung(&dial(&mut s, C1, "bob", b));
    let accept = ClientMessage::Accept {
        call,
        capabilities: None,
        media: None,
    };
    assert_eq!(
        error_code(&send(&mut s, C1, accept.clone())),
        [ErrorCode::InvalidState],
        "the caller accepting"
    );
    assert_eq!(
        error_code(&send(&mut s, C1, ClientMessage::Reject { call })),
        [ErrorCode::InvalidState],
        "the caller rejecting"
    );
    assert_eq!(s.call_count(), 1, "still ringing");
    assert_eq!(
        error_code(&send(&mut s, C2, accept)),
        [],
        "the callee accepts"
    );
    assert_eq!(
        error_code(&send(&mut s, C2, ClientMessage::Reject { call })),
        [ErrorCode::InvalidState],
        "the callee rejecting an established call"
    );
    assert_eq!(s.call_count(), 1, "still established");
}

#[test]
fn a_call_request_before_login_is_refused_with_its_call_echoed() {
    let (mut s, _, _) = two_online();
    s.connect(C9, T0).unwrap();
    drain(&mut s);
    let call = CallId(5);
    for msg in [
        ClientMessage::Hangup { call },
        ClientMessage::Reject { call },
        ClientMessage::NeedCaps { call },
    ] {
        assert_eq!(
            send(&mut s, C9, msg),
            [ServerMessage::Error {
                code: ErrorCode::NotLoggedIn,
                req: None,
                call: Some(call),
                detail: String::new(),
                retry_after_ms: None,
            }]
        );
    }
}

// ----- media descriptions in the call signalling (spec 10.8) -----------------------------

fn media(text: &str) -> MediaDescription {
    MediaDescription::new(text).expect("valid media description")
}

/// The caller's description reaches the callee with the incoming call, the callee's
/// reaches the caller with the acceptance, the path stays fast, and a call without one
/// carries none.
#[test]
fn media_descriptions_ride_the_call_and_its_acceptance() {
    let mut sim = world();
    login_caps(&mut sim, ALICE, "alice", caps_a());
    login_caps(&mut sim, BOB, "bob", caps_b());
    sim.settle().unwrap();
    let bob = sim.endpoint(BOB).unwrap();
    let offer = media("v=0\r\no=alice\r\n");
    let answer = media("v=0\r\no=bob\r\n");
    let mark = sim.terminals[BOB].events.len();
    let now = sim.now;
    sim.client_mut(ALICE)
        .place_call_with_media(&bob, offer.clone(), now)
        .unwrap();
    sim.settle().unwrap();
    let (call, got) = sim.terminals[BOB].events[mark..]
        .iter()
        .find_map(|e| match e {
            ClientEvent::IncomingCall { call, media, .. } => Some((*call, media.clone())),
            _ => None,
        })
        .expect("incoming call");
    assert_eq!(got, Some(offer));
    let mark_a = sim.terminals[ALICE].events.len();
    let mark_b = sim.terminals[BOB].events.len();
    sim.client_mut(BOB)
        .accept_with_media(call, answer.clone(), now)
        .unwrap();
    sim.settle().unwrap();
    let established = |i: usize, mark: usize| {
        sim.terminals[i].events[mark..]
            .iter()
            .find_map(|e| match e {
                ClientEvent::CallEstablished { path, media, .. } => Some((*path, media.clone())),
                _ => None,
            })
            .expect("established")
    };
    assert_eq!(established(ALICE, mark_a), (SetupPath::Fast, Some(answer)));
    // The callee wrote its own; its event carries none.
    assert_eq!(established(BOB, mark_b), (SetupPath::Fast, None));

    // Without: nothing on the wire, nothing in the events.
    let mark = sim.terminals[BOB].events.len();
    sim.client_mut(ALICE).place_call(&bob, now).unwrap();
    sim.settle().unwrap();
    assert!(sim.terminals[BOB].events[mark..]
        .iter()
        .any(|e| matches!(e, ClientEvent::IncomingCall { media: None, .. })));
    no_violations(&sim);
}

/// The server relays the caller's description again with the retry of fallback (c),
/// relays the acceptance's, and refuses one over the bound as malformed input.
#[test]
fn media_descriptions_are_relayed_on_retry_and_bounded() {
    let (mut s, sa, sb) = two_online();
    let offer = media("v=0\r\no=alice 1\r\n");
    // A digest naming caller capabilities bob does not hold: he asks for them.
    let digest = CallDigest {
        caller: caps_c().fingerprint(),
        callee: caps_b().fingerprint(),
    };
    let call_msg = |media: Option<MediaDescription>| ClientMessage::Call {
        req: ReqId(1),
        to: ep("bob", sb.0),
        digest,
        capabilities: None,
        media,
    };
    s.receive(C1, &encode_frame(&call_msg(Some(offer.clone()))), T0);
    let ev = drain(&mut s);
    let rung = msgs_to(&ev, C2);
    let [ServerMessage::CallIncoming {
        call,
        media: relayed,
        ..
    }] = rung.as_slice()
    else {
        panic!("bob is rung: {ev:?}")
    };
    let call = *call;
    assert_eq!(relayed.as_ref(), Some(&offer));
    s.receive(C2, &encode_frame(&ClientMessage::NeedCaps { call }), T0);
    drain(&mut s);
    s.receive(
        C1,
        &encode_frame(&ClientMessage::CallRetry {
            call,
            capabilities: caps_a(),
        }),
        T0,
    );
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C2),
        vec![ServerMessage::CallIncoming {
            call,
            from: ep("alice", sa.0),
            digest,
            capabilities: Some(caps_a()),
            media: Some(offer),
        }],
        "the retry's relay carries the caller's description again"
    );
    let answer = media("v=0\r\no=bob 1\r\n");
    s.receive(
        C2,
        &encode_frame(&ClientMessage::Accept {
            call,
            capabilities: None,
            media: Some(answer.clone()),
        }),
        T0,
    );
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::CallAccepted {
            call,
            capabilities: None,
            media: Some(answer),
        }]
    );

    // One byte over the bound: malformed, the connection closed, bob not rung.
    let fast = String::from_utf8(encode_payload(&call_msg(None)).to_vec()).unwrap();
    let long = "a".repeat(MediaDescription::MAX_LEN + 1);
    let bad = format!("{},\"media\":\"{long}\"}}", &fast[..fast.len() - 1]);
    // The same text at the bound is a call (so it is the length that is refused).
    let ok = format!("{},\"media\":\"{}\"}}", &fast[..fast.len() - 1], &long[1..]);
    assert!(matches!(
        decode_message::<ClientMessage>(ok.as_bytes()),
        Ok(ClientMessage::Call { media: Some(_), .. })
    ));
    s.receive(C1, &raw_frame(bad.as_bytes()), T0);
    let ev = drain(&mut s);
    assert_eq!(error_code(&msgs_to(&ev, C1)), [ErrorCode::Malformed]);
    assert!(closed(&ev, C1));
    assert!(
        !msgs_to(&ev, C2)
            .iter()
            .any(|m| matches!(m, ServerMessage::CallIncoming { .. })),
        "bob is not rung by a malformed call"
    );
}

/// The server keeps a user's contact list from its first session (spec "Server state"):
/// a second session's verdict carrying another list changes nothing, so bob still sees
/// alice and alice still sees bob.
#[test]
fn a_second_session_keeps_the_contact_list_of_the_first() {
    let mut s = Server::new(ServerConfig::default());
    let (sa, _) = log_in(&mut s, C1, "alice", caps_a(), &["bob"], T0);
    let (sb, _) = log_in(&mut s, C2, "bob", caps_b(), &["alice"], T0);
    let (sa2, ev) = log_in(&mut s, C3, "alice", caps_low(), &[], T0);
    let alice = UserId::new("alice").unwrap();
    let bob = UserId::new("bob").unwrap();
    let held: Vec<&UserId> = s.contacts_of(&alice).expect("online").iter().collect();
    assert_eq!(held, vec![&bob]);
    assert!(s.entitled(&bob, &alice) && s.entitled(&alice, &bob));
    // The new terminal's snapshot holds bob; bob hears of it; alice's first terminal
    // is told nothing (its own user).
    let to_new = msgs_to(&ev, C3);
    assert_eq!(
        to_new[1..],
        [presence("bob", sb.0, caps_b()), ServerMessage::Synced {}]
    );
    assert_eq!(msgs_to(&ev, C2), vec![presence("alice", sa2.0, caps_low())]);
    assert!(msgs_to(&ev, C1).is_empty());
    assert_ne!(sa, sa2);
}
