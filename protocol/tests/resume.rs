//! Resumable sessions (spec section 9.9), case by case, through the in-memory
//! simulation ([`Sim`]: the real server and clients, real frames, the invariants
//! checked after every step) and, where the case needs a connection the client has
//! given up on while the server has not, through the server alone.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use precall_protocol::client::Status;
use precall_protocol::codec::encode_frame;
use precall_protocol::message::{ClientMessage, EndReason, LoginWith, ServerMessage};
use precall_protocol::server::ServerEvent;
use precall_protocol::sim::{Directory, Sim};
use precall_protocol::{
    Client, ClientConfig, ClientEvent, ConnId, Endpoint, ErrorCode, ResumeToken, Server,
    ServerConfig, SessionId, Time, PROTOCOL_VERSION,
};

mod common;
use common::*;

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;

/// alice lists bob and carol, who list her back; all three online and settled.
fn world(config: ServerConfig) -> Sim {
    let mut d = Directory::default();
    for name in ["alice", "bob", "carol"] {
        d.add_user(&u(name), "pw");
    }
    d.befriend(&u("alice"), &u("bob"));
    d.befriend(&u("alice"), &u("carol"));
    // A fourth terminal stays unused unless a test needs a spare connection.
    let mut sim = Sim::new(d, 4, config);
    for (t, name, width) in [
        (ALICE, "alice", 1920),
        (BOB, "bob", 1280),
        (CAROL, "carol", 640),
    ] {
        sim.login(t, &u(name), "pw", LoginWith::Capabilities(caps_of(width)));
    }
    sim.settle().unwrap();
    assert_eq!(sim.client(ALICE).peers().count(), 2);
    sim
}

/// Messages the server sent to terminal `t`'s current connection since `mark`.
fn sent_to(sim: &Sim, t: usize, mark: usize) -> Vec<ServerMessage> {
    sim.terminals[t]
        .conn
        .map_or_else(Vec::new, |conn| sent_since(sim, mark, conn))
}

/// Messages about `who` the server sent to anyone since `mark`.
fn presence_about(sim: &Sim, who: &Endpoint, mark: usize) -> Vec<ServerMessage> {
    sim.sent[mark..]
        .iter()
        .map(|(_, f)| decode_server(f))
        .filter(|m| match m {
            ServerMessage::Offline(e) => e == who,
            ServerMessage::Online(p) => p.endpoint() == *who,
            _ => false,
        })
        .collect()
}

#[test]
fn a_resumed_session_gets_only_what_it_missed_and_watchers_never_see_it_leave() {
    let mut sim = world(ServerConfig::default());
    let alice = sim.endpoint(ALICE).unwrap();
    let mark = sim.sent.len();
    sim.drop_connection(ALICE);
    assert_eq!(sim.client(ALICE).status(), Status::Detached);
    assert_eq!(sim.client(ALICE).peers().count(), 2, "the table is kept");
    // While alice is away, bob changes capabilities (one frame: cheaper than the
    // two-terminal snapshot).
    sim.command(BOB, |c, now| c.update_caps(caps_of(1024), now))
        .unwrap();
    sim.settle().unwrap();
    assert_eq!(sim.server.detached_count(), 1);
    let resume_mark = sim.sent.len();
    sim.resume(ALICE).unwrap();
    sim.settle().unwrap();
    let bob_now = sim.server.sessions().find(|s| s.endpoint.user == u("bob"));
    let bob_now = bob_now.unwrap().endpoint;
    assert_eq!(
        sent_to(&sim, ALICE, resume_mark),
        vec![
            ServerMessage::Resumed {
                version: PROTOCOL_VERSION,
                session: alice.session,
                capabilities: caps_of(1920),
                // bob and carol came online after alice (1, 2), bob's update (3).
                seq: 3,
                contacts: None,
            },
            ServerMessage::Online(precall_protocol::message::Presence {
                user: bob_now.user.clone(),
                session: bob_now.session,
                capabilities: caps_of(1024),
            }),
            ServerMessage::Synced {},
        ]
    );
    assert!(sim.terminals[ALICE].events.contains(&ClientEvent::Resumed {
        session: alice.session,
        snapshot: false
    }));
    assert_eq!(sim.client(ALICE).status(), Status::Online);
    assert_eq!(sim.client(ALICE).endpoint(), Some(alice.clone()));
    // Nobody was told alice left or came back.
    assert!(presence_about(&sim, &alice, mark).is_empty());
    assert_eq!(sim.server.detached_count(), 0);
}

#[test]
fn a_snapshot_when_it_is_cheaper_than_the_missed_frames() {
    let mut sim = world(ServerConfig::default());
    sim.drop_connection(ALICE);
    for width in [1000, 1010, 1020, 1030, 1040, 1050] {
        sim.command(BOB, |c, now| c.update_caps(caps_of(width), now))
            .unwrap();
        sim.settle().unwrap();
    }
    let mark = sim.sent.len();
    sim.resume(ALICE).unwrap();
    sim.settle().unwrap();
    let msgs = sent_to(&sim, ALICE, mark);
    assert!(matches!(
        &msgs[0],
        ServerMessage::Resumed { seq: 0, contacts: Some(c), .. } if c.len() == 2
    ));
    // Two visible terminals, then synced: smaller than six missed updates.
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert_eq!(msgs[3], ServerMessage::Synced {});
    let alice = sim.endpoint(ALICE).unwrap();
    assert!(sim.terminals[ALICE].events.contains(&ClientEvent::Resumed {
        session: alice.session,
        snapshot: true
    }));
}

#[test]
fn a_snapshot_when_the_log_no_longer_reaches_back() {
    let mut config = ServerConfig::default();
    config.resume.log_frames = 1;
    let mut sim = world(config);
    sim.drop_connection(ALICE);
    // Two small frames (carol offline, then online again): cheaper than a snapshot,
    // but the log keeps only the last.
    sim.command(CAROL, |c, now| c.logout(now)).unwrap();
    sim.settle().unwrap();
    sim.login(
        CAROL,
        &u("carol"),
        "pw",
        LoginWith::Capabilities(caps_of(640)),
    );
    sim.settle().unwrap();
    let mark = sim.sent.len();
    sim.resume(ALICE).unwrap();
    sim.settle().unwrap();
    assert!(matches!(
        sent_to(&sim, ALICE, mark)[0],
        ServerMessage::Resumed {
            contacts: Some(_),
            ..
        }
    ));
}

#[test]
fn a_catch_up_cut_short_is_not_counted_as_seen() {
    let mut c = Client::new(ClientConfig::default());
    let me = ep("alice", 1);
    let token = ResumeToken::new("0123456789abcdef0123456789abcdef").unwrap();
    let own = caps_of(1920);
    c.login(
        me.user.clone(),
        pw("pw"),
        LoginWith::Capabilities(own.clone()),
        Time(0),
    )
    .unwrap();
    let feed = |c: &mut Client, m: ServerMessage| c.handle_message(m, Time(0));
    feed(
        &mut c,
        ServerMessage::LoginOk {
            version: PROTOCOL_VERSION,
            user: me.user.clone(),
            session: me.session,
            capabilities: own.clone(),
            contacts: vec![u("bob")],
            resume_token: Some(token.clone()),
        },
    );
    feed(&mut c, ServerMessage::Synced {});
    let bob = |s| precall_protocol::message::Presence {
        user: u("bob"),
        session: SessionId(s),
        capabilities: caps_of(1280),
    };
    feed(&mut c, ServerMessage::Online(bob(2)));
    feed(&mut c, ServerMessage::Offline(bob(2).endpoint()));
    while c.poll_transmit().is_some() {}
    let resume_of = |c: &mut Client| {
        c.connection_closed(Time(0));
        c.resume(Time(0)).unwrap();
        decode_client(&c.poll_transmit().unwrap())
    };
    let seen = |m: ClientMessage| match m {
        ClientMessage::Resume { seen, token: t, .. } => {
            assert_eq!(t, token);
            seen
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(seen(resume_of(&mut c)), Some(2));
    // A delta catch-up starts and the connection dies before `synced`.
    feed(
        &mut c,
        ServerMessage::Resumed {
            version: PROTOCOL_VERSION,
            session: me.session,
            capabilities: own.clone(),
            seq: 5,
            contacts: None,
        },
    );
    feed(&mut c, ServerMessage::Online(bob(3)));
    assert_eq!(seen(resume_of(&mut c)), None, "ask for a snapshot");
    // A complete catch-up continues from the server's number.
    feed(
        &mut c,
        ServerMessage::Resumed {
            version: PROTOCOL_VERSION,
            session: me.session,
            capabilities: own,
            seq: 7,
            contacts: Some(vec![u("bob")]),
        },
    );
    feed(&mut c, ServerMessage::Online(bob(3)));
    feed(&mut c, ServerMessage::Synced {});
    feed(&mut c, ServerMessage::Offline(bob(3).endpoint()));
    assert_eq!(seen(resume_of(&mut c)), Some(8));
}

#[test]
fn resume_resends_a_capability_change_lost_with_the_connection() {
    let mut sim = world(ServerConfig::default());
    let alice = sim.endpoint(ALICE).unwrap();
    // The update is queued but the connection dies before it is written.
    sim.client_mut(ALICE)
        .update_caps(caps_of(800), Time(0))
        .unwrap();
    sim.drop_connection(ALICE);
    let record = |sim: &Sim| {
        let s = sim.server.sessions().find(|s| s.endpoint == alice);
        s.unwrap().capabilities.clone()
    };
    assert_eq!(record(&sim), caps_of(1920));
    sim.resume(ALICE).unwrap();
    sim.settle().unwrap();
    assert_eq!(record(&sim), caps_of(800));
    let at_bob = sim.client(BOB).peer(&alice).unwrap();
    assert_eq!(at_bob.capabilities, caps_of(800));
}

#[test]
fn calls_end_on_detach_and_a_detached_terminal_is_not_reachable() {
    let mut sim = world(ServerConfig::default());
    let (alice, bob) = (sim.endpoint(ALICE).unwrap(), sim.endpoint(BOB).unwrap());
    sim.command(ALICE, |c, now| c.place_call(&bob, now))
        .unwrap();
    sim.settle().unwrap();
    let call = *sim.client(BOB).calls().next().unwrap().0;
    sim.command(BOB, |c, now| c.answer(call, true, now))
        .unwrap();
    sim.settle().unwrap();
    sim.drop_connection(ALICE);
    sim.settle().unwrap();
    let ended = ClientEvent::CallEnded {
        call,
        reason: EndReason::PeerGone,
    };
    assert!(sim.terminals[BOB].events.contains(&ended));
    assert!(sim.terminals[ALICE].events.contains(&ended));
    assert_eq!(sim.client(ALICE).calls().count(), 0);
    // bob still has alice in his table (she is only detached) but cannot reach her.
    assert!(sim.client(BOB).peer(&alice).is_some());
    let req = sim
        .command(BOB, |c, now| c.place_call(&alice, now))
        .unwrap();
    sim.settle().unwrap();
    assert!(sim.terminals[BOB]
        .events
        .contains(&ClientEvent::CallFailed {
            req,
            to: alice.clone(),
            code: ErrorCode::NotReachable,
            detail: String::new(),
        }));
    sim.resume(ALICE).unwrap();
    sim.settle().unwrap();
    let req = sim
        .command(BOB, |c, now| c.place_call(&alice, now))
        .unwrap();
    sim.settle().unwrap();
    assert!(sim.terminals[BOB]
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::CallRinging { req: r, .. } if *r == req)));
}

#[test]
fn the_grace_running_out_and_a_logout_end_the_session_and_its_token() {
    let mut sim = world(ServerConfig::default());
    let alice = sim.endpoint(ALICE).unwrap();
    let grace = sim.server.config().resume.grace;
    let mark = sim.sent.len();
    sim.drop_connection(ALICE);
    for _ in 0..grace.as_secs() / 10 {
        sim.advance(Duration::from_secs(10));
        sim.settle().unwrap();
    }
    assert_eq!(
        presence_about(&sim, &alice, mark),
        vec![ServerMessage::Offline(alice.clone()); 2],
        "bob and carol are told alice is offline"
    );
    sim.resume(ALICE).unwrap();
    sim.settle().unwrap();
    assert_eq!(sim.client(ALICE).status(), Status::Idle);
    assert!(sim.terminals[ALICE].events.iter().any(|e| matches!(
        e,
        ClientEvent::ServerError {
            code: ErrorCode::ResumeFailed,
            ..
        }
    )));
    // A full login works, and a logout kills the new token at once.
    sim.login(
        ALICE,
        &u("alice"),
        "pw",
        LoginWith::Capabilities(caps_of(1920)),
    );
    sim.settle().unwrap();
    sim.command(ALICE, |c, now| c.logout(now)).unwrap();
    sim.settle().unwrap();
    assert!(!sim.client(ALICE).can_resume());
    assert_eq!(sim.server.sessions().count(), 2);
}

// ----- the server alone ----------------------------------------------------------------

/// Logs `user` in on `conn` (contacts `contacts`) and returns its resume token.
fn log_in(s: &mut Server, conn: ConnId, user: &str, contacts: &[&str]) -> ResumeToken {
    s.connect(conn, Time(0)).unwrap();
    let login = login_frame(user, "pw", LoginWith::Capabilities(caps_of(1280)));
    s.receive(conn, &login, Time(0));
    let ticket = drain(s)
        .into_iter()
        .find_map(|e| match e {
            ServerEvent::Authenticate(r) => Some(r.ticket),
            _ => None,
        })
        .unwrap();
    s.complete_auth(ticket, accepted(contacts, None), Time(0))
        .unwrap();
    msgs_to(&drain(s), conn)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::LoginOk { resume_token, .. } => resume_token,
            _ => None,
        })
        .unwrap()
}

fn resume_frame(token: ResumeToken, seen: Option<u64>) -> Bytes {
    encode_frame(&ClientMessage::Resume {
        version: PROTOCOL_VERSION,
        token,
        seen,
    })
}

#[test]
fn resume_takes_a_half_open_connection_over_without_a_credential_check() {
    let mut s = Server::new(ServerConfig::default());
    let token = log_in(&mut s, C1, "alice", &["bob"]);
    log_in(&mut s, C3, "bob", &["alice"]);
    let session = s.session_of(C1).unwrap();
    // The client gave up on C1 (the server has not noticed) and resumes on C2.
    s.connect(C2, Time(5)).unwrap();
    // bob's `online` (1) was the one table frame alice got.
    s.receive(C2, &resume_frame(token, Some(1)), Time(5));
    let ev = drain(&mut s);
    assert_eq!(
        msgs_to(&ev, C1),
        vec![ServerMessage::error_with(
            ErrorCode::SessionReplaced,
            String::new()
        )]
    );
    assert!(ev
        .iter()
        .any(|e| matches!(e, ServerEvent::Close { conn } if *conn == C1)));
    assert!(matches!(
        msgs_to(&ev, C2)[..],
        [
            ServerMessage::Resumed {
                contacts: None,
                seq: 1,
                ..
            },
            ServerMessage::Synced {}
        ]
    ));
    assert!(msgs_to(&ev, C3).is_empty(), "bob notices nothing");
    assert!(!ev.iter().any(|e| matches!(
        e,
        ServerEvent::Authenticate(_) | ServerEvent::SessionEnded { .. }
    )));
    assert_eq!(s.session_of(C2), Some(session));
    assert_eq!(s.session_of(C1), None);
}

#[test]
fn unknown_tokens_fail_and_are_throttled_per_source() {
    let mut config = ServerConfig::default();
    config.limits.max_login_failures_per_source = 3;
    let mut s = Server::new(config);
    let good = log_in(&mut s, ConnId(100), "alice", &[]);
    let attacker = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    let guess = |i: u64| ResumeToken::new(format!("{i:032x}")).unwrap();
    let mut codes = Vec::new();
    for i in 1..=4u64 {
        s.connect_from(ConnId(i), attacker, Time(10)).unwrap();
        s.receive(ConnId(i), &resume_frame(guess(i), None), Time(10));
        for m in msgs_to(&drain(&mut s), ConnId(i)) {
            if let ServerMessage::Error {
                code,
                retry_after_ms,
                ..
            } = m
            {
                codes.push((code, retry_after_ms.is_some()));
            }
        }
    }
    assert_eq!(
        codes,
        [
            (ErrorCode::ResumeFailed, false),
            (ErrorCode::ResumeFailed, false),
            (ErrorCode::ResumeFailed, false),
            (ErrorCode::LoginThrottled, true),
        ]
    );
    // Even the right token is refused from that source now; another source is fine.
    s.connect_from(ConnId(9), attacker, Time(11)).unwrap();
    s.receive(ConnId(9), &resume_frame(good.clone(), None), Time(11));
    assert!(matches!(
        msgs_to(&drain(&mut s), ConnId(9))[..],
        [ServerMessage::Error {
            code: ErrorCode::LoginThrottled,
            ..
        }]
    ));
    let other = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    s.connect_from(ConnId(10), other, Time(11)).unwrap();
    s.receive(ConnId(10), &resume_frame(good, None), Time(11));
    assert!(matches!(
        msgs_to(&drain(&mut s), ConnId(10))[0],
        ServerMessage::Resumed {
            contacts: Some(_),
            ..
        }
    ));
}

#[test]
fn without_resumption_no_token_is_issued_and_a_drop_ends_the_session() {
    let mut config = ServerConfig::default();
    config.resume.grace = Duration::ZERO;
    let mut s = Server::new(config);
    s.connect(C1, Time(0)).unwrap();
    let login = login_frame("alice", "pw", LoginWith::Capabilities(caps_of(1280)));
    s.receive(C1, &login, Time(0));
    let ticket = drain(&mut s)
        .into_iter()
        .find_map(|e| match e {
            ServerEvent::Authenticate(r) => Some(r.ticket),
            _ => None,
        })
        .unwrap();
    s.complete_auth(ticket, accepted(&[], None), Time(0))
        .unwrap();
    assert!(matches!(
        msgs_to(&drain(&mut s), C1)[0],
        ServerMessage::LoginOk {
            resume_token: None,
            ..
        }
    ));
    s.connection_closed(C1, Time(1));
    assert_eq!(s.sessions().count(), 0);
}

#[test]
fn a_refused_connection_keeps_the_session_detached_and_says_when_to_retry() {
    // A reconnect storm against an accept-rate limit of three per second: the fourth
    // connection in the second is refused before the server reads its `resume`.
    let mut config = ServerConfig::default();
    config.limits.max_accepts_per_second = 3;
    let mut sim = world(config);
    sim.advance(Duration::from_secs(1));
    for t in [ALICE, BOB, CAROL] {
        sim.drop_connection(t);
    }
    let table = |sim: &Sim, t| sim.client(t).peers().count();
    let before = table(&sim, BOB);
    sim.connect(3);
    sim.resume(ALICE).unwrap();
    sim.resume(CAROL).unwrap();
    sim.resume(BOB).unwrap();
    sim.run().unwrap();
    assert_eq!(sim.client(ALICE).status(), Status::Online);
    assert_eq!(sim.client(BOB).status(), Status::Detached, "not logged out");
    assert_eq!(table(&sim, BOB), before, "the table is kept");
    let retry = sim.terminals[BOB].events.iter().find_map(|e| match e {
        ClientEvent::ServerError {
            code: ErrorCode::RateLimited,
            retry_after,
            ..
        } => *retry_after,
        _ => None,
    });
    assert!(
        retry.is_some_and(|d| d <= Duration::from_secs(1)),
        "{retry:?}"
    );
    // After the wait the resume goes through, to the same session.
    let bob = sim.endpoint(BOB).unwrap();
    sim.advance(retry.unwrap());
    sim.drop_connection(BOB);
    sim.resume(BOB).unwrap();
    sim.settle().unwrap();
    assert_eq!(sim.client(BOB).status(), Status::Online);
    assert_eq!(sim.endpoint(BOB), Some(bob));
}

#[test]
fn an_attached_session_keeps_only_a_short_tail() {
    // Many capability changes at one instant: no per-session limit on them here.
    let mut config = ServerConfig::default();
    config.limits.max_caps_updates = 0;
    let mut s = Server::new(config);
    let tail = s.config().resume.tail_frames as u64;
    let token = log_in(&mut s, C1, "alice", &["bob"]);
    log_in(&mut s, C3, "bob", &["alice"]);
    // alice's table frames: bob online (1), then 2 * tail capability updates.
    for i in 0..2 * tail {
        let width = 640 + u16::try_from(i).unwrap();
        let msg = ClientMessage::UpdateCaps {
            req: precall_protocol::ReqId(u32::try_from(i).unwrap()),
            capabilities: caps_of(width),
        };
        s.receive(C3, &encode_frame(&msg), Time(1));
    }
    drain(&mut s);
    let last = 1 + 2 * tail;
    let catch_up = |s: &mut Server, conn: ConnId, seen: u64| {
        s.connect(conn, Time(2)).unwrap();
        s.receive(conn, &resume_frame(token.clone(), Some(seen)), Time(2));
        msgs_to(&drain(s), conn)
    };
    // Missed frames older than the tail: a snapshot (one `online` for bob).
    let m = catch_up(&mut s, ConnId(20), last - tail - 1);
    assert!(matches!(
        m[0],
        ServerMessage::Resumed {
            contacts: Some(_),
            seq: 0,
            ..
        }
    ));
    assert_eq!(m.len(), 3);
    // Within the tail (counted from the snapshot's 0): only what was missed.
    for i in 0..3u64 {
        let msg = ClientMessage::UpdateCaps {
            req: precall_protocol::ReqId(100),
            capabilities: caps_of(900 + u16::try_from(i).unwrap()),
        };
        s.receive(C3, &encode_frame(&msg), Time(3));
    }
    drain(&mut s);
    let m = catch_up(&mut s, ConnId(21), 2);
    assert!(
        matches!(
            m[0],
            ServerMessage::Resumed {
                contacts: None,
                seq: 3,
                ..
            }
        ),
        "{m:?}"
    );
    assert_eq!(m.len(), 3, "resumed, the third update, synced");
}

/// Spec 9.9.4 step 5: a delta needs every frame after `seen` in the log. With no tail
/// kept while attached (`tail_frames` 0), a client that saw all but the last frame
/// before its connection dropped gets a snapshot, not an empty delta that would lose
/// that frame; one that saw every frame gets an empty delta.
#[test]
fn without_a_tail_a_resume_that_missed_a_frame_gets_a_snapshot() {
    let mut config = ServerConfig::default();
    config.resume.tail_frames = 0;
    let mut s = Server::new(config);
    let token = log_in(&mut s, C1, "alice", &["bob"]);
    log_in(&mut s, C3, "bob", &["alice"]);
    // alice's table frames: bob online (1), bob's change (2); nothing logged.
    let msg = ClientMessage::UpdateCaps {
        req: precall_protocol::ReqId(1),
        capabilities: caps_of(700),
    };
    s.receive(C3, &encode_frame(&msg), Time(1));
    drain(&mut s);
    s.connection_closed(C1, Time(2));
    s.connect(ConnId(20), Time(2)).unwrap();
    s.receive(ConnId(20), &resume_frame(token.clone(), Some(1)), Time(2));
    let m = msgs_to(&drain(&mut s), ConnId(20));
    assert!(
        matches!(
            m[0],
            ServerMessage::Resumed {
                contacts: Some(_),
                seq: 0,
                ..
            }
        ),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|m| matches!(m, ServerMessage::Online(p) if p.capabilities == caps_of(700))),
        "the snapshot holds bob's latest: {m:?}"
    );
    // Having seen everything (the snapshot restarted the count at 0): an empty delta.
    s.connection_closed(ConnId(20), Time(3));
    s.connect(ConnId(21), Time(3)).unwrap();
    s.receive(ConnId(21), &resume_frame(token, Some(0)), Time(3));
    let m = msgs_to(&drain(&mut s), ConnId(21));
    assert!(
        matches!(
            m.as_slice(),
            [
                ServerMessage::Resumed {
                    contacts: None,
                    seq: 0,
                    ..
                },
                ServerMessage::Synced {}
            ]
        ),
        "{m:?}"
    );
}

/// `Server::shutdown`: every connection, logged in or not, gets `server_shutdown` and is
/// closed; every session ends, detached ones included.
#[test]
fn shutdown_ends_every_connection_and_session() {
    let mut s = Server::new(ServerConfig::default());
    log_in(&mut s, C1, "alice", &["bob"]);
    log_in(&mut s, C2, "bob", &["alice"]);
    log_in(&mut s, C3, "carol", &[]);
    s.connection_closed(C3, Time(1));
    s.connect(ConnId(9), Time(1)).unwrap();
    drain(&mut s);
    assert_eq!(s.sessions().count(), 3, "carol's is detached, still there");
    s.shutdown(Time(2));
    let ev = drain(&mut s);
    for conn in [C1, C2, ConnId(9)] {
        assert!(
            msgs_to(&ev, conn).iter().any(|m| matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::ServerShutdown,
                    ..
                }
            )),
            "{conn} told"
        );
        assert!(ev
            .iter()
            .any(|e| matches!(e, ServerEvent::Close { conn: c } if *c == conn)));
    }
    assert_eq!(s.sessions().count(), 0);
    assert_eq!(s.poll_timeout(), None, "no timer is left");
}
