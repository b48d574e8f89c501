//! Who may see capabilities (spec sections 11.5 and 13.1): every way the protocol
//! offers to obtain another user's capabilities, tried by a user who is not entitled.
//!
//! alice lists bob and bob lists alice; mallory lists alice, who does not list her back.
//! alice's terminal has a capability set no one else has. After each attempt, no frame
//! the server ever sent to mallory's connections contains alice's capabilities (their
//! canonical JSON), and alice's terminal was never asked anything on mallory's behalf.
//! The last test shows the check sees a leak when there is one.

use precall_protocol::caps::{CallDigest, Capabilities, Fingerprint};
use precall_protocol::codec::{encode_frame, encode_payload};
use precall_protocol::message::{ClientMessage, LoginWith, PROTOCOL_VERSION};
use precall_protocol::sim::{sample_caps, Directory, Sim};
use precall_protocol::{
    CallId, ConnId, Endpoint, ResumeSecret, ResumeToken, ServerConfig, SessionId,
};

mod common;
use common::*;

const ALICE: usize = 0;
const BOB: usize = 1;
const MALLORY: usize = 2;
/// A raw connection mallory writes arbitrary messages on.
const MALLORY_RAW: usize = 3;

fn alice_caps() -> Capabilities {
    sample_caps(&["av1", "h265", "vp9"], 3008, 48)
}

fn world() -> Sim {
    world_with(ServerConfig::default())
}

fn world_with(config: ServerConfig) -> Sim {
    let mut d = Directory::default();
    for name in ["alice", "bob", "mallory"] {
        d.add_user(&u(name), "pw");
    }
    d.befriend(&u("alice"), &u("bob"));
    lists(&mut d, &u("mallory"), &u("alice"));
    d.register(&tid("alice-desk"), &u("alice"), alice_caps());
    let mut sim = Sim::new(d, 4, config);
    sim.login(
        ALICE,
        &u("alice"),
        "pw",
        LoginWith::TerminalId(tid("alice-desk")),
    );
    sim.login(BOB, &u("bob"), "pw", LoginWith::Capabilities(plain_caps()));
    sim.login(
        MALLORY,
        &u("mallory"),
        "pw",
        LoginWith::Capabilities(sample_caps(&["h264"], 640, 15)),
    );
    sim.settle().unwrap();
    sim.connect(MALLORY_RAW);
    sim.inject(
        MALLORY_RAW,
        &login_frame(
            "mallory",
            "pw",
            LoginWith::Capabilities(sample_caps(&["vp8"], 640, 15)),
        ),
    );
    sim.settle().unwrap();
    sim
}

fn alice(sim: &Sim) -> Endpoint {
    sim.endpoint(ALICE).unwrap()
}

/// Every connection mallory has had.
fn mallory_conns(sim: &Sim) -> Vec<ConnId> {
    let mut v: Vec<ConnId> = sim
        .sent
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| sim.server.user_of(*c) == Some(&u("mallory")))
        .collect();
    v.extend(sim.terminals[MALLORY].conn);
    v.extend(sim.terminals[MALLORY_RAW].conn);
    v.sort();
    v.dedup();
    v
}

/// Frames sent to `conns` that contain alice's capabilities, original or current.
fn leaks(sim: &Sim, conns: &[ConnId]) -> usize {
    let mut needles = vec![encode_payload(&alice_caps())];
    needles.extend(sim.client(ALICE).capabilities().map(encode_payload));
    sim.sent
        .iter()
        .filter(|(c, f)| {
            conns.contains(c)
                && needles
                    .iter()
                    .any(|n| f.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .count()
}

/// Frames sent to alice's connection, to see that she was never bothered.
fn frames_to_alice(sim: &Sim) -> usize {
    let conn = sim.terminals[ALICE].conn.unwrap();
    sim.sent.iter().filter(|(c, _)| *c == conn).count()
}

fn assert_nothing_leaked(sim: &mut Sim, conns: &[ConnId]) {
    sim.settle().unwrap();
    assert!(sim
        .client(MALLORY)
        .peers()
        .all(|(e, _)| e.user != u("alice")));
    assert_eq!(leaks(sim, conns), 0, "alice's capabilities reached mallory");
}

/// Sends raw messages from mallory's second connection; returns the frames alice got.
fn raw(sim: &mut Sim, msgs: &[ClientMessage]) -> usize {
    let before = frames_to_alice(sim);
    for m in msgs {
        sim.inject(MALLORY_RAW, &encode_frame(m));
        sim.run().unwrap();
    }
    frames_to_alice(sim) - before
}

#[test]
fn presence_alone_gives_nothing() {
    let mut sim = world();
    let conns = mallory_conns(&sim);
    assert_eq!(sim.client(MALLORY).peers().count(), 0);
    assert_nothing_leaked(&mut sim, &conns);
    // bob, who is entitled, does see her: the check is not vacuous.
    assert!(sim.client(BOB).peers().any(|(e, _)| e.user == u("alice")));
}

#[test]
fn adding_her_again_or_changing_caps_gives_nothing() {
    let mut sim = world();
    let now = sim.now;
    sim.client_mut(MALLORY)
        .add_contact(u("alice"), now)
        .unwrap();
    sim.settle().unwrap();
    sim.client_mut(ALICE)
        .update_caps(sample_caps(&["av1"], 3008, 48), now)
        .unwrap();
    let conns = mallory_conns(&sim);
    assert_nothing_leaked(&mut sim, &conns);
    // bob got the new set: the needle is the one on the wire.
    let to_bob = [sim.terminals[BOB].conn.unwrap()];
    assert!(leaks(&sim, &to_bob) >= 2, "bob saw both of alice's sets");
}

#[test]
fn calls_and_queries_to_her_terminal_are_not_reachable() {
    let mut sim = world();
    let target = alice(&sim);
    let digest = CallDigest {
        caller: Fingerprint::NONE,
        callee: Fingerprint::NONE,
    };
    let mine = sample_caps(&["vp8"], 640, 15);
    let mut msgs = Vec::new();
    // Her real endpoint and every guessable session number.
    for session in [target.session.0, 1, 2, 3, 4, 5, 99] {
        let to = ep("alice", session);
        msgs.push(ClientMessage::Call {
            req: precall_protocol::ReqId(1),
            to: to.clone(),
            digest,
            capabilities: None,
            media: None,
        });
        msgs.push(ClientMessage::Call {
            req: precall_protocol::ReqId(2),
            to: to.clone(),
            digest,
            capabilities: Some(mine.clone()),
            media: None,
        });
        msgs.push(ClientMessage::QueryCaps {
            req: precall_protocol::ReqId(3),
            to: to.clone(),
        });
        msgs.push(ClientMessage::CapsReply {
            to,
            req: precall_protocol::ReqId(4),
            capabilities: mine.clone(),
        });
    }
    let bothered = raw(&mut sim, &msgs);
    assert_eq!(
        bothered, 0,
        "alice's terminal was asked on mallory's behalf"
    );
    let conns = mallory_conns(&sim);
    assert_nothing_leaked(&mut sim, &conns);
}

#[test]
fn call_messages_on_guessed_call_ids_give_nothing() {
    let mut sim = world();
    // A real call between alice and bob, so call ids exist.
    let now = sim.now;
    let bob = sim.endpoint(BOB).unwrap();
    sim.client_mut(ALICE).place_call(&bob, now).unwrap();
    sim.settle().unwrap();
    let mine = sample_caps(&["vp8"], 640, 15);
    let mut msgs = Vec::new();
    for id in 0..5 {
        let call = CallId(id);
        msgs.push(ClientMessage::NeedCaps { call });
        msgs.push(ClientMessage::CallRetry {
            call,
            capabilities: mine.clone(),
        });
        msgs.push(ClientMessage::Accept {
            call,
            capabilities: Some(mine.clone()),
            media: None,
        });
        msgs.push(ClientMessage::Accept {
            call,
            capabilities: None,
            media: None,
        });
        msgs.push(ClientMessage::Reject { call });
        msgs.push(ClientMessage::Hangup { call });
    }
    raw(&mut sim, &msgs);
    let conns = mallory_conns(&sim);
    assert_nothing_leaked(&mut sim, &conns);
}

#[test]
fn logging_in_with_her_terminal_id_gives_nothing() {
    let mut sim = world();
    sim.drop_connection(MALLORY_RAW);
    sim.connect(MALLORY_RAW);
    let id = tid("alice-desk");
    raw(
        &mut sim,
        &[login("mallory", "pw", LoginWith::TerminalId(id))],
    );
    let conns = mallory_conns(&sim);
    assert_nothing_leaked(&mut sim, &conns);
    // The login was refused, not silently given other capabilities.
    assert!(
        sim.server
            .sessions()
            .filter(|s| s.endpoint.user == u("mallory") && s.conn.is_some())
            .count()
            <= 1
    );
}

/// Tries to resume someone else's session with every token mallory can come up with:
/// the tokens a server with the default (test) secret would issue to the first
/// sessions, and random ones. Returns how many were refused with `resume_failed`, and
/// the connections used.
fn resume_attempts(sim: &mut Sim) -> (usize, Vec<ConnId>) {
    let mut tokens: Vec<ResumeToken> = (1..=12)
        .map(|n| ResumeToken::derive(&ResumeSecret::default(), SessionId(n)))
        .collect();
    tokens.extend((0u8..8).map(|i| {
        let hex: String = (0..16).map(|j| format!("{:02x}", i * 31 + j)).collect();
        ResumeToken::new(hex).unwrap()
    }));
    let mut refused = 0;
    let mut conns = Vec::new();
    for token in tokens {
        let conn = sim.connect(MALLORY_RAW);
        conns.push(conn);
        let mark = sim.sent.len();
        let seen = Some(0);
        let msg = ClientMessage::Resume {
            version: PROTOCOL_VERSION,
            token,
            seen,
        };
        sim.inject(MALLORY_RAW, &encode_frame(&msg));
        sim.run().unwrap();
        refused += sim.sent[mark..]
            .iter()
            .filter(|(c, f)| *c == conn && f.windows(15).any(|w| w == b"\"resume_failed\""))
            .count();
    }
    (refused, conns)
}

#[test]
fn resuming_with_guessed_tokens_gives_nothing() {
    let mut config = ServerConfig::default();
    config.resume.secret = ResumeSecret([0x5a; 32]);
    let mut sim = world_with(config);
    let alice_conn = sim.terminals[ALICE].conn;
    let mut conns = mallory_conns(&sim);
    let (refused, used) = resume_attempts(&mut sim);
    assert_eq!(refused, 20, "every attempt refused");
    conns.extend(used);
    assert_nothing_leaked(&mut sim, &conns);
    // alice's session was not taken over.
    let view = sim.server.sessions().find(|s| s.endpoint == alice(&sim));
    assert_eq!(view.and_then(|v| v.conn), alice_conn);
}

#[test]
fn a_predictable_resume_secret_would_leak() {
    // The same attempts against a server left on the default secret take bob's session
    // over, and with it his table, which holds alice: the leak check sees it. This is
    // why embedders must set `ResumeConfig::secret` from the OS's random source.
    let mut sim = world();
    let mut conns = mallory_conns(&sim);
    let (refused, used) = resume_attempts(&mut sim);
    assert!(refused < 20, "some predictable token worked");
    conns.extend(used);
    assert!(leaks(&sim, &conns) > 0);
}

#[test]
fn after_she_removes_a_former_contact_nothing_more_flows() {
    let mut sim = world();
    // bob is entitled, then alice removes him; from then on bob is an outsider.
    let now = sim.now;
    sim.client_mut(ALICE).remove_contact(u("bob"), now).unwrap();
    sim.settle().unwrap();
    let conn = sim.terminals[BOB].conn.unwrap();
    let before = sim.sent.len();
    sim.client_mut(ALICE)
        .update_caps(sample_caps(&["av1", "h265", "vp9"], 3008, 48), now)
        .unwrap();
    sim.settle().unwrap();
    let needle = encode_payload(&sample_caps(&["av1", "h265", "vp9"], 3008, 48));
    let later = sim.sent[before..]
        .iter()
        .filter(|(c, f)| *c == conn && f.windows(needle.len()).any(|w| w == needle))
        .count();
    assert_eq!(later, 0);
    assert!(sim.client(BOB).peers().all(|(e, _)| e.user != u("alice")));
}

#[test]
fn the_leak_check_sees_a_leak() {
    // Seeded fault: alice lists mallory back, so the server sends her capabilities to
    // mallory; the same check must count them.
    let mut sim = world();
    let now = sim.now;
    sim.client_mut(ALICE)
        .add_contact(u("mallory"), now)
        .unwrap();
    sim.settle().unwrap();
    let conns = mallory_conns(&sim);
    assert!(leaks(&sim, &conns) > 0);
}
